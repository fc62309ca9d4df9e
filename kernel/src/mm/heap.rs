//! The kernel heap: a linked-list allocator over a fixed, eagerly mapped region.

use linked_list_allocator::LockedHeap;

use super::kvm::HEAP_BASE;
use crate::arch::x86_64::paging::{self, Mapping};

pub const HEAP_SIZE: u64 = 8 * 1024 * 1024;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub fn init() {
    paging::map_fresh(HEAP_BASE, HEAP_SIZE, Mapping::KernelData).expect("cannot map the kernel heap");
    // SAFETY: the region was just mapped, writable, and belongs to nothing else.
    unsafe { HEAP.lock().init(HEAP_BASE as *mut u8, HEAP_SIZE as usize) };
    log::info!("{} KiB at {HEAP_BASE:#x}", HEAP_SIZE / 1024);
}
