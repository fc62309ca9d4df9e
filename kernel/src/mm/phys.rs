//! The global physical-frame allocator and the HHDM (the direct map of physical memory).

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use super::frame::FrameBitmap;
use super::memmap::{self, PhysRange, FRAME_SIZE};
use crate::boot::{BootInfo, MemoryType};

static HHDM_OFFSET: AtomicU64 = AtomicU64::new(0);
static FRAMES: Mutex<Option<FrameBitmap<'static>>> = Mutex::new(None);
static USABLE_BYTES: AtomicU64 = AtomicU64::new(0);

/// The virtual address of physical address `phys` in the direct map.
pub fn to_virt(phys: u64) -> u64 {
    phys + HHDM_OFFSET.load(Ordering::Relaxed)
}

pub fn hhdm_offset() -> u64 {
    HHDM_OFFSET.load(Ordering::Relaxed)
}

/// Builds the allocator from the usable entries of the memory map. Bootloader-reclaimable
/// memory is left alone: the boot responses and the APs' first stacks live there.
pub fn init(boot: &BootInfo) {
    HHDM_OFFSET.store(boot.hhdm_offset, Ordering::Relaxed);
    let mut usable = [PhysRange { start: 0, end: 0 }; 128];
    let mut n = 0;
    for e in boot.memory_map.iter().filter(|e| e.entry_type == MemoryType::USABLE) {
        if let Some(r) = PhysRange::from_base_len(e.base, e.length).and_then(|r| r.frames_inside()) {
            if n == usable.len() {
                log::warn!("memory map has more than {} usable ranges; ignoring the rest", usable.len());
                break;
            }
            usable[n] = r;
            n += 1;
        }
    }
    let n = memmap::normalize(&mut usable[..n]);
    let usable = &usable[..n];
    let top = memmap::highest_end(usable);
    let words = FrameBitmap::words_for(top);
    let bytes = (words * 8) as u64;
    // The bitmap lives at the start of the first usable range big enough to hold it.
    let home = usable
        .iter()
        .find(|r| r.len() >= bytes)
        .map(|r| PhysRange { start: r.start, end: r.start + bytes.div_ceil(FRAME_SIZE) * FRAME_SIZE })
        .expect("no usable range can hold the frame bitmap");
    // SAFETY: `home` is usable RAM (the memory map says so), mapped by the bootloader's HHDM,
    // owned by nobody else, and reserved below so it is never handed out as a frame.
    let bits = unsafe { core::slice::from_raw_parts_mut(to_virt(home.start) as *mut u64, words) };
    let mut bitmap = FrameBitmap::new(bits);
    for r in usable {
        bitmap.add_free(*r);
    }
    bitmap.reserve(home);
    let total: u64 = usable.iter().map(|r| r.len()).sum();
    USABLE_BYTES.store(total, Ordering::Relaxed);
    log::info!(
        "{} MiB usable in {} ranges, {} frames free, bitmap {} KiB at {:#x}",
        total >> 20,
        usable.len(),
        bitmap.free_frames(),
        bytes.div_ceil(1024),
        home.start
    );
    *FRAMES.lock() = Some(bitmap);
}

/// One zeroed 4 KiB frame.
pub fn alloc_zeroed() -> Option<u64> {
    let frame = FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: the frame was just taken from the free set, so nothing else uses it, and the
    // HHDM maps all usable RAM.
    unsafe { core::ptr::write_bytes(to_virt(frame) as *mut u8, 0, FRAME_SIZE as usize) };
    Some(frame)
}

pub fn free(frame: u64) {
    if let Err(e) = FRAMES.lock().as_mut().expect("frame allocator not initialized").free(frame) {
        panic!("bad frame free: {e:?}");
    }
}

/// Bytes of usable RAM the memory map reported.
pub fn usable_bytes() -> u64 {
    USABLE_BYTES.load(Ordering::Relaxed)
}

pub fn free_frames() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |b| b.free_frames())
}

/// Page-table frames of the kernel half: never freed, reused by later mappings in the same
/// ranges (kernel stacks, the heap).
static KERNEL_TABLES: AtomicU64 = AtomicU64::new(0);

pub fn kernel_table_frames() -> u64 {
    KERNEL_TABLES.load(Ordering::Relaxed)
}

/// The allocator of the kernel half's page tables, as the `x86_64` crate wants it (user
/// address spaces charge theirs to a budget: `aspace`).
pub struct PageTableFrames;

// SAFETY: `alloc_zeroed` returns each free frame at most once, and zeroed as a new page
// table must be.
unsafe impl x86_64::structures::paging::FrameAllocator<x86_64::structures::paging::Size4KiB> for PageTableFrames {
    fn allocate_frame(&mut self) -> Option<x86_64::structures::paging::PhysFrame> {
        KERNEL_TABLES.fetch_add(1, Ordering::Relaxed);
        alloc_zeroed().map(|a| x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(a)))
    }
}
