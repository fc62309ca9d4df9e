//! The event-entry layer: backend selection and the backend-agnostic handlers.
//!
//! A backend's assembly saves the interrupted context into a [`TrapFrame`] and calls
//! [`trap_dispatch`]; everything from there on is the same Rust whichever backend delivered
//! the event. Only the IST backend exists so far; `entry=fred` and `entry=auto` on a FRED CPU
//! fall back to it with a log line saying why.

/// Pushes the general registers so that, with the vector and error-code slots above them, the
/// stack is a `TrapFrame` (RAX pushed first, R15 last at the lowest address).
#[cfg(target_os = "none")]
macro_rules! push_gprs {
    () => {
        "push rax\npush rbx\npush rcx\npush rdx\npush rsi\npush rdi\npush rbp\npush r8\npush r9\npush r10\npush r11\npush r12\npush r13\npush r14\npush r15\n"
    };
}

/// The inverse of `push_gprs!`.
#[cfg(target_os = "none")]
macro_rules! pop_gprs {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop r11\npop r10\npop r9\npop r8\npop rbp\npop rdi\npop rsi\npop rdx\npop rcx\npop rbx\npop rax\n"
    };
}

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
