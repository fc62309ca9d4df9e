//! Physical memory: the firmware map, the bridge's allocator, and the Limine memory map.
//!
//! Three steps, all pure:
//! 1. [`resolve_firmware`] turns GRUB's (possibly overlapping, unaligned) memory map into
//!    sorted, disjoint typed ranges; where firmware regions overlap the more restrictive type
//!    wins, usable ranges are shrunk to whole pages, and page 0 is never usable.
//! 2. [`PhysAllocator`] hands out page-aligned memory from the usable ranges, minus what is
//!    already occupied (the bridge image, the MBI, GRUB's modules), and records every *claim*
//!    (what the bridge put where, as bootloader-reclaimable or executable-and-modules).
//! 3. [`build_memory_map`] overlays the claims on the firmware ranges and produces the
//!    response entries: sorted by base, disjoint, adjacent entries of one type merged, usable
//!    and bootloader-reclaimable entries 4 KiB aligned (PROTOCOL.md, Memory Map Feature).

use crate::fixed::FixedVec;
use crate::mbi::{MemoryRegion, MMAP_ACPI_RECLAIMABLE, MMAP_AVAILABLE, MMAP_BADRAM, MMAP_NVS};
use crate::protocol::{MemmapEntry, MemoryType};
use core::fmt;

pub const PAGE_SIZE: u64 = 4096;

/// Most firmware regions accepted (a PC reports a few dozen).
pub const MAX_FIRMWARE_REGIONS: usize = 256;
/// Most claims recorded (adjacent claims of one type merge, so few are needed).
pub const MAX_CLAIMS: usize = 128;
/// Most free ranges the allocator tracks.
pub const MAX_FREE_RANGES: usize = 256;

pub const fn page_floor(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

pub const fn page_ceil(x: u64) -> u64 {
    page_floor(x.saturating_add(PAGE_SIZE - 1))
}

/// A physical address range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
    pub fn contains(&self, other: &Range) -> bool {
        self.start <= other.start && other.end <= self.end
    }
    /// The range grown outward to whole pages.
    pub fn pages_out(&self) -> Range {
        Range::new(page_floor(self.start), page_ceil(self.end))
    }
}

/// Memory the bridge gave a purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub range: Range,
    pub kind: MemoryType,
}

impl Default for Claim {
    fn default() -> Self {
        Claim {
            range: Range::default(),
            kind: MemoryType::BootloaderReclaimable,
        }
    }
}

/// A typed, resolved firmware range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Typed {
    pub range: Range,
    pub typ: MemoryType,
}

impl Default for Typed {
    fn default() -> Self {
        Typed {
            range: Range::default(),
            typ: MemoryType::Reserved,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// GRUB reported more memory regions than the bridge can track.
    TooManyRegions,
    /// The bridge needs more claims than it can record.
    TooManyClaims,
    /// No free memory fits the request.
    OutOfMemory { size: u64, align: u64, below: u64 },
    /// The response buffer for the memory map is too small.
    MapBufferTooSmall { needed: usize },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooManyRegions => write!(f, "too many memory map regions"),
            Self::TooManyClaims => write!(f, "too many separate memory allocations"),
            Self::OutOfMemory { size, align, below } => write!(
                f,
                "out of memory: no free {size:#x} bytes aligned to {align:#x} below {below:#x}"
            ),
            Self::MapBufferTooSmall { needed } => {
                write!(f, "memory map needs {needed} entries, more than reserved")
            }
        }
    }
}

/// The Limine type of a Multiboot2 memory map type.
pub fn firmware_type(mb2_type: u32) -> MemoryType {
    match mb2_type {
        MMAP_AVAILABLE => MemoryType::Usable,
        MMAP_ACPI_RECLAIMABLE => MemoryType::AcpiReclaimable,
        MMAP_NVS => MemoryType::AcpiNvs,
        MMAP_BADRAM => MemoryType::BadMemory,
        _ => MemoryType::Reserved,
    }
}

/// Which type wins where firmware regions overlap: the one that allows less.
fn restrictiveness(t: MemoryType) -> u8 {
    match t {
        MemoryType::Usable => 0,
        MemoryType::BootloaderReclaimable => 1,
        MemoryType::ExecutableAndModules => 2,
        MemoryType::AcpiReclaimable => 3,
        MemoryType::AcpiNvs => 4,
        MemoryType::Framebuffer => 5,
        MemoryType::Reserved => 6,
        MemoryType::BadMemory => 7,
    }
}

type Boundaries = FixedVec<u64, { 2 * (MAX_FIRMWARE_REGIONS + MAX_CLAIMS) + 2 }>;

fn push_boundary(b: &mut Boundaries, x: u64) -> Result<(), LayoutError> {
    b.push(x).map_err(|_| LayoutError::TooManyRegions)
}

fn sort_dedup(b: &mut Boundaries) {
    b.sort_unstable();
    let mut kept = 0;
    for i in 0..b.len() {
        if i == 0 || b[i] != b[kept - 1] {
            b[kept] = b[i];
            kept += 1;
        }
    }
    while b.len() > kept {
        b.remove(b.len() - 1);
    }
}

/// Appends a typed range, merging with the previous one when adjacent and of one type.
fn append<const N: usize>(
    out: &mut FixedVec<Typed, N>,
    range: Range,
    typ: MemoryType,
) -> Result<(), LayoutError> {
    if range.is_empty() {
        return Ok(());
    }
    if let Some(last) = out.last_mut() {
        if last.typ == typ && last.range.end == range.start {
            last.range.end = range.end;
            return Ok(());
        }
    }
    out.push(Typed { range, typ })
        .map_err(|_| LayoutError::TooManyRegions)
}

/// Resolved firmware ranges: sorted, disjoint, merged.
pub type FirmwareMap = FixedVec<Typed, { 2 * MAX_FIRMWARE_REGIONS + 2 }>;

/// Resolves GRUB's memory map (see the module documentation).
pub fn resolve_firmware(
    regions: impl Iterator<Item = MemoryRegion> + Clone,
) -> Result<FirmwareMap, LayoutError> {
    let mut bounds = Boundaries::new();
    let mut count = 0;
    for r in regions.clone() {
        if r.length == 0 {
            continue;
        }
        count += 1;
        if count > MAX_FIRMWARE_REGIONS {
            return Err(LayoutError::TooManyRegions);
        }
        push_boundary(&mut bounds, r.base)?;
        push_boundary(&mut bounds, r.base.saturating_add(r.length))?;
    }
    sort_dedup(&mut bounds);

    let mut raw = FirmwareMap::new();
    for w in bounds.windows(2) {
        let piece = Range::new(w[0], w[1]);
        let typ = regions
            .clone()
            .filter(|r| r.length != 0)
            .filter(|r| Range::new(r.base, r.base.saturating_add(r.length)).contains(&piece))
            .map(|r| firmware_type(r.typ))
            .max_by_key(|&t| restrictiveness(t));
        if let Some(typ) = typ {
            append(&mut raw, piece, typ)?;
        }
    }

    // Usable memory comes in whole pages, and never includes page 0.
    let mut resolved = FirmwareMap::new();
    for t in raw.iter() {
        if t.typ == MemoryType::Usable {
            let start = page_ceil(t.range.start).max(PAGE_SIZE);
            let end = page_floor(t.range.end);
            if start < end {
                append(&mut resolved, Range::new(start, end), t.typ)?;
            }
        } else {
            append(&mut resolved, t.range, t.typ)?;
        }
    }
    Ok(resolved)
}

/// The physical allocator: first fit, lowest address first, page granular.
pub struct PhysAllocator {
    free: FixedVec<Range, MAX_FREE_RANGES>,
    claims: FixedVec<Claim, MAX_CLAIMS>,
}

impl PhysAllocator {
    /// Free memory is the usable firmware memory below `limit` minus `occupied` (each rounded
    /// out to whole pages).
    pub fn new(
        firmware: &FirmwareMap,
        occupied: &[Range],
        limit: u64,
    ) -> Result<Self, LayoutError> {
        let mut alloc = PhysAllocator {
            free: FixedVec::new(),
            claims: FixedVec::new(),
        };
        for t in firmware.iter().filter(|t| t.typ == MemoryType::Usable) {
            let range = Range::new(t.range.start, t.range.end.min(limit));
            if !range.is_empty() {
                alloc
                    .free
                    .push(range)
                    .map_err(|_| LayoutError::TooManyRegions)?;
            }
        }
        for o in occupied {
            alloc.remove_free(o.pages_out())?;
        }
        Ok(alloc)
    }

    /// Removes `cut` from the free ranges.
    fn remove_free(&mut self, cut: Range) -> Result<(), LayoutError> {
        let mut i = 0;
        while i < self.free.len() {
            let r = self.free[i];
            if !r.overlaps(&cut) {
                i += 1;
                continue;
            }
            let before = Range::new(r.start, cut.start.max(r.start));
            let after = Range::new(cut.end.min(r.end), r.end);
            self.free.remove(i);
            if !after.is_empty() {
                self.free
                    .insert(i, after)
                    .map_err(|_| LayoutError::TooManyRegions)?;
            }
            if !before.is_empty() {
                self.free
                    .insert(i, before)
                    .map_err(|_| LayoutError::TooManyRegions)?;
                i += 1;
            }
            if !after.is_empty() {
                i += 1;
            }
        }
        Ok(())
    }

    /// Records what occupies `range` (rounded out to pages), merging with an adjacent claim of
    /// the same kind.
    pub fn claim(&mut self, range: Range, kind: MemoryType) -> Result<(), LayoutError> {
        let range = range.pages_out();
        if range.is_empty() {
            return Ok(());
        }
        for c in self.claims.iter_mut().filter(|c| c.kind == kind) {
            if c.range.end == range.start {
                c.range.end = range.end;
                return Ok(());
            }
            if range.end == c.range.start {
                c.range.start = range.start;
                return Ok(());
            }
        }
        self.claims
            .push(Claim { range, kind })
            .map_err(|_| LayoutError::TooManyClaims)
    }

    /// Allocates `size` bytes (rounded up to pages) aligned to `align` (at least a page) inside
    /// `window`, lowest address first, and claims them as `kind`.
    pub fn alloc(
        &mut self,
        size: u64,
        align: u64,
        kind: MemoryType,
        window: Range,
    ) -> Result<u64, LayoutError> {
        let size = page_ceil(size.max(1));
        let align = align.max(PAGE_SIZE).next_power_of_two();
        let oom = LayoutError::OutOfMemory {
            size,
            align,
            below: window.end,
        };
        let found = self.free.iter().find_map(|r| {
            let start = r.start.max(window.start).checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(size)?;
            (end <= r.end.min(window.end)).then_some(start)
        });
        let start = found.ok_or(oom)?;
        self.remove_free(Range::new(start, start + size))?;
        self.claim(Range::new(start, start + size), kind)?;
        Ok(start)
    }

    pub fn claims(&self) -> &[Claim] {
        &self.claims
    }

    pub fn free_ranges(&self) -> &[Range] {
        &self.free
    }
}

/// An upper bound on the memory map's entry count for `firmware` and `claims` entries.
pub const fn memory_map_bound(firmware: usize, claims: usize) -> usize {
    firmware + 2 * claims + 1
}

/// Builds the memory map response entries into `out`, returning how many were written.
pub fn build_memory_map(
    firmware: &FirmwareMap,
    claims: &[Claim],
    out: &mut [MemmapEntry],
) -> Result<usize, LayoutError> {
    let mut bounds = Boundaries::new();
    for t in firmware.iter() {
        push_boundary(&mut bounds, t.range.start)?;
        push_boundary(&mut bounds, t.range.end)?;
    }
    for c in claims {
        push_boundary(&mut bounds, c.range.start)?;
        push_boundary(&mut bounds, c.range.end)?;
    }
    sort_dedup(&mut bounds);

    let mut merged: FixedVec<Typed, { 2 * (MAX_FIRMWARE_REGIONS + MAX_CLAIMS) + 2 }> =
        FixedVec::new();
    for w in bounds.windows(2) {
        let piece = Range::new(w[0], w[1]);
        let Some(base) = firmware.iter().find(|t| t.range.contains(&piece)) else {
            continue;
        };
        let typ = match base.typ {
            // Claims only ever turn usable memory into something else.
            MemoryType::Usable => claims
                .iter()
                .find(|c| c.range.contains(&piece))
                .map_or(MemoryType::Usable, |c| c.kind),
            other => other,
        };
        append(&mut merged, piece, typ)?;
    }

    if merged.len() > out.len() {
        return Err(LayoutError::MapBufferTooSmall {
            needed: merged.len(),
        });
    }
    for (slot, t) in out.iter_mut().zip(merged.iter()) {
        *slot = MemmapEntry {
            base: t.range.start,
            length: t.range.len(),
            typ: t.typ as u64,
        };
    }
    Ok(merged.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemoryType::*;

    const MIB: u64 = 1 << 20;

    fn region(base: u64, length: u64, typ: u32) -> MemoryRegion {
        MemoryRegion { base, length, typ }
    }

    /// QEMU q35 with 256 MiB under SeaBIOS, as GRUB reports it.
    fn qemu_map() -> Vec<MemoryRegion> {
        vec![
            region(0, 0x9fc00, 1),
            region(0x9fc00, 0x400, 2),
            region(0xf0000, 0x10000, 2),
            region(0x100000, 0xfee0000, 1),
            region(0xffe0000, 0x20000, 2),
            region(0xb0000000, 0x10000000, 2),
            region(0xfed1c000, 0x4000, 2),
            region(0xfeffc000, 0x4000, 2),
            region(0xfffc0000, 0x40000, 2),
        ]
    }

    fn resolve(regions: &[MemoryRegion]) -> FirmwareMap {
        resolve_firmware(regions.iter().copied()).unwrap()
    }

    fn map(firmware: &FirmwareMap, claims: &[Claim]) -> Vec<MemmapEntry> {
        let mut out = vec![MemmapEntry::default(); 64];
        let n = build_memory_map(firmware, claims, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn assert_protocol_invariants(entries: &[MemmapEntry]) {
        for w in entries.windows(2) {
            assert!(w[0].base < w[1].base, "not sorted: {w:x?}");
            assert!(w[0].base + w[0].length <= w[1].base, "overlap: {w:x?}");
        }
        for e in entries {
            assert!(e.length > 0);
            if e.typ == Usable as u64 || e.typ == BootloaderReclaimable as u64 {
                assert_eq!(e.base % PAGE_SIZE, 0, "{e:x?}");
                assert_eq!(e.length % PAGE_SIZE, 0, "{e:x?}");
            }
            if e.typ == Usable as u64 {
                assert!(e.base >= PAGE_SIZE, "page 0 usable: {e:x?}");
            }
        }
    }

    #[test]
    fn usable_ranges_are_trimmed_to_pages_and_page_zero_is_never_usable() {
        let fw = resolve(&qemu_map());
        assert_eq!(
            fw[0],
            Typed {
                range: Range::new(0x1000, 0x9f000),
                typ: Usable
            }
        );
        assert_eq!(
            fw[1],
            Typed {
                range: Range::new(0x9fc00, 0xa0000),
                typ: Reserved
            }
        );
        let entries = map(&fw, &[]);
        assert_protocol_invariants(&entries);
    }

    #[test]
    fn overlapping_firmware_regions_resolve_to_the_more_restrictive_type() {
        let fw = resolve(&[
            region(0, 16 * MIB, 1),
            region(8 * MIB, MIB, 3),
            region(8 * MIB, 0x800, 5),
        ]);
        let types: Vec<_> = fw
            .iter()
            .map(|t| (t.range.start, t.range.end, t.typ))
            .collect();
        assert_eq!(
            types,
            [
                (0x1000, 8 * MIB, Usable),
                (8 * MIB, 8 * MIB + 0x800, BadMemory),
                (8 * MIB + 0x800, 9 * MIB, AcpiReclaimable),
                (9 * MIB, 16 * MIB, Usable),
            ]
        );
    }

    #[test]
    fn unaligned_usable_slivers_next_to_reserved_memory_are_dropped() {
        let fw = resolve(&[region(0x10_0000, 0x1800, 1), region(0x10_1800, 0x800, 2)]);
        assert_eq!(fw[0].range, Range::new(0x10_0000, 0x10_1000));
        assert_eq!(fw[1].range, Range::new(0x10_1800, 0x10_2000));
    }

    #[test]
    fn adjacent_firmware_regions_of_one_type_merge() {
        let fw = resolve(&[region(MIB, MIB, 1), region(2 * MIB, MIB, 1)]);
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].range, Range::new(MIB, 3 * MIB));
    }

    #[test]
    fn zero_length_and_wrapping_regions_do_not_break_resolution() {
        let fw = resolve(&[region(MIB, 0, 1), region(u64::MAX - 0xfff, 0x10000, 2)]);
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0].range, Range::new(u64::MAX - 0xfff, u64::MAX));
    }

    #[test]
    fn allocator_skips_occupied_memory_and_claims_what_it_hands_out() {
        let fw = resolve(&qemu_map());
        let bridge = Range::new(MIB, MIB + 0x23456);
        let mbi = Range::new(2 * MIB + 0x10, 2 * MIB + 0x300);
        let mut alloc = PhysAllocator::new(&fw, &[bridge, mbi], 1 << 32).unwrap();
        let window = Range::new(MIB, 1 << 32);
        let a = alloc
            .alloc(0x1000, 0x1000, BootloaderReclaimable, window)
            .unwrap();
        assert_eq!(a, MIB + 0x24000);
        let b = alloc
            .alloc(0x3000, 0x1000, BootloaderReclaimable, window)
            .unwrap();
        assert_eq!(b, a + 0x1000);
        // The MBI page is skipped.
        let c = alloc
            .alloc(0xdc000, 0x1000, ExecutableAndModules, window)
            .unwrap();
        assert_eq!(c, 2 * MIB + 0x1000);
        // Consecutive allocations of one kind are one claim.
        assert_eq!(alloc.claims().len(), 2);
        assert_eq!(
            alloc.claims()[0].range,
            Range::new(MIB + 0x24000, MIB + 0x28000)
        );
    }

    #[test]
    fn allocator_honours_alignment_and_windows() {
        let fw = resolve(&qemu_map());
        let mut alloc = PhysAllocator::new(&fw, &[], 1 << 32).unwrap();
        let low = alloc
            .alloc(0x1000, 0x1000, BootloaderReclaimable, Range::new(0, MIB))
            .unwrap();
        assert_eq!(low, 0x1000, "page 0 is never handed out");
        let big = alloc
            .alloc(
                0x1000,
                2 * MIB,
                ExecutableAndModules,
                Range::new(MIB, 1 << 32),
            )
            .unwrap();
        assert_eq!(big % (2 * MIB), 0);
        // The gap left below the aligned block is still free.
        let filler = alloc
            .alloc(0x1000, 0, BootloaderReclaimable, Range::new(MIB, 1 << 32))
            .unwrap();
        assert_eq!(filler, MIB);
    }

    #[test]
    fn allocator_never_returns_memory_twice() {
        let fw = resolve(&[region(MIB, 64 * 0x1000, 1)]);
        let mut alloc = PhysAllocator::new(&fw, &[], 1 << 32).unwrap();
        let mut seen = Vec::new();
        while let Ok(p) = alloc.alloc(0x1000, 0, BootloaderReclaimable, Range::new(0, 1 << 32)) {
            assert!(!seen.contains(&p));
            seen.push(p);
        }
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn allocation_that_does_not_fit_reports_out_of_memory() {
        let fw = resolve(&[region(MIB, MIB, 1)]);
        let mut alloc = PhysAllocator::new(&fw, &[], 1 << 32).unwrap();
        let err = alloc.alloc(2 * MIB, 0, BootloaderReclaimable, Range::new(0, 1 << 32));
        assert!(matches!(err, Err(LayoutError::OutOfMemory { .. })));
    }

    #[test]
    fn allocator_limit_keeps_allocations_below_four_gib() {
        let fw = resolve(&[
            region(0x1_0000_0000, 0x1000_0000, 1),
            region(MIB, 0x1000, 1),
        ]);
        let mut alloc = PhysAllocator::new(&fw, &[], 1 << 32).unwrap();
        let p = alloc
            .alloc(0x1000, 0, BootloaderReclaimable, Range::new(0, u64::MAX))
            .unwrap();
        assert_eq!(p, MIB);
        assert!(alloc
            .alloc(0x1000, 0, BootloaderReclaimable, Range::new(0, u64::MAX))
            .is_err());
    }

    #[test]
    fn claims_split_usable_memory_into_typed_entries() {
        let fw = resolve(&qemu_map());
        let claims = [
            Claim {
                range: Range::new(MIB, 2 * MIB),
                kind: BootloaderReclaimable,
            },
            Claim {
                range: Range::new(2 * MIB, 3 * MIB),
                kind: ExecutableAndModules,
            },
            Claim {
                range: Range::new(0x8000, 0x9000),
                kind: BootloaderReclaimable,
            },
        ];
        let entries = map(&fw, &claims);
        assert_protocol_invariants(&entries);
        let summary: Vec<_> = entries.iter().map(|e| (e.base, e.length, e.typ)).collect();
        assert_eq!(summary[0], (0x1000, 0x7000, Usable as u64));
        assert_eq!(summary[1], (0x8000, 0x1000, BootloaderReclaimable as u64));
        assert_eq!(summary[2], (0x9000, 0x96000, Usable as u64));
        assert!(summary.contains(&(MIB, MIB, BootloaderReclaimable as u64)));
        assert!(summary.contains(&(2 * MIB, MIB, ExecutableAndModules as u64)));
        assert!(summary.contains(&(3 * MIB, 0xffe0000 - 3 * MIB, Usable as u64)));
        assert!(summary.contains(&(0xb000_0000, 0x1000_0000, Reserved as u64)));
    }

    #[test]
    fn claims_never_turn_reserved_memory_into_something_else() {
        let fw = resolve(&[region(MIB, MIB, 1), region(2 * MIB, MIB, 2)]);
        let claims = [Claim {
            range: Range::new(MIB, 3 * MIB),
            kind: ExecutableAndModules,
        }];
        let entries = map(&fw, &claims);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].typ, Reserved as u64);
    }

    #[test]
    fn memory_map_larger_than_the_buffer_is_an_error() {
        let fw = resolve(&qemu_map());
        let mut out = vec![MemmapEntry::default(); 2];
        assert!(matches!(
            build_memory_map(&fw, &[], &mut out),
            Err(LayoutError::MapBufferTooSmall { .. })
        ));
    }

    #[test]
    fn memory_map_bound_covers_the_worst_case_split() {
        let fw = resolve(&qemu_map());
        // Claims punched into the middle of usable ranges split each one in three.
        let claims: Vec<Claim> = (0..8)
            .map(|i| Claim {
                range: Range::new(4 * MIB + i * 2 * MIB, 5 * MIB + i * 2 * MIB),
                kind: if i % 2 == 0 {
                    BootloaderReclaimable
                } else {
                    ExecutableAndModules
                },
            })
            .collect();
        let mut out = vec![MemmapEntry::default(); memory_map_bound(fw.len(), claims.len())];
        let n = build_memory_map(&fw, &claims, &mut out).unwrap();
        assert_protocol_invariants(&out[..n]);
    }
}
