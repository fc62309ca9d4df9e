//! The kernel heap: a linked-list allocator over a fixed, eagerly mapped region.

use linked_list_allocator::LockedHeap;

use super::kvm::HEAP_BASE;
use crate::arch::x86_64::paging::{self, Mapping};

pub const HEAP_SIZE: u64 = 8 * 1024 * 1024;

/// The heap lock is taken with interrupts off, so an interrupt handler that allocates (a run
/// queue growing in the timer's wake-ups) cannot deadlock against the code it interrupted.
/// NMI, #MC and #DB handlers must still never allocate.
struct IrqSafeHeap(LockedHeap);

// SAFETY: forwards to `LockedHeap`, which is a correct allocator; only interrupt masking is
// added around it.
unsafe impl core::alloc::GlobalAlloc for IrqSafeHeap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller upholds GlobalAlloc's contract, passed through unchanged.
        x86_64::instructions::interrupts::without_interrupts(|| unsafe { self.0.alloc(layout) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        // SAFETY: as above.
        x86_64::instructions::interrupts::without_interrupts(|| unsafe { self.0.dealloc(ptr, layout) })
    }
}

#[global_allocator]
static HEAP: IrqSafeHeap = IrqSafeHeap(LockedHeap::empty());

pub fn init() {
    paging::map_fresh(HEAP_BASE, HEAP_SIZE, Mapping::KernelData).expect("cannot map the kernel heap");
    // SAFETY: the region was just mapped, writable, and belongs to nothing else.
    unsafe { HEAP.0.lock().init(HEAP_BASE as *mut u8, HEAP_SIZE as usize) };
    log::info!("{} KiB at {HEAP_BASE:#x}", HEAP_SIZE / 1024);
}
