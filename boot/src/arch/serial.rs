//! COM1 output: the bridge's only voice. Every line starts with `limine-bridge: `.

use core::fmt::{self, Write};
use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const THR_EMPTY: u8 = 1 << 5;

/// Programs COM1 for 115200 8N1 with FIFOs (the kernel reprograms it anyway).
pub fn init() {
    let settings: [(u16, u8); 7] = [
        (1, 0x00), // IER: no interrupts
        (3, 0x80), // LCR: DLAB on
        (0, 0x01), // DLL: divisor 1 = 115200 baud
        (1, 0x00), // DLM
        (3, 0x03), // LCR: 8N1, DLAB off
        (2, 0xc7), // FCR: FIFOs on and cleared
        (4, 0x03), // MCR: DTR, RTS
    ];
    for (offset, value) in settings {
        // SAFETY: COM1's registers are plain I/O ports; writing them has no memory effect.
        unsafe { Port::<u8>::new(COM1 + offset).write(value) };
    }
}

fn write_byte(byte: u8) {
    // SAFETY: reading the line status and writing the transmit register of COM1 only affect
    // the UART.
    unsafe {
        let mut status = Port::<u8>::new(LINE_STATUS);
        for _ in 0..100_000 {
            if status.read() & THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        Port::<u8>::new(COM1).write(byte);
    }
}

/// Waits until the UART has sent everything (transmitter empty), so whoever reprograms it next
/// (the kernel) cannot cut our last line short.
pub fn flush() {
    const TRANSMITTER_EMPTY: u8 = 1 << 6;
    // SAFETY: reading the line status register has no side effects.
    let mut status = Port::<u8>::new(LINE_STATUS);
    for _ in 0..1_000_000 {
        if unsafe { status.read() } & TRANSMITTER_EMPTY != 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

pub struct Com1;

impl Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                write_byte(b'\r');
            }
            write_byte(b);
        }
        Ok(())
    }
}

/// Writes one `limine-bridge: ...` line.
pub fn line(args: fmt::Arguments) {
    let _ = Com1.write_fmt(format_args!("limine-bridge: {args}\n"));
}

/// `say!("...", args)`: one line on COM1.
macro_rules! say {
    ($($arg:tt)*) => { $crate::arch::serial::line(format_args!($($arg)*)) };
}
pub(crate) use say;
