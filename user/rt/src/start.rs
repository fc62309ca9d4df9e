//! The program entry point and the panic handler.
//!
//! Start contract (the kernel's loader): the first thread enters `_start` (the ELF entry) with
//! RSP 16-byte aligned, RDI = pointer to the argument string (UTF-8, not NUL-terminated; it
//! lies above RSP in the initial stack mapping) and RSI = its length.

use crate::sys;
use core::arch::naked_asm;
use core::panic::PanicInfo;

extern "Rust" {
    /// The program's `main`, exported under this name by [`crate::entry!`].
    fn __rt_main(arg: &str) -> i32;
}

/// The ELF entry point.
#[unsafe(naked)]
#[no_mangle]
unsafe extern "C" fn _start() -> ! {
    // SAFETY: entered only by the kernel at program start (start contract: RSP 16-aligned,
    // RDI/RSI the argument string). RBP = 0 ends the frame-pointer chain. With RSP aligned, the
    // CALL leaves it 8 mod 16 at `rt_start`'s entry, as the SysV ABI requires; RDI and RSI
    // pass through untouched as its two arguments.
    naked_asm!(
        "xor ebp, ebp",
        "call {rt_start}",
        "ud2",
        rt_start = sym rt_start,
    )
}

extern "C" fn rt_start(arg_ptr: *const u8, arg_len: usize) -> ! {
    // SAFETY: the start contract says RDI/RSI describe the argument string, which stays in
    // the initial stack mapping above every frame of this thread for the process's life.
    let arg = unsafe { argument(arg_ptr, arg_len) };
    // SAFETY: `entry!` defines `__rt_main` with exactly this signature; without it the
    // program does not link.
    let code = unsafe { __rt_main(arg) };
    sys::process_exit(code)
}

/// The argument string; an invalid UTF-8 tail is dropped (and reported), never trusted.
///
/// # Safety
/// `ptr..ptr + len` must be readable and unchanged for the rest of the program.
unsafe fn argument(ptr: *const u8, len: usize) -> &'static str {
    if len == 0 || ptr.is_null() {
        return "";
    }
    // SAFETY: the caller guarantees the bytes are readable and never change.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    match core::str::from_utf8(bytes) {
        Ok(arg) => arg,
        Err(e) => {
            crate::println!(
                "rt: argument is not UTF-8 after byte {}; using the start",
                e.valid_up_to()
            );
            // `valid_up_to` is a boundary of valid UTF-8 by definition.
            core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or("")
        }
    }
}

/// A panic in any thread ends the whole process with status 101, after one log line.
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    match info.location() {
        Some(at) => crate::println!("panic: {} at {}:{}", info.message(), at.file(), at.line()),
        None => crate::println!("panic: {}", info.message()),
    }
    sys::process_exit(101)
}
