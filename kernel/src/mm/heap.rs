//! The kernel heap: a linked-list allocator over a region that starts at 8 MiB, eagerly
//! mapped, and grows by whole chunks of fresh frames when an allocation does not fit, up to a
//! ceiling (an eighth of usable memory, at least 8 MiB more) that is part of the kernel's
//! reserve (`mm::reserve`). What a process makes the kernel allocate is charged to its budget
//! (`mm::budget`), so the heap's growth is bounded by what the budgets allow plus the reserve.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;
use spin::Mutex;

use super::kvm::HEAP_BASE;
use crate::arch::x86_64::paging::{self, Mapping};

pub const HEAP_INITIAL: u64 = 8 * 1024 * 1024;
/// The heap grows by at least this much at a time.
const GROW_CHUNK: u64 = 1024 * 1024;

/// Bytes the heap may grow beyond `HEAP_INITIAL` (set once at `init`).
static GROWTH_CEILING: AtomicU64 = AtomicU64::new(0);

/// The heap lock is taken with interrupts off, so an interrupt handler that allocates (a run
/// queue growing in the timer's wake-ups) cannot deadlock against the code it interrupted.
/// NMI, #MC and #DB handlers must still never allocate.
struct GrowingHeap {
    heap: Mutex<Heap>,
    /// Bytes mapped (initial plus growth), for reports.
    mapped: AtomicU64,
}

impl GrowingHeap {
    /// Maps up to `want` bytes after the heap's top and hands them to the allocator; false if
    /// not a page could be added (the ceiling, or no free frame).
    fn grow(&self, heap: &mut Heap, want: u64) -> bool {
        let mapped = self.mapped.load(Ordering::Relaxed);
        let room = (HEAP_INITIAL + GROWTH_CEILING.load(Ordering::Relaxed)).saturating_sub(mapped);
        let want = want.max(GROW_CHUNK).next_multiple_of(4096).min(room);
        let mut added = 0;
        // Page by page, so that running out of frames half way still adds what was mapped.
        while added < want && paging::map_fresh(HEAP_BASE + mapped + added, 4096, Mapping::KernelData).is_ok() {
            added += 4096;
        }
        if added == 0 {
            return false;
        }
        // SAFETY: `[top, top + added)` was just mapped, writable, directly after the heap's
        // current end (the heap always ends at HEAP_BASE + mapped), and belongs to nothing else.
        unsafe { heap.extend(added as usize) };
        self.mapped.store(mapped + added, Ordering::Relaxed);
        true
    }
}

// SAFETY: `Heap` hands out each byte of its region at most once and takes back only what it
// handed out; the region (initial and grown) stays mapped for the kernel's lifetime. The
// lock and interrupt masking make it usable from every CPU and from interrupt handlers.
unsafe impl GlobalAlloc for GrowingHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if PARKED_ANY.load(Ordering::Acquire) != 0 {
            if let Some(p) = take_parked(layout) {
                return p;
            }
        }
        x86_64::instructions::interrupts::without_interrupts(|| {
            let mut heap = self.heap.lock();
            loop {
                if let Ok(p) = heap.allocate_first_fit(layout) {
                    return p.as_ptr();
                }
                // Enough for the block, its alignment and the allocator's bookkeeping.
                let want = layout.size() as u64 + layout.align() as u64 + 64;
                if !self.grow(&mut heap, want) {
                    return core::ptr::null_mut();
                }
            }
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        x86_64::instructions::interrupts::without_interrupts(|| {
            // SAFETY: `ptr` came from `alloc` with the same layout (GlobalAlloc's contract),
            // so it is non-null and the heap's own.
            unsafe { self.heap.lock().deallocate(NonNull::new_unchecked(ptr), layout) }
        })
    }
}

#[global_allocator]
static HEAP: GrowingHeap = GrowingHeap { heap: Mutex::new(Heap::empty()), mapped: AtomicU64::new(0) };

/// Per CPU: a block allocated ahead by `park` for that CPU's next allocation of the same
/// layout (`fallible::try_arc`). Touched only by its own CPU, with interrupts off.
static PARKED: [Mutex<Option<(usize, Layout)>>; crate::arch::x86_64::smp::MAX_CPUS] =
    [const { Mutex::new(None) }; crate::arch::x86_64::smp::MAX_CPUS];
/// How many CPUs have a block parked (most of the time none: one load per allocation).
static PARKED_ANY: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
/// Parked blocks taken by the allocation they were parked for, and ones given back unused
/// (std's `Arc` asked for another layout: the fallible path no longer covers it).
pub static PARKED_TAKEN: AtomicU64 = AtomicU64::new(0);
pub static PARKED_MISSED: AtomicU64 = AtomicU64::new(0);

fn take_parked(layout: Layout) -> Option<*mut u8> {
    // Only a CPU with its per-CPU data can have parked anything.
    let cpu = crate::arch::x86_64::percpu::try_this()?.cpu_index;
    let mut slot = PARKED[cpu].lock();
    match *slot {
        Some((p, l)) if l == layout => {
            *slot = None;
            PARKED_TAKEN.fetch_add(1, Ordering::Relaxed);
            Some(p as *mut u8)
        }
        _ => None,
    }
}

/// A block parked for this CPU's next allocation of one layout; interrupts stay off while it
/// lives (so that no handler's allocation takes it), and dropping it gives an untaken block
/// back.
pub struct Parked {
    cpu: usize,
    interrupts_were_on: bool,
}

/// Allocates a block of `layout` now, fallibly, for this CPU's next allocation of that
/// layout, which then cannot fail; `None` if the heap cannot hold it.
pub fn park(layout: Layout) -> Option<Parked> {
    let interrupts_were_on = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    let cpu = crate::arch::x86_64::percpu::this().cpu_index;
    // SAFETY: a valid, non-zero-sized layout (every `try_arc` block holds two counters).
    let p = unsafe { HEAP.alloc(layout) };
    if p.is_null() {
        if interrupts_were_on {
            x86_64::instructions::interrupts::enable();
        }
        return None;
    }
    let old = PARKED[cpu].lock().replace((p as usize, layout));
    debug_assert!(old.is_none(), "parks do not nest");
    PARKED_ANY.fetch_add(1, Ordering::AcqRel);
    Some(Parked { cpu, interrupts_were_on })
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some((p, layout)) = PARKED[self.cpu].lock().take() {
            PARKED_MISSED.fetch_add(1, Ordering::Relaxed);
            // SAFETY: allocated by `park` with this layout, and never handed out.
            unsafe { HEAP.dealloc(p as *mut u8, layout) };
        }
        PARKED_ANY.fetch_sub(1, Ordering::AcqRel);
        if self.interrupts_were_on {
            x86_64::instructions::interrupts::enable();
        }
    }
}

/// How far the heap may grow beyond its initial size, given `usable` bytes of RAM.
pub const fn growth_ceiling(usable: u64) -> u64 {
    let eighth = (usable / 8).next_multiple_of(GROW_CHUNK);
    if eighth > HEAP_INITIAL { eighth } else { HEAP_INITIAL }
}

pub fn init(usable: u64) {
    paging::map_fresh(HEAP_BASE, HEAP_INITIAL, Mapping::KernelData).expect("cannot map the kernel heap");
    GROWTH_CEILING.store(growth_ceiling(usable), Ordering::Relaxed);
    // SAFETY: the region was just mapped, writable, and belongs to nothing else.
    unsafe { HEAP.heap.lock().init(HEAP_BASE as *mut u8, HEAP_INITIAL as usize) };
    HEAP.mapped.store(HEAP_INITIAL, Ordering::Relaxed);
    log::info!("{} KiB at {HEAP_BASE:#x}, may grow by {} MiB", HEAP_INITIAL / 1024, growth_ceiling(usable) >> 20);
}

/// `(bytes in use, bytes mapped)`.
pub fn usage() -> (u64, u64) {
    let used = x86_64::instructions::interrupts::without_interrupts(|| HEAP.heap.lock().used() as u64);
    (used, HEAP.mapped.load(Ordering::Relaxed))
}
