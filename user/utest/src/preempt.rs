//! `preempt`: a thread that never makes a system call must not keep its CPU. A spinner and a
//! counter are both pinned to CPU 0; the counter can only finish if the timer preempts the
//! spinner.
//!
//! Every thread also keeps its own user segment state across those context switches: the
//! spinner a non-null GS selector (loading it back is the kernel's LKGS path) with its own GS
//! and FS base, the counter and the main thread a null GS selector and bases of their own. Each
//! checks its state after every switch it can see (`segments`), reading through `gs:` as well.

use core::hint::{black_box, spin_loop};
use core::sync::atomic::{AtomicBool, Ordering};
use rt::{println, sys, thread};

static SPINNING: AtomicBool = AtomicBool::new(false);
static PROGRESSED: AtomicBool = AtomicBool::new(false);
/// Set when a thread found its segment state changed by a context switch.
static SEGMENTS_LOST: AtomicBool = AtomicBool::new(false);

/// The main thread polls this often, this many times (about 5 s).
const POLL_MS: u64 = 10;
const POLLS: u32 = 500;

pub fn run() -> i32 {
    let main_segments = segments::Mine::take(0xa1a1, false);
    for (what, f) in [("spinner", spinner as fn(usize)), ("counter", counter)] {
        if let Err(e) = thread::spawn(f, 0, Some(0)) {
            println!("preempt: cannot start the {what} on cpu 0: {e:?}");
            return 1;
        }
    }
    for _ in 0..POLLS {
        main_segments.check("main");
        if SEGMENTS_LOST.load(Ordering::Acquire) {
            println!("preempt: FAIL: a thread's FS/GS state did not survive a context switch");
            return 1;
        }
        if PROGRESSED.load(Ordering::Acquire) {
            println!("preempt: ok (and every thread kept its FS/GS selectors and bases)");
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
    let mine = segments::Mine::take(0x5b5b, true);
    println!("preempt: spinner holds cpu 0 with no system calls from now on");
    SPINNING.store(true, Ordering::Release);
    loop {
        // Preempted anywhere in here; after each return the state must still be ours.
        mine.check("spinner");
        spin_loop();
    }
}

fn counter(_: usize) {
    check_on_cpu_0("counter");
    let mine = segments::Mine::take(0xc0c0, false);
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
        mine.check("counter");
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

/// A thread's user segment state: FS and GS bases (set with WRFSBASE/WRGSBASE, which the kernel
/// enables where the CPU has FSGSBASE) and the GS selector.
mod segments {
    extern crate alloc;

    use super::SEGMENTS_LOST;
    use core::arch::asm;
    use core::sync::atomic::Ordering;
    use rt::println;

    pub struct Mine {
        /// What `gs:[0]` must read: the word the GS base points at.
        word: &'static u64,
        fs_base: u64,
        gs_selector: u16,
    }

    impl Mine {
        /// Gives the calling thread its own state, tagged `tag`: a GS base at a fresh word holding
        /// a tag-derived value, an FS base derived from the tag, and (with `data_selector`) GS
        /// loaded with the user data selector instead of null.
        pub fn take(tag: u64, data_selector: bool) -> Mine {
            let word: &'static u64 =
                alloc::boxed::Box::leak(alloc::boxed::Box::new(tag * 0x1_0001_0001));
            let fs_base = tag << 20;
            let gs_selector: u16 = if data_selector {
                let ss: u16;
                // SAFETY: reads SS only.
                unsafe {
                    asm!("mov {0:x}, ss", out(reg) ss, options(nomem, nostack, preserves_flags))
                };
                ss
            } else {
                0
            };
            // SAFETY: loading our own data selector (or null) into GS and then setting the FS and
            // GS bases affects only this thread; nothing in this program addresses through FS or
            // GS except `check`. Loading the selector comes first: it resets the base.
            unsafe {
                asm!("mov gs, {0:x}", in(reg) gs_selector, options(nomem, nostack, preserves_flags));
                asm!("wrgsbase {0}", "wrfsbase {1}", in(reg) word as *const u64 as u64, in(reg) fs_base,
                     options(nomem, nostack, preserves_flags));
            }
            let mine = Mine {
                word,
                fs_base,
                gs_selector,
            };
            mine.check("a new thread");
            mine
        }

        /// Compares the live state with ours; a difference is reported once per thread and
        /// recorded for the main thread's verdict.
        pub fn check(&self, who: &str) {
            let (gs_base, fs_base, through_gs, selector): (u64, u64, u64, u16);
            // SAFETY: reads the segment bases and selector, and the word at gs:[0], which is our
            // leaked word whenever the state is intact (and mapped memory of ours otherwise:
            // any other thread's word, or a fault that kills this thread and fails the test).
            unsafe {
                asm!("rdgsbase {0}", "rdfsbase {1}", "mov {2:x}, gs", out(reg) gs_base, out(reg) fs_base,
                     out(reg) selector, options(nomem, nostack, preserves_flags));
                asm!("mov {0}, gs:[0]", out(reg) through_gs, options(readonly, nostack, preserves_flags));
            }
            let want = self.word as *const u64 as u64;
            let intact = gs_base == want
                && fs_base == self.fs_base
                && through_gs == *self.word
                && selector == self.gs_selector;
            // Reported once, by the first thread to notice.
            if !intact && !SEGMENTS_LOST.swap(true, Ordering::AcqRel) {
                println!(
                    "preempt: error: {who}: GS base {gs_base:#x} (want {want:#x}), gs:[0] {through_gs:#x} (want {:#x}), FS base {fs_base:#x} (want {:#x}), GS selector {selector:#x} (want {:#x})",
                    *self.word, self.fs_base, self.gs_selector
                );
            }
        }
    }
}
