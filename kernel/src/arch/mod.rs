//! Architecture support. Only x86_64 exists; the directory keeps the hardware apart.
pub mod x86_64;
