//! The one definition of everything that crosses a boundary: kernel <-> user space (system-call
//! numbers, message layout, error codes, added as they are built) and kernel <-> the host tools
//! that boot it (the test-harness exit protocol).
#![no_std]

/// How a kernel test scenario reports its verdict to the emulator that runs it.
pub mod harness {
    /// QEMU's `isa-debug-exit` device: a write of `v` ends QEMU with status `(v << 1) | 1`.
    pub const QEMU_DEBUG_EXIT_PORT: u16 = 0xf4;
    /// Value written for a passing scenario (QEMU exit status 33).
    pub const QEMU_EXIT_PASS: u8 = 0x10;
    /// Value written for a failing scenario (QEMU exit status 35).
    pub const QEMU_EXIT_FAIL: u8 = 0x11;

    /// The QEMU process exit status that a write of `value` to the debug-exit port produces.
    pub const fn qemu_status(value: u8) -> i32 {
        ((value as i32) << 1) | 1
    }

    /// Bochs ends the simulation when this string is written byte by byte to
    /// [`BOCHS_SHUTDOWN_PORT`]; its exit status carries no verdict, the serial log does.
    pub const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;
    pub const BOCHS_SHUTDOWN_STRING: &[u8] = b"Shutdown";
}
