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

/// Stacks of ended threads kept mapped for the next threads (part of the kernel's reserve).
pub const KSTACK_POOL: usize = 16;

/// Kernel stacks between threads.
struct Stacks {
    /// Mapped and ready for reuse, at most [`KSTACK_POOL`].
    pool: alloc::vec::Vec<KernelStack>,
    /// Beyond the pool: to be unmapped and their frames freed by [`reclaim_stacks`], which may
    /// wait for other CPUs (a TLB shootdown) and so cannot run where a stack is released.
    retired: alloc::vec::Vec<KernelStack>,
    /// Slots whose stack was unmapped, for the next stack to map.
    empty_slots: alloc::vec::Vec<u64>,
}

static STACKS: spin::Mutex<Stacks> =
    spin::Mutex::new(Stacks { pool: alloc::vec::Vec::new(), retired: alloc::vec::Vec::new(), empty_slots: alloc::vec::Vec::new() });

fn with_stacks<R>(f: impl FnOnce(&mut Stacks) -> R) -> R {
    // Released from the context switch with interrupts off; taken with them off everywhere.
    x86_64::instructions::interrupts::without_interrupts(|| f(&mut STACKS.lock()))
}

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
        if let Some(s) = with_stacks(|s| s.pool.pop()) {
            return Ok(s);
        }
        let guard = match with_stacks(|s| s.empty_slots.pop()) {
            Some(guard) => guard,
            None => KSTACK_BASE + NEXT_KSTACK_SLOT.fetch_add(1, Ordering::Relaxed) * KSTACK_SLOT,
        };
        let bottom = guard + 4096;
        if let Err(e) = paging::map_fresh(bottom, KSTACK_SIZE, Mapping::KernelData) {
            // Pages mapped before the failure: unmapped (never used, so no CPU caches them).
            for frame in paging::unmap_kernel(bottom, KSTACK_SIZE) {
                crate::mm::phys::free(frame);
            }
            let _ = with_stacks(|s| s.empty_slots.try_reserve(1).map(|_| s.empty_slots.push(guard)));
            return Err(e);
        }
        Ok(Self { bottom, top: bottom + KSTACK_SIZE })
    }

    /// Returns a stack nobody runs on any more: to the pool, or to be unmapped. Safe with
    /// interrupts off (the context switch calls it); allocates nothing unless there is room.
    pub fn release(stack: Self) {
        with_stacks(|s| {
            if s.pool.len() < KSTACK_POOL && s.pool.try_reserve(1).is_ok() {
                s.pool.push(stack);
            } else if s.retired.try_reserve(1).is_ok() {
                s.retired.push(stack);
            } else {
                // No heap for the list: keep the stack mapped in the pool instead of losing it.
                s.pool.push(stack);
            }
        })
    }

    /// The guard page under this stack.
    pub fn guard(&self) -> core::ops::Range<u64> {
        self.bottom - 4096..self.bottom
    }
}

/// Unmaps the retired stacks and frees their frames, after every CPU has dropped its
/// translations of them. Called with interrupts enabled, outside any lock (the idle loop, the
/// system calls that create threads or report memory).
pub fn reclaim_stacks() {
    // The shootdown waits for every CPU's answer: with interrupts off here, two CPUs doing it
    // at once would wait for each other forever.
    if !x86_64::instructions::interrupts::are_enabled() || with_stacks(|s| s.retired.is_empty()) {
        return;
    }
    let retired = with_stacks(|s| core::mem::take(&mut s.retired));
    let mut frames = alloc::vec::Vec::new();
    let pages = (KSTACK_SIZE / 4096) as usize;
    if frames.try_reserve_exact(retired.len() * pages).is_err() {
        with_stacks(|s| s.retired.extend_from_slice(&retired));
        return;
    }
    for st in &retired {
        frames.extend(paging::unmap_kernel(st.bottom, KSTACK_SIZE));
    }
    // Kernel pages are global: every CPU may cache them, whatever CR3 it runs.
    let (start, len) = match retired.as_slice() {
        [one] => (one.bottom, KSTACK_SIZE),
        _ => (KSTACK_BASE, u64::MAX),
    };
    crate::arch::x86_64::smp::tlb_shootdown_kernel(start, len);
    for f in frames {
        crate::mm::phys::free(f);
    }
    with_stacks(|s| {
        for st in &retired {
            if s.empty_slots.try_reserve(1).is_ok() {
                s.empty_slots.push(st.bottom - 4096);
            }
        }
    });
}

/// `(stacks pooled, stacks waiting to be unmapped)`, for reports.
pub fn stack_counts() -> (usize, usize) {
    with_stacks(|s| (s.pool.len(), s.retired.len()))
}
