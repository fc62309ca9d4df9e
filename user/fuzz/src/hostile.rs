//! Hostile argument values, by class, and the few rules that keep the fuzzer itself alive:
//! which memory it may offer the kernel, which of its handles it keeps for itself, and how a
//! call that would destroy its own stack or code is steered away. Pure (no system calls), so
//! the rules are host-tested.
//!
//! Memory classes: the *arena* (mapped, touched, read-write, its contents garbage by design),
//! an *untouched* `map` reservation (the kernel's copies there fault), the program's own text
//! and rodata (read-only), unmapped user addresses, the kernel half (the HHDM, heap, kernel
//! stacks, entry areas, the kernel image), non-canonical addresses, misaligned pointers and
//! ranges that run off the end of mapped memory. The fuzzer never passes a pointer to its own
//! stack, statics or job slots, which it relies on; memory the kernel may legally write is
//! arena only.

use crate::rng::Rng;
use abi::layout::{USER_END, USER_MAP_BASE, USER_STACK_SIZE, USER_STACK_TOP};

pub const PAGE: u64 = 4096;

/// A half-open address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, len: u64) -> Range {
        Range { start, end: start + len }
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end && self.start < end
    }
    /// A random address inside, aligned to `align`.
    fn pick(&self, rng: &mut Rng, align: u64) -> u64 {
        if self.is_empty() {
            return self.start;
        }
        (self.start + rng.below(self.len())) & !(align - 1)
    }
}

/// The initial thread's stack, where the fuzz loop runs.
pub const STACK: Range = Range { start: USER_STACK_TOP - USER_STACK_SIZE, end: USER_STACK_TOP };

/// Never mapped: `map` hands out addresses upwards from `USER_MAP_BASE`, far below this in any
/// run, and nothing else maps there.
pub const FAR_UNMAPPED: Range = Range::new(0x5000_0000_0000, 1 << 40);

/// Where the fuzzer's memory is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layout {
    /// Read-write, touched, offered to the kernel for reading and writing.
    pub arena: Range,
    /// Reserved by `map` and never touched.
    pub untouched: Range,
    /// The program's text and read-only data.
    pub text: Range,
    pub rodata: Range,
    /// Code that ends the thread at once (a new thread's tamed entry).
    pub exit_stub: u64,
    /// Where a job continues after its system call (a tamed return context's RIP).
    pub job_resume: u64,
    /// A 16-aligned stack top for new threads (none of them uses a stack).
    pub thread_stack_top: u64,
    pub cpus: u64,
}

/// What the fuzzer knows of one handle it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Endpoint,
    Notification,
    Thread,
    /// Received in a message, or derived from a handle of unknown kind.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub handle: u64,
    pub kind: Kind,
    /// Which object it names (handles derived from one another share it); 0: unknown.
    pub object: u32,
}

const POOL: usize = 48;
const STALE: usize = 32;

/// The handles the fuzzer holds (as far as it knows), the ones it deleted (stale), and the
/// ones it keeps for itself (its console), which no argument may ever name.
#[derive(Clone, Debug)]
pub struct Handles {
    held: [Option<Held>; POOL],
    stale: [u64; STALE],
    stale_next: usize,
    protected: [u64; 2],
    next_object: u32,
}

impl Handles {
    pub fn new(protected: [u64; 2]) -> Self {
        Handles { held: [None; POOL], stale: [0; STALE], stale_next: 0, protected, next_object: 1 }
    }

    pub fn is_protected(&self, v: u64) -> bool {
        v != 0 && self.protected.contains(&v)
    }

    /// `v`, or a stale-looking replacement if it is one of the protected handles.
    pub fn sanitize(&self, v: u64) -> u64 {
        if self.is_protected(v) { v ^ (1 << 40) } else { v }
    }

    pub fn held(&self) -> impl Iterator<Item = &Held> {
        self.held.iter().flatten()
    }

    pub fn count(&self) -> usize {
        self.held().count()
    }

    pub fn find(&self, h: u64) -> Option<Held> {
        self.held().find(|e| e.handle == h).copied()
    }

    /// A new object's id.
    pub fn new_object(&mut self) -> u32 {
        self.next_object += 1;
        self.next_object
    }

    /// Records `h`. If the pool is full, an old entry (not `keep`) is dropped from it and
    /// returned: the caller deletes that handle, or the kernel table would fill.
    pub fn add(&mut self, h: u64, kind: Kind, object: u32, rng: &mut Rng, keep: impl Fn(u64) -> bool) -> Option<u64> {
        if h == 0 || self.is_protected(h) || self.find(h).is_some() {
            return None;
        }
        let entry = Some(Held { handle: h, kind, object });
        if let Some(free) = self.held.iter_mut().find(|e| e.is_none()) {
            *free = entry;
            return None;
        }
        for _ in 0..8 {
            let i = rng.below(POOL as u64) as usize;
            let old = self.held[i].expect("pool is full").handle;
            if !keep(old) {
                self.held[i] = entry;
                return Some(old);
            }
        }
        None
    }

    /// Forgets `h` (deleted): it becomes one of the stale handles.
    pub fn remove(&mut self, h: u64) -> Option<Held> {
        let slot = self.held.iter_mut().find(|e| e.is_some_and(|e| e.handle == h))?;
        let old = slot.take();
        self.stale[self.stale_next] = h;
        self.stale_next = (self.stale_next + 1) % STALE;
        old
    }

    /// Another handle naming the same object as `h`, if the fuzzer knows one.
    pub fn same_object(&self, h: u64, rng: &mut Rng) -> u64 {
        let Some(obj) = self.find(h).map(|e| e.object).filter(|&o| o != 0) else { return h };
        let n = self.held().filter(|e| e.object == obj).count() as u64;
        self.held().filter(|e| e.object == obj).nth(rng.below(n) as usize).map_or(h, |e| e.handle)
    }

    /// Whether `h` is the last handle the fuzzer knows for its object.
    pub fn is_last_of_object(&self, h: u64) -> bool {
        match self.find(h) {
            Some(e) if e.object != 0 => self.held().filter(|x| x.object == e.object).count() == 1,
            Some(_) => true,
            None => false,
        }
    }

    /// A handle from a hostile class: held (valid), stale, forged but plausible (a small index
    /// with a small generation), out-of-range index, generation 0 or too large, 0, anything.
    pub fn pick(&self, rng: &mut Rng) -> u64 {
        let held = self.count() as u64;
        let h = match rng.below(16) {
            0..=5 if held > 0 => self.held().nth(rng.below(held) as usize).expect("counted").handle,
            6 | 7 => self.stale[rng.below(STALE as u64) as usize],
            8 | 9 => abi::cap::handle(rng.below(24) as usize, 1 + rng.below(3) as u32),
            10 => abi::cap::handle(abi::cap::SLOTS + rng.below(0xff00) as usize, 1),
            11 => rng.below(abi::cap::SLOTS as u64),
            12 => rng.below(abi::cap::SLOTS as u64) | (1 << 48) | rng.next_u64() << 49,
            13 => 0,
            _ => rng.next_u64(),
        };
        self.sanitize(h)
    }
}

/// The `map` reservations the fuzzer made (never touched by it: they may be gone).
#[derive(Clone, Debug, Default)]
pub struct Maps {
    ranges: [Range; 16],
    next: usize,
}

impl Maps {
    pub fn add(&mut self, start: u64, len: u64) {
        self.ranges[self.next] = Range::new(start, len.div_ceil(PAGE) * PAGE);
        self.next = (self.next + 1) % self.ranges.len();
    }

    fn pick(&self, rng: &mut Rng) -> Option<Range> {
        let n = self.ranges.iter().filter(|r| !r.is_empty()).count() as u64;
        if n == 0 {
            return None;
        }
        self.ranges.iter().filter(|r| !r.is_empty()).nth(rng.below(n) as usize).copied()
    }
}

/// Kernel-half addresses: the direct map, heap, kernel stacks, entry areas, the kernel image,
/// the very top.
fn kernel_address(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0xffff_8000_0000_0000 + rng.below(1 << 36),
        1 => 0xffff_fc00_0000_0000 + rng.below(8 << 20),
        2 => 0xffff_fd00_0000_0000 + rng.below(1 << 24),
        3 => 0xffff_fe00_0000_0000 + rng.below(1 << 22),
        4 => 0xffff_ffff_8000_0000 + rng.below(1 << 24),
        _ => u64::MAX - rng.below(PAGE),
    }
}

/// Neither user nor kernel: inside the canonical hole, or with bit 63 set and a low part.
fn non_canonical(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => USER_END,
        1 => 1 << 63,
        2 => USER_END + rng.below(1 << 46),
        3 => (1 << 63) | rng.below(USER_END),
        _ => 0x00ff_0000_0000_0000 ^ rng.below(1 << 40),
    }
}

/// A user address nothing is mapped at.
fn unmapped_user(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.pick(&[0, 8, PAGE, 0x10_0000]),
        1 => rng.below(abi::layout::USER_IMAGE_BASE),
        2 => FAR_UNMAPPED.pick(rng, 1),
        _ => USER_END - 1 - rng.below(PAGE),
    }
}

pub fn pointer(rng: &mut Rng, l: &Layout, maps: &Maps) -> u64 {
    match rng.below(20) {
        0..=4 => l.arena.pick(rng, 8),
        5 | 6 => l.arena.pick(rng, 1) | 1,
        // Runs off the end of the arena into the unmapped gap `map` leaves after it.
        7 => l.arena.end - 1 - rng.below(128),
        8 => l.untouched.pick(rng, 8),
        9 => l.text.pick(rng, 8),
        10 => l.rodata.pick(rng, 1),
        11 => maps.pick(rng).map_or(FAR_UNMAPPED.start, |r| r.pick(rng, 8)),
        12 | 13 => unmapped_user(rng),
        14..=16 => kernel_address(rng),
        17 | 18 => non_canonical(rng),
        _ => rng.next_u64(),
    }
}

pub fn length(rng: &mut Rng) -> u64 {
    match rng.below(16) {
        0 => 0,
        1 => 1,
        2 => rng.below(64),
        3 => rng.pick(&[PAGE - 1, PAGE, PAGE + 1]),
        4 => rng.pick(&[511, 512, 513, 599, 600, 601]),
        5 => rng.pick(&[1023, 1024, 1025, 64 * 1024]),
        6 => rng.below(1 << 16),
        7 => rng.below(1 << 27),
        8 => rng.pick(&[u32::MAX as u64, 1 << 32, (1 << 32) + 1]),
        9 => rng.pick(&[1 << 47, 1 << 46, USER_END - USER_MAP_BASE]),
        10 => rng.pick(&[1 << 63, i64::MAX as u64, u64::MAX]),
        11 => u64::MAX - rng.below(2 * PAGE),
        12 => (64 << 20) + rng.below(3) - 1,
        _ => rng.next_u64() >> rng.below(64),
    }
}

pub fn integer(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => 1,
        2 | 3 => rng.below(16),
        4 => rng.pick(&[u32::MAX as u64, 1 << 32, 1 << 63, u64::MAX, i64::MAX as u64]),
        5 => rng.below(1 << 16),
        _ => rng.next_u64(),
    }
}

pub fn rights(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 0,
        1 => 63,
        2 => 1 << rng.below(6),
        3 => rng.pick(&[u32::MAX as u64, u64::MAX, 1 << 32 | 1]),
        _ => rng.below(64),
    }
}

pub fn cpu(rng: &mut Rng, cpus: u64) -> u64 {
    match rng.below(6) {
        0..=2 => rng.below(cpus.max(1)),
        3 => abi::syscall::ANY_CPU,
        4 => cpus + rng.below(4),
        _ => rng.next_u64(),
    }
}

pub fn millis(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => 0,
        1..=4 => rng.below(30),
        5 => rng.pick(&[3_600_000, 3_600_001]),
        6 => u64::MAX,
        _ => rng.next_u64(),
    }
}

/// A new thread's entry: the exit stub (the thread ends at once), or an address where it
/// faults or that the kernel must refuse, never the fuzzer's own code elsewhere.
pub fn entry(rng: &mut Rng, l: &Layout) -> u64 {
    match rng.below(10) {
        0..=6 => l.exit_stub,
        7 => unmapped_user(rng),
        8 => kernel_address(rng),
        _ => non_canonical(rng),
    }
}

/// A return context's RIP: back into the job (it finishes normally), or somewhere it dies.
pub fn return_rip(rng: &mut Rng, l: &Layout) -> u64 {
    match rng.below(8) {
        0..=4 => l.job_resume,
        5 => unmapped_user(rng),
        6 => kernel_address(rng),
        _ => non_canonical(rng),
    }
}

/// A `bench_watch` address that arms nothing: 0 (disarm), odd, or outside user space.
pub fn no_watch(rng: &mut Rng, l: &Layout) -> u64 {
    match rng.below(5) {
        0 => 0,
        1 => l.arena.pick(rng, 2) | 1,
        2 => kernel_address(rng),
        3 => USER_END - 1,
        _ => non_canonical(rng),
    }
}

pub fn resume_rip(rng: &mut Rng) -> u64 {
    match rng.below(3) {
        0 => 0,
        1 => kernel_address(rng),
        _ => non_canonical(rng),
    }
}

/// The bytes `unmap(addr, len)` covers as the kernel reads it (rounded up to pages), or None
/// when the rounding overflows.
fn unmap_span(addr: u64, len: u64) -> Option<(u64, u64)> {
    let len = len.checked_add(PAGE - 1)? & !(PAGE - 1);
    Some((addr, addr.saturating_add(len)))
}

/// Steers `unmap(addr, len)` away from the fuzzer's own memory: a range that would touch it
/// starts instead at another `map` reservation (or in far unmapped space) and ends before the
/// fuzzer's next region above. Ranges the kernel must refuse (outside user space, overflowing)
/// pass unchanged, and so do huge ones over space the fuzzer does not use: the kernel bounds
/// the work of one call (it returns partial progress).
pub fn tame_unmap(addr: u64, len: u64, l: &Layout, rng: &mut Rng, maps: &Maps) -> (u64, u64) {
    let Some((start, end)) = unmap_span(addr, len) else { return (addr, len) };
    if end > USER_END || start >= USER_END {
        return (addr, len);
    }
    let mine = [STACK, l.arena, l.untouched, l.text, l.rodata];
    if !mine.iter().any(|r| r.overlaps(start, end)) {
        return (addr, len);
    }
    let addr = maps.pick(rng).filter(|r| !mine.iter().any(|m| m.overlaps(r.start, r.start + PAGE))).map_or(FAR_UNMAPPED.start, |r| r.start);
    let room = mine.iter().filter(|r| r.start > addr).map(|r| r.start).min().unwrap_or(USER_END) - addr;
    (addr, len.min(room & !(PAGE - 1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            arena: Range::new(USER_MAP_BASE, 64 * 1024),
            untouched: Range::new(USER_MAP_BASE + 0x20000, 64 * 1024),
            text: Range::new(0x400000, 0x10000),
            rodata: Range::new(0x410000, 0x4000),
            exit_stub: 0x400100,
            job_resume: 0x400200,
            thread_stack_top: 0x4200000,
            cpus: 4,
        }
    }

    #[test]
    fn protected_handles_never_come_out_of_any_class() {
        let console = abi::cap::initial(0);
        let h = Handles::new([console, 0]);
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            assert_ne!(h.pick(&mut rng), console);
        }
        assert_ne!(h.sanitize(console), console);
        assert_eq!(h.sanitize(0), 0);
    }

    #[test]
    fn unmap_never_reaches_the_fuzzers_stack_arena_or_image() {
        let l = layout();
        let maps = Maps::default();
        let mut rng = Rng::new(9);
        for i in 0..200_000u64 {
            let (addr, len) = match i % 3 {
                0 => (pointer(&mut rng, &l, &maps) & !(PAGE - 1), length(&mut rng)),
                1 => (STACK.start - rng.below(4) * PAGE, rng.below(1 << 20)),
                _ => (l.arena.start, length(&mut rng)),
            };
            let (a, n) = tame_unmap(addr, len, &l, &mut rng, &maps);
            let Some((start, end)) = unmap_span(a, n) else { continue };
            if end > USER_END || n == 0 {
                continue;
            }
            for r in [STACK, l.arena, l.untouched, l.text, l.rodata] {
                assert!(!r.overlaps(start, end), "unmap({a:#x}, {n:#x}) hits {r:x?}");
            }
        }
    }

    #[test]
    fn huge_unmaps_over_space_the_fuzzer_does_not_use_stay_huge() {
        let l = layout();
        let mut maps = Maps::default();
        maps.add(USER_MAP_BASE + (1 << 30), PAGE);
        let mut rng = Rng::new(8);
        let far = FAR_UNMAPPED.start;
        assert_eq!(tame_unmap(far, 1 << 40, &l, &mut rng, &maps), (far, 1 << 40));
        // From the arena up to the stack: moved to the other reservation, cut before the stack.
        let (a, n) = tame_unmap(l.arena.start, STACK.end - l.arena.start, &l, &mut rng, &maps);
        assert_eq!(a, USER_MAP_BASE + (1 << 30));
        assert!(n > 1 << 44 && a + n <= STACK.start, "unmap({a:#x}, {n:#x})");
    }

    #[test]
    fn unmap_lengths_the_kernel_must_refuse_pass_unchanged() {
        let l = layout();
        let mut rng = Rng::new(1);
        for len in [u64::MAX, u64::MAX - 100] {
            assert_eq!(tame_unmap(USER_MAP_BASE, len, &l, &mut rng, &Maps::default()), (USER_MAP_BASE, len));
        }
        assert_eq!(tame_unmap(1 << 63, 1 << 20, &l, &mut rng, &Maps::default()), (1 << 63, 1 << 20));
    }

    #[test]
    fn new_threads_return_contexts_and_fault_resumes_never_enter_the_fuzzers_code_nor_arm_watchpoints() {
        let l = layout();
        let mut rng = Rng::new(5);
        for _ in 0..100_000 {
            for rip in [entry(&mut rng, &l), return_rip(&mut rng, &l)] {
                let allowed = rip == l.exit_stub || rip == l.job_resume;
                assert!(allowed || !l.text.overlaps(rip, rip.saturating_add(1)), "{rip:#x}");
            }
            let r = resume_rip(&mut rng);
            assert!(r == 0 || r >= USER_END, "{r:#x}");
            let w = no_watch(&mut rng, &l);
            assert!(w == 0 || w % 2 == 1 || w.saturating_add(2) > USER_END, "bench_watch({w:#x}) would arm");
        }
    }

    #[test]
    fn pointers_never_name_the_stack() {
        let l = layout();
        let mut rng = Rng::new(11);
        for _ in 0..100_000 {
            let p = pointer(&mut rng, &l, &Maps::default());
            assert!(!STACK.overlaps(p, p.saturating_add(1)), "{p:#x}");
        }
    }

    #[test]
    fn every_class_of_pointer_shows_up() {
        let l = layout();
        let mut rng = Rng::new(2);
        let ps: Vec<u64> = (0..10_000).map(|_| pointer(&mut rng, &l, &Maps::default())).collect();
        assert!(ps.iter().any(|&p| l.arena.overlaps(p, p.saturating_add(1)) && p % 8 != 0), "misaligned arena");
        assert!(ps.iter().any(|&p| p >= 0xffff_8000_0000_0000 && p < 0xffff_8010_0000_0000), "HHDM");
        assert!(ps.iter().any(|&p| p >= 0xffff_ffff_8000_0000), "kernel image");
        assert!(ps.iter().any(|&p| (USER_END..0xffff_8000_0000_0000).contains(&p)), "non-canonical");
        assert!(ps.iter().any(|&p| l.text.overlaps(p, p.saturating_add(1))), "read-only text");
        assert!(ps.iter().any(|&p| l.untouched.overlaps(p, p.saturating_add(1))), "untouched reservation");
    }

    #[test]
    fn deleted_handles_become_stale_picks() {
        let mut h = Handles::new([0, 0]);
        let mut rng = Rng::new(4);
        h.add(0x10005, Kind::Endpoint, 2, &mut rng, |_| false);
        assert_eq!(h.find(0x10005).map(|e| e.kind), Some(Kind::Endpoint));
        assert!(h.is_last_of_object(0x10005));
        h.remove(0x10005);
        assert_eq!(h.find(0x10005), None);
        assert!((0..1000).any(|_| h.pick(&mut rng) == 0x10005));
    }

    #[test]
    fn a_full_pool_hands_back_an_evicted_handle_to_delete_but_keeps_the_ones_in_use() {
        let mut h = Handles::new([0, 0]);
        let mut rng = Rng::new(4);
        for i in 0..POOL as u64 {
            assert_eq!(h.add(0x10000 + i, Kind::Notification, 0, &mut rng, |_| false), None);
        }
        let evicted = h.add(0x20000, Kind::Endpoint, 0, &mut rng, |x| x == 0x10003).unwrap();
        assert_ne!(evicted, 0x10003);
        assert!(h.find(0x20000).is_some() && h.find(evicted).is_none());
    }
}
