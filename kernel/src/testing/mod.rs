//! What only test and benchmark builds contain (cargo feature `testing`):
//! - `scenario`: the `test=NAME` scenarios, run on the BSP once every CPU is up;
//! - `harness`: how a scenario ends (the verdict line, the emulator's exit port);
//! - `bench`: the benchmark system calls (`abi::syscall::BENCH_*`) and their opt-ins;
//! - `fuzz`: the kernel side of `cargo xtask fuzz`;
//! - here: the hooks through which the entry layer reports to a running scenario.
//!
//! A production kernel has none of this: its #DF and event handlers report and stop, `test=`
//! is ignored with a log line, and the benchmark system calls answer `NoSuchCall`.

pub mod bench;
pub mod fuzz;
pub mod harness;
pub mod scenario;

use core::sync::atomic::Ordering;

use crate::arch::x86_64::entry::frame::TrapFrame;
use crate::arch::x86_64::entry::{self, Backend};
use crate::arch::x86_64::{cea, percpu};
use harness::Verdict;

/// A #DF while the `stack_overflow` scenario expects one: it passes if the faulting RSP is at
/// this CPU's boot-stack guard page and the handler runs on the #DF stack (its IST slot, or
/// FRED's stack level 3). Returns when no scenario expects a #DF.
pub fn on_double_fault(frame: &TrapFrame, handler_rsp: u64) {
    let me = percpu::this();
    if !me.expect_stack_overflow.load(Ordering::Relaxed) {
        return;
    }
    let guard = me.boot_stack_bottom - 4096..me.boot_stack_bottom;
    let rsp_near_guard = frame.rsp >= guard.start && frame.rsp < me.boot_stack_bottom + 4096;
    log::info!(
        "#DF (vector 8) on cpu {} (rsp now {handler_rsp:#x}): interrupted rip={:#x} rsp={:#x}, guard page {:#x}..{:#x}",
        me.cpu_index,
        frame.rip,
        frame.rsp,
        guard.start,
        guard.end
    );
    let tops = cea::stack_tops(me.cpu_index);
    let df_stack = match entry::backend() {
        Backend::Ist => tops.df - (cea::DF_STACK_PAGES * cea::PAGE) as u64..tops.df,
        Backend::Fred => tops.fred[2] - (cea::FRED_STACK_PAGES * cea::PAGE) as u64..tops.fred[2],
    };
    if rsp_near_guard && df_stack.contains(&handler_rsp) {
        log::info!("stack overflow on cpu {} caught by the guard page", me.cpu_index);
        harness::finish(Verdict::Pass);
    }
    harness::finish(Verdict::Fail(format_args!(
        "double fault not at the guard page (rsp={:#x}) or not on the #DF stack",
        frame.rsp
    )))
}

/// A fatal event while a scenario runs: its verdict is FAIL.
pub fn on_fatal(name: &str, rip: u64) {
    if harness::scenario().is_some() {
        harness::finish(Verdict::Fail(format_args!("{name} at rip={rip:#x}")));
    }
}
