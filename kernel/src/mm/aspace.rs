//! User address spaces: a PML4 whose top half is the kernel's (shared by reference, see
//! `paging`) and whose bottom half belongs to one process.

use x86_64::structures::paging::mapper::{Translate, TranslateResult};
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use alloc::sync::Arc;

use super::budget::{self as account_budget, Kind};
use super::phys;
use super::unmap_walk::{self, Budget, Entry, Freed, Progress};
use crate::arch::x86_64::paging::{self, MapError};
use abi::layout::USER_END;

/// Permissions of a user mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserAccess {
    pub write: bool,
    pub execute: bool,
}

impl UserAccess {
    pub const DATA: Self = Self { write: true, execute: false };

    fn flags(self) -> F {
        let mut f = F::PRESENT | F::USER_ACCESSIBLE;
        if self.write {
            f |= F::WRITABLE;
        }
        if !self.execute {
            f |= F::NO_EXECUTE;
        }
        f
    }
}

/// An address space pays for every frame it holds (pages and page tables, the PML4 included)
/// from its budget.
pub struct AddressSpace {
    pml4: u64,
    budget: Arc<account_budget::Budget>,
}

/// Frames for page tables, charged to a budget (the `x86_64` crate's mapper asks for them).
struct ChargedFrames<'a>(&'a account_budget::Budget);

/// One zeroed frame charged to `budget`, or `None` (nothing charged) at its limit or when
/// no frame is free.
fn charged_frame(budget: &account_budget::Budget) -> Option<u64> {
    budget.charge(Kind::Frames, 4096).ok()?;
    let frame = phys::alloc_zeroed();
    if frame.is_none() {
        budget.release(Kind::Frames, 4096);
    }
    frame
}

// SAFETY: `charged_frame` returns each free frame at most once, zeroed as a new page table
// must be.
unsafe impl x86_64::structures::paging::FrameAllocator<Size4KiB> for ChargedFrames<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        charged_frame(self.0).map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

/// `[start, start+len)` is page-aligned, non-empty and inside the user half.
pub fn user_range_ok(start: u64, len: u64) -> bool {
    start % 4096 == 0 && len % 4096 == 0 && len > 0 && start.checked_add(len).is_some_and(|end| end <= USER_END)
}

impl AddressSpace {
    pub fn new(budget: Arc<account_budget::Budget>) -> Result<Self, MapError> {
        let pml4 = charged_frame(&budget).ok_or(MapError::OutOfMemory)?;
        paging::share_kernel_half(pml4);
        Ok(Self { pml4, budget })
    }

    /// Frees `frame`, a page or page table this space no longer maps (after the TLB
    /// shootdown), and gives its charge back.
    pub fn free_frame(&self, frame: u64) {
        phys::free(frame);
        self.budget.release(Kind::Frames, 4096);
    }

    pub fn pml4(&self) -> u64 {
        self.pml4
    }

    fn walker(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: `pml4` is this address space's root, reachable through the HHDM, and `&mut
        // self` makes this the only walker of its lower half.
        unsafe { OffsetPageTable::new(&mut *(phys::to_virt(self.pml4) as *mut PageTable), VirtAddr::new(phys::hhdm_offset())) }
    }

    /// Maps fresh zeroed pages over `[virt, virt+len)`, which must be unmapped.
    pub fn map_fresh(&mut self, virt: u64, len: u64, access: UserAccess) -> Result<(), MapError> {
        assert!(user_range_ok(virt, len), "map_fresh({virt:#x}, {len:#x}) outside user space");
        let budget = self.budget.clone();
        let mut w = self.walker();
        for off in (0..len).step_by(4096) {
            let frame = charged_frame(&budget).ok_or(MapError::OutOfMemory)?;
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt + off));
            let parents = F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE;
            // SAFETY: a fresh frame owned by this mapping alone, in the user half.
            match unsafe {
                w.map_to_with_table_flags(page, PhysFrame::containing_address(PhysAddr::new(frame)), access.flags(), parents, &mut ChargedFrames(&budget))
            } {
                Ok(flush) => flush.ignore(), // a new mapping: nothing stale to flush
                Err(e) => {
                    phys::free(frame);
                    budget.release(Kind::Frames, 4096);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Maps the page at `virt` if it is not mapped yet (ELF segments may share a page), widening
    /// its permissions to include `access`; returns its physical frame.
    pub fn ensure_page(&mut self, virt: u64, access: UserAccess) -> Result<u64, MapError> {
        let page_va = virt & !0xfff;
        match self.walker().translate(VirtAddr::new(page_va)) {
            TranslateResult::Mapped { frame, flags, .. } => {
                let mut f = flags;
                if access.write {
                    f |= F::WRITABLE;
                }
                if access.execute {
                    f.remove(F::NO_EXECUTE);
                }
                let page = Page::<Size4KiB>::containing_address(VirtAddr::new(page_va));
                // SAFETY: only widens the permissions of a page this address space owns.
                unsafe { self.walker().update_flags(page, f) }.map_err(|_| MapError::AlreadyMapped(page_va))?.ignore();
                Ok(frame.start_address().as_u64())
            }
            _ => {
                self.map_fresh(page_va, 4096, access)?;
                self.ensure_page(virt, access)
            }
        }
    }

    /// Copies `bytes` to user address `virt` through the direct map (the space need not be
    /// active), mapping pages with `access` as needed.
    pub fn write(&mut self, virt: u64, bytes: &[u8], access: UserAccess) -> Result<(), MapError> {
        let mut done = 0;
        while done < bytes.len() {
            let va = virt + done as u64;
            let frame = self.ensure_page(va, access)?;
            let in_page = (4096 - (va & 0xfff)) as usize;
            let n = in_page.min(bytes.len() - done);
            // SAFETY: `frame` is a user frame of this address space, in the HHDM; the copy
            // stays inside that page.
            unsafe {
                core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), (phys::to_virt(frame) + (va & 0xfff)) as *mut u8, n)
            };
            done += n;
        }
        Ok(())
    }

    /// Unmaps what is mapped in `[virt, virt+len)`, a page table at a time, within `budget`
    /// (see `unmap_walk`): every unmapped frame and emptied page table goes to `out`. The
    /// caller must flush the TLBs of every CPU that may run this space *before* freeing them:
    /// until then another CPU may still write through a stale translation, or walk a freed table.
    pub fn unmap(&mut self, virt: u64, len: u64, budget: Budget, out: impl FnMut(Freed)) -> Progress {
        assert!(user_range_ok(virt, len));
        unmap_walk::unmap(&mut HhdmTables, self.pml4, virt, virt + len, budget, out)
    }

    pub fn is_mapped(&mut self, virt: u64) -> bool {
        self.walker().translate_addr(VirtAddr::new(virt)).is_some()
    }
}

/// The lower half's page tables through the direct map, for `unmap_walk`.
struct HhdmTables;

impl HhdmTables {
    fn table(table: u64) -> *mut PageTable {
        phys::to_virt(table) as *mut PageTable
    }
}

impl unmap_walk::Tables for HhdmTables {
    fn read(&self, table: u64, level: u8, index: usize) -> Entry {
        // SAFETY: `table` is a page table of the address space being walked (the root, or an
        // entry's child), reachable through the HHDM; `AddressSpace::unmap` holds `&mut` to
        // that space, so nothing else changes its lower half meanwhile.
        let t: &PageTable = unsafe { &*Self::table(table) };
        let e = &t[index];
        let f = e.flags();
        if !f.contains(F::PRESENT) {
            Entry::Empty
        } else if level == 1 {
            Entry::Page(e.addr().as_u64())
        } else if f.contains(F::HUGE_PAGE) {
            Entry::Large
        } else {
            Entry::Table(e.addr().as_u64())
        }
    }

    fn clear(&mut self, table: u64, index: usize) {
        // SAFETY: as in `read`; this is the only reference to the table while it lives.
        let t: &mut PageTable = unsafe { &mut *Self::table(table) };
        t[index].set_unused();
    }
}

impl AddressSpace {
    /// Frees every user page and every page table of the lower half, then the PML4, giving
    /// their charges back; the space is empty afterwards. Only called once no CPU can have
    /// this space loaded (see `sched`): no TLB can hold its translations.
    pub fn teardown(&mut self) {
        fn free_level(table_phys: u64, level: u8, freed: &mut u64) {
            // SAFETY: a page table of this address space's lower half, reachable by HHDM and no
            // longer used by any CPU.
            let table = unsafe { &*(phys::to_virt(table_phys) as *const PageTable) };
            for e in table.iter().filter(|e| e.flags().contains(F::PRESENT)) {
                let child = e.addr().as_u64();
                if level > 1 && !e.flags().contains(F::HUGE_PAGE) {
                    free_level(child, level - 1, freed);
                }
                phys::free(child);
                *freed += 1;
            }
        }
        if self.pml4 == 0 {
            return;
        }
        let mut freed = 0;
        // SAFETY: as above, for the root.
        let root = unsafe { &mut *(phys::to_virt(self.pml4) as *mut PageTable) };
        for e in root.iter_mut().take(256).filter(|e| e.flags().contains(F::PRESENT)) {
            free_level(e.addr().as_u64(), 3, &mut freed);
            phys::free(e.addr().as_u64());
            freed += 1;
            e.set_unused();
        }
        phys::free(self.pml4);
        freed += 1;
        self.pml4 = 0;
        self.budget.release_n(Kind::Frames, freed, 4096);
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        self.teardown();
    }
}
