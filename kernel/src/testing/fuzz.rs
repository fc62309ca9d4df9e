//! The kernel side of the scenario `fuzz` (`cargo xtask fuzz`): init, with the servers up, runs
//! the system-call fuzzer (user/fuzz: a worker pinned to every CPU and a victim; its user side
//! is user/init/src/program/fuzz.rs) and exits with status 0 only if every worker made its
//! calls without an anomaly, the victim saw nothing change and echo still answered through the
//! name server. The kernel waits for init, up to `abi::harness::fuzz_time_limit_secs`, and
//! reports the frames left free (compare the boot's `frames free` line). This side runs in CPU
//! 0's idle context, so it begins only once CPU 0 has nothing else to run (its worker and
//! checker may be done by then): the limit catches a run that hangs on another CPU. A kernel
//! panic or exception ends the scenario on its own (and the host fails any log with `PANIC` or
//! `EXCEPTION` in it).
//!
//! Command-line words: `fuzz_seed=S` and `fuzz_count=N` (see `cmdline`), passed on to init.

use crate::arch::x86_64::{apic, percpu, smp};
use crate::testing::harness::{finish, Verdict};
use crate::mm::phys;
use core::sync::atomic::Ordering;

/// init's default when the command line names no count (user/init/src/program/fuzz.rs).
const DEFAULT_COUNT: u64 = 10_000;

fn count() -> u64 {
    let Ok(info) = crate::boot::BootInfo::from_bootloader() else { return DEFAULT_COUNT };
    let Ok(cmd) = crate::cmdline::Cmdline::parse(info.cmdline, |_| {}) else { return DEFAULT_COUNT };
    cmd.scenario_value("count").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_COUNT)
}

pub fn run() -> ! {
    let Some(init) = crate::syscall::ipc::init_process() else {
        finish(Verdict::Fail(format_args!("init did not start")))
    };
    let limit = abi::harness::fuzz_time_limit_secs(count());
    let me = percpu::this();
    let start = me.ticks.load(Ordering::Relaxed);
    while !init.is_finished() {
        if me.ticks.load(Ordering::Relaxed) - start >= limit * apic::TIMER_HZ {
            crate::klog::take_over(false);
            smp::backtrace_others(50_000_000);
            finish(Verdict::Fail(format_args!("the fuzz run did not finish in {limit} s ({} threads of init alive)", init.live_threads())));
        }
        crate::sched::idle_once();
    }
    log::info!("{} frames free after the run", phys::free_frames());
    let (parked, missed) = (crate::mm::heap::PARKED_TAKEN.load(Ordering::Relaxed), crate::mm::heap::PARKED_MISSED.load(Ordering::Relaxed));
    log::info!("kernel objects made fallibly: {parked} (blocks parked but not taken: {missed})");
    match init.exit_code() {
        // As in `servers`: every object a call made must have come from its parked block.
        0 if missed != 0 => finish(Verdict::Fail(format_args!("fallible Arc: {missed} parked blocks not taken"))),
        0 => finish(Verdict::Pass),
        code => finish(Verdict::Fail(format_args!("init exited with status {code} (see the fuzz lines above)"))),
    }
}
