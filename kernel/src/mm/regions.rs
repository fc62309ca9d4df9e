//! A set of page-aligned address ranges (a process's demand-paged `map` regions): insert,
//! remove (splitting), and membership. Pure, host-tested.

use alloc::vec::Vec;

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
    pub fn insert(&mut self, start: u64, end: u64) {
        debug_assert!(start < end && !self.overlaps(start, end));
        let at = self.ranges.partition_point(|r| r.0 < start);
        self.ranges.insert(at, (start, end));
    }

    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.ranges.iter().any(|r| r.0 < end && start < r.1)
    }

    pub fn contains(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        self.ranges.get(i).is_some_and(|r| r.0 <= addr && addr < r.1)
    }

    /// Removes `[start, end)` from every range it touches, splitting where needed.
    pub fn remove(&mut self, start: u64, end: u64) {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for &(s, e) in &self.ranges {
            if e <= start || end <= s {
                out.push((s, e));
                continue;
            }
            if s < start {
                out.push((s, start));
            }
            if end < e {
                out.push((end, e));
            }
        }
        self.ranges = out;
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
        r.insert(0x3000, 0x5000);
        r.insert(0x1000, 0x2000);
        assert!(r.contains(0x1000) && r.contains(0x1fff) && !r.contains(0x2000));
        assert!(r.contains(0x4fff) && !r.contains(0x5000) && !r.contains(0x0fff));
    }

    #[test]
    fn removing_the_middle_splits_a_region() {
        let mut r = RegionSet::new();
        r.insert(0x1000, 0x9000);
        r.remove(0x3000, 0x4000);
        assert_eq!(r.len(), 2);
        assert!(r.contains(0x2fff) && !r.contains(0x3000) && !r.contains(0x3fff) && r.contains(0x4000));
    }

    #[test]
    fn removing_a_stack_guard_page_keeps_the_rest() {
        let mut r = RegionSet::new();
        r.insert(0x10000, 0x21000);
        r.remove(0x10000, 0x11000);
        assert!(!r.contains(0x10000) && r.contains(0x11000) && r.contains(0x20fff));
    }

    #[test]
    fn removing_across_several_regions_and_gaps() {
        let mut r = RegionSet::new();
        r.insert(0x1000, 0x2000);
        r.insert(0x3000, 0x4000);
        r.insert(0x5000, 0x6000);
        r.remove(0x1800, 0x5800);
        assert!(r.contains(0x1000) && !r.contains(0x1800) && !r.contains(0x3000) && !r.contains(0x5000) && r.contains(0x5800));
        assert!(!r.overlaps(0x2000, 0x5800));
    }
}
