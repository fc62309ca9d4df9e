//! The pure part of scheduling: a per-CPU FIFO of ready threads and a list of sleepers ordered
//! by wake-up tick. Generic over the thread handle so the host tests use plain numbers.
//!
//! Neither allocates once it has room: the scheduler reserves a place in both for every thread
//! when the thread is created (`reserve`, refused with `NoMemory` then), so waking, sleeping
//! and the timer never ask the heap (a wake-up runs in interrupt handlers too).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Round-robin: a thread that used its time slice goes to the back.
pub struct RunQueue<T> {
    ready: VecDeque<T>,
}

impl<T> RunQueue<T> {
    pub const fn new() -> Self {
        Self { ready: VecDeque::new() }
    }
    /// Makes room for `total` threads in all (fails, changing nothing, if the heap cannot).
    pub fn reserve(&mut self, total: usize) -> bool {
        self.ready.try_reserve(total.saturating_sub(self.ready.len())).is_ok()
    }
    pub fn capacity(&self) -> usize {
        self.ready.capacity()
    }
    /// Within the room `reserve` made, this never allocates.
    pub fn push(&mut self, t: T) {
        self.ready.push_back(t);
    }
    pub fn pop(&mut self) -> Option<T> {
        self.ready.pop_front()
    }
    pub fn len(&self) -> usize {
        self.ready.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
    /// Removes every queued entry for which `dead` holds (a killed process's threads).
    pub fn remove_where(&mut self, mut dead: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.ready.len());
        for t in self.ready.drain(..) {
            if dead(&t) { removed.push(t) } else { kept.push_back(t) }
        }
        self.ready = kept;
        removed
    }
}

/// Sleeping threads, kept sorted by the tick at which they wake (ties in arrival order).
pub struct SleepQueue<T> {
    sleepers: Vec<(u64, T)>,
}

impl<T> SleepQueue<T> {
    pub const fn new() -> Self {
        Self { sleepers: Vec::new() }
    }
    /// Makes room for `total` sleepers in all (fails, changing nothing, if the heap cannot).
    pub fn reserve(&mut self, total: usize) -> bool {
        self.sleepers.try_reserve(total.saturating_sub(self.sleepers.len())).is_ok()
    }
    pub fn capacity(&self) -> usize {
        self.sleepers.capacity()
    }
    /// Within the room `reserve` made, this never allocates.
    pub fn insert(&mut self, wake_tick: u64, t: T) {
        let at = self.sleepers.partition_point(|(w, _)| *w <= wake_tick);
        self.sleepers.insert(at, (wake_tick, t));
    }
    /// Every sleeper whose wake-up tick is `<= now`, earliest first.
    pub fn expire(&mut self, now: u64) -> impl Iterator<Item = T> + '_ {
        let n = self.sleepers.partition_point(|(w, _)| *w <= now);
        self.sleepers.drain(..n).map(|(_, t)| t)
    }
    /// Takes out the sleepers for which `pick` holds, whatever their tick (early wake-ups),
    /// handing each to `f` (no allocation); returns how many.
    pub fn drain_where(&mut self, mut pick: impl FnMut(&T) -> bool, mut f: impl FnMut(T)) -> usize {
        let mut i = 0;
        let mut n = 0;
        while i < self.sleepers.len() {
            if pick(&self.sleepers[i].1) {
                f(self.sleepers.remove(i).1);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
    }
    pub fn len(&self) -> usize {
        self.sleepers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sleepers.is_empty()
    }
}

/// Where a new thread without a fixed CPU goes: the CPU with the fewest threads, lowest index
/// first, so work spreads over all CPUs.
pub fn least_loaded(loads: impl Iterator<Item = usize>) -> usize {
    loads.enumerate().min_by_key(|&(cpu, load)| (load, cpu)).map_or(0, |(cpu, _)| cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_queue_is_round_robin() {
        let mut q = RunQueue::new();
        q.push(1);
        q.push(2);
        let first = q.pop().unwrap();
        q.push(first); // used its slice
        assert_eq!(q.pop(), Some(2));
        assert_eq!(q.pop(), Some(1));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn killed_threads_leave_the_run_queue_and_the_rest_keep_their_order() {
        let mut q = RunQueue::new();
        for t in 1..=6 {
            q.push(t);
        }
        assert_eq!(q.remove_where(|t| t % 2 == 0), vec![2, 4, 6]);
        assert_eq!(core::iter::from_fn(|| q.pop()).collect::<Vec<_>>(), vec![1, 3, 5]);
    }

    #[test]
    fn sleepers_wake_in_tick_order_and_not_before_their_tick() {
        let mut s = SleepQueue::new();
        s.insert(30, 'c');
        s.insert(10, 'a');
        s.insert(20, 'b');
        s.insert(10, 'd');
        assert_eq!(s.expire(9).count(), 0);
        assert_eq!(s.expire(10).collect::<Vec<_>>(), vec!['a', 'd']);
        assert_eq!(s.expire(25).collect::<Vec<_>>(), vec!['b']);
        assert_eq!(s.len(), 1);
        let mut taken = Vec::new();
        assert_eq!(s.drain_where(|c| *c == 'c', |c| taken.push(c)), 1);
        assert_eq!(taken, vec!['c']);
        assert!(s.is_empty());
    }

    #[test]
    fn within_the_reserved_room_nothing_grows() {
        let mut r = RunQueue::new();
        let mut s = SleepQueue::new();
        assert!(r.reserve(8) && s.reserve(8));
        let (rc, sc) = (r.capacity(), s.capacity());
        assert!(rc >= 8 && sc >= 8);
        for i in 0..8u32 {
            r.push(i);
            s.insert(u64::from(8 - i), i);
        }
        // Round-robin and wake-ups stay within it too.
        for _ in 0..100 {
            let t = r.pop().unwrap();
            r.push(t);
        }
        let mut woken = 0;
        assert_eq!(s.drain_where(|t| t % 2 == 0, |_| woken += 1), 4);
        assert_eq!(woken, 4);
        assert_eq!(s.expire(100).count(), 4);
        assert_eq!((r.capacity(), s.capacity()), (rc, sc), "nothing was allocated");
        // Reserving for fewer than are queued changes nothing.
        assert!(r.reserve(1));
        assert_eq!(r.capacity(), rc);
    }

    #[test]
    fn new_work_goes_to_the_least_loaded_cpu() {
        assert_eq!(least_loaded([3, 1, 2, 1].into_iter()), 1);
        assert_eq!(least_loaded([0, 0].into_iter()), 0);
        assert_eq!(least_loaded(core::iter::empty()), 0);
    }
}
