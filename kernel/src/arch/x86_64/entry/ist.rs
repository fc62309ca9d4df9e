//! The IDT/IST backend: an IDT whose 256 gates point at fixed-size stubs, one common entry
//! that saves the general registers into a `TrapFrame`, and the IRET exit.
//!
//! NMI, #DB and #MC are delivered on their own IST stacks and #DF on its own; everything else
//! stays on the current kernel stack (TSS.RSP0 when coming from ring 3).

use core::mem::offset_of;
use spin::Once;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;

use super::frame::TrapFrame;
use super::{aist, atomic_ist};
use crate::arch::x86_64::paging::{self, Mapping};
use crate::arch::x86_64::{cea, gdt, tss};

/// Vectors for which the CPU pushes an error code (SDM Vol. 3A, Table 6-1): #DF, #TS, #NP,
/// #SS, #GP, #PF, #AC, #CP, #VC, #SX.
pub const ERROR_CODE_VECTORS: u32 =
    1 << 8 | 1 << 10 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 14 | 1 << 17 | 1 << 21 | 1 << 29 | 1 << 30;

/// Every stub is exactly this long, so gate `v` points at `ist_vector_stubs + v * STUB_SIZE`.
const STUB_SIZE: usize = 16;

/// The `vector` slot value with which the syscall exit decision asks for SYSRET.
pub const EXIT_BY_SYSRET: u64 = 0x5359_5352; // "SYSR": fits CMP's sign-extended imm32
/// The `vector` slot value of a frame built by the SYSCALL trampoline.
pub const SYSCALL_VECTOR: u64 = 0x100;

// The stubs are emitted as raw bytes with fixed encodings (push imm8 0, push imm32 vector,
// jmp rel32) so that each one is 12 or 10 bytes wherever the assembler would otherwise pick
// shorter forms; padding to 16 keeps the arithmetic above exact.
// SAFETY: the stubs are entered only through IDT gates (and the trampoline only by SYSCALL through
// LSTAR), with the CPU's frame on the stack; offsets into `TrapFrame` and the entry area are `const`
// operands from Rust, SWAPGS follows the saved CS (or the IRET special case), and the exit restores
// exactly what the entry saved.
core::arch::global_asm!(
    ".pushsection .text.entry_ist, \"ax\"",
    ".balign 16",
    ".global ist_vector_stubs",
    "ist_vector_stubs:",
    ".set vec, 0",
    ".rept 256",
    "    .if (vec >= 32) || ((({errcode_vectors} >> vec) & 1) == 0)",
    "        .byte 0x6a, 0x00",                  // push 0: the error code the CPU did not push
    "    .endif",
    "    .byte 0x68",                            // push imm32: the vector
    "    .long vec",
    "    .byte 0xe9",                            // jmp rel32 ist_common_entry
    "    .long ist_common_entry - (. + 4)",
    "    .balign {stub_size}, 0xcc",
    "    .set vec, vec + 1",
    ".endr",
    "",
    // Stack on arrival: vector, error code, then the CPU's frame (RIP, CS, RFLAGS, RSP, SS).
    "ist_common_entry:",
    "    test byte ptr [rsp + {cs_from_vector}], 3",
    "    jnz 4f",
    // From ring 0, GS is the kernel's, except on the IRET back to user space, which runs
    // after SWAPGS: a #GP there (a bad user return context) arrives with the user's GS
    // (Linux: error_entry's .Lerror_bad_iret). That handler kills the thread, never returns.
    "    push rax",
    "    lea rax, [rip + ist_iret_instruction]",
    "    cmp [rsp + 8 + {rip_from_vector}], rax",
    "    pop rax",
    "    jne 1f",
    "4:  swapgs",
    // Both paths fence: a mispredicted CS test must not run kernel code on the user GS
    // (CVE-2019-1125, Linux FENCE_SWAPGS_{{USER,KERNEL}}_ENTRY).
    "1:  lfence",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {dispatch}",
    // Every return to an interrupted context, and a new thread's first entry to user space,
    // goes through here with RSP at a TrapFrame.
    ".global ist_trap_return",
    "ist_trap_return:",
    pop_gprs!(),
    // The syscall exit decision (Rust, `syscall_exit`) marked the vector slot if SYSRET
    // returns to exactly this context; RCX and R11 then already hold RIP and RFLAGS.
    "    cmp qword ptr [rsp], {exit_by_sysret}",
    "    je 3f",
    "    test byte ptr [rsp + {cs_from_vector}], 3",
    "    jz 2f",
    "    swapgs",
    "2:  add rsp, 16",
    // A #GP here (a non-canonical or otherwise bad user RIP) kills the thread: see
    // `dispatch::bad_iret`.
    ".global ist_iret_instruction",
    "ist_iret_instruction:",
    "    iretq",
    "3:  mov rsp, [rsp + {rsp_from_vector}]",
    "    swapgs",
    // Ring 0 with the user's RSP and GS: an NMI, #MC or #DB here is what atomic-IST-entry's
    // GS-from-MSR rule is for (the `syscall_gap` scenario puts a breakpoint here).
    ".global ist_sysret_instruction",
    "ist_sysret_instruction:",
    "    sysretq",
    "",
    // The SYSCALL path, after the trampoline: RSP is the thread's kernel stack holding a
    // frame like the CPU's (SS, RSP, RFLAGS=R11, CS, RIP=RCX), error code 0 and the vector
    // SYSCALL_VECTOR. GS is still the user's.
    "ist_syscall_common:",
    "    swapgs",
    "    lfence",
    // RCX held the user RIP on SYSCALL (the trampoline used it for the jump here): save
    // that value, as the CPU defined it.
    "    mov rcx, [rsp + {rip_from_vector}]",
    push_gprs!(),
    "    mov rdi, rsp",
    "    cld",
    "    call {syscall}",
    "    jmp ist_trap_return",
    "",
    // A new user thread's first switch-in lands here, on a stack holding its TrapFrame.
    ".global ist_first_entry_to_user",
    "ist_first_entry_to_user:",
    "    call {first_run}",
    "    jmp ist_trap_return",
    ".popsection",
    "",
    // The SYSCALL trampoline (seed 000). One page, aliased into every CPU's entry area and
    // executed only there, so RIP-relative operands reach *this CPU's* area: the entry
    // stack's top word (scratch for the user RSP) and PerCpu.kernel_stack_top. No GS access
    // before SWAPGS, no stack until RSP is the kernel's. Interrupts are off (SFMASK.IF).
    ".pushsection .text.syscall_trampoline, \"ax\"",
    ".balign 4096",
    ".global ist_syscall_trampoline",
    "ist_syscall_trampoline:",
    // The displacements are constants computed in Rust from the entry-area layout and the
    // fixed lengths of these instructions (`TRAMPOLINE_OPERANDS`); `init_syscall` decodes
    // them back from the bytes and checks they reach the intended fields.
    "    mov [rip + {disp_save_rsp}], rsp",
    "    mov rsp, [rip + {disp_load_kstack}]",
    "    push {user_ss}",
    "    push qword ptr [rip + {disp_push_user_rsp}]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {syscall_vector}",
    "    movabs rcx, offset ist_syscall_common",
    "    jmp rcx",
    "ist_syscall_trampoline_end:",
    ".balign 4096, 0xcc",
    ".popsection",
    errcode_vectors = const ERROR_CODE_VECTORS,
    stub_size = const STUB_SIZE,
    cs_from_vector = const offset_of!(TrapFrame, cs) - offset_of!(TrapFrame, vector),
    rsp_from_vector = const offset_of!(TrapFrame, rsp) - offset_of!(TrapFrame, vector),
    rip_from_vector = const offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, vector),
    exit_by_sysret = const EXIT_BY_SYSRET,
    dispatch = sym super::dispatch::trap_dispatch,
    syscall = sym super::dispatch::syscall_entry,
    first_run = sym super::dispatch::first_run,
    disp_save_rsp = const TRAMPOLINE_OPERANDS[0].disp(),
    disp_load_kstack = const TRAMPOLINE_OPERANDS[1].disp(),
    disp_push_user_rsp = const TRAMPOLINE_OPERANDS[2].disp(),
    user_ss = const gdt::USER_SS.0 as u64,
    user_cs = const gdt::USER_CS.0 as u64,
    syscall_vector = const SYSCALL_VECTOR,
);

/// One RIP-relative operand of the trampoline: the instruction's end offset inside the
/// trampoline, where its disp32 sits, and the entry-area offset it must reach.
struct RipOperand {
    insn_end: usize,
    disp_at: usize,
    target: usize,
}

impl RipOperand {
    const fn disp(&self) -> i64 {
        self.target as i64 - cea::offsets::TRAMPOLINE as i64 - self.insn_end as i64
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
    static ist_syscall_trampoline_end: u8;
    fn ist_first_entry_to_user();
    static ist_iret_instruction: u8;
    static ist_sysret_instruction: u8;
}

/// The SYSRET that returns to user space.
pub fn sysret_instruction() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &ist_sysret_instruction as *const u8 as u64 }
}

/// Where a new user thread's first context switch returns to.
pub fn first_entry_to_user() -> u64 {
    ist_first_entry_to_user as *const () as u64
}

/// The address of the IRET that returns to user space (a #GP there is the user's fault).
pub fn iret_instruction() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &ist_iret_instruction as *const u8 as u64 }
}

/// Maps this CPU's alias of the SYSCALL trampoline into its entry area and points the SYSCALL
/// MSRs at it (SDM Vol. 3A §5.8.8).
pub fn init_syscall(cpu_index: usize) {
    // SAFETY: only addresses of the trampoline symbols are taken.
    let (tramp, tramp_end) = unsafe { (ist_syscall_trampoline.as_ptr() as u64, &ist_syscall_trampoline_end as *const u8 as u64) };
    assert!(tramp % 4096 == 0 && tramp_end - tramp <= 4096, "the SYSCALL trampoline must fit one page");
    // SAFETY: the trampoline is initialized code in the kernel image, readable.
    let code = unsafe { &ist_syscall_trampoline };
    for op in &TRAMPOLINE_OPERANDS {
        let disp = i32::from_le_bytes(code[op.disp_at..op.disp_at + 4].try_into().unwrap()) as i64;
        assert_eq!(disp, op.disp(), "SYSCALL trampoline encoding differs from TRAMPOLINE_OPERANDS");
    }
    let alias = cea::syscall_trampoline_alias(cpu_index);
    paging::map_alias(alias, paging::kernel_image_phys(tramp), 4096, Mapping::EntryText)
        .expect("cannot map the SYSCALL trampoline alias");
    LStar::write(VirtAddr::new(alias));
    Star::write(gdt::USER_CS, gdt::USER_SS, gdt::KERNEL_CS, gdt::KERNEL_SS).expect("GDT layout does not fit SYSCALL/SYSRET");
    // Cleared on SYSCALL: no interrupts until the kernel stack is in place, no single-step in
    // the kernel, a clean direction flag, and AC clear so SMAP holds.
    SFMask::write(RFlags::INTERRUPT_FLAG | RFlags::TRAP_FLAG | RFlags::DIRECTION_FLAG | RFlags::ALIGNMENT_CHECK | RFlags::NESTED_TASK);
    // SAFETY: enabling SYSCALL/SYSRET after LSTAR/STAR/SFMASK point at valid entry code.
    unsafe { Efer::update(|e| e.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
}

extern "C" {
    static ist_vector_stubs: [[u8; STUB_SIZE]; 256];
}

/// An IDT gate descriptor (SDM Vol. 3A §6.14.1, Figure 6-8).
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST index (0 = none).
    ist: u8,
    /// P, DPL, type (0xE = 64-bit interrupt gate: IF cleared on entry).
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}
const _: () = assert!(core::mem::size_of::<Gate>() == 16);

impl Gate {
    const INTERRUPT_GATE: u8 = 0x8e;

    fn new(handler: u64, ist: u16, dpl: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: gdt::KERNEL_CS.0,
            ist: ist as u8,
            type_attr: Self::INTERRUPT_GATE | (dpl & 3) << 5,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// The IST slot each vector is delivered on (0 = the current stack).
fn ist_slot(vector: u8) -> u16 {
    match vector {
        2 => tss::IST_NMI,
        1 => tss::IST_DB,
        18 => tss::IST_MC,
        8 => tss::IST_DF,
        _ => 0,
    }
}

/// Loads the IDT (built once, shared by every CPU) on this CPU.
pub fn load_idt() {
    let idt = IDT.call_once(|| {
        // SAFETY: only the address of the stub table is taken.
        let stubs = unsafe { ist_vector_stubs.as_ptr() } as u64;
        let mut gates = [Gate::default(); 256];
        for (v, gate) in gates.iter_mut().enumerate() {
            // #BP may be raised from ring 3 with INT3; every other gate is for ring 0 and
            // hardware only, so a user `int N` on it faults with #GP instead.
            let dpl = if v == 3 { 3 } else { 0 };
            let handler = match atomic_ist::Event::ALL.into_iter().find(|e| e.vector() == v as u64) {
                Some(e) => aist::entry_point(e),
                None => stubs + (v * STUB_SIZE) as u64,
            };
            *gate = Gate::new(handler, ist_slot(v as u8), dpl);
        }
        Idt(gates)
    });
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is a static that lives forever; every gate points at a stub in kernel
    // text with the kernel code selector.
    unsafe { lidt(&ptr) };
}
