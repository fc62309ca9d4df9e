//! The kernel's virtual address space, top half. One PML4 slot per region:
//!
//! | region                         | base                    |
//! |--------------------------------|-------------------------|
//! | HHDM (direct map, from boot)   | bootloader's offset     |
//! | kernel heap                    | `0xffff_fc00_0000_0000` |
//! | kernel stacks (guarded)        | `0xffff_fd00_0000_0000` |
//! | per-CPU entry areas            | `0xffff_fe00_0000_0000` |
//! | kernel image                   | `0xffff_ffff_8000_0000` |

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::x86_64::paging::{self, MapError, Mapping};

pub const HEAP_BASE: u64 = 0xffff_fc00_0000_0000;
pub const KSTACK_BASE: u64 = 0xffff_fd00_0000_0000;
pub const CEA_BASE: u64 = 0xffff_fe00_0000_0000;

/// Every kernel stack slot: one unmapped guard page, then the stack, then unmapped space up to
/// the next slot.
pub const KSTACK_SLOT: u64 = 128 * 1024;
pub const KSTACK_SIZE: u64 = 64 * 1024;
const _: () = assert!(KSTACK_SIZE + 4096 <= KSTACK_SLOT);

static NEXT_KSTACK_SLOT: AtomicU64 = AtomicU64::new(0);
/// Stacks of ended threads, mapped and ready for reuse.
static FREE_KSTACKS: spin::Mutex<alloc::vec::Vec<KernelStack>> = spin::Mutex::new(alloc::vec::Vec::new());

/// A kernel stack with an unmapped guard page below it, so an overflow faults.
#[derive(Clone, Copy, Debug)]
pub struct KernelStack {
    /// Lowest mapped byte.
    pub bottom: u64,
    /// One past the highest byte: the initial RSP.
    pub top: u64,
}

impl KernelStack {
    pub fn allocate() -> Result<Self, MapError> {
        if let Some(s) = FREE_KSTACKS.lock().pop() {
            return Ok(s);
        }
        let slot = NEXT_KSTACK_SLOT.fetch_add(1, Ordering::Relaxed);
        let guard = KSTACK_BASE + slot * KSTACK_SLOT;
        let bottom = guard + 4096;
        paging::map_fresh(bottom, KSTACK_SIZE, Mapping::KernelData)?;
        Ok(Self { bottom, top: bottom + KSTACK_SIZE })
    }

    /// Returns a stack nobody runs on any more, for reuse.
    pub fn release(stack: Self) {
        FREE_KSTACKS.lock().push(stack);
    }

    /// The guard page under this stack.
    pub fn guard(&self) -> core::ops::Range<u64> {
        self.bottom - 4096..self.bottom
    }
}
