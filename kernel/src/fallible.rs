//! `Arc` construction that fails instead of aborting, on stable Rust (which has no
//! `Arc::try_new`): the kernel objects a system call creates (threads, endpoints,
//! notifications, processes, capability nodes) are made with [`try_arc`], so that a heap at
//! its ceiling turns into `NoMemory` for that call rather than a panic.
//!
//! On the kernel, the block `Arc::new` will ask for is allocated first, fallibly, and parked
//! for this CPU's next allocation of exactly that layout (`mm::heap::park`), with interrupts off
//! until `Arc::new` has taken it; `Arc::new` then cannot fail. On the host (unit tests), the
//! same size is asked for first and given back, so a test's refusing allocator
//! (`alloc_failure`) makes `try_arc` return the value instead of aborting.

use alloc::sync::Arc;
use core::alloc::Layout;
use core::sync::atomic::AtomicUsize;

/// `alloc::sync::ArcInner<T>`'s layout (std's is private: two counters, then the value,
/// `repr(C)`). If std ever allocates something else, the parked block is not taken: `Arc::new`
/// allocates as usual and the heap counts a miss, which the `memory` scenario fails on.
#[repr(C)]
struct ArcInnerLayout<T> {
    _strong: AtomicUsize,
    _weak: AtomicUsize,
    _data: T,
}

/// The layout `Arc::new::<T>` allocates.
pub fn arc_layout<T>() -> Layout {
    Layout::new::<ArcInnerLayout<T>>()
}

/// `Arc::new(value)`, or `value` back if the heap cannot hold it.
pub fn try_arc<T>(value: T) -> Result<Arc<T>, T> {
    #[cfg(target_os = "none")]
    {
        let Some(parked) = crate::mm::heap::park(arc_layout::<T>()) else { return Err(value) };
        let arc = Arc::new(value);
        drop(parked);
        Ok(arc)
    }
    #[cfg(not(target_os = "none"))]
    {
        let layout = arc_layout::<T>();
        // SAFETY: a non-zero-sized layout (two counters at least); the block is freed at once
        // with the same layout.
        // (`black_box`: an allocation freed unused may be elided, and assumed to succeed.)
        let probe = core::hint::black_box(unsafe { alloc::alloc::alloc(layout) });
        if probe.is_null() {
            return Err(value);
        }
        // SAFETY: allocated just above with `layout`.
        unsafe { alloc::alloc::dealloc(probe, layout) };
        Ok(Arc::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc_failure::refusing;

    #[test]
    fn the_layout_is_arcs_own() {
        // What std's ArcInner is: the block an Arc's pointer sits two words into.
        let a = Arc::new([7u64; 5]);
        assert_eq!(arc_layout::<[u64; 5]>().size(), 2 * core::mem::size_of::<usize>() + 40);
        assert_eq!(arc_layout::<u8>().align(), core::mem::align_of::<usize>());
        assert_eq!(*a, [7; 5]);
    }

    #[test]
    fn a_refused_heap_gives_the_value_back() {
        let value = String::from("kept");
        let back = refusing(move || try_arc(value).err());
        assert_eq!(back.as_deref(), Some("kept"));
        assert_eq!(*try_arc(5u32).unwrap(), 5);
    }
}
