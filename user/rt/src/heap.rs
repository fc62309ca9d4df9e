//! The global allocator: a first-fit free list over one region from `map`, mapped on the first
//! allocation (a program that never allocates never maps it). A spin lock guards it; a thread
//! preempted while holding it only delays the others.

use crate::sys;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use linked_list_allocator::LockedHeap;

/// Bytes of the heap region. Fixed for now: allocation fails (and panics) beyond it.
pub const HEAP_SIZE: usize = 1024 * 1024;

struct MapHeap(LockedHeap);

#[global_allocator]
static HEAP: MapHeap = MapHeap(LockedHeap::empty());

// SAFETY: blocks come from `Heap`, which hands out each byte to one live allocation at a
// time and honours the layout; the region it manages is ours alone (from `map`, never
// unmapped).
unsafe impl GlobalAlloc for MapHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut heap = self.0.lock();
        if heap.size() == 0 {
            let Ok(region) = sys::map(HEAP_SIZE) else {
                return ptr::null_mut();
            };
            // SAFETY: `region` is HEAP_SIZE fresh writable bytes no one else uses, and the
            // heap was empty, so it is initialised only once.
            unsafe { heap.init(region, HEAP_SIZE) };
        }
        heap.allocate_first_fit(layout)
            .map_or(ptr::null_mut(), |block| block.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(ptr) {
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this `layout`.
            unsafe { self.0.lock().deallocate(block, layout) };
        }
    }
}
