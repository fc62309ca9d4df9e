//! The benchmark calls (`abi::syscall::BENCH_*`, 40..=49) and the opt-ins they switch on: what
//! the `bench` program needs to time each kind of event's round trip through the entry layer.
//!
//! They are answered before the dispatcher looks up the calling thread, so `bench_null` is the
//! entry and exit path and nothing else. The opt-ins are per process and off by default: without
//! them a user INT3 or a stray page fault still kills its thread (`user_faults` relies on it).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::{apic, percpu, smp};
use crate::sched;
use abi::syscall::{self as nr, bench_counter};
use abi::Error;

/// A process's benchmark opt-ins and what they counted.
#[derive(Default)]
pub struct BenchState {
    breakpoints_resume: AtomicBool,
    /// Where a page fault that demand paging does not resolve resumes; 0: nowhere (kill).
    fault_resume_rip: AtomicU64,
    breakpoints: AtomicU64,
    faults_resumed: AtomicU64,
}

/// How long `bench_self_nmi` waits for its NMI, in loop iterations.
const NMI_WAIT_SPINS: u64 = 10_000_000;

/// Runs benchmark call `frame.rax` (in 40..=49) and puts the result in RAX.
pub fn dispatch(frame: &mut TrapFrame) {
    let result = match frame.rax {
        nr::BENCH_NULL => Ok(0),
        nr::BENCH_SELF_NMI => Ok(self_nmi(frame.rdi == 1)),
        nr::BENCH_BREAKPOINTS_RESUME => with_state(|s| {
            s.breakpoints_resume.store(frame.rdi == 1, Ordering::Relaxed);
            Ok(0)
        }),
        nr::BENCH_FAULT_RESUME => {
            let rip = frame.rdi;
            if rip >= abi::layout::USER_END {
                Err(Error::BadAddress)
            } else {
                with_state(|s| {
                    s.fault_resume_rip.store(rip, Ordering::Relaxed);
                    Ok(0)
                })
            }
        }
        nr::BENCH_COUNTER => counter(frame.rdi),
        nr::BENCH_WATCH => watch(frame.rdi),
        _ => Err(Error::NoSuchCall),
    };
    frame.rax = match result {
        Ok(v) => v,
        Err(e) => e.to_raw(),
    };
}

fn with_state(f: impl FnOnce(&BenchState) -> Result<u64, Error>) -> Result<u64, Error> {
    let process = sched::current().and_then(|t| t.process.clone()).ok_or(Error::NoSuchCall)?;
    f(&process.bench)
}

fn counter(which: u64) -> Result<u64, Error> {
    let me = percpu::this();
    match which {
        bench_counter::TIMER_TICKS => Ok(me.ticks.load(Ordering::Relaxed)),
        bench_counter::NMIS => Ok(me.nmi_count.load(Ordering::Relaxed)),
        _ => {
            let process = sched::current().and_then(|t| t.process.clone()).ok_or(Error::NoSuchCall)?;
            match which {
                bench_counter::BREAKPOINTS => Ok(process.bench.breakpoints.load(Ordering::Relaxed)),
                bench_counter::FAULTS_RESUMED => Ok(process.bench.faults_resumed.load(Ordering::Relaxed)),
                bench_counter::DEMAND_FAULTS => Ok(process.demand_faults.load(Ordering::Relaxed)),
                _ => Err(Error::InvalidArgument),
            }
        }
    }
}

/// Arms (or, for 0, disarms) this CPU's user watchpoint; the kernel #DB count so far.
fn watch(addr: u64) -> Result<u64, Error> {
    use crate::testing::scenario::{debug_register, Watch};
    if addr == 0 {
        debug_register(0, None);
    } else if addr % 2 != 0 || !crate::syscall::uaccess::is_user_range(addr, 2) {
        return Err(Error::BadAddress);
    } else {
        debug_register(0, Some((addr, Watch::Access2)));
    }
    Ok(percpu::this().db_count.load(Ordering::Relaxed))
}

/// Sends this CPU an NMI (or, for the baseline, does everything but the send) and waits until it
/// has been handled. Returns the NMIs taken meanwhile: 1, or 0 for the baseline.
fn self_nmi(send: bool) -> u64 {
    let me = percpu::this();
    let before = me.nmi_count.load(Ordering::Relaxed);
    if send {
        apic::send_nmi(smp::apic_id(me.cpu_index));
        // The NMI is taken at an instruction boundary right after the ICR write; the wait only
        // guards against a CPU model that delivers it later.
        let mut spins = 0;
        while me.nmi_count.load(Ordering::Relaxed) == before && spins < NMI_WAIT_SPINS {
            core::hint::spin_loop();
            spins += 1;
        }
    }
    me.nmi_count.load(Ordering::Relaxed) - before
}

/// A #BP from ring 3: resume after the INT3 if the process opted in. INT3 is a trap, so the
/// frame's RIP already points past it.
pub fn resume_breakpoint() -> bool {
    let Some(process) = sched::current().and_then(|t| t.process.clone()) else { return false };
    if !process.bench.breakpoints_resume.load(Ordering::Relaxed) {
        return false;
    }
    process.bench.breakpoints.fetch_add(1, Ordering::Relaxed);
    true
}

/// A #PF from ring 3 that demand paging did not resolve: resume at the process's registered
/// RIP if it opted in.
pub fn resume_fault(frame: &mut TrapFrame) -> bool {
    let Some(process) = sched::current().and_then(|t| t.process.clone()) else { return false };
    let rip = process.bench.fault_resume_rip.load(Ordering::Relaxed);
    if rip == 0 {
        return false;
    }
    process.bench.faults_resumed.fetch_add(1, Ordering::Relaxed);
    frame.rip = rip;
    true
}
