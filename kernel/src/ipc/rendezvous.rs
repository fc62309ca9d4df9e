//! The state machine of a synchronous endpoint, without threads: waiting senders and waiting
//! receivers, of which at most one side is ever non-empty. A sender that arrives while a
//! receiver waits is paired with the first receiver (FIFO), and vice versa; otherwise it
//! queues. A waiter can withdraw (its thread is killed) and the whole endpoint can close (its
//! server ended), which hands every waiter back so that each gets an error. A queue that
//! cannot grow (no kernel heap) refuses the arrival and changes nothing; pairing never needs
//! the heap.
//!
//! Pure and host-tested; `super::endpoint` instantiates it with threads and messages.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

pub struct Rendezvous<S, R> {
    senders: VecDeque<S>,
    receivers: VecDeque<R>,
    closed: bool,
}

/// What an arriving sender or receiver found.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<S, R> {
    /// A partner was waiting: here both are, the partner out of the queue.
    Paired(S, R),
    /// Nobody was waiting: the arrival is queued.
    Queued,
    /// The endpoint is closed: the arrival is handed back.
    Closed,
    /// Nobody was waiting and the queue cannot grow (no kernel heap): the arrival is dropped
    /// and the endpoint is as it was.
    Refused,
}

/// Whether `q` can take one more entry: the heap is asked only when it is full (out of line,
/// so that `send` and `recv` stay small enough to inline into the IPC fastpath).
#[inline]
fn room_for_one<T>(q: &mut VecDeque<T>) -> bool {
    q.len() < q.capacity() || grow_by_one(q)
}

#[cold]
#[inline(never)]
fn grow_by_one<T>(q: &mut VecDeque<T>) -> bool {
    q.try_reserve(1).is_ok()
}

impl<S, R> Default for Rendezvous<S, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, R> Rendezvous<S, R> {
    pub const fn new() -> Self {
        Self { senders: VecDeque::new(), receivers: VecDeque::new(), closed: false }
    }

    #[inline]
    pub fn send(&mut self, s: S) -> Arrival<S, R> {
        if self.closed {
            return Arrival::Closed;
        }
        match self.receivers.pop_front() {
            Some(r) => Arrival::Paired(s, r),
            None if !room_for_one(&mut self.senders) => Arrival::Refused,
            None => {
                self.senders.push_back(s);
                Arrival::Queued
            }
        }
    }

    #[inline]
    pub fn recv(&mut self, r: R) -> Arrival<S, R> {
        if self.closed {
            return Arrival::Closed;
        }
        match self.senders.pop_front() {
            Some(s) => Arrival::Paired(s, r),
            None if !room_for_one(&mut self.receivers) => Arrival::Refused,
            None => {
                self.receivers.push_back(r);
                Arrival::Queued
            }
        }
    }

    /// The receiver the next sender would be paired with (the IPC fastpath looks before it
    /// takes it with [`take_receiver`](Self::take_receiver)).
    pub fn first_receiver(&self) -> Option<&R> {
        if self.closed {
            return None;
        }
        self.receivers.front()
    }

    /// Whether one more receiver fits (the heap asked only when the queue is full): what
    /// `recv` refuses on, for the fastpath to decide before it commits.
    pub fn room_for_receiver(&mut self) -> bool {
        room_for_one(&mut self.receivers)
    }

    /// Queues a receiver where no sender waits, the endpoint is open and `room_for_receiver`
    /// said yes (the fastpath checked all three under the same lock): what `recv` does then,
    /// without the pairing step, and without allocating.
    pub fn queue_receiver(&mut self, r: R) {
        debug_assert!(self.senders.is_empty() && !self.closed && self.receivers.len() < self.receivers.capacity());
        self.receivers.push_back(r);
    }

    /// Takes a waiting receiver out of the queue (without a sender), if one is waiting.
    pub fn take_receiver(&mut self) -> Option<R> {
        self.receivers.pop_front()
    }

    /// Withdraws the first queued sender matching `is_me`; `None` if it was already taken.
    pub fn withdraw_sender(&mut self, is_me: impl Fn(&S) -> bool) -> Option<S> {
        let i = self.senders.iter().position(is_me)?;
        self.senders.remove(i)
    }

    /// Withdraws the first queued receiver matching `is_me`; `None` if it was already taken.
    pub fn withdraw_receiver(&mut self, is_me: impl Fn(&R) -> bool) -> Option<R> {
        let i = self.receivers.iter().position(is_me)?;
        self.receivers.remove(i)
    }

    /// Closes the endpoint: every later arrival is refused, and every waiter is handed back.
    pub fn close(&mut self) -> (Vec<S>, Vec<R>) {
        self.closed = true;
        (self.senders.drain(..).collect(), self.receivers.drain(..).collect())
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub fn waiting(&self) -> (usize, usize) {
        (self.senders.len(), self.receivers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_meets_a_waiting_receiver_and_vice_versa() {
        let mut e = Rendezvous::<&str, u32>::new();
        assert_eq!(e.recv(1), Arrival::Queued);
        assert_eq!(e.send("a"), Arrival::Paired("a", 1));
        assert_eq!(e.send("b"), Arrival::Queued);
        assert_eq!(e.send("c"), Arrival::Queued);
        assert_eq!(e.recv(2), Arrival::Paired("b", 2));
        assert_eq!(e.recv(3), Arrival::Paired("c", 3));
        assert_eq!(e.waiting(), (0, 0));
    }

    #[test]
    fn the_first_receiver_is_the_one_a_sender_would_meet() {
        let mut e = Rendezvous::<&str, u32>::new();
        assert_eq!(e.first_receiver(), None);
        assert_eq!(e.recv(1), Arrival::Queued);
        assert_eq!(e.recv(2), Arrival::Queued);
        assert_eq!(e.first_receiver(), Some(&1));
        assert_eq!(e.take_receiver(), Some(1));
        assert_eq!(e.first_receiver(), Some(&2));
        assert_eq!(e.send("a"), Arrival::Paired("a", 2));
        assert_eq!(e.first_receiver(), None);
        assert_eq!(e.recv(3), Arrival::Queued);
        let _ = e.close();
        assert_eq!(e.first_receiver(), None, "a closed endpoint offers nobody");
    }

    #[test]
    fn both_queues_are_fifo_and_never_both_occupied() {
        let mut e = Rendezvous::<u32, u32>::new();
        // A pseudo-random interleaving of arrivals; check the invariant and the FIFO order.
        let mut next_s = 0;
        let mut next_r = 100;
        let mut paired = Vec::new();
        let mut x = 12345u32;
        for _ in 0..10_000 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let arrival = if x >> 16 & 1 == 0 {
                next_s += 1;
                e.send(next_s)
            } else {
                next_r += 1;
                e.recv(next_r)
            };
            if let Arrival::Paired(s, r) = arrival {
                paired.push((s, r));
            }
            let (ns, nr) = e.waiting();
            assert!(ns == 0 || nr == 0, "senders and receivers both waiting");
        }
        let senders: Vec<_> = paired.iter().map(|p| p.0).collect();
        let receivers: Vec<_> = paired.iter().map(|p| p.1).collect();
        assert!(senders.windows(2).all(|w| w[0] < w[1]), "senders served out of order");
        assert!(receivers.windows(2).all(|w| w[0] < w[1]), "receivers served out of order");
        let (ns, nr) = e.waiting();
        assert_eq!(2 * paired.len() + ns + nr, next_s as usize + (next_r - 100) as usize, "an arrival was lost");
    }

    #[test]
    fn a_withdrawn_waiter_is_never_paired() {
        let mut e = Rendezvous::<u32, u32>::new();
        e.send(1);
        e.send(2);
        e.send(3);
        assert_eq!(e.withdraw_sender(|s| *s == 2), Some(2));
        assert_eq!(e.withdraw_sender(|s| *s == 2), None, "already gone");
        assert_eq!(e.recv(10), Arrival::Paired(1, 10));
        assert_eq!(e.recv(11), Arrival::Paired(3, 11));
        assert_eq!(e.recv(12), Arrival::Queued);
        assert_eq!(e.withdraw_receiver(|r| *r == 12), Some(12));
        assert_eq!(e.waiting(), (0, 0));
    }

    #[test]
    fn a_queue_the_heap_cannot_grow_refuses_the_arrival_and_keeps_its_order() {
        use crate::alloc_failure::refusing;
        let mut e = Rendezvous::<u32, u32>::new();
        let mut next = 0;
        while e.senders.len() < e.senders.capacity() || next == 0 {
            next += 1;
            assert_eq!(e.send(next), Arrival::Queued);
        }
        assert_eq!(refusing(|| e.send(999)), Arrival::Refused);
        assert_eq!(e.waiting(), (next as usize, 0));
        // A receiver pairs without the heap, with the first sender: the order is intact.
        assert_eq!(refusing(|| e.recv(100)), Arrival::Paired(1, 100));
        // Now there is room again for one queued sender, without new heap.
        assert_eq!(refusing(|| e.send(next + 1)), Arrival::Queued);
        let order: Vec<_> = (0..next).map(|i| match e.recv(200 + i) {
            Arrival::Paired(s, _) => s,
            other => panic!("{other:?}"),
        }).collect();
        assert_eq!(order, (2..=next + 1).collect::<Vec<_>>());
        // The same for receivers.
        let mut e = Rendezvous::<u32, u32>::new();
        while e.receivers.len() < e.receivers.capacity() || e.receivers.is_empty() {
            e.recv(1);
        }
        let waiting = e.waiting();
        assert_eq!(refusing(|| e.recv(2)), Arrival::Refused);
        assert_eq!(e.waiting(), waiting);
        assert_eq!(refusing(|| e.send(3)), Arrival::Paired(3, 1));
        // The fastpath's own check agrees with `recv`: room now (one was taken), none when full.
        assert!(refusing(|| e.room_for_receiver()));
        e.queue_receiver(4);
        assert!(!refusing(|| e.room_for_receiver()));
        assert_eq!(refusing(|| e.recv(5)), Arrival::Refused);
        assert!(e.room_for_receiver(), "with the heap, the queue grows");
    }

    #[test]
    fn closing_hands_back_every_waiter_and_refuses_newcomers() {
        let mut e = Rendezvous::<u32, u32>::new();
        e.send(1);
        e.send(2);
        assert_eq!(e.close(), (vec![1, 2], vec![]));
        assert_eq!(e.send(3), Arrival::Closed);
        assert_eq!(e.recv(4), Arrival::Closed);
        let mut e = Rendezvous::<u32, u32>::new();
        e.recv(7);
        assert_eq!(e.close(), (vec![], vec![7]));
        assert!(e.is_closed());
    }
}
