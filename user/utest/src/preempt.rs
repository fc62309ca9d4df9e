//! `preempt`: a thread that never makes a system call must not keep its CPU. A spinner and a
//! counter are both pinned to CPU 0; the counter can only finish if the timer preempts the
//! spinner.

use core::hint::{black_box, spin_loop};
use core::sync::atomic::{AtomicBool, Ordering};
use rt::{println, sys, thread};

static SPINNING: AtomicBool = AtomicBool::new(false);
static PROGRESSED: AtomicBool = AtomicBool::new(false);

/// The main thread polls this often, this many times (about 5 s).
const POLL_MS: u64 = 10;
const POLLS: u32 = 500;

pub fn run() -> i32 {
    for (what, f) in [("spinner", spinner as fn(usize)), ("counter", counter)] {
        if let Err(e) = thread::spawn(f, 0, Some(0)) {
            println!("preempt: cannot start the {what} on cpu 0: {e:?}");
            return 1;
        }
    }
    for _ in 0..POLLS {
        if PROGRESSED.load(Ordering::Acquire) {
            println!("preempt: ok");
            return 0; // ends the process, the spinner with it
        }
        let _ = sys::sleep_ms(POLL_MS);
    }
    println!(
        "preempt: FAIL: no progress on cpu 0 within {} ms (spinner started: {})",
        POLL_MS * u64::from(POLLS),
        SPINNING.load(Ordering::Acquire)
    );
    1
}

fn spinner(_: usize) {
    check_on_cpu_0("spinner");
    println!("preempt: spinner holds cpu 0 with no system calls from now on");
    SPINNING.store(true, Ordering::Release);
    loop {
        spin_loop();
    }
}

fn counter(_: usize) {
    check_on_cpu_0("counter");
    // Once the spinner has run, this thread gets cpu 0 back only by preemption.
    while !SPINNING.load(Ordering::Acquire) {
        let _ = sys::yield_now();
    }
    let mut count = 0u64;
    for round in 0..4 {
        for _ in 0..100_000 {
            count = black_box(count + 1);
        }
        let _ = if round % 2 == 0 {
            sys::sleep_ms(1)
        } else {
            sys::yield_now()
        };
    }
    println!("preempt: progress while a spinner holds cpu 0 (counted to {count})");
    PROGRESSED.store(true, Ordering::Release);
}

fn check_on_cpu_0(who: &str) {
    match sys::cpu_id() {
        Ok(0) => {}
        other => println!("preempt: error: the {who} runs on cpu {other:?}, expected 0"),
    }
}
