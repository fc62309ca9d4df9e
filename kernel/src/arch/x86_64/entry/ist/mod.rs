//! The IDT/IST backend: an IDT whose 256 gates point at fixed-size stubs, one common entry
//! that saves the general registers into a `TrapFrame`, the decode (the gate says what
//! arrived), and the IRET exit.
//!
//! NMI, #DB and #MC are delivered on their own IST stacks and switch onto the IST main stack by
//! atomic-IST-entry (`aist.rs`: the assembly; `atomic_ist.rs`: its pure logic and host tests);
//! #DF keeps its own stack; everything else stays on the current kernel stack (TSS.RSP0 from
//! ring 3). SYSCALL enters through the trampoline in `syscall.rs` and leaves by SYSRET when
//! `sysret.rs` allows it.

pub mod atomic_ist;
pub mod sysret;

#[cfg(target_os = "none")]
pub mod aist;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
pub mod syscall;

#[cfg(target_os = "none")]
pub use idt::*;
