//! Boot-test scenarios, chosen with `test=NAME` on the kernel command line. Each one ends with
//! `TEST NAME: PASS` or `TEST NAME: FAIL reason` and powers the machine off (see `harness`).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch::x86_64::entry::extable;
use crate::arch::x86_64::{cea, percpu, smp};
use crate::harness::{finish, Verdict};

pub const NAMES: [&str; 5] = ["boot", "ipi", "page_fault", "stack_overflow", "timer"];

/// Runs scenario `name` on the BSP once every CPU is online; never returns.
pub fn run(name: &'static str) -> ! {
    log::info!("running scenario {name} on {} CPUs", smp::online());
    match name {
        "boot" => finish(Verdict::Pass),
        "ipi" => ipi(),
        "page_fault" => page_fault(),
        "stack_overflow" => stack_overflow(),
        "timer" => timer(),
        other => finish(Verdict::Fail(format_args!("unknown scenario {other:?}; known: {NAMES:?}"))),
    }
}

/// Waits, sleeping between timer ticks, until `done()` or `ticks` of this CPU's timer passed.
fn wait_until(ticks: u64, done: impl Fn() -> bool) -> bool {
    let start = percpu::this().ticks.load(Ordering::Relaxed);
    while !done() {
        if percpu::this().ticks.load(Ordering::Relaxed) - start >= ticks {
            return done();
        }
        x86_64::instructions::interrupts::enable_and_hlt();
    }
    true
}

static PING_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Every CPU pings every CPU (itself included, through a self-IPI) and waits for each answer.
fn ipi() -> ! {
    fn ping_everyone() {
        let n = smp::online();
        for target in 0..n {
            smp::ping(target);
        }
        let all = wait_until(500, || (0..n).all(smp::answered_by));
        let me = percpu::this().cpu_index;
        if all {
            log::info!("cpu {me}: all {n} CPUs answered its ping");
        } else {
            let missing = (0..n).filter(|&t| !smp::answered_by(t)).count();
            log::error!("cpu {me}: {missing} of {n} CPUs never answered its ping");
            PING_FAILURES.fetch_add(1, Ordering::AcqRel);
        }
    }
    smp::run_on_all(ping_everyone);
    match PING_FAILURES.load(Ordering::Acquire) {
        0 => finish(Verdict::Pass),
        f => finish(Verdict::Fail(format_args!("{f} CPUs missed answers"))),
    }
}

static FAULT_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// Every CPU reads its own entry-stack guard page, which must be unmapped: the #PF handler
/// must report the fault with that exact CR2 and resume at the fixup.
fn page_fault() -> ! {
    fn probe_guard() {
        let me = percpu::this();
        let guard = cea::stack_tops(me.cpu_index).entry - 2 * cea::PAGE as u64 + 0x10;
        assert_eq!(cea::guard_containing(me.cpu_index, guard), Some("entry stack"));
        me.last_fixup_cr2.store(0, Ordering::Relaxed);
        let read = extable::probe_read_u64(guard);
        let cr2 = me.last_fixup_cr2.load(Ordering::Relaxed);
        if read.is_none() && cr2 == guard {
            log::info!("cpu {}: kernel #PF at {guard:#x} reported with the right CR2", me.cpu_index);
        } else {
            log::error!("cpu {}: read of guard {guard:#x} gave {read:?}, CR2 seen {cr2:#x}", me.cpu_index);
            FAULT_FAILURES.fetch_add(1, Ordering::AcqRel);
        }
    }
    smp::run_on_all(probe_guard);
    match FAULT_FAILURES.load(Ordering::Acquire) {
        0 => finish(Verdict::Pass),
        f => finish(Verdict::Fail(format_args!("{f} CPUs did not see the expected #PF"))),
    }
}

static OVERFLOW_STARTED: AtomicBool = AtomicBool::new(false);

/// The last CPU recurses until its kernel stack runs into the guard page. The #PF cannot be
/// delivered on the overflowed stack, so the CPU raises #DF on its own IST stack, whose
/// handler checks where it is and ends the scenario.
fn stack_overflow() -> ! {
    #[allow(unconditional_recursion)]
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let mut frame = [0u8; 256];
        core::hint::black_box(&mut frame);
        frame[0] = depth as u8;
        recurse(depth + 1) + core::hint::black_box(frame[1]) as u64
    }
    fn overflow() {
        let me = percpu::this();
        me.expect_stack_overflow.store(true, Ordering::Release);
        OVERFLOW_STARTED.store(true, Ordering::Release);
        log::info!("cpu {}: recursing towards the guard page at {:#x}", me.cpu_index, me.boot_stack_bottom - 4096);
        core::hint::black_box(recurse(0));
    }
    let target = smp::online() - 1;
    if target == percpu::this().cpu_index {
        overflow();
    } else {
        smp::run_on(target, overflow);
    }
    wait_until(1000, || false);
    finish(Verdict::Fail(format_args!(
        "no double fault reported by cpu {target} (recursion started: {})",
        OVERFLOW_STARTED.load(Ordering::Acquire)
    )))
}

/// Every CPU's LAPIC timer must tick at least 10 times.
fn timer() -> ! {
    const WANT: u64 = 10;
    let n = smp::online();
    if wait_until(1000, || (0..n).all(|c| percpu::ticks_of(c) >= WANT)) {
        for c in 0..n {
            log::info!("cpu {c}: {} timer ticks", percpu::ticks_of(c));
        }
        finish(Verdict::Pass)
    }
    let slow = (0..n).filter(|&c| percpu::ticks_of(c) < WANT).count();
    finish(Verdict::Fail(format_args!("{slow} CPUs counted fewer than {WANT} ticks")))
}
