//! The per-CPU worker demo: one thread pinned to each online CPU makes a handful of system
//! calls (cpu_id, yield, sleep, map/unmap, thread_id), checks each answer, and reports one line.
//! `init` runs it at boot; `utest` runs it as the `user` scenario.
#![cfg_attr(target_os = "none", no_std)]

#[cfg(target_os = "none")]
mod demo;
#[cfg(target_os = "none")]
pub use demo::{run_one_per_cpu, Outcome};
