//! Reaching physical memory: through the identity map until the final page tables are live,
//! then through the HHDM (which also covers memory above 4 GiB).

use core::sync::atomic::{AtomicU64, Ordering};

static WINDOW: AtomicU64 = AtomicU64::new(0);

/// From now on, physical memory is reached at `offset + phys`.
pub fn set_window(offset: u64) {
    WINDOW.store(offset, Ordering::SeqCst);
}

pub fn ptr<T>(phys: u64) -> *mut T {
    phys.wrapping_add(WINDOW.load(Ordering::Relaxed)) as *mut T
}

/// # Safety
/// `[phys, phys + len)` is mapped memory that nothing writes while the slice lives.
pub unsafe fn bytes<'a>(phys: u64, len: usize) -> &'a [u8] {
    // SAFETY: per the caller.
    unsafe { core::slice::from_raw_parts(ptr(phys), len) }
}

/// # Safety
/// `[phys, phys + len)` is mapped memory that only this slice touches while it lives.
pub unsafe fn bytes_mut<'a>(phys: u64, len: usize) -> &'a mut [u8] {
    // SAFETY: per the caller.
    unsafe { core::slice::from_raw_parts_mut(ptr(phys), len) }
}

/// # Safety
/// `phys` is mapped, aligned for `T`, and owned by the caller.
pub unsafe fn write<T>(phys: u64, value: T) {
    // SAFETY: per the caller.
    unsafe { ptr::<T>(phys).write_volatile(value) }
}

/// # Safety
/// `phys` is mapped and aligned for `T`.
pub unsafe fn read<T: Copy>(phys: u64) -> T {
    // SAFETY: per the caller.
    unsafe { ptr::<T>(phys).read_volatile() }
}
