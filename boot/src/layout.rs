//! The kernel's address space as the bridge builds it.
//!
//! - HHDM at [`HHDM_OFFSET`]: `[0, 4 GiB)` and every firmware memory map range (grown to the
//!   page size used), read/write, no NX (PROTOCOL.md: "supervisor, read, write, execute").
//! - An identity map from 0x1000 up (page 0 stays unmapped), which the bridge runs on until
//!   the hand-off: of the first 4 GiB, or of all the direct ranges for base revision 0, the
//!   only revision that keeps it (as in Limine).
//! - The kernel's `PT_LOAD` segments at their link addresses, 4 KiB pages, writable and
//!   executable as the ELF flags say (NX when the CPU has it), backed by one physically
//!   contiguous block with a single virtual-to-physical offset.

use crate::fixed::FixedVec;
use crate::memmap::{FirmwareMap, Range, MAX_FIRMWARE_REGIONS};
use crate::paging::{AddressSpace, PagingError, TableMemory, SIZE_1G, SIZE_2M, SIZE_4K};
use elf::Elf;
use x86_64::structures::paging::PageTableFlags as Flags;

pub const HHDM_OFFSET: u64 = 0xffff_8000_0000_0000;
/// The protocol loads kernels at or above this address.
pub const KERNEL_MIN_VADDR: u64 = 0xffff_ffff_8000_0000;
const FOUR_GIB: u64 = 1 << 32;

pub type DirectRanges = FixedVec<Range, { 2 * MAX_FIRMWARE_REGIONS + 3 }>;

/// Physical ranges to direct-map: `[0, 4 GiB)` plus every firmware range, each grown outward
/// to `granule`, merged, and cut at `2^phys_bits` (a frame beyond it cannot be mapped).
pub fn direct_map_ranges(firmware: &FirmwareMap, granule: u64, phys_bits: u32) -> DirectRanges {
    let top = 1u64.checked_shl(phys_bits).unwrap_or(u64::MAX);
    let mut ranges = DirectRanges::new();
    let grown = |r: Range| {
        Range::new(
            r.start & !(granule - 1),
            r.end.saturating_add(granule - 1) & !(granule - 1),
        )
    };
    let _ = ranges.push(Range::new(0, FOUR_GIB));
    for t in firmware.iter() {
        if ranges.push(grown(t.range)).is_err() {
            break;
        }
    }
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged = DirectRanges::new();
    for r in ranges.iter() {
        let r = Range::new(r.start.min(top), r.end.min(top));
        if r.is_empty() {
            continue;
        }
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => {
                let _ = merged.push(r);
            }
        }
    }
    merged
}

/// Maps the direct ranges at the HHDM, and the part of them in `[0x1000, identity_end)` at
/// identity.
pub fn map_direct(
    space: &AddressSpace,
    mem: &mut impl TableMemory,
    ranges: &[Range],
    gigantic: bool,
    identity_end: u64,
) -> Result<(), PagingError> {
    let rw = Flags::WRITABLE;
    for r in ranges {
        space.map_range(mem, HHDM_OFFSET + r.start, r.start, r.len(), rw, gigantic)?;
        let (start, end) = (r.start.max(SIZE_4K), r.end.min(identity_end));
        if start < end {
            space.map_range(mem, start, start, end - start, rw, gigantic)?;
        }
    }
    Ok(())
}

/// How far the identity map reaches: everything the HHDM covers for base revision 0 (which
/// keeps it, as in Limine); otherwise only the first 4 GiB, all the bridge itself touches
/// before removing it.
pub fn identity_end(base_revision: u64) -> u64 {
    if base_revision == 0 {
        u64::MAX
    } else {
        FOUR_GIB
    }
}

/// The page granule the direct map is grown to.
pub fn direct_granule(gigantic: bool) -> u64 {
    if gigantic {
        SIZE_1G
    } else {
        SIZE_2M
    }
}

/// Leaf flags for a kernel segment.
pub fn segment_flags(flags: elf::SegmentFlags, nx: bool) -> Flags {
    let mut f = Flags::empty();
    if flags.writable() {
        f |= Flags::WRITABLE;
    }
    if !flags.executable() && nx {
        f |= Flags::NO_EXECUTE;
    }
    f
}

/// Maps every loadable segment of `elf` at its link address, backed by the block at
/// `block_phys` that holds the image's span.
pub fn map_kernel(
    space: &AddressSpace,
    mem: &mut impl TableMemory,
    elf: &Elf,
    block_phys: u64,
    nx: bool,
) -> Result<(), PagingError> {
    let span = elf.span();
    for seg in elf.segments() {
        let first = seg.vaddr & !(SIZE_4K - 1);
        let end = (seg.end() + SIZE_4K - 1) & !(SIZE_4K - 1);
        let flags = segment_flags(seg.flags, nx);
        let mut page = first;
        while page < end {
            space.map(mem, page, block_phys + (page - span.start), SIZE_4K, flags)?;
            page += SIZE_4K;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbi::MemoryRegion;
    use crate::memmap::resolve_firmware;
    use crate::paging::tests::SimMemory;

    fn firmware(regions: &[(u64, u64, u32)]) -> FirmwareMap {
        resolve_firmware(regions.iter().map(|&(base, length, typ)| MemoryRegion {
            base,
            length,
            typ,
        }))
        .unwrap()
    }

    #[test]
    fn small_machine_direct_maps_exactly_four_gib() {
        let fw = firmware(&[
            (0, 0x9fc00, 1),
            (0x100000, 0xff00000, 1),
            (0xfffc0000, 0x40000, 2),
        ]);
        let ranges = direct_map_ranges(&fw, SIZE_1G, 40);
        assert_eq!(&ranges[..], &[Range::new(0, 1 << 32)]);
    }

    #[test]
    fn memory_above_four_gib_is_added_in_whole_granules() {
        let fw = firmware(&[
            (0, 0x9fc00, 1),
            (0x1_0000_0000, 0x4000_1000, 1),
            (0xfd_0000_0000, 0x3_0000_0000, 2),
        ]);
        let ranges = direct_map_ranges(&fw, SIZE_2M, 40);
        assert_eq!(
            &ranges[..],
            &[
                Range::new(0, 0x1_4020_0000),
                Range::new(0xfd_0000_0000, 0x100_0000_0000)
            ]
        );
    }

    #[test]
    fn ranges_beyond_the_physical_address_width_are_cut() {
        let fw = firmware(&[(0, 0x1000, 1), (0x100_0000_0000, 0x1000, 2)]);
        let ranges = direct_map_ranges(&fw, SIZE_2M, 36);
        assert_eq!(&ranges[..], &[Range::new(0, 1 << 32)]);
    }

    #[test]
    fn identity_map_starts_at_page_one_and_hhdm_at_zero() {
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        map_direct(&space, &mut mem, &[Range::new(0, 1 << 32)], true, u64::MAX).unwrap();
        assert_eq!(space.translate(&mem, HHDM_OFFSET).unwrap().0, 0);
        assert!(space.translate(&mem, 0).is_none());
        assert_eq!(space.translate(&mem, 0x1000).unwrap().0, 0x1000);
        assert_eq!(space.translate(&mem, 0xffff_f000).unwrap().0, 0xffff_f000);
        let (_, flags) = space.translate(&mem, HHDM_OFFSET + 0x1234_5000).unwrap();
        assert!(flags.contains(Flags::WRITABLE) && !flags.contains(Flags::NO_EXECUTE));
    }

    #[test]
    fn identity_map_above_four_gib_is_only_built_for_base_revision_0() {
        let high = Range::new(0x10_0000_0000, 0x10_4000_0000);
        for (revision, mapped) in [(0, true), (1, false), (3, false)] {
            let mut mem = SimMemory::default();
            let space = AddressSpace::new(&mut mem).unwrap();
            let ranges = [Range::new(0, 1 << 32), high];
            map_direct(&space, &mut mem, &ranges, false, identity_end(revision)).unwrap();
            assert_eq!(
                space.translate(&mem, high.start).is_some(),
                mapped,
                "revision {revision}"
            );
            assert!(space.translate(&mem, HHDM_OFFSET + high.start).is_some());
            assert!(space.translate(&mem, 0xfff0_0000).is_some());
        }
    }

    #[test]
    fn kernel_segments_get_their_own_permissions_and_one_offset() {
        // An image like the elf crate's test kernel: text R-X, rodata R--, data RW-.
        let bytes = crate::tests::kernel_elf();
        let elf = Elf::parse(&bytes).unwrap();
        let mut mem = SimMemory::default();
        let space = AddressSpace::new(&mut mem).unwrap();
        let block = 0x20_0000;
        map_kernel(&space, &mut mem, &elf, block, true).unwrap();
        let base = KERNEL_MIN_VADDR;
        let (p, text) = space.translate(&mem, base + 0x10).unwrap();
        assert_eq!(p, block + 0x10);
        assert!(!text.contains(Flags::WRITABLE) && !text.contains(Flags::NO_EXECUTE));
        let (p, rodata) = space.translate(&mem, base + 0x1000).unwrap();
        assert_eq!(p, block + 0x1000);
        assert!(!rodata.contains(Flags::WRITABLE) && rodata.contains(Flags::NO_EXECUTE));
        let (p, data) = space.translate(&mem, base + 0x4fff).unwrap();
        assert_eq!(p, block + 0x4fff);
        assert!(data.contains(Flags::WRITABLE) && data.contains(Flags::NO_EXECUTE));
        assert!(space.translate(&mem, base + 0x5000).is_none());
    }

    #[test]
    fn without_nx_nothing_is_marked_no_execute() {
        let f = segment_flags(elf::SegmentFlags::READ, false);
        assert!(!f.contains(Flags::NO_EXECUTE));
    }
}
