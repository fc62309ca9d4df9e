//! The event-entry layer: backend selection and the backend-agnostic handlers.
//!
//! A backend's assembly saves the interrupted context into a [`TrapFrame`] and calls
//! [`trap_dispatch`]; everything from there on is the same Rust whichever backend delivered
//! the event. Only the IST backend exists so far; `entry=fred` and `entry=auto` on a FRED CPU
//! fall back to it with a log line saying why.

pub mod atomic_ist;
pub mod frame;
pub mod sysret;

#[cfg(target_os = "none")]
pub mod aist;
#[cfg(target_os = "none")]
mod dispatch;
#[cfg(target_os = "none")]
pub mod extable;
#[cfg(target_os = "none")]
pub mod fred;
#[cfg(target_os = "none")]
pub mod ist;

#[cfg(target_os = "none")]
pub use dispatch::*;
