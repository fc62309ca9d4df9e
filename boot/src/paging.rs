//! Building 4-level x86_64 page tables (Intel SDM Vol. 3A, 4.5) in memory the caller provides.
//!
//! The builder works through [`TableMemory`], so the same code writes the final tables on the
//! machine and into a simulated memory in the host tests, where they are walked back.

use core::fmt;
use x86_64::structures::paging::PageTableFlags as Flags;

pub const SIZE_4K: u64 = 1 << 12;
pub const SIZE_2M: u64 = 1 << 21;
pub const SIZE_1G: u64 = 1 << 30;

const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Physical memory holding page tables.
pub trait TableMemory {
    /// A zeroed, 4 KiB-aligned frame for a new table.
    fn alloc_table(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    OutOfMemory,
    /// The address is already mapped differently.
    Conflict {
        virt: u64,
    },
    Misaligned {
        virt: u64,
        phys: u64,
        size: u64,
    },
    NonCanonical {
        virt: u64,
    },
}

impl fmt::Display for PagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutOfMemory => write!(f, "out of memory for page tables"),
            Self::Conflict { virt } => write!(f, "virtual address {virt:#x} mapped twice"),
            Self::Misaligned { virt, phys, size } => {
                write!(
                    f,
                    "cannot map {virt:#x} -> {phys:#x} with {size:#x}-byte pages"
                )
            }
            Self::NonCanonical { virt } => write!(f, "{virt:#x} is not a canonical address"),
        }
    }
}

fn canonical(virt: u64) -> bool {
    let top = virt >> 47;
    top == 0 || top == 0x1ffff
}

fn index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

/// Flags of the tables that lead to a leaf: the leaf alone decides writability and NX.
const TABLE_FLAGS: Flags = Flags::PRESENT.union(Flags::WRITABLE);

/// The paging level whose entries map pages of `size`, after checking the addresses.
fn leaf_level(virt: u64, phys: u64, size: u64) -> Result<u32, PagingError> {
    if !canonical(virt) {
        return Err(PagingError::NonCanonical { virt });
    }
    if !virt.is_multiple_of(size) || !phys.is_multiple_of(size) {
        return Err(PagingError::Misaligned { virt, phys, size });
    }
    match size {
        SIZE_4K => Ok(1),
        SIZE_2M => Ok(2),
        SIZE_1G => Ok(3),
        _ => Err(PagingError::Misaligned { virt, phys, size }),
    }
}

/// Writes the leaf entry for `virt` in `table`; an identical entry already there is fine.
fn set_leaf(
    mem: &mut impl TableMemory,
    table: u64,
    virt: u64,
    phys: u64,
    level: u32,
    flags: Flags,
) -> Result<(), PagingError> {
    let huge = if level > 1 {
        Flags::HUGE_PAGE
    } else {
        Flags::empty()
    };
    let leaf = phys | (flags | huge | Flags::PRESENT).bits();
    let i = index(virt, level);
    match mem.read(table, i) {
        0 => mem.write(table, i, leaf),
        same if same == leaf => {}
        _ => return Err(PagingError::Conflict { virt }),
    }
    Ok(())
}

/// A 4-level address space rooted at `pml4`.
#[derive(Debug, Clone, Copy)]
pub struct AddressSpace {
    pub pml4: u64,
}

impl AddressSpace {
    pub fn new(mem: &mut impl TableMemory) -> Result<Self, PagingError> {
        Ok(Self {
            pml4: mem.alloc_table().ok_or(PagingError::OutOfMemory)?,
        })
    }

    /// Maps one page of `size` (4 KiB, 2 MiB or 1 GiB). Mapping the same page again with the
    /// same frame and flags is allowed; anything else already there is a conflict.
    pub fn map(
        &self,
        mem: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        size: u64,
        flags: Flags,
    ) -> Result<(), PagingError> {
        let level = leaf_level(virt, phys, size)?;
        let table = self.leaf_table(mem, virt, level)?;
        set_leaf(mem, table, virt, phys, level, flags)
    }

    /// The table that holds `virt`'s leaf entry at `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB),
    /// created on the way if missing.
    fn leaf_table(
        &self,
        mem: &mut impl TableMemory,
        virt: u64,
        level: u32,
    ) -> Result<u64, PagingError> {
        let mut table = self.pml4;
        for level in (level + 1..=4).rev() {
            let i = index(virt, level);
            let entry = mem.read(table, i);
            table = if entry & Flags::PRESENT.bits() == 0 {
                let next = mem.alloc_table().ok_or(PagingError::OutOfMemory)?;
                mem.write(table, i, next | TABLE_FLAGS.bits());
                next
            } else if entry & Flags::HUGE_PAGE.bits() != 0 {
                return Err(PagingError::Conflict { virt });
            } else {
                entry & ADDRESS_MASK
            };
        }
        Ok(table)
    }

    /// Maps `[phys, phys + len)` at `virt` with the largest pages alignment allows (1 GiB ones
    /// only if `gigantic` pages are available). All three must be 4 KiB aligned. Consecutive
    /// pages in one table reuse the walk (the HHDM has thousands of them).
    pub fn map_range(
        &self,
        mem: &mut impl TableMemory,
        virt: u64,
        phys: u64,
        len: u64,
        flags: Flags,
        gigantic: bool,
    ) -> Result<(), PagingError> {
        // (leaf level, which table-sized region of the address space, that table)
        let mut cached: Option<(u32, u64, u64)> = None;
        let mut done = 0;
        while done < len {
            let (v, p, left) = (virt.wrapping_add(done), phys + done, len - done);
            let fits = |size: u64| v % size == 0 && p % size == 0 && left >= size;
            let size = if gigantic && fits(SIZE_1G) {
                SIZE_1G
            } else if fits(SIZE_2M) {
                SIZE_2M
            } else {
                SIZE_4K
            };
            let level = leaf_level(v, p, size)?;
            let region = v >> (12 + 9 * level);
            let table = match cached {
                Some((l, r, table)) if l == level && r == region => table,
                _ => self.leaf_table(mem, v, level)?,
            };
            cached = Some((level, region, table));
            set_leaf(mem, table, v, p, level, flags)?;
            done += size;
        }
        Ok(())
    }

    /// Walks the tables: the physical address and leaf flags `virt` maps to.
    pub fn translate(&self, mem: &impl TableMemory, virt: u64) -> Option<(u64, Flags)> {
        let mut table = self.pml4;
        for level in (1..=4).rev() {
            let entry = mem.read(table, index(virt, level));
            if entry & Flags::PRESENT.bits() == 0 {
                return None;
            }
            let is_leaf = level == 1 || entry & Flags::HUGE_PAGE.bits() != 0;
            if is_leaf {
                let size = 1u64 << (12 + 9 * (level - 1));
                let flags = Flags::from_bits_truncate(entry);
                return Some((
                    (entry & ADDRESS_MASK & !(size - 1)) + (virt & (size - 1)),
                    flags,
                ));
            }
            table = entry & ADDRESS_MASK;
        }
        None
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Simulated physical memory: frames handed out from 0x10_0000 upward.
    #[derive(Default)]
    pub struct SimMemory {
        pub tables: HashMap<u64, [u64; 512]>,
        pub next: u64,
        pub limit: Option<usize>,
    }

    impl TableMemory for SimMemory {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.tables.len() >= l) {
                return None;
            }
            let frame = 0x10_0000 + self.next;
            self.next += SIZE_4K;
            self.tables.insert(frame, [0; 512]);
            Some(frame)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            self.tables.get_mut(&table).unwrap()[index] = entry;
        }
    }

    const HHDM: u64 = 0xffff_8000_0000_0000;
    const RW: Flags = Flags::WRITABLE;

    #[test]
    fn four_kib_mapping_translates_with_its_flags() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        let nx = Flags::NO_EXECUTE;
        space
            .map(&mut mem, 0xffff_ffff_8000_1000, 0x20_3000, SIZE_4K, nx)
            .unwrap();
        let (phys, flags) = space.translate(&mem, 0xffff_ffff_8000_1234).unwrap();
        assert_eq!(phys, 0x20_3234);
        assert!(flags.contains(Flags::NO_EXECUTE) && !flags.contains(Flags::WRITABLE));
        assert!(space.translate(&mem, 0xffff_ffff_8000_2000).is_none());
    }

    #[test]
    fn range_uses_huge_pages_where_alignment_allows() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        // 4 GiB with 1 GiB pages: PML4 + one PDPT.
        space
            .map_range(&mut mem, HHDM, 0, 4 * SIZE_1G, RW, true)
            .unwrap();
        assert_eq!(mem.tables.len(), 2);
        assert_eq!(
            space.translate(&mem, HHDM + 0xfee0_0020).unwrap().0,
            0xfee0_0020
        );
        // Without gigantic pages: one PD per GiB.
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        space
            .map_range(&mut mem, HHDM, 0, 4 * SIZE_1G, RW, false)
            .unwrap();
        assert_eq!(mem.tables.len(), 6);
        assert_eq!(
            space.translate(&mem, HHDM + 0x1234_5678).unwrap().0,
            0x1234_5678
        );
    }

    #[test]
    fn long_range_maps_every_page_across_table_boundaries() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        let (virt, phys, len) = (
            HHDM + SIZE_1G - 3 * SIZE_2M,
            SIZE_1G - 3 * SIZE_2M,
            2 * SIZE_1G,
        );
        space
            .map_range(&mut mem, virt, phys, len, RW, false)
            .unwrap();
        for page in (0..len).step_by(SIZE_2M as usize) {
            assert_eq!(space.translate(&mem, virt + page).unwrap().0, phys + page);
        }
        assert!(space.translate(&mem, virt + len).is_none());
        assert!(space.translate(&mem, virt - 1).is_none());
    }

    #[test]
    fn unaligned_range_starts_and_ends_with_small_pages() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        space
            .map_range(&mut mem, 0x1000, 0x1000, 2 * SIZE_2M, RW, true)
            .unwrap();
        assert!(space.translate(&mem, 0).is_none(), "page 0 stays unmapped");
        assert_eq!(space.translate(&mem, 0x1000).unwrap().0, 0x1000);
        assert_eq!(
            space.translate(&mem, 2 * SIZE_2M + 0xfff).unwrap().0,
            2 * SIZE_2M + 0xfff
        );
        assert!(space.translate(&mem, 2 * SIZE_2M + 0x1000).is_none());
    }

    #[test]
    fn conflicting_mapping_is_rejected_but_identical_remap_is_not() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        space.map(&mut mem, 0x4000, 0x8000, SIZE_4K, RW).unwrap();
        space.map(&mut mem, 0x4000, 0x8000, SIZE_4K, RW).unwrap();
        assert_eq!(
            space.map(&mut mem, 0x4000, 0x9000, SIZE_4K, RW),
            Err(PagingError::Conflict { virt: 0x4000 })
        );
        space.map(&mut mem, SIZE_2M, 0, SIZE_2M, RW).unwrap();
        assert_eq!(
            space.map(&mut mem, SIZE_2M + 0x1000, 0, SIZE_4K, RW),
            Err(PagingError::Conflict {
                virt: SIZE_2M + 0x1000
            })
        );
    }

    #[test]
    fn intermediate_tables_never_restrict_the_leaf() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        space
            .map(&mut mem, 0x4000, 0x8000, SIZE_4K, Flags::NO_EXECUTE)
            .unwrap();
        let pml4e = mem.read(space.pml4, 0);
        assert_eq!(
            pml4e & (Flags::NO_EXECUTE | Flags::WRITABLE).bits(),
            Flags::WRITABLE.bits()
        );
    }

    #[test]
    fn misaligned_and_non_canonical_addresses_are_rejected() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        assert!(matches!(
            space.map(&mut mem, 0x1000, 0, SIZE_2M, RW),
            Err(PagingError::Misaligned { .. })
        ));
        assert!(matches!(
            space.map(&mut mem, 0x0000_8000_0000_0000, 0, SIZE_4K, RW),
            Err(PagingError::NonCanonical { .. })
        ));
    }

    #[test]
    fn running_out_of_table_memory_is_an_error() {
        let mut mem = SimMemory {
            limit: Some(2),
            ..Default::default()
        };
        let space = AddressSpace::new(&mut mem).unwrap();
        assert_eq!(
            space.map(&mut mem, 0x1000, 0x1000, SIZE_4K, RW),
            Err(PagingError::OutOfMemory)
        );
    }
}
