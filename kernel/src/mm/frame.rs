//! The physical frame allocator: a bitmap with one bit per 4 KiB frame (set = free).
//!
//! A bitmap keeps the state of every frame in one place, so a double free or a free of a frame
//! that was never handed out is detected instead of silently corrupting a free list. The
//! search starts at a rotating hint, so consecutive allocations are O(1) amortized.

use super::memmap::{PhysRange, FRAME_SIZE};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum FreeError {
    /// Not frame-aligned, or outside the memory the allocator manages.
    NotManaged(u64),
    /// The frame is already free: a double free.
    AlreadyFree(u64),
}

pub struct FrameBitmap<'a> {
    bits: &'a mut [u64],
    frames: u64,
    free: u64,
    hint: u64,
}

impl<'a> FrameBitmap<'a> {
    /// Words of bitmap storage needed to manage physical memory `[0, top)`.
    pub const fn words_for(top: u64) -> usize {
        (top.div_ceil(FRAME_SIZE)).div_ceil(64) as usize
    }

    /// An allocator over `bits.len() * 64` frames, all initially in use.
    pub fn new(bits: &'a mut [u64]) -> Self {
        bits.fill(0);
        let frames = bits.len() as u64 * 64;
        Self { bits, frames, free: 0, hint: 0 }
    }

    /// Marks the whole frames inside `range` free. Frame 0 stays in use: a physical address of
    /// zero is never handed out, so it can keep meaning "none".
    pub fn add_free(&mut self, range: PhysRange) {
        let Some(r) = range.frames_inside() else { return };
        let first = (r.start / FRAME_SIZE).max(1);
        let last = (r.end / FRAME_SIZE).min(self.frames);
        for f in first..last {
            if !self.bit(f) {
                self.set(f, true);
                self.free += 1;
            }
        }
    }

    /// Marks every frame touching `range` in use (for memory carved out after `add_free`).
    pub fn reserve(&mut self, range: PhysRange) {
        let r = range.frames_covering();
        for f in (r.start / FRAME_SIZE)..(r.end / FRAME_SIZE).min(self.frames) {
            if self.bit(f) {
                self.set(f, false);
                self.free -= 1;
            }
        }
    }

    /// One free frame's physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        if self.free == 0 {
            return None;
        }
        let words = self.bits.len() as u64;
        let start_word = self.hint / 64;
        for i in 0..words {
            let w = (start_word + i) % words;
            let word = self.bits[w as usize];
            if word != 0 {
                let f = w * 64 + word.trailing_zeros() as u64;
                self.set(f, false);
                self.free -= 1;
                self.hint = f;
                return Some(f * FRAME_SIZE);
            }
        }
        None
    }

    /// `count` physically contiguous free frames starting at a multiple of `align` bytes.
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Option<u64> {
        let align_frames = (align / FRAME_SIZE).max(1);
        let mut start = align_frames; // never frame 0
        while start + count <= self.frames {
            match (start..start + count).find(|&f| !self.bit(f)) {
                None => {
                    for f in start..start + count {
                        self.set(f, false);
                    }
                    self.free -= count;
                    return Some(start * FRAME_SIZE);
                }
                Some(used) => start = (used + 1).div_ceil(align_frames) * align_frames,
            }
        }
        None
    }

    pub fn free(&mut self, addr: u64) -> Result<(), FreeError> {
        if addr % FRAME_SIZE != 0 || addr == 0 || addr / FRAME_SIZE >= self.frames {
            return Err(FreeError::NotManaged(addr));
        }
        let f = addr / FRAME_SIZE;
        if self.bit(f) {
            return Err(FreeError::AlreadyFree(addr));
        }
        self.set(f, true);
        self.free += 1;
        Ok(())
    }

    pub fn free_frames(&self) -> u64 {
        self.free
    }

    fn bit(&self, f: u64) -> bool {
        self.bits[(f / 64) as usize] & (1 << (f % 64)) != 0
    }

    fn set(&mut self, f: u64, free: bool) {
        let w = &mut self.bits[(f / 64) as usize];
        if free {
            *w |= 1 << (f % 64);
        } else {
            *w &= !(1 << (f % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }

    #[test]
    fn hands_out_each_free_frame_exactly_once() {
        let mut bits = vec![0u64; FrameBitmap::words_for(0x100_000)];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x10_000, 0x20_000));
        assert_eq!(a.free_frames(), 16);
        let mut got: Vec<u64> = (0..16).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.alloc(), None, "allocator handed out more frames than were free");
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 16);
        assert!(got.iter().all(|&f| (0x10_000..0x20_000).contains(&f) && f % FRAME_SIZE == 0));
    }

    #[test]
    fn frame_zero_is_never_allocated() {
        let mut bits = vec![0u64; 1];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0, 0x4000));
        assert_eq!(a.free_frames(), 3);
        for _ in 0..3 {
            assert_ne!(a.alloc(), Some(0));
        }
    }

    #[test]
    fn partial_frames_of_a_usable_range_stay_reserved() {
        let mut bits = vec![0u64; 1];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x1800, 0x3800));
        assert_eq!(a.free_frames(), 1);
        assert_eq!(a.alloc(), Some(0x2000));
    }

    #[test]
    fn double_free_is_detected() {
        let mut bits = vec![0u64; 1];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x1000, 0x3000));
        let f = a.alloc().unwrap();
        assert_eq!(a.free(f), Ok(()));
        assert_eq!(a.free(f), Err(FreeError::AlreadyFree(f)));
        assert_eq!(a.free_frames(), 2);
    }

    #[test]
    fn free_of_unaligned_or_unmanaged_address_is_refused() {
        let mut bits = vec![0u64; 1];
        let mut a = FrameBitmap::new(&mut bits);
        assert_eq!(a.free(0x1001), Err(FreeError::NotManaged(0x1001)));
        assert_eq!(a.free(64 * FRAME_SIZE), Err(FreeError::NotManaged(64 * FRAME_SIZE)));
        assert_eq!(a.free(0), Err(FreeError::NotManaged(0)));
    }

    #[test]
    fn reserve_removes_frames_added_before() {
        let mut bits = vec![0u64; 1];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x1000, 0x8000));
        a.reserve(r(0x2000, 0x2001));
        assert_eq!(a.free_frames(), 6);
        let all: Vec<u64> = core::iter::from_fn(|| a.alloc()).collect();
        assert!(!all.contains(&0x2000));
    }

    #[test]
    fn contiguous_allocation_respects_alignment_and_skips_holes() {
        let mut bits = vec![0u64; 2];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x1000, 0x40_000));
        a.reserve(r(0x4000, 0x5000));
        let base = a.alloc_contiguous(4, 0x4000).unwrap();
        assert_eq!(base % 0x4000, 0);
        assert!(base >= 0x8000, "run crossed the reserved frame at 0x4000");
        assert_eq!(a.free_frames(), 0x3f - 1 - 4);
        assert_eq!(a.alloc_contiguous(1000, FRAME_SIZE), None);
    }

    #[test]
    fn allocation_wraps_around_the_hint() {
        let mut bits = vec![0u64; 2];
        let mut a = FrameBitmap::new(&mut bits);
        a.add_free(r(0x1000, 0x2000));
        a.add_free(r(0x70_000, 0x71_000));
        let hi = a.alloc_contiguous(1, 0x70_000).unwrap();
        assert_eq!(hi, 0x70_000);
        a.free(hi).unwrap();
        let mut got = vec![a.alloc().unwrap(), a.alloc().unwrap()];
        got.sort();
        assert_eq!(got, vec![0x1000, 0x70_000]);
    }
}
