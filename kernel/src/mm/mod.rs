//! Memory management: physical frames, the kernel heap, kernel virtual-address regions.

pub mod budget;
pub mod frame;
pub mod memmap;
pub mod regions;
pub mod unmap_walk;

#[cfg(target_os = "none")]
pub mod account;
#[cfg(target_os = "none")]
pub mod aspace;
#[cfg(target_os = "none")]
pub mod heap;
#[cfg(target_os = "none")]
pub mod phys;
#[cfg(target_os = "none")]
pub mod kvm;
