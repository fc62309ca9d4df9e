//! The kernel's own page tables.
//!
//! The BSP builds one top half (HHDM over RAM, the kernel image with per-section permissions,
//! and every top-half PML4 entry pre-allocated) and every CPU loads it. Because the top-half
//! PML4 entries never change after boot, later address spaces share the kernel half by copying
//! those 256 entries, and a mapping added on one CPU is visible on all of them (new mappings
//! only replace non-present entries, which the TLB does not cache).

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::{MapToError, Translate};
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::boot::{BootInfo, MemoryType};
use crate::mm::memmap::PhysRange;
use crate::mm::phys::{self, PageTableFrames};

static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);
static KERNEL_VIRT_BASE: AtomicU64 = AtomicU64::new(0);
static KERNEL_PHYS_BASE: AtomicU64 = AtomicU64::new(0);
/// Serializes every change to the shared kernel page tables.
static MAP_LOCK: Mutex<()> = Mutex::new(());

/// `MAP_LOCK`, held with interrupts off: the heap grows through `map_fresh` from inside its
/// allocator, which interrupt handlers call too, so a holder interrupted on its own CPU by an
/// allocating handler would deadlock.
struct MapGuard {
    guard: Option<spin::MutexGuard<'static, ()>>,
    were_enabled: bool,
}

fn lock_map() -> MapGuard {
    let were_enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    MapGuard { guard: Some(MAP_LOCK.lock()), were_enabled }
}

impl Drop for MapGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        if self.were_enabled {
            x86_64::instructions::interrupts::enable();
        }
    }
}

/// What a mapping is for; each kind has one set of permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    KernelText,
    KernelRodata,
    KernelData,
    /// Device registers: uncached, never executable.
    Mmio,
    /// Entry text aliased into a per-CPU entry area (the SYSCALL trampoline).
    EntryText,
}

impl Mapping {
    fn flags(self) -> F {
        let base = F::PRESENT | F::GLOBAL;
        match self {
            Self::KernelText | Self::EntryText => base,
            Self::KernelRodata => base | F::NO_EXECUTE,
            Self::KernelData => base | F::WRITABLE | F::NO_EXECUTE,
            Self::Mmio => base | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH,
        }
    }
}

#[derive(Debug)]
pub enum MapError {
    OutOfMemory,
    AlreadyMapped(u64),
}

impl From<MapToError<Size4KiB>> for MapError {
    fn from(e: MapToError<Size4KiB>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => Self::OutOfMemory,
            MapToError::PageAlreadyMapped(f) => Self::AlreadyMapped(f.start_address().as_u64()),
            MapToError::ParentEntryHugePage => Self::AlreadyMapped(0),
        }
    }
}

/// The page-table walker over the kernel tables.
///
/// # Safety
/// The caller holds `MAP_LOCK` (or is the BSP before any other CPU runs) and `pml4` is a
/// page-table root reachable through the HHDM.
unsafe fn walker(pml4: u64) -> OffsetPageTable<'static> {
    // SAFETY: per the function contract.
    unsafe { OffsetPageTable::new(&mut *(phys::to_virt(pml4) as *mut PageTable), VirtAddr::new(phys::hhdm_offset())) }
}

extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
}

fn linker_range(start: &u8, end: &u8) -> (u64, u64) {
    (start as *const u8 as u64, end as *const u8 as u64)
}

/// Builds the kernel tables on the BSP and switches to them.
pub fn init(boot: &BootInfo) {
    let pml4 = phys::alloc_zeroed().expect("no frame for the kernel PML4");
    // SAFETY: only the BSP runs; `pml4` is a fresh zeroed frame in the HHDM.
    let mut w = unsafe { walker(pml4) };
    // Pre-allocate the whole top half so it can be shared by reference forever.
    {
        let root = w.level_4_table_mut();
        for entry in root.iter_mut().skip(256) {
            let pdpt = phys::alloc_zeroed().expect("no frame for a kernel PDPT");
            entry.set_addr(PhysAddr::new(pdpt), F::PRESENT | F::WRITABLE);
        }
    }

    // The direct map: every range of RAM-like memory, 2 MiB pages where alignment allows.
    let mut mapped = 0u64;
    for e in boot.memory_map {
        let ram = [
            MemoryType::USABLE,
            MemoryType::BOOTLOADER_RECLAIMABLE,
            MemoryType::EXECUTABLE_AND_MODULES,
            MemoryType::ACPI_RECLAIMABLE,
            MemoryType::ACPI_NVS,
            MemoryType::FRAMEBUFFER,
        ];
        if !ram.contains(&e.entry_type) {
            continue;
        }
        let Some(r) = PhysRange::from_base_len(e.base, e.length) else { continue };
        let r = r.frames_covering();
        map_direct(&mut w, r, Mapping::KernelData);
        mapped += r.len();
    }

    // The kernel image, one permission per section, from the linker script's symbols.
    // SAFETY: the symbols are defined by linker.ld; only their addresses are taken.
    let sections = unsafe {
        [
            (linker_range(&__text_start, &__text_end), Mapping::KernelText),
            (linker_range(&__rodata_start, &__rodata_end), Mapping::KernelRodata),
            (linker_range(&__data_start, &__data_end), Mapping::KernelData),
        ]
    };
    for ((start, end), kind) in sections {
        let phys_start = start - boot.kernel_virt_base + boot.kernel_phys_base;
        for off in (0..end - start).step_by(4096) {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(start + off));
            let frame = PhysFrame::containing_address(PhysAddr::new(phys_start + off));
            // SAFETY: maps the kernel's own image to where it was loaded; nothing else is
            // mapped there in a fresh table.
            unsafe { w.map_to(page, frame, kind.flags(), &mut PageTableFrames) }
                .expect("cannot map the kernel image")
                .ignore();
        }
    }
    KERNEL_VIRT_BASE.store(boot.kernel_virt_base, Ordering::Relaxed);
    KERNEL_PHYS_BASE.store(boot.kernel_phys_base, Ordering::Relaxed);
    KERNEL_PML4.store(pml4, Ordering::Release);
    load();
    log::info!("kernel page tables at {pml4:#x}: {} MiB direct-mapped", mapped >> 20);
}

fn map_direct(w: &mut OffsetPageTable<'static>, r: PhysRange, kind: Mapping) {
    let mut p = r.start;
    while p < r.end {
        let virt = VirtAddr::new(phys::to_virt(p));
        if w.translate_addr(virt).is_some() {
            p += 4096;
            continue;
        }
        if p % (2 << 20) == 0 && r.end - p >= 2 << 20 {
            let page = Page::<Size2MiB>::containing_address(virt);
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(p));
            // SAFETY: the direct map maps each physical page at HHDM+phys and nowhere else
            // in this region; the slot was checked to be empty.
            if let Ok(f) = unsafe { w.map_to(page, frame, kind.flags() | F::HUGE_PAGE, &mut PageTableFrames) } {
                f.ignore();
                p += 2 << 20;
                continue;
            }
        }
        let page = Page::<Size4KiB>::containing_address(virt);
        let frame = PhysFrame::containing_address(PhysAddr::new(p));
        // SAFETY: as above.
        unsafe { w.map_to(page, frame, kind.flags(), &mut PageTableFrames) }
            .expect("cannot extend the direct map")
            .ignore();
        p += 4096;
    }
}

/// Loads the kernel tables on this CPU.
pub fn load() {
    let pml4 = KERNEL_PML4.load(Ordering::Acquire);
    assert!(pml4 != 0, "kernel page tables not built yet");
    // SAFETY: the tables map the kernel image, the direct map and every per-CPU region at the
    // same addresses as the bootloader's tables did for everything the kernel uses.
    unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(pml4)), Cr3Flags::empty()) };
}

/// Copies the kernel half (PML4 entries 256..512, all pre-allocated and never changed) into a
/// new address space's root.
pub fn share_kernel_half(pml4: u64) {
    let kernel = KERNEL_PML4.load(Ordering::Acquire);
    // SAFETY: both are PML4 frames in the HHDM; the kernel's top-half entries are read-only
    // after boot and `pml4` is a fresh frame owned by the caller.
    unsafe {
        let src = &*(phys::to_virt(kernel) as *const PageTable);
        let dst = &mut *(phys::to_virt(pml4) as *mut PageTable);
        for i in 256..512 {
            dst[i] = src[i].clone();
        }
    }
}

pub fn kernel_pml4() -> u64 {
    KERNEL_PML4.load(Ordering::Acquire)
}

/// Loads `pml4` into CR3 unless it is loaded already (a reload flushes the TLB).
pub fn switch_to(pml4: u64) {
    let (current, _) = Cr3::read_raw();
    if current.start_address().as_u64() != pml4 {
        // SAFETY: every PML4 the kernel loads shares the kernel half (`share_kernel_half`), so
        // the code and stack in use stay mapped across the switch.
        unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(pml4)), Cr3Flags::empty()) };
    }
}

/// The physical address of a kernel-image virtual address (for aliases such as the SYSCALL
/// trampoline in each entry area).
pub fn kernel_image_phys(virt: u64) -> u64 {
    virt - KERNEL_VIRT_BASE.load(Ordering::Relaxed) + KERNEL_PHYS_BASE.load(Ordering::Relaxed)
}

/// Maps `len` bytes at `virt` to the physical range at `phys` (already owned by the caller).
pub fn map_alias(virt: u64, phys_addr: u64, len: u64, kind: Mapping) -> Result<(), MapError> {
    let _g = lock_map();
    // SAFETY: MAP_LOCK is held; the kernel PML4 is in the HHDM.
    let mut w = unsafe { walker(KERNEL_PML4.load(Ordering::Acquire)) };
    for off in (0..len).step_by(4096) {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt + off));
        let frame = PhysFrame::containing_address(PhysAddr::new(phys_addr + off));
        // SAFETY: an additional mapping of memory the caller owns; map_to refuses to replace
        // an existing mapping.
        unsafe { w.map_to(page, frame, kind.flags(), &mut PageTableFrames) }?.flush();
    }
    Ok(())
}

/// Maps `len` bytes at `virt` to fresh zeroed frames.
pub fn map_fresh(virt: u64, len: u64, kind: Mapping) -> Result<(), MapError> {
    let _g = lock_map();
    // SAFETY: MAP_LOCK is held; the kernel PML4 is in the HHDM.
    let mut w = unsafe { walker(KERNEL_PML4.load(Ordering::Acquire)) };
    for off in (0..len).step_by(4096) {
        let frame = phys::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt + off));
        // SAFETY: the frame is fresh and owned by this mapping alone; map_to refuses to
        // replace an existing mapping.
        match unsafe { w.map_to(page, PhysFrame::containing_address(PhysAddr::new(frame)), kind.flags(), &mut PageTableFrames) } {
            Ok(flush) => flush.flush(),
            Err(e) => {
                phys::free(frame);
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Unmaps `[virt, virt+len)` of the kernel half and returns the frames that were mapped there.
/// The caller frees them only after a TLB shootdown (`smp::tlb_shootdown_kernel`): kernel
/// pages are global, so any CPU may still hold their translations.
pub fn unmap_kernel(virt: u64, len: u64) -> impl Iterator<Item = u64> {
    let _g = lock_map();
    // SAFETY: MAP_LOCK is held; the kernel PML4 is in the HHDM.
    let mut w = unsafe { walker(KERNEL_PML4.load(Ordering::Acquire)) };
    let mut frames = [0u64; 16];
    let mut n = 0;
    for off in (0..len).step_by(4096) {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt + off));
        if let Ok((frame, flush)) = w.unmap(page) {
            flush.ignore(); // the caller shoots down every CPU's translations at once
            assert!(n < frames.len(), "unmap_kernel takes at most 16 pages at a time");
            frames[n] = frame.start_address().as_u64();
            n += 1;
        }
    }
    frames.into_iter().take(n)
}

/// Makes physical `[phys, phys+len)` reachable through the direct map with the attributes of
/// `kind` (device registers, firmware tables outside RAM) and returns its HHDM address. Pages
/// already mapped are left as they are.
pub fn map_direct_range(phys: u64, len: u64, kind: Mapping) -> u64 {
    let _g = lock_map();
    // SAFETY: MAP_LOCK is held; the kernel PML4 is in the HHDM.
    let mut w = unsafe { walker(KERNEL_PML4.load(Ordering::Acquire)) };
    let r = PhysRange { start: phys, end: phys + len.max(1) }.frames_covering();
    let mut p = r.start;
    while p < r.end {
        let virt = VirtAddr::new(phys::to_virt(p));
        if w.translate_addr(virt).is_none() {
            let page = Page::<Size4KiB>::containing_address(virt);
            // SAFETY: an empty slot of the direct map, mapped to its own physical page.
            unsafe { w.map_to(page, PhysFrame::containing_address(PhysAddr::new(p)), kind.flags(), &mut PageTableFrames) }
                .expect("cannot extend the direct map")
                .flush();
        }
        p += 4096;
    }
    phys::to_virt(phys)
}

/// Whether `virt` is mapped in the kernel tables (for reports: "was this a guard page?").
/// Takes no lock, so a fault handler may call it: it only reads, and kernel page tables are
/// never freed.
pub fn is_mapped(virt: u64) -> bool {
    // SAFETY: a read-only walk of tables that are never freed; a concurrent map can only turn
    // a "no" into a "yes".
    let w = unsafe { walker(KERNEL_PML4.load(Ordering::Acquire)) };
    w.translate_addr(VirtAddr::new(virt)).is_some()
}
