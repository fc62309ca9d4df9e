//! A set of page-aligned address ranges (a process's demand-paged `map` regions): insert,
//! remove (splitting), and membership. Pure, host-tested.
//!
//! Every operation finds its place by binary search, so its cost never depends on how many
//! bytes a range covers, only (logarithmically, plus one move of the vector's tail) on how
//! many ranges there are, and that is capped at [`MAX_RANGES`].

use alloc::vec::Vec;

/// Most ranges one set holds (64 KiB of kernel heap).
pub const MAX_RANGES: usize = 4096;

/// The set would exceed [`MAX_RANGES`], or the kernel heap is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Sorted, non-overlapping, non-empty half-open ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RegionSet {
    ranges: Vec<(u64, u64)>,
}

impl RegionSet {
    pub const fn new() -> Self {
        Self { ranges: Vec::new() }
    }

    /// Adds `[start, end)`; the caller guarantees it does not overlap an existing range.
    pub fn insert(&mut self, start: u64, end: u64) -> Result<(), Full> {
        debug_assert!(start < end && !self.overlaps(start, end));
        if self.ranges.len() >= MAX_RANGES || self.ranges.try_reserve(1).is_err() {
            return Err(Full);
        }
        let at = self.ranges.partition_point(|r| r.0 < start);
        self.ranges.insert(at, (start, end));
        Ok(())
    }

    /// The indices of the ranges that meet `[start, end)`.
    fn touching(&self, start: u64, end: u64) -> core::ops::Range<usize> {
        let first = self.ranges.partition_point(|r| r.1 <= start);
        let last = first + self.ranges[first..].partition_point(|r| r.0 < end);
        first..last
    }

    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        !self.touching(start, end).is_empty()
    }

    pub fn contains(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        self.ranges.get(i).is_some_and(|r| r.0 <= addr && addr < r.1)
    }

    /// Removes `[start, end)` from every range it touches, splitting where needed. Fails, and
    /// changes nothing, only if splitting one range in two would exceed the cap.
    pub fn remove(&mut self, start: u64, end: u64) -> Result<(), Full> {
        let hit = self.touching(start, end);
        if hit.is_empty() {
            return Ok(());
        }
        let (first, last) = (self.ranges[hit.start], self.ranges[hit.end - 1]);
        let left = (first.0 < start).then_some((first.0, start));
        let right = (end < last.1).then_some((end, last.1));
        let pieces = left.into_iter().chain(right);
        if hit.len() == 1 && left.is_some() && right.is_some() && (self.ranges.len() >= MAX_RANGES || self.ranges.try_reserve(1).is_err()) {
            return Err(Full);
        }
        self.ranges.splice(hit, pieces);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_half_open() {
        let mut r = RegionSet::new();
        r.insert(0x3000, 0x5000).unwrap();
        r.insert(0x1000, 0x2000).unwrap();
        assert!(r.contains(0x1000) && r.contains(0x1fff) && !r.contains(0x2000));
        assert!(r.contains(0x4fff) && !r.contains(0x5000) && !r.contains(0x0fff));
    }

    #[test]
    fn removing_the_middle_splits_a_region() {
        let mut r = RegionSet::new();
        r.insert(0x1000, 0x9000).unwrap();
        r.remove(0x3000, 0x4000).unwrap();
        assert_eq!(r.len(), 2);
        assert!(r.contains(0x2fff) && !r.contains(0x3000) && !r.contains(0x3fff) && r.contains(0x4000));
    }

    #[test]
    fn removing_a_stack_guard_page_keeps_the_rest() {
        let mut r = RegionSet::new();
        r.insert(0x10000, 0x21000).unwrap();
        r.remove(0x10000, 0x11000).unwrap();
        assert!(!r.contains(0x10000) && r.contains(0x11000) && r.contains(0x20fff));
    }

    #[test]
    fn removing_across_several_regions_and_gaps() {
        let mut r = RegionSet::new();
        r.insert(0x1000, 0x2000).unwrap();
        r.insert(0x3000, 0x4000).unwrap();
        r.insert(0x5000, 0x6000).unwrap();
        r.remove(0x1800, 0x5800).unwrap();
        assert!(r.contains(0x1000) && !r.contains(0x1800) && !r.contains(0x3000) && !r.contains(0x5000) && r.contains(0x5800));
        assert!(!r.overlaps(0x2000, 0x5800));
    }

    #[test]
    fn removing_across_many_regions_touches_only_them() {
        let mut r = RegionSet::new();
        for i in 0..100u64 {
            r.insert(i * 0x10000, i * 0x10000 + 0x8000).unwrap();
        }
        r.remove(0x18000 + 0x4000, 0x50000 + 0x1000).unwrap();
        assert_eq!(r.len(), 100 - 3, "regions 2, 3 and 4 go; region 5 is cut, 1 and 0 stay");
        assert!(r.contains(0x10000) && !r.contains(0x50000) && r.contains(0x51000) && r.contains(0x60000));
    }

    #[test]
    fn removing_a_whole_terabyte_of_nothing_changes_nothing() {
        let mut r = RegionSet::new();
        r.insert(0x1000, 0x2000).unwrap();
        r.remove(0x4000_0000_0000, 0x4100_0000_0000).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn at_the_cap_a_refused_insert_or_split_leaves_the_set_exactly_as_it_was() {
        let mut r = RegionSet::new();
        for i in 0..MAX_RANGES as u64 {
            r.insert(i * 0x10000, i * 0x10000 + 0x3000).unwrap();
        }
        let before = r.clone();
        assert_eq!(r.insert(0x7000_0000_0000, 0x7000_0000_1000), Err(Full));
        assert_eq!(r, before);
        assert_eq!(r.remove(0x51000, 0x52000), Err(Full), "a split needs one more range");
        assert_eq!(r, before);
    }

    #[test]
    fn when_the_heap_refuses_an_insert_or_split_fails_and_shrinking_still_works() {
        use crate::alloc_failure::refusing;
        let mut r = RegionSet::new();
        let mut i = 0u64;
        while r.len() < r.ranges.capacity() || r.is_empty() {
            r.insert(i * 0x10000, i * 0x10000 + 0x3000).unwrap();
            i += 1;
        }
        assert!(r.len() < MAX_RANGES, "the cap is not what refuses here");
        let before = r.clone();
        assert_eq!(refusing(|| r.insert(0x7000_0000_0000, 0x7000_0000_1000)), Err(Full));
        assert_eq!(r, before);
        assert_eq!(refusing(|| r.remove(0x1000, 0x2000)), Err(Full));
        assert_eq!(r, before);
        // Trimming an end and removing whole ranges never need the heap (`unmap` of what a
        // process holds always succeeds).
        assert_eq!(refusing(|| r.remove(0x0, 0x1000)), Ok(()));
        assert_eq!(refusing(|| r.remove(0x10000, 0x13000)), Ok(()));
        assert_eq!(r.len(), before.len() - 1);
        assert!(!r.contains(0x0) && r.contains(0x1000) && !r.contains(0x10000));
    }

    #[test]
    fn the_cap_refuses_insertions_and_splits_but_not_shrinking() {
        let mut r = RegionSet::new();
        for i in 0..MAX_RANGES as u64 {
            r.insert(i * 0x10000, i * 0x10000 + 0x3000).unwrap();
        }
        assert_eq!(r.insert(0x7000_0000_0000, 0x7000_0000_1000), Err(Full));
        // Cutting the middle page out of a range would make two: refused, nothing changed.
        assert_eq!(r.remove(0x1000, 0x2000), Err(Full));
        assert!(r.contains(0x1000));
        // Trimming an end, or removing whole ranges, still works.
        r.remove(0x0, 0x1000).unwrap();
        r.remove(0x10000, 0x20000).unwrap();
        assert_eq!(r.len(), MAX_RANGES - 1);
        r.remove(0x31000, 0x32000).unwrap();
        assert_eq!(r.len(), MAX_RANGES);
    }
}
