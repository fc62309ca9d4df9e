//! `sysret`: ordinary system calls must return by SYSRET with every register kept; each
//! return context SYSRET cannot restore safely (seed 001) must take IRET, and a non-canonical
//! return address must kill the thread, never the kernel.
//!
//! Every return context here is built by `set_return_context(rip, rsp, rflags)` from inside
//! one `asm!` block: RIP is a label in that block, RSP the block's own, so the thread resumes
//! exactly where the block expects. Since control comes back through an unusual path, each
//! such block declares every caller-saved register clobbered (`clobber_abi("C")`).

use abi::syscall::{CPU_ID, SET_RETURN_CONTEXT};
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use rt::sys::{self, ExitPathCounts};
use rt::{println, thread, Error};

const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_RF: u64 = 1 << 16;
/// The first address above the lower canonical half (abi::layout::USER_END).
const NONCANONICAL_RIP: u64 = abi::layout::USER_END;

const ORDINARY_CALLS: u64 = 1000;
/// The three IRET cases below: RCX != RIP, TF, RF.
const IRET_CASES: u64 = 3;

/// Set when the thread sent to a non-canonical address was not killed.
static NONCANONICAL_SURVIVED: AtomicBool = AtomicBool::new(false);

pub fn run() -> i32 {
    let mut failures = 0;
    let mut fail = |what: fmt::Arguments| {
        failures += 1;
        println!("sysret: FAIL: {what}");
    };

    // (a) Ordinary calls: SYSRET, and nothing but RAX, RCX, R11 changed.
    let Some(before) = counts() else { return 1 };
    for i in 0..ORDINARY_CALLS {
        if let Err(e) = cpu_id_keeping_registers() {
            fail(format_args!("ordinary call {i}: {e}"));
            break;
        }
    }
    let Some(after_ordinary) = counts() else {
        return 1;
    };
    println!("sysret: {ORDINARY_CALLS} cpu_id calls done, registers checked");
    // Page faults too: `map` only reserves, so every first touch of a page faults and the
    // kernel maps it (under an NMI storm, these are entries the NMIs can interrupt).
    match touch_fresh_pages() {
        Ok(pages) => println!("sysret: {pages} fresh pages faulted in, zeroed and written"),
        Err(e) => fail(format_args!("page faults: {e}")),
    }

    // (b) Each context SYSRET must not restore.
    match resume_at_other_label() {
        Resumed::AtLabel => println!("sysret: RCX != RIP: resumed at the new RIP"),
        Resumed::AfterSyscall(rax) => fail(format_args!(
            "RCX != RIP: resumed after SYSCALL (RAX {:?}), not at the new RIP",
            Error::result(rax)
        )),
    }
    for (name, flag) in [("TF", RFLAGS_TF), ("RF", RFLAGS_RF)] {
        let rax = resume_with_flags(flag);
        let flags_after = rflags();
        if let Err(e) = Error::result(rax) {
            fail(format_args!("{name} set: set_return_context failed: {e:?}"));
        } else if flags_after & RFLAGS_TF != 0 {
            fail(format_args!(
                "{name} set: TF still set afterwards (RFLAGS {flags_after:#x})"
            ));
        } else {
            println!("sysret: {name} set: resumed, RFLAGS now {flags_after:#x}");
        }
    }
    match thread::spawn(return_to_noncanonical, 0, None) {
        Ok(_) => {
            if let Err(e) = sys::wait_threads() {
                fail(format_args!("wait_threads: {e:?}"));
            } else if NONCANONICAL_SURVIVED.load(Ordering::Acquire) {
                fail(format_args!(
                    "a return to {NONCANONICAL_RIP:#x} did not kill the thread"
                ));
            }
        }
        Err(e) => fail(format_args!("cannot start the non-canonical thread: {e:?}")),
    }

    // (c) What the kernel counted.
    let Some(after) = counts() else { return 1 };
    println!(
        "sysret: exit paths: sysret={} iret={} bad_iret_kills={}",
        after.sysret, after.iret, after.bad_iret_kills
    );
    let sysrets = after_ordinary.sysret.wrapping_sub(before.sysret);
    let irets = after.iret.wrapping_sub(after_ordinary.iret);
    let kills = after
        .bad_iret_kills
        .wrapping_sub(after_ordinary.bad_iret_kills);
    println!("sysret: during this test: +{sysrets} sysret, +{irets} iret, +{kills} bad_iret_kills");
    if after.sysret == 0 && after.iret == 0 {
        // No system call has ever returned by SYSRET or IRET: the kernel runs FRED, where
        // every return is ERETU and there is no exit decision to check. The register checks
        // and the return contexts above still apply.
        println!("sysret: no SYSRET/IRET exits at all: the kernel returns by ERETU (FRED)");
    } else {
        if sysrets < ORDINARY_CALLS {
            fail(format_args!(
                "{ORDINARY_CALLS} ordinary calls left by SYSRET only {sysrets} times"
            ));
        }
        if irets < IRET_CASES {
            fail(format_args!(
                "{IRET_CASES} SYSRET-unsafe returns took IRET only {irets} times"
            ));
        }
    }
    // Where the non-canonical return faults is the CPU's choice: Intel raises #GP on the IRET
    // itself, in ring 0 (a bad-IRET kill); AMD, and QEMU's TCG, complete the IRET and fault
    // on the instruction fetch in ring 3. Either way the thread must be dead (checked above).
    println!(
        "sysret: the non-canonical return faulted {}",
        if kills >= 1 { "on the return instruction (IRET/ERETU), in ring 0" } else { "after the IRET, in ring 3" }
    );

    if failures == 0 {
        println!("sysret: ok");
        0
    } else {
        println!("sysret: {failures} failures");
        1
    }
}

fn counts() -> Option<ExitPathCounts> {
    sys::exit_path_counts()
        .inspect_err(|e| println!("sysret: FAIL: exit_path_counts failed: {e:?}"))
        .ok()
}

/// A register that came back from a system call changed.
struct Changed {
    register: &'static str,
    found: u64,
    expected: u64,
}

enum CallError {
    Failed(Error),
    Changed(Changed),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            CallError::Failed(e) => write!(f, "cpu_id failed: {e:?}"),
            CallError::Changed(c) => {
                write!(
                    f,
                    "{} changed from {:#x} to {:#x}",
                    c.register, c.expected, c.found
                )
            }
        }
    }
}

/// `cpu_id` with a distinct value in every register an operand can name, each checked after.
/// (RBX and RBP cannot be asm operands; the compiler's own use of them covers them.)
fn cpu_id_keeping_registers() -> Result<(), CallError> {
    const NAMES: [&str; 10] = [
        "rdi", "rsi", "rdx", "r8", "r9", "r10", "r12", "r13", "r14", "r15",
    ];
    let expected: [u64; 10] =
        core::array::from_fn(|i| 0x5eed_0000_0000_0000 | (i as u64) << 8 | 0xa5);
    let mut regs = expected;
    let rax: u64;
    // SAFETY: CPU_ID touches no memory; the ABI lets SYSCALL change only RAX, RCX and R11,
    // and every other named register is an in/out operand, so a change is seen, not trusted.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") CPU_ID => rax,
            inout("rdi") regs[0], inout("rsi") regs[1], inout("rdx") regs[2],
            inout("r8") regs[3], inout("r9") regs[4], inout("r10") regs[5],
            inout("r12") regs[6], inout("r13") regs[7], inout("r14") regs[8],
            inout("r15") regs[9],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        )
    };
    Error::result(rax).map_err(CallError::Failed)?;
    for ((register, found), expected) in NAMES.into_iter().zip(regs).zip(expected) {
        if found != expected {
            return Err(CallError::Changed(Changed {
                register,
                found,
                expected,
            }));
        }
    }
    Ok(())
}

enum Resumed {
    AtLabel,
    /// Back at the instruction after SYSCALL, with this RAX.
    AfterSyscall(u64),
}

/// RCX != RIP: resume at a label other than the instruction after SYSCALL, with the current
/// RSP and the very RFLAGS SYSCALL saves in R11, so that is the only condition.
fn resume_at_other_label() -> Resumed {
    let rax: u64;
    let landed: u64;
    // SAFETY: the new RIP is label 2 in this block and the new RSP is the block's own (nothing
    // between PUSHFQ/POP and SYSCALL leaves it changed), so the thread resumes as if SYSCALL
    // had returned there; all caller-saved registers are declared clobbered. PUSHFQ/POP keep
    // the stack balanced, and MOV/LEA do not change RFLAGS, so RDX equals what R11 gets.
    unsafe {
        asm!(
            "pushfq",
            "pop rdx",
            "lea rdi, [rip + 2f]",
            "mov rsi, rsp",
            "mov eax, {nr}",
            "syscall",
            "xor r8d, r8d",
            "jmp 3f",
            "2:",
            "mov r8d, 1",
            "3:",
            nr = const SET_RETURN_CONTEXT,
            out("rax") rax,
            out("r8") landed,
            clobber_abi("C"),
        )
    };
    if landed == 1 {
        Resumed::AtLabel
    } else {
        Resumed::AfterSyscall(rax)
    }
}

/// Resume at the instruction after SYSCALL (RCX == RIP) but with `extra` set in RFLAGS.
/// `extra` must be bits that read as 0 here (TF: no debugger; RF: PUSHFQ always stores 0),
/// so adding them is OR-ing them, and LEA adds without touching RFLAGS.
fn resume_with_flags(extra: u64) -> u64 {
    let rax: u64;
    // SAFETY: the new RIP is the label right after SYSCALL and the new RSP is the block's
    // own, so only RFLAGS differs from a normal return. With TF, the kernel takes the
    // single-step #DB after the first instruction and clears TF; RF only suppresses an
    // instruction breakpoint. All caller-saved registers are declared clobbered.
    unsafe {
        asm!(
            "pushfq",
            "pop rdx",
            "lea rdx, [rdx + r9]",
            "lea rdi, [rip + 2f]",
            "mov rsi, rsp",
            "mov eax, {nr}",
            "syscall",
            "2:",
            // With TF the single-step #DB comes after this instruction, so code after the
            // block (reading RFLAGS) sees what the kernel left, not the trapping TF.
            "nop",
            nr = const SET_RETURN_CONTEXT,
            in("r9") extra,
            out("rax") rax,
            clobber_abi("C"),
        )
    };
    rax
}

fn rflags() -> u64 {
    let flags;
    // SAFETY: PUSHFQ/POP only move RFLAGS through the stack, balanced.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags
}

fn stack_pointer() -> u64 {
    let rsp;
    // SAFETY: reads RSP, changes nothing.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    rsp
}

/// A thread that asks to return to a non-canonical RIP: the kernel must not SYSRET there
/// (CVE-2012-0217) and must kill the thread when IRET faults.
fn return_to_noncanonical(_: usize) {
    let tid = sys::thread_id().unwrap_or(u64::MAX);
    println!("sysret: thread {tid} returns to {NONCANONICAL_RIP:#x}; the kernel must kill it");
    // SAFETY: the kernel kills this thread; if instead the call returns here, nothing else
    // changed.
    let r = unsafe { sys::set_return_context(NONCANONICAL_RIP, stack_pointer(), rflags()) };
    NONCANONICAL_SURVIVED.store(true, Ordering::Release);
    println!("sysret: thread {tid} survived its return to {NONCANONICAL_RIP:#x}: {r:?}");
}

/// Maps 16 pages, touches each (a page fault apiece), checks they read as zero and keep what
/// is written, then unmaps them.
fn touch_fresh_pages() -> Result<usize, &'static str> {
    const PAGES: usize = 16;
    let len = PAGES * 4096;
    let region = sys::map(len).map_err(|_| "map failed")?;
    for p in 0..PAGES {
        // SAFETY: `region` is `len` bytes this process just mapped and nothing else uses.
        unsafe {
            let word = region.add(p * 4096 + 8) as *mut u64;
            if word.read_volatile() != 0 {
                return Err("a fresh page was not zero");
            }
            word.write_volatile(0x5eed_0000 + p as u64);
        }
    }
    for p in 0..PAGES {
        // SAFETY: as above.
        if unsafe { (region.add(p * 4096 + 8) as *const u64).read_volatile() } != 0x5eed_0000 + p as u64 {
            return Err("a page lost what was written to it");
        }
    }
    // SAFETY: the region came from `map` above and nothing refers to it any more.
    unsafe { sys::unmap(region, len) }.map_err(|_| "unmap failed")?;
    Ok(PAGES)
}
