//! The boot-test matrix and the verdict on what a booted kernel printed.
//!
//! `cargo xtask test` boots every [`matrix::Case`] and hands the serial log and the emulator's
//! exit status to [`verdict::judge`]. Both are pure data and pure functions so they can be read
//! and unit-tested on the host without an emulator; everything that touches processes lives in
//! `xtask`.

pub mod matrix;
pub mod verdict;

pub use matrix::{Accel, Backend, BootPath, Case, Emulator, Firmware, Requirement};
pub use verdict::{judge, Expectation, Outcome, Verdict};
