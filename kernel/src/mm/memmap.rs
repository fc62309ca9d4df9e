//! Memory-map arithmetic: the pure part of turning the bootloader's map into frames.
//!
//! The bootloader reports byte ranges; the frame allocator wants whole 4 KiB frames. Usable
//! ranges are shrunk inward to frame boundaries (a partial frame is never handed out), ranges
//! are sorted and merged, and the highest usable address sizes the allocator's bitmap.

pub const FRAME_SIZE: u64 = 4096;

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    /// From a base and length as the bootloader reports them; `None` if empty or if
    /// `base + length` overflows (a corrupt entry).
    pub fn from_base_len(base: u64, length: u64) -> Option<Self> {
        let end = base.checked_add(length)?;
        (length > 0).then_some(Self { start: base, end })
    }

    /// The largest frame-aligned range inside this one, if any whole frame fits.
    pub fn frames_inside(self) -> Option<Self> {
        let start = self.start.checked_add(FRAME_SIZE - 1)? & !(FRAME_SIZE - 1);
        let end = self.end & !(FRAME_SIZE - 1);
        (start < end).then_some(Self { start, end })
    }

    /// The smallest frame-aligned range that covers this one (for mapping).
    pub fn frames_covering(self) -> Self {
        Self {
            start: self.start & !(FRAME_SIZE - 1),
            end: self.end.saturating_add(FRAME_SIZE - 1) & !(FRAME_SIZE - 1),
        }
    }

    pub fn len(self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }

    pub fn contains(self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    pub fn overlaps(self, other: Self) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Sorts `ranges` in place, merges overlapping or touching ranges, and returns how many of the
/// leading entries are the result.
pub fn normalize(ranges: &mut [PhysRange]) -> usize {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut out = 0;
    for i in 0..ranges.len() {
        let r = ranges[i];
        if r.is_empty() {
            continue;
        }
        if out > 0 && r.start <= ranges[out - 1].end {
            ranges[out - 1].end = ranges[out - 1].end.max(r.end);
        } else {
            ranges[out] = r;
            out += 1;
        }
    }
    out
}

/// The end of the highest range, i.e. how much physical address space a bitmap must cover.
pub fn highest_end(ranges: &[PhysRange]) -> u64 {
    ranges.iter().map(|r| r.end).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    #[test]
    fn partial_frames_are_never_usable() {
        assert_eq!(r(0x1001, 0x3fff).frames_inside(), Some(r(0x2000, 0x3000)));
        assert_eq!(r(0x1001, 0x1fff).frames_inside(), None);
        assert_eq!(r(0x1000, 0x2000).frames_inside(), Some(r(0x1000, 0x2000)));
    }

    #[test]
    fn frames_inside_near_the_top_of_the_address_space_does_not_overflow() {
        assert_eq!(r(u64::MAX - 10, u64::MAX).frames_inside(), None);
    }

    #[test]
    fn covering_rounds_outward() {
        assert_eq!(r(0x1001, 0x2001).frames_covering(), r(0x1000, 0x3000));
    }

    #[test]
    fn corrupt_entry_with_overflowing_length_is_rejected() {
        assert_eq!(PhysRange::from_base_len(u64::MAX - 1, 4), None);
        assert_eq!(PhysRange::from_base_len(0x1000, 0), None);
        assert_eq!(PhysRange::from_base_len(0x1000, 0x1000), Some(r(0x1000, 0x2000)));
    }

    #[test]
    fn normalize_sorts_merges_overlaps_and_touching_and_drops_empty() {
        let mut v = [r(0x5000, 0x6000), r(0x1000, 0x3000), r(0x2000, 0x4000), r(0x4000, 0x4800), r(0x9000, 0x9000)];
        let n = normalize(&mut v);
        assert_eq!(&v[..n], &[r(0x1000, 0x4800), r(0x5000, 0x6000)]);
        assert_eq!(highest_end(&v[..n]), 0x6000);
    }

    #[test]
    fn overlap_is_half_open() {
        assert!(!r(0, 0x1000).overlaps(r(0x1000, 0x2000)));
        assert!(r(0, 0x1001).overlaps(r(0x1000, 0x2000)));
    }
}
