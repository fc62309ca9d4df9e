//! The victim: a process that does nothing but check, while the workers fuzz, that the kernel
//! leaves it alone. A checker thread pinned to every CPU loops until told to stop:
//!
//! - it loads a distinct pattern into every register the ABI preserves (RBX, RBP, RDI, RSI,
//!   RDX, R8-R10, R12-R15), yields, asks its CPU, spins long enough for timer interrupts and
//!   preemption to hit it, yields again, and checks every one of them;
//! - it re-reads a slice of a 256 KiB mapped pattern (and a pattern on its own stack).
//!
//! The main thread waits on the stop notification (init signals it when the workers are done),
//! stops the checkers, checks the whole pattern once more and prints the verdict: exit status 0
//! only if nothing changed.
//!
//! Start capabilities: `initial(0)` the console (SEND), `initial(1)` the stop notification.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use rt::{ipc, println, sys};

const STOP: u64 = abi::cap::initial(1);
const PATTERN_WORDS: u64 = 256 * 1024 / 8;
/// Words checked per round by each checker.
const SLICE_WORDS: u64 = 512;
/// Spin iterations between the two yields of a round, with the registers live.
const SPINS: u32 = 5_000;

static STOPPING: AtomicBool = AtomicBool::new(false);
static PATTERN: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static REGISTER_CHANGES: AtomicU64 = AtomicU64::new(0);
static MEMORY_CHANGES: AtomicU64 = AtomicU64::new(0);
static REPORTED: AtomicU64 = AtomicU64::new(0);

fn word(i: u64) -> u64 {
    (i ^ 0x0f0f_5a5a).wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(29)
}

fn report(what: core::fmt::Arguments) {
    if REPORTED.fetch_add(1, Ordering::Relaxed) < 8 {
        println!("victim: CHANGED: {what}");
    }
}

fn check_pattern(from: u64, words: u64) {
    let base = PATTERN.load(Ordering::Acquire);
    for i in from..from + words {
        let i = i % PATTERN_WORDS;
        // SAFETY: the pattern region was mapped and filled by `run` before any checker
        // started and stays mapped for the life of the process; nothing writes it after.
        let v = unsafe { core::ptr::read_volatile((base + 8 * i) as *const u64) };
        if v != word(i) {
            MEMORY_CHANGES.fetch_add(1, Ordering::Relaxed);
            report(format_args!("pattern word {i} at {:#x} is {v:#x}, not {:#x}", base + 8 * i, word(i)));
        }
    }
}

/// One round of register checks: the registers the ABI preserves, loaded with `seed`-derived
/// values, across two YIELDs, a CPU_ID and a spin. Returns how many came back changed.
fn registers_round(seed: u64) -> u32 {
    let v: [u64; 10] = core::array::from_fn(|i| word(seed.wrapping_add(i as u64 * 0x1_0000_0001)));
    let mut o = v;
    let rbx_rbp_diff: u64;
    // SAFETY: YIELD and CPU_ID touch no memory; RBX and RBP are saved and restored around the
    // block and carry the complements of R12 and R13 meanwhile.
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "mov rbx, r12",
            "not rbx",
            "mov rbp, r13",
            "not rbp",
            "mov eax, {yield_}",
            "syscall",
            "mov eax, {cpu_id}",
            "syscall",
            "mov ecx, {spins}",
            "2:",
            "pause",
            "dec ecx",
            "jnz 2b",
            "mov eax, {yield_}",
            "syscall",
            "not rbx",
            "xor rbx, r12",
            "not rbp",
            "xor rbp, r13",
            "or rbx, rbp",
            "mov rcx, rbx",
            "pop rbp",
            "pop rbx",
            yield_ = const abi::syscall::YIELD,
            cpu_id = const abi::syscall::CPU_ID,
            spins = const SPINS,
            inout("rdi") o[0], inout("rsi") o[1], inout("rdx") o[2], inout("r8") o[3],
            inout("r9") o[4], inout("r10") o[5], inout("r12") o[6], inout("r13") o[7],
            inout("r14") o[8], inout("r15") o[9],
            lateout("rax") _, lateout("rcx") rbx_rbp_diff, lateout("r11") _,
        );
    }
    let mut changed = (rbx_rbp_diff != 0) as u32;
    for (i, (got, want)) in o.iter().zip(v.iter()).enumerate() {
        if got != want {
            changed += 1;
            report(format_args!("register {} came back {got:#x}, not {want:#x}", ["rdi", "rsi", "rdx", "r8", "r9", "r10", "r12", "r13", "r14", "r15"][i]));
        }
    }
    if rbx_rbp_diff != 0 {
        report(format_args!("rbx or rbp came back changed (xor {rbx_rbp_diff:#x})"));
    }
    changed
}

fn checker(cpu: usize) {
    let mut stack_pattern = [0u64; 64];
    for (i, w) in stack_pattern.iter_mut().enumerate() {
        *w = word(i as u64 + 1000 * cpu as u64);
    }
    let mut round = 0u64;
    while !STOPPING.load(Ordering::Acquire) {
        round += 1;
        let changed = registers_round(round ^ (cpu as u64) << 40);
        REGISTER_CHANGES.fetch_add(changed as u64, Ordering::Relaxed);
        check_pattern((round * SLICE_WORDS + cpu as u64 * 4096) % PATTERN_WORDS, SLICE_WORDS);
        for (i, w) in stack_pattern.iter().enumerate() {
            // Volatile: the value must be re-read from the stack, not kept in a register.
            // SAFETY: `w` is a live element of this frame's array.
            if unsafe { core::ptr::read_volatile(w) } != word(i as u64 + 1000 * cpu as u64) {
                MEMORY_CHANGES.fetch_add(1, Ordering::Relaxed);
                report(format_args!("stack word {i} of the checker on cpu {cpu} changed"));
            }
        }
        ROUNDS.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn run() -> i32 {
    let cpus = sys::cpu_count().unwrap_or(1);
    let Ok(region) = sys::map((PATTERN_WORDS * 8) as usize) else {
        println!("victim: cannot map its pattern");
        return 1;
    };
    for i in 0..PATTERN_WORDS {
        // SAFETY: the region was just mapped read-write for this process.
        unsafe { core::ptr::write_volatile((region as u64 + 8 * i) as *mut u64, word(i)) };
    }
    PATTERN.store(region as u64, Ordering::Release);
    let mut started = 0;
    for cpu in 0..cpus {
        match rt::thread::spawn(checker, cpu, Some(cpu)) {
            Ok(_) => started += 1,
            Err(e) => println!("victim: cannot start the checker on cpu {cpu}: {e:?}"),
        }
    }
    println!("victim: checking registers and memory on {started} CPUs");
    let stop = ipc::notify_wait(STOP);
    STOPPING.store(true, Ordering::Release);
    let _ = sys::wait_threads();
    check_pattern(0, PATTERN_WORDS);
    let (rounds, regs, mem) =
        (ROUNDS.load(Ordering::Relaxed), REGISTER_CHANGES.load(Ordering::Relaxed), MEMORY_CHANGES.load(Ordering::Relaxed));
    let ok = stop.is_ok() && started == cpus && rounds > 0 && regs == 0 && mem == 0;
    println!(
        "victim: {rounds} rounds on {started} CPUs: {regs} register changes, {mem} memory changes{}: {}",
        if stop.is_ok() { "" } else { " (the stop notification failed)" },
        if ok { "unchanged" } else { "FAILED" }
    );
    if ok { 0 } else { 1 }
}
