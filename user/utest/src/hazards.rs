//! `hazards`: the entry-hazard suite. Each case is one thread that executes something hostile
//! to the entry layer, and states what must happen: the thread is killed with a named exception
//! (and error code), or it carries on (and checks what it saw). Meanwhile a victim thread on
//! every CPU keeps a register and memory pattern and checks it after every yield; the suite
//! fails if any case ends otherwise than stated or the victim sees a change. The kernel side
//! (`test=hazards`) fails on any kernel exception or panic; the same cases run on both entry
//! backends.
//!
//! A case that must survive reports a wrong observation by executing `ud2`: its thread then
//! ends killed with #UD instead of exiting, which the runner reports as a mismatch.

use abi::syscall as nr;
use abi::thread_exit::ThreadExit;
use abi::Error;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use rt::{ipc, println, sys, thread};

const UD: u8 = 6;
const DB: u8 = 1;
const BP: u8 = 3;
const GP: u8 = 13;
const PF: u8 = 14;

/// What a case must end with.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Killed by exception `vector`; with `Some(e)`, with error code `e`.
    Killed(u8, Option<u32>),
    /// Killed by one of these (vendors differ: SYSENTER is #GP(0) on Intel, #UD on AMD).
    KilledAnyOf(&'static [u8]),
    /// The thread carries on and exits normally (its own checks passed).
    Survives,
    /// Either killed by this exception or carrying on: for an instruction that faults on
    /// hardware but that an emulator runs as a no-op (QEMU's TCG executes WBINVD at CPL 3).
    KilledOrSurvives(u8),
}

impl Expect {
    fn matches(self, got: ThreadExit) -> bool {
        match (self, got) {
            (Expect::Killed(v, None), ThreadExit::Killed { vector, .. }) => v == vector,
            (Expect::Killed(v, Some(e)), ThreadExit::Killed { vector, error_code }) => v == vector && e == error_code,
            (Expect::KilledAnyOf(vs), ThreadExit::Killed { vector, .. }) => vs.contains(&vector),
            (Expect::Survives | Expect::KilledOrSurvives(_), ThreadExit::Exited) => true,
            (Expect::KilledOrSurvives(v), ThreadExit::Killed { vector, .. }) => v == vector,
            _ => false,
        }
    }
}

struct Case {
    name: &'static str,
    run: fn(usize),
    expect: fn() -> Expect,
}

fn cpu_has(leaf: u32, sub: u32, reg: usize, bit: u32) -> bool {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx][reg] & (1 << bit) != 0
}
/// QEMU's binary translator (its hypervisor CPUID leaf says `TCGTCGTCGTCG`): it neither raises
/// #XM for unmasked SIMD exceptions nor checks MXCSR's reserved bits.
fn qemu_tcg() -> bool {
    let r = core::arch::x86_64::__cpuid_count(0x4000_0000, 0);
    let tcg = u32::from_le_bytes(*b"TCGT");
    r.ebx == tcg && r.ecx == u32::from_le_bytes(*b"CGTC") && r.edx == u32::from_le_bytes(*b"GTCG")
}
fn umip() -> bool {
    cpu_has(7, 0, 2, 2)
}
fn fsgsbase() -> bool {
    cpu_has(7, 0, 1, 0)
}

/// Fails the current case (see the module doc).
fn fail_case() -> ! {
    // SAFETY: UD2 only raises #UD, which ends this thread.
    unsafe { asm!("ud2", options(noreturn)) }
}

// 256 stubs `int N; ret`, 4 bytes each, emitted as bytes so `int 3` stays CD 03 (not CC).
// SAFETY: each stub is entered by CALL and returns with RET if the INT returns at all.
global_asm!(
    ".pushsection .text.hazard_int_table, \"ax\"",
    ".balign 4",
    ".global hazard_int_table",
    "hazard_int_table:",
    ".set vec, 0",
    ".rept 256",
    "    .byte 0xcd, vec, 0xc3, 0xcc",
    "    .set vec, vec + 1",
    ".endr",
    ".popsection",
);

extern "C" {
    static hazard_int_table: [[u8; 4]; 256];
}

fn int_n(n: usize) {
    // SAFETY: only the table's address is taken.
    let stub = unsafe { hazard_int_table.as_ptr().add(n) } as u64;
    // SAFETY: the stub executes `int n` and returns; it clobbers nothing the ABI keeps.
    unsafe { asm!("call {}", in(reg) stub, clobber_abi("C")) };
}

fn int1(_: usize) {
    // SAFETY: ICEBP (F1) raises #DB; if it returned, execution continues.
    unsafe { asm!(".byte 0xf1", options(nomem, nostack)) };
}

fn int3(_: usize) {
    // SAFETY: INT3 only traps.
    unsafe { asm!("int3", options(nomem, nostack)) };
}

fn sysenter(_: usize) {
    // SAFETY: SYSENTER faults in ring 3 here (IA32_SYSENTER_CS = 0, or no SYSENTER in long
    // mode); if it did not, RCX/R11 would be the only registers a fast-call could clobber.
    unsafe { asm!(".byte 0x0f, 0x34", out("rcx") _, out("r11") _, options(nostack)) };
}

fn int80(_: usize) {
    // SAFETY: `int 0x80` through a DPL-0 gate raises #GP.
    unsafe { asm!("int 0x80", options(nomem, nostack)) };
}

/// Far-returns into the 32-bit user code segment (0x1b), then runs the 2-byte instruction
/// `insn` in compatibility mode. The thread never comes back to 64-bit mode: the instruction
/// is expected to end it (a `ud2` follows in case it does not).
fn compat_then(insn: [u8; 2]) {
    let code: u64 = match insn {
        [0x0f, 0x05] => compat_syscall as *const () as u64,
        [0x0f, 0x34] => compat_sysenter as *const () as u64,
        [0xce, _] => compat_into as *const () as u64,
        _ => compat_int80 as *const () as u64,
    };
    // SAFETY: RETFQ pops RIP then CS = 0x1b, a present DPL-3 32-bit code segment; the target
    // is in this image, below 4 GiB, so it is reachable in compatibility mode.
    unsafe {
        asm!(
            "push 0x1b",
            "push {code}",
            "retfq",
            code = in(reg) code,
            options(noreturn)
        )
    }
}

// Compatibility-mode bodies: SYSCALL, SYSENTER or `int 0x80`, then UD2 if still alive.
// SAFETY: reached only by `compat_then`'s far return; the bytes are valid 32-bit code.
global_asm!(
    ".pushsection .text.hazard_compat, \"ax\"",
    ".global compat_syscall",
    "compat_syscall: .byte 0x0f, 0x05, 0x0f, 0x0b",
    ".global compat_sysenter",
    "compat_sysenter: .byte 0x0f, 0x34, 0x0f, 0x0b",
    ".global compat_int80",
    "compat_int80: .byte 0xcd, 0x80, 0x0f, 0x0b",
    // mov al, 0x7f; add al, 1 (sets OF); into; ud2. INTO exists only outside 64-bit mode;
    // under FRED it arrives as a software exception with vector 4.
    ".global compat_into",
    "compat_into: .byte 0xb0, 0x7f, 0x04, 0x01, 0xce, 0x0f, 0x0b",
    ".popsection",
);
extern "C" {
    fn compat_syscall();
    fn compat_sysenter();
    fn compat_int80();
    fn compat_into();
}

/// A far jump through memory to selector `sel`. Intel reads an m16:64 pointer with REX.W, AMD
/// an m16:32 one: the bytes hold `sel` where either reads it (offset 0x40_0000 for m16:32,
/// `sel << 32 | 0x40_0000` for m16:64, both canonical user addresses).
fn far_jump(sel: u16) {
    let target: [u64; 2] = [(sel as u64) << 32 | 0x40_0000, sel as u64];
    // SAFETY: the jump faults at CPL 3: the kernel code segment is not conforming and has
    // DPL 0, and a TSS is not a jump target in 64-bit mode (#GP with the selector).
    unsafe { asm!("rex64 jmp fword ptr [{}]", in(reg) target.as_ptr(), options(nostack, readonly)) };
}

/// SYSCALL (CPU_ID) with RSP set to `rsp`: the kernel must never use the user RSP, and the
/// call must return normally.
fn syscall_with_rsp(rsp: u64) {
    let result: u64;
    // SAFETY: RSP is replaced only between the MOVs; nothing touches the stack in between
    // (SYSCALL does not), and R12 restores it.
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov rsp, {bad}",
            "syscall",
            "mov rsp, r12",
            bad = in(reg) rsp,
            inout("rax") nr::CPU_ID => result,
            out("rcx") _, out("r11") _, out("r12") _,
        )
    };
    if Error::result(result).is_err() {
        fail_case();
    }
}

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_AC: u64 = 1 << 18;

/// SYSCALL with `flags` set in RFLAGS, cleared again right after it (TF is cleared by the
/// kernel's single-step handling).
fn syscall_with_flags(flags: u64) {
    let result: u64;
    // SAFETY: the flags are set by POPFQ right before SYSCALL and cleared right after; the
    // stack use is balanced.
    unsafe {
        asm!(
            "pushfq",
            "or qword ptr [rsp], {flags}",
            "popfq",
            "syscall",
            "pushfq",
            "and qword ptr [rsp], {clear}",
            "popfq",
            flags = in(reg) flags,
            clear = in(reg) !(RFLAGS_NT | RFLAGS_AC | RFLAGS_TF),
            inout("rax") nr::CPU_ID => result,
            out("rcx") _, out("r11") _,
        )
    };
    if Error::result(result).is_err() {
        fail_case();
    }
}

/// `set_return_context(rip, rsp, rflags)`: the thread resumes there. RIP values the thread
/// cannot run at must leave by IRET/ERETU and kill the thread in ring 3 (or with #GP on the
/// IRET itself on Intel), never harm the kernel.
fn return_to(rip: u64) {
    let rsp: u64;
    // SAFETY: reads RSP.
    unsafe { asm!("mov {}, rsp", out(reg) rsp) };
    // SAFETY: if the call succeeds the thread continues at `rip`, which the case expects to
    // kill it; nothing after the SYSCALL runs then.
    let r = unsafe { sys::raw::syscall4(nr::SET_RETURN_CONTEXT, rip, rsp, 0, 0) };
    let _ = r;
}

/// A return context whose stack is in the kernel half: refused with BadAddress.
fn return_with_kernel_rsp(_: usize) {
    // SAFETY: the call is refused, so the thread continues here.
    let r = unsafe { sys::raw::syscall4(nr::SET_RETURN_CONTEXT, 0x40_0000, 0xffff_8000_0000_0000, 0, 0) };
    if Error::result(r) != Err(Error::BadAddress) {
        fail_case();
    }
}

/// A return context to the instruction right after the call, with `flags` in RFLAGS (RF,
/// TF): the thread carries on.
fn return_with_flags(flags: u64) {
    // SAFETY: the context resumes at label 2 with the current RSP, exactly where the
    // instruction after SYSCALL would run; RCX/R11 are clobbered either way.
    unsafe {
        asm!(
            "lea rdi, [rip + 2f]",
            "mov rsi, rsp",
            "syscall",
            "2:",
            "pushfq",
            "and qword ptr [rsp], {clear}",
            "popfq",
            clear = in(reg) !RFLAGS_TF,
            inout("rax") nr::SET_RETURN_CONTEXT => _,
            out("rdi") _, out("rsi") _,
            in("rdx") flags,
            out("rcx") _, out("r11") _,
        )
    };
}

static SS_VALUE: u16 = 0x23;

/// `mov ss, [mem]` then `insn` in its interrupt shadow (CVE-2018-8897 shape).
fn mov_ss_then(insn: u8) {
    // SAFETY: SS is reloaded with the user SS it already holds; the following instruction
    // either traps (INT3, INT1: the thread dies) or is a SYSCALL (CPU_ID) that returns.
    unsafe {
        match insn {
            0xcc => asm!("mov ss, word ptr [{v}]", "int3", v = in(reg) &SS_VALUE),
            0xf1 => asm!("mov ss, word ptr [{v}]", ".byte 0xf1", v = in(reg) &SS_VALUE),
            _ => asm!(
                "mov ss, word ptr [{v}]",
                "syscall",
                v = in(reg) &SS_VALUE,
                inout("rax") nr::CPU_ID => _,
                out("rcx") _, out("r11") _,
            ),
        }
    }
}

/// Kernel #DBs the calling CPU had taken when its watchpoint was last armed or disarmed.
static WATCH_DBS: AtomicU64 = AtomicU64::new(0);

fn bench_watch(addr: u64) -> u64 {
    // SAFETY: a benchmark call that only programs this CPU's debug register 0.
    let r = unsafe { sys::raw::syscall1(nr::BENCH_WATCH, addr) };
    match Error::result(r) {
        Ok(n) => n,
        Err(_) => fail_case(),
    }
}

/// CVE-2018-8897: with a watchpoint on the selector `mov ss` loads, the #DB is held back by
/// the MOV SS shadow until after the next instruction, so it arrives in ring 0 at the first
/// instruction of the INT3/INT1/SYSCALL entry (under the IDT with the user's GS, and after
/// SYSCALL with the user's RSP). The kernel must take it there and carry on.
fn watched_mov_ss(insn: usize) {
    WATCH_DBS.store(bench_watch(&SS_VALUE as *const u16 as u64), Ordering::Release);
    mov_ss_then(insn as u8);
}

fn disarm_watch(_: usize) {
    WATCH_DBS.store(bench_watch(0), Ordering::Release);
}

fn pop_ss(_: usize) {
    // SAFETY: POP SS (17) is invalid in 64-bit mode: #UD.
    unsafe { asm!("push 0x23", ".byte 0x17", "add rsp, 8") };
}

/// Privileged instruction number `i` of `PRIVILEGED`.
fn privileged(i: usize) {
    // SAFETY (every arm): at CPL 3 each of these raises #GP(0) before it has any effect
    // (IOPL 0 and no port capability for the port instructions).
    unsafe {
        match i {
            0 => asm!("cli"),
            1 => asm!("sti"),
            2 => asm!("hlt"),
            3 => asm!("in al, dx", in("dx") 0x80u16, out("al") _),
            4 => asm!("out dx, al", in("dx") 0xf4u16, in("al") 0x11u8), // QEMU's exit port
            5 => asm!("out dx, al", in("dx") 0x8900u16, in("al") b'S'), // Bochs' shutdown port
            6 => asm!("out dx, al", in("dx") 0xe9u16, in("al") b'!'),
            7 => asm!("out dx, al", in("dx") 0x3f8u16, in("al") b'!'), // COM1, the console's
            8 => asm!("rdmsr", in("ecx") 0xc000_0082u32, out("eax") _, out("edx") _), // LSTAR
            9 => asm!("wrmsr", in("ecx") 0xc000_0082u32, in("eax") 0, in("edx") 0),
            10 => asm!("mov cr3, {}", in(reg) 0u64),
            11 => {
                let zero = [0u8; 10];
                asm!("lgdt [{}]", in(reg) &zero)
            }
            12 => {
                let zero = [0u8; 10];
                asm!("lidt [{}]", in(reg) &zero)
            }
            13 => asm!("swapgs"),
            14 => asm!("invlpg [{}]", in(reg) 0x40_0000u64),
            15 => asm!("mov dr7, {}", in(reg) 0x3u64),
            16 => asm!("wbinvd"),
            19 => asm!("xsetbv", in("ecx") 0, in("eax") 7, in("edx") 0),
            17 => asm!("clts"),
            18 => asm!("ltr ax", in("ax") 0x30u16),
            _ => unreachable!(),
        }
    }
}
const PRIVILEGED: [&str; 20] = [
    "cli", "sti", "hlt", "in 0x80", "out 0xf4 (QEMU exit)", "out 0x8900 (Bochs shutdown)", "out 0xe9",
    "out 0x3f8 (COM1)", "rdmsr LSTAR", "wrmsr LSTAR", "mov cr3", "lgdt", "lidt", "swapgs", "invlpg",
    "mov dr7", "wbinvd", "clts", "ltr", "xsetbv",
];

/// SGDT, SIDT, SLDT, SMSW, STR: #GP(0) with UMIP, else they run.
fn descriptor_read(i: usize) {
    let mut buf = [0u8; 16];
    // SAFETY: each stores at most 10 bytes into `buf` (or into a register).
    unsafe {
        match i {
            0 => asm!("sgdt [{}]", in(reg) buf.as_mut_ptr()),
            1 => asm!("sidt [{}]", in(reg) buf.as_mut_ptr()),
            2 => asm!("sldt ax", out("ax") _),
            3 => asm!("smsw ax", out("ax") _),
            _ => asm!("str ax", out("ax") _),
        }
    }
}

fn jump_to(target: u64) {
    // SAFETY: the jump faults (non-canonical: #GP at the jump; kernel half: #PF on the fetch).
    unsafe { asm!("jmp {}", in(reg) target, options(noreturn)) }
}

/// The register state a new thread starts with (user/README.md): RIP = entry, RSP = the stack
/// top it was given, RDI = its argument, RFLAGS = IF | bit 1, FS/GS selectors and bases 0,
/// every other general register 0. `fresh_thread_entry` stores them all here.
static FRESH_REGS: [AtomicU64; 18] = [const { AtomicU64::new(u64::MAX) }; 18];

// SAFETY: entered by the kernel as a new thread's first instruction; it stores registers into
// FRESH_REGS (RIP-relative, no stack), then exits the thread.
global_asm!(
    ".pushsection .text.fresh_thread_entry, \"ax\"",
    ".global fresh_thread_entry",
    "fresh_thread_entry:",
    "    mov [rip + {regs} + 0*8], rax",
    "    mov [rip + {regs} + 1*8], rbx",
    "    mov [rip + {regs} + 2*8], rcx",
    "    mov [rip + {regs} + 3*8], rdx",
    "    mov [rip + {regs} + 4*8], rsi",
    "    mov [rip + {regs} + 5*8], rdi",
    "    mov [rip + {regs} + 6*8], rbp",
    "    mov [rip + {regs} + 7*8], r8",
    "    mov [rip + {regs} + 8*8], r9",
    "    mov [rip + {regs} + 9*8], r10",
    "    mov [rip + {regs} + 10*8], r11",
    "    mov [rip + {regs} + 11*8], r12",
    "    mov [rip + {regs} + 12*8], r13",
    "    mov [rip + {regs} + 13*8], r14",
    "    mov [rip + {regs} + 14*8], r15",
    "    mov [rip + {regs} + 15*8], rsp",
    "    pushfq",
    "    pop rax",
    "    mov [rip + {regs} + 16*8], rax",
    "    mov ax, fs",
    "    movzx eax, ax",
    "    mov bx, gs",
    "    movzx ebx, bx",
    "    shl ebx, 16",
    "    or eax, ebx",
    "    mov [rip + {regs} + 17*8], rax",
    "    mov eax, {exit}",
    "    xor edi, edi",
    "    syscall",
    "    ud2",
    ".popsection",
    regs = sym FRESH_REGS,
    exit = const nr::THREAD_EXIT,
);
extern "C" {
    fn fresh_thread_entry();
}

const FRESH_ARG: u64 = 0x1234_5678_9abc_def0;

/// Starts a thread at `fresh_thread_entry` by hand and checks what it saw.
fn fresh_thread_state() -> Result<(), &'static str> {
    let stack = sys::map(16 * 1024).map_err(|_| "map failed")? as u64;
    let top = stack + 16 * 1024;
    // SAFETY: the thread runs `fresh_thread_entry`, which touches no stack but PUSHFQ's slot.
    let tid = Error::result(unsafe { sys::raw::syscall4(nr::THREAD_CREATE, fresh_thread_entry as *const () as u64, top, FRESH_ARG, 0) })
        .map_err(|_| "thread_create failed")?;
    let _ = tid;
    for _ in 0..10_000 {
        if FRESH_REGS[17].load(Ordering::Acquire) != u64::MAX {
            break;
        }
        let _ = sys::yield_now();
    }
    let names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rsp", "rflags", "fs|gs"];
    let mut ok = true;
    for (i, name) in names.iter().enumerate() {
        let got = FRESH_REGS[i].load(Ordering::Acquire);
        let want = match *name {
            "rdi" => FRESH_ARG,
            "rsp" => top,
            "rflags" => 0x202,
            _ => 0,
        };
        if got != want {
            println!("hazards: new thread starts with {name}={got:#x}, documented {want:#x}");
            ok = false;
        }
    }
    if fsgsbase() {
        // The bases are checked by the thread that reads them: see `segment_bases`.
    }
    if ok { Ok(()) } else { Err("a new thread's registers differ from the documented state") }
}

/// FS and GS bases survive context switches: two of these run pinned to one CPU, each with
/// its own bases, yielding in turn.
fn segment_bases(seed: usize) {
    if !fsgsbase() {
        return;
    }
    let fs = 0x1000_0000_0000 + seed as u64 * 0x1000;
    let gs = 0x2000_0000_0000 + seed as u64 * 0x1000;
    // SAFETY: WRFSBASE/WRGSBASE are enabled (CR4.FSGSBASE, CPUID says so); nothing in this
    // program addresses through FS or GS.
    unsafe { asm!("wrfsbase {}", "wrgsbase {}", in(reg) fs, in(reg) gs) };
    for _ in 0..200 {
        let _ = sys::yield_now();
        let (f, g): (u64, u64);
        // SAFETY: reads the two bases.
        unsafe { asm!("rdfsbase {}", "rdgsbase {}", out(reg) f, out(reg) g) };
        if f != fs || g != gs {
            fail_case();
        }
    }
    // SAFETY: as above; the bases go back to 0.
    unsafe { asm!("wrfsbase {0}", "wrgsbase {0}", in(reg) 0u64) };
}

const MF: u8 = 16;
const XM: u8 = 19;

/// x87 and SSE run in ring 3 (CR0.EM clear, CR4.OSFXSR set, CR0.TS never set: no #NM).
fn fpu_runs(_: usize) {
    // SAFETY: touches only FPU/SIMD registers, which this soft-float program never uses.
    unsafe { asm!("fld1", "fstp st(0)", "xorps xmm0, xmm0", "addps xmm0, xmm0", options(nomem, nostack)) };
}

/// An unmasked SIMD divide by zero: #XM.
fn simd_divide_by_zero(_: usize) {
    let mxcsr: u32 = 0x1f80 & !(1 << 9); // ZM cleared
    // SAFETY: as above; the DIVSS faults.
    unsafe {
        asm!(
            "ldmxcsr [{m}]", "xorps xmm1, xmm1", "mov eax, 0x3f800000", "movd xmm0, eax", "divss xmm0, xmm1",
            m = in(reg) &mxcsr, out("eax") _, options(nostack),
        )
    };
}

/// An unmasked x87 divide by zero, reported at the next waiting x87 instruction: #MF.
fn x87_divide_by_zero(_: usize) {
    let fcw: u16 = 0x37f & !(1 << 2); // ZM cleared
    // SAFETY: as above; FWAIT raises the pending #MF.
    unsafe { asm!("fninit", "fldcw [{c}]", "fld1", "fldz", "fdivp", "fwait", c = in(reg) &fcw, options(nostack)) };
}

/// LDMXCSR with a reserved bit set: #GP(0) in ring 3.
fn bad_mxcsr(_: usize) {
    let mxcsr: u32 = 0x1f80 | 1 << 16;
    // SAFETY: faults before changing anything.
    unsafe { asm!("ldmxcsr [{m}]", m = in(reg) &mxcsr, options(nostack, readonly)) };
}

#[repr(C, align(64))]
struct SaveImage([u8; 4096]);

/// XRSTOR (or FXRSTOR without XSAVE) of a corrupt image: #GP(0) in ring 3, never in the kernel.
fn corrupt_save_image(_: usize) {
    let xsave = cpu_has(1, 0, 2, 27);
    let mut img = SaveImage([0; 4096]);
    if xsave {
        img.0[512..520].copy_from_slice(&(1u64 << 9).to_le_bytes());
    } else {
        img.0[24..28].copy_from_slice(&(0x1f80u32 | 1 << 16).to_le_bytes());
    }
    // SAFETY: the restore reads `img` and faults on it (XSTATE_BV names PKRU, which XCR0 does
    // not enable; for FXRSTOR, MXCSR has a reserved bit), so no register changes.
    unsafe {
        if xsave {
            asm!("xrstor64 [{}]", in(reg) img.0.as_ptr(), in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, readonly));
        } else {
            asm!("fxrstor64 [{}]", in(reg) img.0.as_ptr(), options(nostack, readonly));
        }
    }
}

const CASES: &[Case] = &[
    Case { name: "x87 and SSE in ring 3", run: fpu_runs, expect: || Expect::Survives },
    Case {
        name: "SIMD divide by zero unmasked",
        run: simd_divide_by_zero,
        expect: || if qemu_tcg() { Expect::KilledOrSurvives(XM) } else { Expect::Killed(XM, None) },
    },
    Case { name: "x87 divide by zero unmasked", run: x87_divide_by_zero, expect: || Expect::Killed(MF, None) },
    Case {
        name: "ldmxcsr with a reserved bit",
        run: bad_mxcsr,
        expect: || if qemu_tcg() { Expect::KilledOrSurvives(GP) } else { Expect::Killed(GP, Some(0)) },
    },
    Case { name: "xrstor of a corrupt image", run: corrupt_save_image, expect: || Expect::Killed(GP, Some(0)) },
    Case { name: "int1 (icebp)", run: int1, expect: || Expect::Killed(DB, None) },
    Case { name: "int3", run: int3, expect: || Expect::Killed(BP, None) },
    Case { name: "int 0x80", run: int80, expect: || Expect::Killed(GP, Some(0x402)) },
    Case { name: "sysenter", run: sysenter, expect: || Expect::KilledAnyOf(&[GP, UD]) },
    Case { name: "compat mode + syscall", run: |_| compat_then([0x0f, 0x05]), expect: || Expect::Killed(UD, None) },
    Case { name: "compat mode + sysenter", run: |_| compat_then([0x0f, 0x34]), expect: || Expect::KilledAnyOf(&[GP, UD]) },
    Case { name: "compat mode + into", run: |_| compat_then([0xce, 0]), expect: || Expect::Killed(GP, Some(4 * 8 + 2)) },
    Case { name: "far jump to the kernel code segment", run: |_| far_jump(0x08), expect: || Expect::Killed(GP, Some(0x08)) },
    Case { name: "far jump to the TSS", run: |_| far_jump(0x30), expect: || Expect::Killed(GP, Some(0x30)) },
    Case { name: "compat mode + int 0x80", run: |_| compat_then([0xcd, 0x80]), expect: || Expect::Killed(GP, Some(0x402)) },
    Case { name: "syscall with rsp in the kernel half", run: |_| syscall_with_rsp(0xffff_8000_0000_0000), expect: || Expect::Survives },
    Case { name: "syscall with non-canonical rsp", run: |_| syscall_with_rsp(0x8000_0000_0000_0000), expect: || Expect::Survives },
    Case { name: "syscall with rsp at 1<<47", run: |_| syscall_with_rsp(1 << 47), expect: || Expect::Survives },
    Case { name: "return context rip=1<<47", run: |_| return_to(1 << 47), expect: || Expect::Killed(GP, None) },
    Case { name: "return context rip=1<<63", run: |_| return_to(1 << 63), expect: || Expect::Killed(GP, None) },
    Case { name: "return context rip in the kernel", run: |_| return_to(0xffff_ffff_8000_0000), expect: || Expect::Killed(PF, None) },
    Case { name: "return context rsp in the kernel", run: return_with_kernel_rsp, expect: || Expect::Survives },
    Case { name: "return context with RF", run: |_| return_with_flags(1 << 16), expect: || Expect::Survives },
    Case { name: "return context with TF", run: |_| return_with_flags(RFLAGS_TF), expect: || Expect::Survives },
    // DR6 is sticky: unless the kernel clears it, the BS bit of this single step would make
    // the INT1 after it look like another single step, and the thread would survive it.
    Case { name: "single step, then int1", run: |_| { return_with_flags(RFLAGS_TF); int1(0) }, expect: || Expect::Killed(DB, None) },
    Case { name: "TF across syscall", run: |_| syscall_with_flags(RFLAGS_TF), expect: || Expect::Survives },
    Case { name: "NT across syscall", run: |_| syscall_with_flags(RFLAGS_NT), expect: || Expect::Survives },
    Case { name: "AC across syscall", run: |_| syscall_with_flags(RFLAGS_AC), expect: || Expect::Survives },
    Case { name: "NT|AC|TF across syscall", run: |_| syscall_with_flags(RFLAGS_NT | RFLAGS_AC | RFLAGS_TF), expect: || Expect::Survives },
    Case { name: "mov ss + int3", run: |_| mov_ss_then(0xcc), expect: || Expect::Killed(BP, None) },
    Case { name: "mov ss + int1", run: |_| mov_ss_then(0xf1), expect: || Expect::Killed(DB, None) },
    Case { name: "mov ss + syscall", run: |_| mov_ss_then(0x05), expect: || Expect::Survives },
    Case { name: "pop ss", run: pop_ss, expect: || Expect::Killed(UD, None) },
    Case { name: "jmp to 1<<63", run: |_| jump_to(1 << 63), expect: || Expect::Killed(GP, Some(0)) },
    Case { name: "jmp to 1<<47", run: |_| jump_to(1 << 47), expect: || Expect::Killed(GP, Some(0)) },
    Case { name: "jmp into the kernel", run: |_| jump_to(0xffff_ffff_8000_0000), expect: || Expect::Killed(PF, None) },
];

const DESCRIPTOR_READS: [&str; 5] = ["sgdt", "sidt", "sldt", "smsw", "str"];

// --- the runner ----------------------------------------------------------------------------

static GO: AtomicBool = AtomicBool::new(false);
static CASE_FN: AtomicUsize = AtomicUsize::new(0);
static CASE_ARG: AtomicUsize = AtomicUsize::new(0);

/// Every case thread starts here and waits until the runner holds its thread capability (so a
/// thread that dies at once is still waited for).
fn case_thread(_: usize) {
    while !GO.load(Ordering::Acquire) {
        let _ = sys::yield_now();
    }
    // SAFETY: the runner stored a `fn(usize)` before starting this thread.
    let f: fn(usize) = unsafe { core::mem::transmute(CASE_FN.load(Ordering::Acquire)) };
    f(CASE_ARG.load(Ordering::Acquire));
}

fn run_one(f: fn(usize), arg: usize, cpu: usize) -> Result<ThreadExit, Error> {
    GO.store(false, Ordering::Release);
    CASE_FN.store(f as usize, Ordering::Release);
    CASE_ARG.store(arg, Ordering::Release);
    let tid = thread::spawn(case_thread, 0, Some(cpu))?;
    let cap = ipc::thread_cap(tid)?;
    GO.store(true, Ordering::Release);
    let exit = ipc::thread_wait(cap);
    let _ = ipc::cap_delete(cap);
    exit
}

struct Tally {
    cases: usize,
    failed: usize,
}

impl Tally {
    fn check(&mut self, name: &str, arg: usize, expect: Expect, got: Result<ThreadExit, Error>) {
        self.cases += 1;
        match got {
            Ok(g) if expect.matches(g) => {}
            other => {
                self.failed += 1;
                println!("hazards: FAIL {name} ({arg}): expected {expect:?}, got {other:?}");
            }
        }
    }
}

// --- the victim ----------------------------------------------------------------------------

static STOP_VICTIMS: AtomicBool = AtomicBool::new(false);
static VICTIM_ROUNDS: AtomicU64 = AtomicU64::new(0);

/// Holds a pattern in every callee-saved register across a yield and in its stack across
/// yields and sleeps; any change ends it with #UD (the runner checks that every victim exited).
fn victim(cpu: usize) {
    let mut memory = [0u64; 64];
    let seed = 0x5a5a_0000_0000_0000 | (cpu as u64) << 32;
    while !STOP_VICTIMS.load(Ordering::Acquire) {
        for (i, w) in memory.iter_mut().enumerate() {
            *w = seed ^ i as u64;
        }
        let bad: u64;
        // SAFETY: RBX and RBP (which asm cannot name as clobbers) are saved and restored
        // around the pattern, R12-R15 are declared clobbered; the SYSCALL (YIELD) clobbers
        // only RAX, RCX and R11 by the ABI.
        unsafe {
            asm!(
                "push rbx", "push rbp",
                "mov rbx, {s}", "lea rbp, [rbx + 1]", "lea r12, [rbx + 2]", "lea r13, [rbx + 3]",
                "lea r14, [rbx + 4]", "lea r15, [rbx + 5]",
                "mov eax, {yield_nr}",
                "syscall",
                "xor eax, eax",
                "cmp rbx, {s}", "setne al", "or {b}, rax",
                "lea rcx, [rbx + 1]", "cmp rbp, rcx", "setne al", "or {b}, rax",
                "lea rcx, [rbx + 2]", "cmp r12, rcx", "setne al", "or {b}, rax",
                "lea rcx, [rbx + 3]", "cmp r13, rcx", "setne al", "or {b}, rax",
                "lea rcx, [rbx + 4]", "cmp r14, rcx", "setne al", "or {b}, rax",
                "lea rcx, [rbx + 5]", "cmp r15, rcx", "setne al", "or {b}, rax",
                "pop rbp", "pop rbx",
                s = in(reg) seed,
                b = inout(reg) 0u64 => bad,
                yield_nr = const nr::YIELD,
                out("rax") _, out("rcx") _, out("r11") _,
                out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            )
        };
        if bad != 0 || memory.iter().enumerate().any(|(i, w)| *w != seed ^ i as u64) {
            fail_case();
        }
        VICTIM_ROUNDS.fetch_add(1, Ordering::Relaxed);
        // Sleep between rounds so the victims leave the CPUs to the cases (on TCG every busy
        // vCPU takes host time); the pattern is checked across the sleep as well.
        let _ = sys::sleep_ms(1);
        if memory.iter().enumerate().any(|(i, w)| *w != seed ^ i as u64) {
            fail_case();
        }
    }
}

pub fn run() -> i32 {
    let cpus = sys::cpu_count().unwrap_or(1);
    println!("hazards: {} cases on {cpus} CPUs, UMIP {}, FSGSBASE {}", CASES.len() + 256 + PRIVILEGED.len() + DESCRIPTOR_READS.len() + 2, umip(), fsgsbase());
    let mut victims = [0u64; 64];
    for (cpu, slot) in victims.iter_mut().enumerate().take(cpus.min(64)) {
        match thread::spawn(victim, cpu, Some(cpu)).and_then(ipc::thread_cap) {
            Ok(cap) => *slot = cap,
            Err(e) => {
                println!("hazards: cannot start the victim on cpu {cpu}: {e:?}");
                return 1;
            }
        }
    }
    let mut t = Tally { cases: 0, failed: 0 };
    let mut cpu = 0;
    let mut next_cpu = || {
        cpu = (cpu + 1) % cpus;
        cpu
    };
    for n in 0..256usize {
        let expect = if n == 3 { Expect::Killed(BP, None) } else { Expect::Killed(GP, Some(n as u32 * 8 + 2)) };
        t.check("int n", n, expect, run_one(int_n, n, next_cpu()));
    }
    println!("hazards: int 0..=255 done ({} failed so far)", t.failed);
    for c in CASES {
        t.check(c.name, 0, (c.expect)(), run_one(c.run, 0, next_cpu()));
    }
    // Where the held-back #DB lands differs: on IDT hardware in ring 0 at the first
    // instruction of the INT3/INT1/SYSCALL entry (the CVE; the kernel counts and ignores it);
    // under FRED it is kept pending across the event and delivered in ring 3 after ERETU, where
    // a watchpoint the thread did not set kills it with #DB; QEMU's TCG and Bochs with FRED off
    // deliver it in ring 0 after SYSCALL at best and drop it on INT3/INT1. Whatever the
    // delivery, the kernel and every other thread must be unaffected, and the thread ends in
    // one of the stated ways. The log shows how many #DB reached ring 0.
    for (name, insn, expect) in [
        ("watched mov ss + int3", 0xcc, Expect::KilledAnyOf(&[BP, DB])),
        ("watched mov ss + int1", 0xf1, Expect::Killed(DB, None)),
        ("watched mov ss + syscall", 0x05, Expect::KilledOrSurvives(DB)),
    ] {
        let cpu = next_cpu();
        t.check(name, insn, expect, run_one(watched_mov_ss, insn, cpu));
        let before = WATCH_DBS.load(Ordering::Acquire);
        t.check("disarm the watchpoint", cpu, Expect::Survives, run_one(disarm_watch, 0, cpu));
        let after = WATCH_DBS.load(Ordering::Acquire);
        println!("hazards: {name}: {} #DB in ring 0 on cpu {cpu}", after.saturating_sub(before));
    }
    for (i, name) in PRIVILEGED.iter().enumerate() {
        let expect = match *name {
            "wbinvd" => Expect::KilledOrSurvives(GP),
            // With CR4.FRED set SWAPGS is #UD at any privilege level (FRED spec 346446 §9).
            "swapgs" => Expect::KilledAnyOf(&[GP, UD]),
            _ => Expect::Killed(GP, Some(0)),
        };
        t.check(name, i, expect, run_one(privileged, i, next_cpu()));
    }
    let reads = if umip() { Expect::Killed(GP, Some(0)) } else { Expect::Survives };
    for (i, name) in DESCRIPTOR_READS.iter().enumerate() {
        t.check(name, i, reads, run_one(descriptor_read, i, next_cpu()));
    }
    // FS/GS bases: two threads on one CPU switching between each other.
    let pair: [Result<u64, Error>; 2] = [0, 1].map(|i| thread::spawn(segment_bases, i + 1, Some(0)).and_then(ipc::thread_cap));
    for (i, cap) in pair.into_iter().enumerate() {
        let got = cap.and_then(ipc::thread_wait);
        t.check("fs/gs bases across switches", i, Expect::Survives, got);
    }
    t.cases += 1;
    if let Err(why) = fresh_thread_state() {
        println!("hazards: FAIL {why}");
        t.failed += 1;
    }
    STOP_VICTIMS.store(true, Ordering::Release);
    for (cpu, cap) in victims.iter().enumerate().take(cpus.min(64)) {
        let got = ipc::thread_wait(*cap);
        t.check("victim registers and memory", cpu, Expect::Survives, got);
    }
    println!(
        "hazards: {} cases, {} failed; victims checked {} rounds",
        t.cases,
        t.failed,
        VICTIM_ROUNDS.load(Ordering::Relaxed)
    );
    i32::from(t.failed != 0)
}
