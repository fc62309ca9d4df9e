//! COM1, polled: the kernel log's only output.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

pub struct Com1;

impl Com1 {
    /// 115200 8N1, FIFO on, interrupts off.
    pub fn init() {
        // SAFETY: COM1's registers; the UART is owned by the kernel log until a user-space
        // console takes the port over through an I/O-port capability.
        unsafe {
            Port::<u8>::new(COM1 + 1).write(0x00); // no UART interrupts
            Port::<u8>::new(COM1 + 3).write(0x80); // DLAB on
            Port::<u8>::new(COM1).write(0x01); // divisor 1 = 115200 baud
            Port::<u8>::new(COM1 + 1).write(0x00);
            Port::<u8>::new(COM1 + 3).write(0x03); // 8N1, DLAB off
            Port::<u8>::new(COM1 + 2).write(0xc7); // FIFO on, cleared, 14-byte threshold
            Port::<u8>::new(COM1 + 4).write(0x03); // DTR, RTS
        }
    }

    pub fn write_byte(&mut self, b: u8) {
        // SAFETY: COM1's line-status and data registers, see `init`.
        unsafe {
            let mut lsr = Port::<u8>::new(COM1 + 5);
            while lsr.read() & 0x20 == 0 {
                core::hint::spin_loop();
            }
            Port::<u8>::new(COM1).write(b);
        }
    }
}

impl Com1 {
    /// Waits until the UART has sent everything (LSR.TEMT): an emulator switched off right
    /// after a write would otherwise lose the last bytes.
    pub fn drain() {
        // SAFETY: COM1's line-status register, read only.
        unsafe {
            let mut lsr = Port::<u8>::new(COM1 + 5);
            let mut spins = 0u32;
            while lsr.read() & 0x40 == 0 && spins < 1_000_000 {
                spins += 1;
                core::hint::spin_loop();
            }
        }
    }
}

impl core::fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
        Ok(())
    }
}
