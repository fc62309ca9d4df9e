//! How a test scenario ends: the verdict line, then the machine is switched off with a status
//! the host can read (QEMU's isa-debug-exit; Bochs' shutdown port, where the log line decides).

use abi::harness::*;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use x86_64::instructions::port::Port;

/// The running scenario's name, for verdicts printed from a fault or panic handler.
static SCENARIO: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static SCENARIO_LEN: AtomicUsize = AtomicUsize::new(0);

pub fn set_scenario(name: &'static str) {
    SCENARIO_LEN.store(name.len(), Ordering::Relaxed);
    SCENARIO.store(name.as_ptr() as *mut u8, Ordering::Release);
}

pub fn scenario() -> Option<&'static str> {
    let p = SCENARIO.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `set_scenario` stored the pointer and length of a `&'static str`.
    Some(unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(p, SCENARIO_LEN.load(Ordering::Relaxed))) })
}

pub enum Verdict<'a> {
    Pass,
    Fail(core::fmt::Arguments<'a>),
}

/// Prints `TEST <name>: PASS|FAIL reason` and powers off with the matching status.
pub fn finish(verdict: Verdict<'_>) -> ! {
    crate::klog::take_over(true);
    let name = scenario().unwrap_or("none");
    let pass = match verdict {
        Verdict::Pass => {
            crate::println!("TEST {name}: PASS");
            true
        }
        Verdict::Fail(reason) => {
            crate::println!("TEST {name}: FAIL {reason}");
            false
        }
    };
    power_off(pass)
}

pub fn power_off(pass: bool) -> ! {
    x86_64::instructions::interrupts::disable();
    crate::arch::x86_64::serial::Com1::drain();
    // SAFETY: writes to the emulators' exit devices; on a machine without them these ports are
    // unclaimed and the writes are ignored, and we halt below.
    unsafe {
        Port::<u8>::new(QEMU_DEBUG_EXIT_PORT).write(if pass { QEMU_EXIT_PASS } else { QEMU_EXIT_FAIL });
        let mut bochs = Port::<u8>::new(BOCHS_SHUTDOWN_PORT);
        for &b in BOCHS_SHUTDOWN_STRING {
            bochs.write(b);
        }
    }
    crate::arch::x86_64::halt_forever()
}
