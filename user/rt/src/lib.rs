//! The user-space runtime every program links: the entry point (`_start`, then the program's
//! `main(arg: &str) -> i32` named by [`entry!`], then `process_exit`), typed system-call
//! wrappers ([`sys`]), threads with guarded stacks ([`thread`]), [`println!`] into the kernel
//! log, a panic handler and a heap over `map`.
//!
//! The pure part (the line formatter, [`line`]) builds on the host and carries its unit tests
//! there (`cargo test -p rt`); everything that executes SYSCALL is compiled for the bare-metal
//! target only.
#![cfg_attr(target_os = "none", no_std)]

pub mod line;
pub mod proto;

#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
pub mod ipc;
#[cfg(target_os = "none")]
#[doc(hidden)]
pub mod print;
#[cfg(target_os = "none")]
mod start;
#[cfg(target_os = "none")]
pub mod sys;
#[cfg(target_os = "none")]
pub mod thread;

pub use abi::Error;

/// The page size `map` rounds to.
pub const PAGE_SIZE: usize = 4096;

/// Names the program's entry function, `fn(arg: &str) -> i32`: the runtime calls it with the
/// argument string the kernel passed and ends the process with the value it returns.
///
/// ```text
/// fn main(arg: &str) -> i32 { rt::println!("hello {arg:?}"); 0 }
/// rt::entry!(main);
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[export_name = "__rt_main"]
        fn __rt_entry_main(arg: &str) -> i32 {
            let main: fn(&str) -> i32 = $main;
            main(arg)
        }
    };
}

/// Formats one or more lines into a stack buffer and writes each with one `log` system call;
/// a line longer than [`line::LINE_MAX`] bytes is cut and ends in `...`. Never allocates.
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::print::print_lines(::core::format_args!($($arg)*))
    };
}
