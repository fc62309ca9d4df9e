//! The FRED backend (Intel FRED specification, document 346446; Linux
//! `arch/x86/entry/entry_64_fred.S`, `arch/x86/kernel/fred.c`).
//!
//! `decode.rs` turns what FRED delivered (event type, vector, event data) into an `Event` for
//! the shared handlers; `entry.rs` holds the entry page and the MSR set-up.
//!
//! Event delivery saves the whole context in a 64-byte frame on the stack of the event's
//! stack level, swaps GS itself when coming from ring 3, and ERETU/ERETS return. So the entry
//! code only pushes the general registers (plus the `vector` slot of our `TrapFrame`, right
//! under FRED's error code: the FRED frame *is* the bottom of a `TrapFrame`) and calls Rust.
//! No IST, no atomic-IST-entry, no SYSCALL trampoline, no SYSRET decision.
//!
//! Stack levels: #DB runs at level 1, NMI and #MC at level 2, #DF at level 3, each on its stack
//! in the entry area; everything else at level 0 (the thread's kernel stack from ring 3, the
//! current stack in ring 0). An event of a level not above the current one stays on the
//! current stack: a #DB inside the NMI handler runs on the NMI's stack without a switch.

pub mod decode;

#[cfg(target_os = "none")]
mod entry;

#[cfg(target_os = "none")]
pub use entry::*;
