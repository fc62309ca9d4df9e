//! Threads, processes and per-CPU scheduling.
//!
//! Every thread has a home CPU, fixed at creation (the least-loaded CPU unless the creator
//! names one), and is only ever queued and run there. A thread therefore never runs on two CPUs
//! at once, and the only cross-CPU operation is a wake-up: the waker puts the thread on its home
//! CPU's queue and sends that CPU an IPI. Preemption is by the LAPIC timer, on the way back to
//! user space; the kernel itself is not preempted.

pub mod queue;

#[cfg(target_os = "none")]
mod process;
#[cfg(target_os = "none")]
mod thread;

#[cfg(target_os = "none")]
pub use process::*;
#[cfg(target_os = "none")]
pub use thread::*;
