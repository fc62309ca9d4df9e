//! Time for the AP start-up protocol, from PIT channel 2 (polled; no interrupts).
//!
//! Channel 2 in mode 0 (interrupt on terminal count) counts down once from the value loaded;
//! its output, readable as bit 5 of port 0x61, goes high at zero. Its gate is bit 0 of port
//! 0x61, and bit 1 (speaker data) stays off so nothing beeps.

use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;
const CHANNEL2_DATA: u16 = 0x42;
const MODE_COMMAND: u16 = 0x43;
const SYSTEM_CONTROL: u16 = 0x61;
/// Channel 2, low then high byte, mode 0, binary.
const CHANNEL2_ONESHOT: u8 = 0b1011_0000;
const GATE: u8 = 1 << 0;
const SPEAKER: u8 = 1 << 1;
const OUT2: u8 = 1 << 5;
/// The longest single countdown (65535 ticks is ~54.9 ms).
const MAX_SLICE_US: u64 = 50_000;

/// Starts a countdown of `us` microseconds (at most [`MAX_SLICE_US`]).
fn start(us: u64) {
    let ticks = (us.min(MAX_SLICE_US) * PIT_HZ / 1_000_000).max(1) as u16;
    // SAFETY: ports 0x42, 0x43 and 0x61 belong to the PIT and the system control port;
    // channel 2 only drives the speaker, which stays disabled.
    unsafe {
        let mut control = Port::<u8>::new(SYSTEM_CONTROL);
        let value = control.read() & !(SPEAKER | GATE);
        control.write(value);
        Port::<u8>::new(MODE_COMMAND).write(CHANNEL2_ONESHOT);
        let mut data = Port::<u8>::new(CHANNEL2_DATA);
        data.write(ticks as u8);
        data.write((ticks >> 8) as u8);
        control.write(value | GATE);
    }
}

fn expired() -> bool {
    // SAFETY: reading the system control port has no side effects.
    unsafe { Port::<u8>::new(SYSTEM_CONTROL).read() & OUT2 != 0 }
}

/// Polls `done` until it returns true or `us` microseconds pass; returns whether it did.
pub fn wait_until(us: u64, mut done: impl FnMut() -> bool) -> bool {
    let mut left = us;
    loop {
        let slice = left.min(MAX_SLICE_US);
        start(slice);
        while !expired() {
            if done() {
                return true;
            }
            core::hint::spin_loop();
        }
        left -= slice;
        if left == 0 {
            return done();
        }
    }
}

/// Waits `us` microseconds.
pub fn delay(us: u64) {
    wait_until(us, || false);
}
