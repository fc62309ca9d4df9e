//! The microkernel as a library: the binary (`main.rs`) holds only the entry points.
//!
//! Pure logic (memory-map arithmetic, the frame bitmap, command-line parsing, later the
//! atomic-IST decision logic) builds on the host too and carries its unit tests there
//! (`cargo test -p kernel --lib`). Everything that touches hardware is compiled for the
//! bare-metal target only.
#![cfg_attr(target_os = "none", no_std)]

pub mod cmdline;
pub mod fallible;
pub mod ipc;
pub mod klog_limit;
pub mod mm;
pub mod sched;

extern crate alloc;

#[cfg(test)]
pub mod alloc_failure;

/// Architecture code; on the host only its pure parts build (for their unit tests).
pub mod arch;
#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod klog;
#[cfg(all(target_os = "none", feature = "testing"))]
pub mod testing;
#[cfg(target_os = "none")]
pub mod syscall;
