//! `test=bounded`: no system call holds a CPU for time that grows with its arguments, and
//! other CPUs keep running meanwhile.
//!
//! A thread pinned to CPU 0 unmaps 1 TiB and 109 TiB of nothing, then maps, touches and
//! unmaps a few MiB (the kernel returns partial progress there: more pages than one call
//! frees), timing every call. A heartbeat thread on the last CPU (CPU 0 too with one CPU)
//! spins reading the TSC and touches a fresh demand-paged page every millisecond, which takes
//! the address-space lock the unmapping holds; it records the longest gap it saw. Times are
//! measured in TSC ticks against a rate calibrated with `sleep_ms`.
//!
//! Last, the kernel-log rate limit: a flood of `log` calls gets a burst through and the rest
//! refused (`log` returns 0), and after a pause lines pass again.

use abi::layout::{USER_END, USER_MAP_BASE, USER_STACK_TOP};
use abi::{syscall as nr, Error};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use rt::{println, sys, thread};

const MIB: u64 = 1 << 20;
const TIB: u64 = 1 << 40;
/// The longest pause the heartbeat may see, and the longest one `unmap` call may take. The
/// calls take about 1 ms and the heartbeat's gaps are a few ms (one CPU: its time slices,
/// 20 ms), but QEMU's virtual CPUs run as host threads, and on a host with fewer cores than
/// the matrix runs virtual CPUs one is now and then paused for a few hundred ms: hence the
/// margin. The bug this guards against froze every CPU for minutes (`unmap` of 1 TiB).
const GAP_BOUND_MS: u64 = 750;
const CALL_BOUND_MS: u64 = 250;
/// Pages of the region the heartbeat touches, one a millisecond.
const TOUCH_PAGES: u64 = 1024;
/// Lines the kernel lets through back to back (`klog_limit::BURST`).
const LOG_BURST: u64 = 64;

static TSC_PER_MS: AtomicU64 = AtomicU64::new(1);
static TOUCH_REGION: AtomicU64 = AtomicU64::new(0);
static BEATING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
static MAX_GAP: AtomicU64 = AtomicU64::new(0);
static BEATS: AtomicU64 = AtomicU64::new(0);
static TOUCHED: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

fn tsc() -> u64 {
    // SAFETY: RDTSC reads a counter; the kernel leaves it enabled for ring 3 (CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Microseconds in `ticks` TSC ticks.
fn us(ticks: u64) -> u64 {
    ticks.saturating_mul(1000) / TSC_PER_MS.load(Ordering::Relaxed)
}

fn fail(what: core::fmt::Arguments) {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    println!("bounded: FAIL: {what}");
}

fn heartbeat(_: usize) {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed);
    let region = TOUCH_REGION.load(Ordering::Relaxed);
    let (mut last, mut max, mut beats, mut touched) = (tsc(), 0, 0u64, 0);
    let mut next_touch = last;
    BEATING.store(true, Ordering::Release);
    while !STOP.load(Ordering::Acquire) {
        let now = tsc();
        max = max.max(now.saturating_sub(last));
        last = now;
        beats += 1;
        if now >= next_touch && touched < TOUCH_PAGES {
            // SAFETY: a page of the region `run` mapped for this thread alone; the first
            // write faults it in (demand paging).
            unsafe { ((region + touched * 4096) as *mut u8).write_volatile(1) };
            touched += 1;
            next_touch = now + per_ms;
        }
    }
    MAX_GAP.store(max, Ordering::Relaxed);
    BEATS.store(beats, Ordering::Relaxed);
    TOUCHED.store(touched, Ordering::Release);
}

/// How one range went: system calls, their total and longest time.
struct Timed {
    calls: u64,
    total: u64,
    longest: u64,
    first_done: u64,
}

/// Unmaps `[addr, addr + len)` one `unmap` call at a time, as `sys::unmap` does, timing each.
fn unmap_timed(addr: u64, len: u64) -> Result<Timed, Error> {
    let mut t = Timed { calls: 0, total: 0, longest: 0, first_done: 0 };
    let (mut at, mut left) = (addr, len);
    while left > 0 {
        let start = tsc();
        // SAFETY: the range is either nothing this process uses or a region `run` mapped and
        // no longer refers to.
        let r = Error::result(unsafe { sys::unmap_step(at as *mut u8, left as usize) });
        let took = tsc() - start;
        let done = r?;
        if done == 0 || done > left {
            return Err(Error::InvalidArgument);
        }
        if t.calls == 0 {
            t.first_done = done;
        }
        t.calls += 1;
        t.total += took;
        t.longest = t.longest.max(took);
        at += done;
        left -= done;
    }
    Ok(t)
}

/// Checks and reports one range.
fn check_range(what: &str, addr: u64, len: u64, min_calls: u64) {
    let per_ms = TSC_PER_MS.load(Ordering::Relaxed);
    match unmap_timed(addr, len) {
        Ok(t) => {
            println!(
                "bounded: unmap {what}: calls {}, {} us in all, longest {} us, the first did {} KiB",
                t.calls,
                us(t.total),
                us(t.longest),
                t.first_done / 1024
            );
            if t.longest > CALL_BOUND_MS * per_ms {
                fail(format_args!("unmap {what}: one call took {} us (bound {CALL_BOUND_MS} ms)", us(t.longest)));
            }
            if t.calls < min_calls {
                fail(format_args!("unmap {what}: {} calls, expected partial progress ({min_calls} or more)", t.calls));
            }
        }
        Err(e) => fail(format_args!("unmap {what}: {e:?}")),
    }
}

/// Maps `len` bytes and writes one byte every `stride` bytes (each write a demand fault).
fn map_touched(len: u64, stride: u64) -> Option<u64> {
    let Ok(p) = sys::map(len as usize) else {
        fail(format_args!("map {} MiB failed", len / MIB));
        return None;
    };
    let mut off = 0;
    while off < len {
        // SAFETY: inside the region just mapped, which nothing else uses.
        unsafe { p.add(off as usize).write_volatile(0x5a) };
        off += stride;
    }
    Some(p as u64)
}

fn unmapper(_: usize) {
    while !BEATING.load(Ordering::Acquire) {
        let _ = sys::yield_now();
    }
    // Nothing mapped: one call each, however long (empty page-table entries are skipped whole).
    check_range("1 TiB of nothing", 0x4000_0000_0000, TIB, 1);
    let (low, high) = (USER_MAP_BASE + TIB, (USER_STACK_TOP - TIB) & !(TIB - 1));
    check_range("109 TiB of nothing", low, high - low, 1);
    // SAFETY: the range is refused before anything happens (it runs past the user half).
    let too_long = Error::result(unsafe { sys::unmap_step(USER_MAP_BASE as *mut u8, (USER_END - USER_MAP_BASE + TIB) as usize) });
    if too_long != Err(Error::InvalidArgument) {
        fail(format_args!("unmap past the end of user space: {too_long:?}, expected InvalidArgument"));
    }
    // Touched memory: more pages than one call frees, so partial progress, three times over.
    for round in 0..3 {
        let Some(p) = map_touched(6 * MIB, 4096) else { break };
        let what = if round == 0 { "6 MiB touched" } else { "6 MiB touched again" };
        check_range(what, p, 6 * MIB, 2);
    }
    // Sparse: one page per 2 MiB of a 64 MiB region, most page-table entries empty.
    if let Some(p) = map_touched(64 * MIB, 2 * MIB) {
        check_range("64 MiB, one page per 2 MiB", p, 64 * MIB, 1);
    }
    STOP.store(true, Ordering::Release);
}

/// One `log` call: bytes logged (0: dropped by the rate limit).
fn log_raw(line: &str) -> Result<u64, Error> {
    // SAFETY: the kernel reads `line.len()` bytes at `line.as_ptr()`, borrowed for the call.
    Error::result(unsafe { sys::raw::syscall2(nr::LOG, line.as_ptr() as u64, line.len() as u64) })
}

/// The rate limit: of a flood, at most a burst passes; after a pause, lines pass again.
fn log_flood() {
    let (mut passed, mut dropped) = (0u64, 0u64);
    for _ in 0..300 {
        match log_raw("bounded: flood") {
            Ok(0) => dropped += 1,
            Ok(_) => passed += 1,
            Err(e) => {
                fail(format_args!("log: {e:?}"));
                return;
            }
        }
    }
    let _ = sys::sleep_ms(1000);
    let after = log_raw("bounded: a line after a 1 s pause passes (the kernel said how many it dropped first)");
    println!("bounded: log flood: {passed} of 300 lines passed, {dropped} dropped; after the pause: {after:?}");
    if passed > LOG_BURST + 5 || dropped < 300 - LOG_BURST - 5 {
        fail(format_args!("the log rate limit let {passed} of 300 lines through"));
    }
    if !matches!(after, Ok(n) if n > 0) {
        fail(format_args!("no line passed after the pause: {after:?}"));
    }
}

pub fn run() -> i32 {
    let cpus = sys::cpu_count().unwrap_or(1);
    let start = tsc();
    let _ = sys::sleep_ms(200);
    TSC_PER_MS.store(((tsc() - start) / 200).max(1), Ordering::Relaxed);
    println!("bounded: {} TSC ticks per ms; {cpus} CPUs", TSC_PER_MS.load(Ordering::Relaxed));
    let Ok(region) = sys::map((TOUCH_PAGES * 4096) as usize) else {
        println!("bounded: FAIL: cannot map the heartbeat's region");
        return 1;
    };
    TOUCH_REGION.store(region as u64, Ordering::Relaxed);
    if thread::spawn(heartbeat, 0, Some(cpus - 1)).is_err() || thread::spawn(unmapper, 0, Some(0)).is_err() {
        println!("bounded: FAIL: cannot start the threads");
        return 1;
    }
    let _ = sys::wait_threads();
    let (gap, beats, touched) =
        (MAX_GAP.load(Ordering::Relaxed), BEATS.load(Ordering::Relaxed), TOUCHED.load(Ordering::Acquire));
    println!("bounded: heartbeat on cpu {}: {beats} beats, {touched} pages touched, longest gap {} us", cpus - 1, us(gap));
    if touched == 0 || gap > GAP_BOUND_MS * TSC_PER_MS.load(Ordering::Relaxed) {
        fail(format_args!("the heartbeat stalled for {} us (bound {GAP_BOUND_MS} ms)", us(gap)));
    }
    log_flood();
    let failures = FAILURES.load(Ordering::Relaxed);
    println!("bounded: {failures} failures");
    i32::from(failures != 0)
}
