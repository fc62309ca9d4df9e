//! Host tests only: a global allocator that can refuse, so that a test drives a kernel
//! structure into the heap failure the bare-metal kernel meets at its ceiling (`mm::heap`)
//! and checks that the refusal changed nothing. [`refusing`] makes every allocation of the
//! calling thread fail while its closure runs; other test threads allocate normally.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static REFUSE: Cell<bool> = const { Cell::new(false) };
}

fn refused() -> bool {
    REFUSE.try_with(Cell::get).unwrap_or(false)
}

struct Refusing;

// SAFETY: every request goes to `System` unchanged, or fails with a null pointer (which
// `GlobalAlloc` allows); `dealloc` only ever sees what `System` handed out.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused() { core::ptr::null_mut() } else { unsafe { System.alloc(layout) } }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refused() { core::ptr::null_mut() } else { unsafe { System.alloc_zeroed(layout) } }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refused() { core::ptr::null_mut() } else { unsafe { System.realloc(ptr, layout, new_size) } }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Refusing = Refusing;

/// Runs `f` with every allocation of this thread refused. `f` must not panic (a panic
/// allocates) and must not call code that allocates infallibly (that aborts the test run):
/// only the fallible paths under test.
pub fn refusing<R>(f: impl FnOnce() -> R) -> R {
    REFUSE.with(|r| r.set(true));
    let out = f();
    REFUSE.with(|r| r.set(false));
    out
}

#[test]
fn a_refused_allocation_fails_and_the_next_one_works() {
    let mut v: Vec<u8> = Vec::new();
    assert!(refusing(|| v.try_reserve(1)).is_err());
    assert_eq!(v.capacity(), 0);
    v.try_reserve(1).unwrap();
}
