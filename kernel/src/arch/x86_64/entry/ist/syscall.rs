//! SYSCALL on the IST backend: the per-CPU trampoline (seed 000), the common entry, and the
//! opportunistic-SYSRET exit (seed 001, decided in `sysret.rs`).
//!
//! Two entries share the trampoline page: IA32_LSTAR's, for SYSCALL from 64-bit mode, and
//! IA32_CSTAR's, for SYSCALL from compatibility mode. Intel CPUs raise #UD for the latter
//! themselves, but CPUs with AMD semantics (every AMD part, and QEMU's TCG) jump through CSTAR;
//! left at 0 it made a ring-3 far return to the 32-bit code segment plus SYSCALL a ring-0 #PF
//! at address 0. The compatibility entry builds the same frame with the 32-bit CS, and the
//! shared handler refuses the call the way Intel hardware does.
//!
//! SYSENTER needs no entry: IA32_SYSENTER_CS is 0, so it raises #GP(0) in ring 3 on Intel
//! (SDM Vol. 2B, SYSENTER) and #UD on AMD, whose long mode has no SYSENTER.

use core::sync::atomic::Ordering;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, Msr, SFMask, Star};
use x86_64::registers::rflags::RFlags;
use x86_64::VirtAddr;

use super::sysret;
use crate::arch::x86_64::entry::event::SyscallKind;
use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::handlers;
use crate::arch::x86_64::paging::{self, Mapping};
use crate::arch::x86_64::{cea, gdt, percpu};

const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_CSTAR: u32 = 0xc000_0083;

/// The `vector` slot value with which the syscall exit decision asks for SYSRET.
pub const EXIT_BY_SYSRET: u64 = 0x5359_5352; // "SYSR": fits CMP's sign-extended imm32
/// The `vector` slot value of a frame built by the SYSCALL trampoline.
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Where the compatibility-mode entry starts inside the trampoline page.
const COMPAT_ENTRY: usize = 64;

// SAFETY: `ist_syscall_common` is entered only from the trampoline, on the thread's kernel stack
// holding a CPU-like frame; it saves every register into a `TrapFrame` and leaves through
// `ist_trap_return`, which restores exactly those. The trampoline is entered only by SYSCALL
// (LSTAR/CSTAR point at this CPU's alias), with interrupts masked by SFMASK; its RIP-relative
// operands are checked against the entry-area layout by `init_syscall` before SYSCALL is enabled.
core::arch::global_asm!(
    ".pushsection .text.entry_ist, \"ax\"",
    // RSP is the thread's kernel stack holding a frame like the CPU's (SS, RSP, RFLAGS=R11,
    // CS, RIP=RCX), error code 0 and the vector SYSCALL_VECTOR. GS is still the user's.
    ".global ist_syscall_common",
    "ist_syscall_common:",
    // Unconditional: SYSCALL only comes from ring 3, so there is no CS test a CPU could
    // mispredict into running on the wrong GS, and no LFENCE is needed (CVE-2019-1125 is about
    // the conditional SWAPGS of the IDT entry; Linux's entry_SYSCALL_64 has none either).
    "    swapgs",
    push_gprs!(),
    "    mov rdi, rsp",
    // No CLD: SFMASK cleared DF on the way in.
    "    call {syscall}",
    "    jmp ist_trap_return",
    ".popsection",
    "",
    // The trampoline (seed 000). One page, aliased into every CPU's entry area and executed
    // only there, so RIP-relative operands reach *this CPU's* area: the entry stack's top word
    // (scratch for the user RSP) and PerCpu.kernel_stack_top. No GS access before SWAPGS, no
    // stack until RSP is the kernel's: a user RSP pointing anywhere (the kernel half, a
    // non-canonical value) is only ever stored, never dereferenced.
    ".pushsection .text.syscall_trampoline, \"ax\"",
    ".balign 4096",
    ".global ist_syscall_trampoline",
    "ist_syscall_trampoline:",
    "    mov [rip + {disp_save_rsp}], rsp",
    "    mov rsp, [rip + {disp_load_kstack}]",
    "    push {user_ss}",
    "    push qword ptr [rip + {disp_push_user_rsp}]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {syscall_vector}",
    // Through a pointer in this page (RIP-relative, so the alias reaches it too): no register
    // is clobbered, and RCX still holds the user RIP as SYSCALL left it.
    "    jmp qword ptr [rip + ist_syscall_common_ptr]",
    // SYSCALL from compatibility mode (IA32_CSTAR): the same frame, with the 32-bit CS the
    // thread really ran in, so the handler sees what happened.
    ".org ist_syscall_trampoline + {compat_entry}, 0xcc",
    ".global ist_syscall_compat_trampoline",
    "ist_syscall_compat_trampoline:",
    "    mov [rip + {disp_save_rsp_c}], rsp",
    "    mov rsp, [rip + {disp_load_kstack_c}]",
    "    push {user_ss}",
    "    push qword ptr [rip + {disp_push_user_rsp_c}]",
    "    push r11",
    "    push {user32_cs}",
    "    push rcx",
    "    push 0",
    "    push {syscall_vector}",
    // Through a pointer in this page (RIP-relative, so the alias reaches it too): no register
    // is clobbered, and RCX still holds the user RIP as SYSCALL left it.
    "    jmp qword ptr [rip + ist_syscall_common_ptr]",
    ".balign 8",
    "ist_syscall_common_ptr: .quad ist_syscall_common",
    ".global ist_syscall_trampoline_end",
    "ist_syscall_trampoline_end:",
    ".balign 4096, 0xcc",
    ".popsection",
    syscall = sym syscall_entry,
    disp_save_rsp = const TRAMPOLINE_OPERANDS[0].disp(0),
    disp_load_kstack = const TRAMPOLINE_OPERANDS[1].disp(0),
    disp_push_user_rsp = const TRAMPOLINE_OPERANDS[2].disp(0),
    disp_save_rsp_c = const TRAMPOLINE_OPERANDS[0].disp(COMPAT_ENTRY),
    disp_load_kstack_c = const TRAMPOLINE_OPERANDS[1].disp(COMPAT_ENTRY),
    disp_push_user_rsp_c = const TRAMPOLINE_OPERANDS[2].disp(COMPAT_ENTRY),
    compat_entry = const COMPAT_ENTRY,
    user_ss = const gdt::USER_SS.0 as u64,
    user_cs = const gdt::USER_CS.0 as u64,
    user32_cs = const gdt::USER32_CS.0 as u64,
    syscall_vector = const SYSCALL_VECTOR,
);

/// One RIP-relative operand of a trampoline entry: the instruction's end offset from the
/// entry's start, where its disp32 sits, and the entry-area offset it must reach.
struct RipOperand {
    insn_end: usize,
    disp_at: usize,
    target: usize,
}

impl RipOperand {
    const fn disp(&self, entry: usize) -> i64 {
        self.target as i64 - cea::offsets::TRAMPOLINE as i64 - (entry + self.insn_end) as i64
    }
}

/// `mov [rip+d], rsp` (48 89 25 d32, 7 bytes), `mov rsp, [rip+d]` (48 8b 25 d32, 7 bytes),
/// `push imm8` (2 bytes), `push [rip+d]` (ff 35 d32, 6 bytes).
const TRAMPOLINE_OPERANDS: [RipOperand; 3] = [
    RipOperand { insn_end: 7, disp_at: 3, target: cea::offsets::ENTRY_STACK_SCRATCH },
    RipOperand { insn_end: 14, disp_at: 10, target: cea::offsets::KERNEL_STACK_TOP },
    RipOperand { insn_end: 22, disp_at: 18, target: cea::offsets::ENTRY_STACK_SCRATCH },
];

extern "C" {
    static ist_syscall_trampoline: [u8; 4096];
    static ist_syscall_compat_trampoline: u8;
    static ist_syscall_trampoline_end: u8;
}

/// Maps this CPU's alias of the SYSCALL trampoline into its entry area and points the SYSCALL
/// MSRs at it (SDM Vol. 3A §5.8.8).
pub fn init_syscall(cpu_index: usize) {
    // SAFETY: only addresses of the trampoline symbols are taken.
    let (tramp, compat, tramp_end) = unsafe {
        (
            ist_syscall_trampoline.as_ptr() as u64,
            &ist_syscall_compat_trampoline as *const u8 as u64,
            &ist_syscall_trampoline_end as *const u8 as u64,
        )
    };
    assert!(tramp % 4096 == 0 && tramp_end - tramp <= 4096, "the SYSCALL trampoline must fit one page");
    assert_eq!(compat - tramp, COMPAT_ENTRY as u64, "the compatibility entry is not where COMPAT_ENTRY says");
    // SAFETY: the trampoline is initialized code in the kernel image, readable.
    let code = unsafe { &ist_syscall_trampoline };
    for entry in [0, COMPAT_ENTRY] {
        for op in &TRAMPOLINE_OPERANDS {
            let at = entry + op.disp_at;
            let disp = i32::from_le_bytes(code[at..at + 4].try_into().unwrap()) as i64;
            assert_eq!(disp, op.disp(entry), "SYSCALL trampoline encoding differs from TRAMPOLINE_OPERANDS");
        }
    }
    let alias = cea::syscall_trampoline_alias(cpu_index);
    paging::map_alias(alias, paging::kernel_image_phys(tramp), 4096, Mapping::EntryText)
        .expect("cannot map the SYSCALL trampoline alias");
    LStar::write(VirtAddr::new(alias));
    // SAFETY: CSTAR points at the compatibility entry of this CPU's mapped trampoline alias;
    // SYSENTER_CS = 0 makes SYSENTER fault in ring 3 (firmware may have left another value).
    unsafe {
        Msr::new(IA32_CSTAR).write(alias + COMPAT_ENTRY as u64);
        Msr::new(IA32_SYSENTER_CS).write(0);
    }
    Star::write(gdt::USER_CS, gdt::USER_SS, gdt::KERNEL_CS, gdt::KERNEL_SS).expect("GDT layout does not fit SYSCALL/SYSRET");
    // Cleared on SYSCALL: no interrupts until the kernel stack is in place, no single-step in
    // the kernel, a clean direction flag, AC clear so SMAP holds, and NT clear so the kernel's
    // own IRET cannot take the task-return path (#GP in 64-bit mode).
    SFMask::write(RFlags::INTERRUPT_FLAG | RFlags::TRAP_FLAG | RFlags::DIRECTION_FLAG | RFlags::ALIGNMENT_CHECK | RFlags::NESTED_TASK);
    // SAFETY: enabling SYSCALL/SYSRET after LSTAR/CSTAR/STAR/SFMASK point at valid entry code.
    unsafe { Efer::update(|e| e.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
}

/// The SYSCALL path's Rust half: which entry it came through, the call, then the exit.
extern "C" fn syscall_entry(frame: &mut TrapFrame) {
    let kind = if frame.cs == gdt::USER_CS.0 as u64 { SyscallKind::Syscall64 } else { SyscallKind::SyscallCompat };
    handlers::syscall(frame, kind);
    handlers::before_user_return();
    syscall_exit(frame);
}

/// Chooses SYSRET or IRET for this return (seed 001) and counts the choice.
fn syscall_exit(frame: &mut TrapFrame) {
    let ctx = sysret::ReturnContext {
        rip: frame.rip,
        rcx: frame.rcx,
        rflags: frame.rflags,
        r11: frame.r11,
        cs: frame.cs,
        ss: frame.ss,
    };
    let me = percpu::this();
    match sysret::sysret_allowed(&ctx, gdt::USER_CS.0 as u64, gdt::USER_SS.0 as u64) {
        Ok(()) => {
            frame.vector = EXIT_BY_SYSRET;
            me.sysret_exits.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            frame.vector = SYSCALL_VECTOR;
            me.iret_exits.fetch_add(1, Ordering::Relaxed);
        }
    }
}
