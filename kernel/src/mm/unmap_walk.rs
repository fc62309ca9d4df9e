//! Unmapping a user range one page table at a time, with a budget. Pure (generic over how
//! tables are read and written), host-tested.
//!
//! The walk descends the four levels from the root and skips every non-present entry whole:
//! an empty PML4 entry costs one visit for 512 GiB, so `unmap` over terabytes of nothing is a
//! few hundred visits. Work per call is bounded twice: entries visited ([`Budget::visits`])
//! and pages unmapped ([`Budget::pages`]). When either runs out the walk stops at an entry
//! boundary and reports how far it got; the caller resumes from there. A table left empty by
//! the walk is unlinked from its parent and handed back for freeing.

/// Entries per table at every level.
pub const ENTRIES: usize = 512;

/// Bytes one entry of a table at `level` maps (1: PT, 4 KiB; 2: PD; 3: PDPT; 4: PML4, 512 GiB).
pub const fn entry_span(level: u8) -> u64 {
    4096 << (9 * (level as u32 - 1))
}

/// The index of `addr` in a table at `level`.
pub const fn index(addr: u64, level: u8) -> usize {
    ((addr >> (12 + 9 * (level as u32 - 1))) & (ENTRIES as u64 - 1)) as usize
}

/// What one table entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Empty,
    /// A next-level table (physical address), at levels 2..=4.
    Table(u64),
    /// A 4 KiB page (physical frame), at level 1.
    Page(u64),
    /// A large page at level 2 or 3: never made for user space; left alone.
    Large,
}

/// Access to an address space's tables, by physical address.
pub trait Tables {
    /// Entry `index` of `table`, a table at `level` (1: PT).
    fn read(&self, table: u64, level: u8, index: usize) -> Entry;
    fn clear(&mut self, table: u64, index: usize);
}

/// What one call may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Table entries read, at any level (at least 4, so that every call makes progress).
    pub visits: usize,
    /// Pages unmapped (at least 1).
    pub pages: usize,
}

/// Something the walk took out of the tables; free it only after the TLB shootdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freed {
    /// A page's frame, mapped at `virt`.
    Page { frame: u64, virt: u64 },
    /// A page table that became empty.
    Table(u64),
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// `[start, next)` is unmapped; `next == end` when the whole range is done.
    pub next: u64,
    pub visits: usize,
    pub pages: usize,
    pub tables: usize,
}

struct Walk<'a, T: Tables, F: FnMut(Freed)> {
    tables: &'a mut T,
    budget: Budget,
    progress: Progress,
    out: F,
}

/// The budget ran out before this entry.
struct Stop;

impl<T: Tables, F: FnMut(Freed)> Walk<'_, T, F> {
    fn visit(&mut self) -> Result<(), Stop> {
        if self.progress.visits >= self.budget.visits {
            return Err(Stop);
        }
        self.progress.visits += 1;
        Ok(())
    }

    /// Walks `[start, end)` inside `table` (at `level`, mapping from `base`). Returns whether
    /// an entry in the range is still present after it (a large page, a table kept).
    fn table(&mut self, table: u64, level: u8, base: u64, start: u64, end: u64) -> Result<bool, Stop> {
        let span = entry_span(level);
        let mut left = false;
        let mut i = index(start, level);
        while i < ENTRIES {
            let entry_base = base + i as u64 * span;
            if entry_base >= end {
                break;
            }
            let (lo, hi) = (start.max(entry_base), end.min(entry_base + span));
            self.visit()?;
            match self.tables.read(table, level, i) {
                Entry::Empty => {}
                Entry::Large => left = true,
                Entry::Page(frame) => {
                    if self.progress.pages >= self.budget.pages {
                        return Err(Stop);
                    }
                    self.tables.clear(table, i);
                    self.progress.pages += 1;
                    (self.out)(Freed::Page { frame, virt: entry_base });
                }
                Entry::Table(child) => {
                    let child_left = self.table(child, level - 1, entry_base, lo, hi)?;
                    let covered = lo == entry_base && hi == entry_base + span;
                    if !child_left && (covered || self.rest_empty(child, level - 1, lo, hi)) {
                        self.tables.clear(table, i);
                        self.progress.tables += 1;
                        (self.out)(Freed::Table(child));
                    } else {
                        left = true;
                    }
                }
            }
            self.progress.next = hi;
            i += 1;
        }
        Ok(left)
    }

    /// Whether `table`'s entries outside `[lo, hi)` are all empty (the ones inside were just
    /// cleared). Costs visits; with too few left it answers "no" and the table stays.
    fn rest_empty(&mut self, table: u64, level: u8, lo: u64, hi: u64) -> bool {
        let (first, last) = (index(lo, level), index(hi - 1, level));
        let outside = first + (ENTRIES - 1 - last);
        if self.progress.visits + outside > self.budget.visits {
            return false;
        }
        self.progress.visits += outside;
        (0..first).chain(last + 1..ENTRIES).all(|i| self.tables.read(table, level, i) == Entry::Empty)
    }
}

/// Unmaps what is mapped in `[start, end)` (page-aligned, `start < end`, below 2^48) under
/// the four-level root `root`, within `budget`. Every page and emptied table goes to `out`.
pub fn unmap<T: Tables>(tables: &mut T, root: u64, start: u64, end: u64, budget: Budget, out: impl FnMut(Freed)) -> Progress {
    debug_assert!(start < end && start.is_multiple_of(4096) && end.is_multiple_of(4096));
    debug_assert!(budget.visits >= 4 && budget.pages >= 1);
    let mut walk = Walk { tables, budget, progress: Progress { next: start, visits: 0, pages: 0, tables: 0 }, out };
    if walk.table(root, 4, 0, start, end).is_ok() {
        walk.progress.next = end;
    }
    walk.progress
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Tables in a hash map: physical address -> 512 entries; frames from a counter.
    #[derive(Default)]
    struct Fake {
        tables: HashMap<u64, Vec<Entry>>,
        next_frame: u64,
        root: u64,
    }

    impl Fake {
        fn new() -> Self {
            let mut f = Fake { next_frame: 0x1000, ..Default::default() };
            f.root = f.alloc_table();
            f
        }
        fn alloc_table(&mut self) -> u64 {
            self.next_frame += 0x1000;
            self.tables.insert(self.next_frame, vec![Entry::Empty; ENTRIES]);
            self.next_frame
        }
        fn map(&mut self, virt: u64) {
            let mut t = self.root;
            for level in (2..=4).rev() {
                let i = index(virt, level);
                t = match self.tables[&t][i] {
                    Entry::Table(c) => c,
                    _ => {
                        let c = self.alloc_table();
                        self.tables.get_mut(&t).unwrap()[i] = Entry::Table(c);
                        c
                    }
                };
            }
            self.next_frame += 0x1000;
            let frame = self.next_frame;
            self.tables.get_mut(&t).unwrap()[index(virt, 1)] = Entry::Page(frame);
        }
        fn is_mapped(&self, virt: u64) -> bool {
            let mut t = self.root;
            for level in (1..=4).rev() {
                match self.tables[&t][index(virt, level)] {
                    Entry::Table(c) => t = c,
                    Entry::Page(_) => return true,
                    _ => return false,
                }
            }
            false
        }
        /// Tables reachable from the root (root included).
        fn reachable(&self) -> usize {
            fn count(f: &Fake, t: u64) -> usize {
                1 + f.tables[&t].iter().map(|e| if let Entry::Table(c) = e { count(f, *c) } else { 0 }).sum::<usize>()
            }
            count(self, self.root)
        }
    }

    impl Tables for Fake {
        fn read(&self, table: u64, _level: u8, index: usize) -> Entry {
            self.tables[&table][index]
        }
        fn clear(&mut self, table: u64, index: usize) {
            self.tables.get_mut(&table).unwrap()[index] = Entry::Empty;
        }
    }

    const TIB: u64 = 1 << 40;
    const BIG: Budget = Budget { visits: 4096, pages: 256 };

    /// Runs `unmap` until done like the user-space wrapper does; the number of calls.
    fn unmap_all(f: &mut Fake, start: u64, end: u64, budget: Budget, freed: &mut Vec<Freed>) -> usize {
        let (mut at, mut calls) = (start, 0);
        while at < end {
            let root = f.root;
            let p = unmap(f, root, at, end, budget, |x| freed.push(x));
            assert!(p.next > at && p.next <= end, "no progress at {at:#x}");
            assert!(p.visits <= budget.visits && p.pages <= budget.pages);
            at = p.next;
            calls += 1;
        }
        calls
    }

    #[test]
    fn terabytes_of_nothing_cost_a_few_visits() {
        let mut f = Fake::new();
        let root = f.root;
        let p = unmap(&mut f, root, 0x4000_0000_0000, 0x4000_0000_0000 + TIB, BIG, |_| panic!("nothing to free"));
        assert_eq!(p.next, 0x4000_0000_0000 + TIB);
        assert_eq!(p.visits, 2, "1 TiB spans two empty PML4 entries");
        let p = unmap(&mut f, root, 0x1000, 0x8000_0000_0000, BIG, |_| panic!("nothing to free"));
        assert_eq!(p.next, 0x8000_0000_0000);
        assert!(p.visits <= 256, "the whole user half is 256 PML4 entries, got {}", p.visits);
    }

    #[test]
    fn empty_lower_levels_are_skipped_whole() {
        let mut f = Fake::new();
        f.map(0x1000_0000_0000);
        let root = f.root;
        let mut freed = Vec::new();
        let p = unmap(&mut f, root, 0x1000_0000_0000, 0x1000_0000_0000 + 2 * TIB, BIG, |x| freed.push(x));
        assert_eq!(p.next, 0x1000_0000_0000 + 2 * TIB);
        // PML4: 4 entries (three of them empty, 512 GiB each); the PDPT, PD and PT: 512 each.
        assert_eq!(p.visits, 4 + 3 * 512);
        assert_eq!((p.pages, p.tables), (1, 3));
        assert!(!f.is_mapped(0x1000_0000_0000));
    }

    #[test]
    fn the_page_budget_stops_the_walk_at_a_page_boundary_and_it_resumes() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        for i in 0..1000 {
            f.map(base + i * 4096);
        }
        let mut freed = Vec::new();
        let calls = unmap_all(&mut f, base, base + 1000 * 4096, Budget { visits: 4096, pages: 100 }, &mut freed);
        assert_eq!(calls, 10);
        let pages: Vec<u64> = freed.iter().filter_map(|x| if let Freed::Page { virt, .. } = x { Some(*virt) } else { None }).collect();
        assert_eq!(pages.len(), 1000);
        assert!(pages.windows(2).all(|w| w[0] + 4096 == w[1]), "each page exactly once, in order");
        assert!((0..1000).all(|i| !f.is_mapped(base + i * 4096)));
    }

    #[test]
    fn the_visit_budget_bounds_a_sparse_walk() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        // One page per 2 MiB: every page table holds one page among 511 empty entries.
        for i in 0..64 {
            f.map(base + i * (2 << 20) + 4096 * 7);
        }
        let mut freed = Vec::new();
        let budget = Budget { visits: 300, pages: 1 << 20 };
        let calls = unmap_all(&mut f, base, base + 64 * (2 << 20), budget, &mut freed);
        assert!(calls > 64, "each call visits at most 300 entries: {calls} calls");
        assert_eq!(freed.iter().filter(|x| matches!(x, Freed::Page { .. })).count(), 64);
    }

    #[test]
    fn tables_emptied_by_the_walk_are_unlinked_and_handed_back() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64 + 5 * 4096; // not table-aligned
        for i in 0..3000 {
            f.map(base + i * 4096);
        }
        let before = f.reachable();
        let mut freed = Vec::new();
        unmap_all(&mut f, base, base + 3000 * 4096, BIG, &mut freed);
        let tables = freed.iter().filter(|x| matches!(x, Freed::Table(_))).count();
        assert_eq!(f.reachable(), 1, "only the root is left");
        assert_eq!(tables, before - 1);
    }

    #[test]
    fn a_table_still_holding_pages_outside_the_range_stays() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        f.map(base);
        f.map(base + 4096);
        let root = f.root;
        let mut freed = Vec::new();
        unmap(&mut f, root, base + 4096, base + 8192, BIG, |x| freed.push(x));
        assert!(f.is_mapped(base) && !f.is_mapped(base + 4096));
        assert_eq!(freed.len(), 1, "one page, no table: {freed:?}");
    }

    #[test]
    fn a_walk_stopped_inside_a_table_frees_it_on_the_call_that_finishes_it() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        for i in 0..512 {
            f.map(base + i * 4096);
        }
        let mut freed = Vec::new();
        unmap_all(&mut f, base, base + 512 * 4096, Budget { visits: 4096, pages: 200 }, &mut freed);
        assert_eq!(f.reachable(), 1);
        assert_eq!(freed.iter().filter(|x| matches!(x, Freed::Table(_))).count(), 3);
    }

    #[test]
    fn every_call_makes_progress_with_the_smallest_budget() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        for i in 0..20 {
            f.map(base + i * 3 * 4096);
        }
        let mut freed = Vec::new();
        unmap_all(&mut f, base, base + 64 * 4096, Budget { visits: 4, pages: 1 }, &mut freed);
        assert!((0..20).all(|i| !f.is_mapped(base + i * 3 * 4096)));
    }

    #[test]
    fn large_entries_are_left_alone_and_keep_their_table() {
        let mut f = Fake::new();
        let base = 0x1000_0000_0000u64;
        f.map(base);
        // Replace the PD entry's table by a large page.
        let pdpt = if let Entry::Table(t) = f.tables[&f.root][index(base, 4)] { t } else { unreachable!() };
        let pd = if let Entry::Table(t) = f.tables[&pdpt][index(base, 3)] { t } else { unreachable!() };
        f.tables.get_mut(&pd).unwrap()[index(base, 2)] = Entry::Large;
        let root = f.root;
        let p = unmap(&mut f, root, base, base + TIB, BIG, |x| panic!("freed {x:?}"));
        assert_eq!(p.next, base + TIB);
        assert_eq!(f.tables[&pd][index(base, 2)], Entry::Large);
    }

    #[test]
    fn spans_and_indices_match_four_level_paging() {
        assert_eq!(entry_span(1), 4096);
        assert_eq!(entry_span(2), 2 << 20);
        assert_eq!(entry_span(3), 1 << 30);
        assert_eq!(entry_span(4), 512 << 30);
        assert_eq!(index(0x7fff_ffff_f000, 4), 255);
        assert_eq!(index(0x7fff_ffff_f000, 1), 511);
        assert_eq!(index(0x1000_0020_1000, 2), 1);
    }
}
