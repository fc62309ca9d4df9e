//! Memory budgets: who pays for the memory a process makes the kernel use.
//!
//! Every process draws from one [`Budget`]: the frames of its address space (pages and page
//! tables), its threads (kernel stack, FPU area, the thread itself), the endpoints and
//! notifications it creates, the message buffers it has in flight, and its fixed tables
//! (capability slots, `map` ranges). A charge
//! that would take the budget past its limit fails, and the system call that wanted it
//! returns `NoMemory`; nobody else notices.
//!
//! Budgets form a tree. The root budget is the machine's free memory less the kernel's
//! reserve. A process that starts another *carves* the child's budget out of its own: the
//! whole limit is charged to the parent at once ([`Budget::grant`]), so what a parent hands
//! out it cannot also spend, and siblings cannot starve each other. When the child's budget
//! is *closed* (the child has ended and its memory is freed) or *revoked* by the parent, it
//! refuses every new charge and gives back to the parent what is unused at once and the rest
//! as it is released: the parent's budget is whole again once everything the child held is
//! gone.
//!
//! Pure logic (a spin lock and integers), host-tested.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

/// What a charge pays for (kept per kind, for the accounting report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Kind {
    /// Frames of the address space: user pages and page tables.
    Frames = 0,
    /// Threads: kernel stack, FPU area, thread state.
    Threads = 1,
    Endpoints = 2,
    Notifications = 3,
    /// The process's own fixed structures (capability table, `map` ranges).
    Process = 4,
    /// Budgets carved out for children: bytes still out, objects the open (not yet closed)
    /// ones.
    Grants = 5,
    /// Message buffers in flight (`send`, `call`, `reply`): charged to the sender from the
    /// copy out of its memory until the receiver has taken the bytes.
    Messages = 6,
}

pub const KINDS: usize = 7;

/// A charge was refused: the budget is at its limit, or closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted;

/// A budget's figures at one moment (`memory_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub limit: u64,
    pub used: u64,
    pub peak: u64,
    pub closed: bool,
    /// Bytes and live objects per [`Kind`].
    pub bytes: [u64; KINDS],
    pub objects: [u64; KINDS],
}

pub struct Budget {
    inner: Mutex<Usage>,
    parent: Option<Arc<Budget>>,
}

impl Budget {
    /// The root of the tree: `limit` bytes, owed to nobody.
    pub fn root(limit: u64) -> Arc<Self> {
        Arc::new(Self { inner: Mutex::new(Usage { limit, ..Default::default() }), parent: None })
    }

    /// A budget of `limit` bytes carved out of this one (charged to it as a grant).
    pub fn grant(self: &Arc<Self>, limit: u64) -> Result<Arc<Self>, Exhausted> {
        self.charge(Kind::Grants, limit)?;
        Ok(Arc::new(Self { inner: Mutex::new(Usage { limit, ..Default::default() }), parent: Some(self.clone()) }))
    }

    /// Takes `bytes` for one object of `kind`, or refuses and changes nothing.
    pub fn charge(&self, kind: Kind, bytes: u64) -> Result<(), Exhausted> {
        let mut u = self.inner.lock();
        match u.used.checked_add(bytes) {
            Some(used) if !u.closed && used <= u.limit => {
                u.used = used;
                u.peak = u.peak.max(used);
                u.bytes[kind as usize] += bytes;
                u.objects[kind as usize] += 1;
                Ok(())
            }
            _ => Err(Exhausted),
        }
    }

    /// Gives back what one object of `kind` was charged. A closed budget passes it on to its
    /// parent (its limit shrinks with its use).
    pub fn release(&self, kind: Kind, bytes: u64) {
        self.release_n(kind, 1, bytes);
    }

    /// Gives back `n` objects of `kind` of `each` bytes (pages freed together).
    pub fn release_n(&self, kind: Kind, n: u64, each: u64) {
        let bytes = n * each;
        let pass_on = {
            let mut u = self.inner.lock();
            assert!(u.bytes[kind as usize] >= bytes && u.objects[kind as usize] >= n, "budget released more than it was charged");
            u.used -= bytes;
            u.bytes[kind as usize] -= bytes;
            u.objects[kind as usize] -= n;
            if u.closed {
                u.limit -= bytes;
                bytes
            } else {
                0
            }
        };
        self.give_back(pass_on);
    }

    /// Refuses every new charge from now on, and gives the parent back what is unused.
    /// Idempotent; the root cannot be closed.
    pub fn close(&self) {
        if self.parent.is_none() {
            return;
        }
        let unused = {
            let mut u = self.inner.lock();
            if u.closed {
                return;
            }
            u.closed = true;
            let unused = u.limit - u.used;
            u.limit = u.used;
            unused
        };
        if let Some(p) = &self.parent {
            // The parent counts open grants; the bytes still out come back as released.
            p.inner.lock().objects[Kind::Grants as usize] -= 1;
        }
        self.give_back(unused);
    }

    /// `bytes` of this budget's grant return to the parent.
    fn give_back(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Some(p) = &self.parent {
            let mut u = p.inner.lock();
            u.used -= bytes;
            u.bytes[Kind::Grants as usize] -= bytes;
            let pass_on = if u.closed {
                u.limit -= bytes;
                bytes
            } else {
                0
            };
            drop(u);
            p.give_back(pass_on);
        }
    }

    /// Whether `other` was carved out of this budget.
    pub fn is_parent_of(self: &Arc<Self>, other: &Budget) -> bool {
        other.parent.as_ref().is_some_and(|p| Arc::ptr_eq(p, self))
    }

    pub fn usage(&self) -> Usage {
        *self.inner.lock()
    }

    /// Bytes still available.
    pub fn available(&self) -> u64 {
        let u = self.inner.lock();
        if u.closed { 0 } else { u.limit - u.used }
    }
}

impl Drop for Budget {
    /// A budget nothing refers to any more holds nothing: closing it gives its whole grant
    /// back (what `close` did not give back already, each `release` since did).
    fn drop(&mut self) {
        self.close();
    }
}

/// One object's charge, given back when it is dropped.
pub struct Charge {
    budget: Arc<Budget>,
    kind: Kind,
    bytes: u64,
}

impl Charge {
    pub fn new(budget: &Arc<Budget>, kind: Kind, bytes: u64) -> Result<Self, Exhausted> {
        budget.charge(kind, bytes)?;
        Ok(Self { budget: budget.clone(), kind, bytes })
    }

    pub fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.kind, self.bytes);
    }
}

/// Bytes on the kernel heap charged to a budget ([`Kind::Messages`]) until they are dropped:
/// a message's buffer in flight. As small as a `Vec<u8>` (the charge is the length), so a
/// message without a buffer costs what it did before there was a charge.
#[derive(Default)]
pub struct ChargedBytes {
    bytes: Box<[u8]>,
    budget: Option<Arc<Budget>>,
}

impl ChargedBytes {
    /// `len` zero bytes charged to `budget` (none for 0). At the limit, or when the heap has
    /// no room, refused with nothing charged or allocated.
    pub fn zeroed(budget: &Arc<Budget>, len: usize) -> Result<Self, Exhausted> {
        if len == 0 {
            return Ok(Self::default());
        }
        // The heap first, then the charge: a refusal of either leaves the budget exactly as
        // it was (its peak too); the bytes are freed at once.
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| Exhausted)?;
        budget.charge(Kind::Messages, len as u64)?;
        v.resize(len, 0);
        // Exactly `len` reserved: no reallocation here.
        Ok(Self { bytes: v.into_boxed_slice(), budget: Some(budget.clone()) })
    }
}

impl core::ops::Deref for ChargedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl core::ops::DerefMut for ChargedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for ChargedBytes {
    /// Inlined: most messages carry no bytes, and the IPC fastpath drops several.
    #[inline(always)]
    fn drop(&mut self) {
        if self.budget.is_some() {
            self.release();
        }
    }
}

impl ChargedBytes {
    #[cold]
    fn release(&mut self) {
        if let Some(b) = self.budget.take() {
            b.release(Kind::Messages, self.bytes.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_change_nothing_when_refused() {
        let b = Budget::root(10_000);
        b.charge(Kind::Frames, 4096).unwrap();
        b.charge(Kind::Frames, 4096).unwrap();
        assert_eq!(b.charge(Kind::Frames, 4096), Err(Exhausted));
        let u = b.usage();
        assert_eq!((u.used, u.objects[Kind::Frames as usize], u.peak), (8192, 2, 8192));
        b.release(Kind::Frames, 4096);
        assert_eq!(b.available(), 10_000 - 4096);
        assert_eq!(b.usage().peak, 8192);
    }

    #[test]
    fn a_refused_charge_leaves_the_budget_and_its_parent_exactly_as_they_were() {
        let root = Budget::root(1 << 20);
        let child = root.grant(10_000).unwrap();
        for (kind, bytes) in [(Kind::Threads, 4000), (Kind::Messages, 1024), (Kind::Endpoints, 300), (Kind::Frames, 4096)] {
            child.charge(kind, bytes).unwrap();
        }
        let (mine, parents, left) = (child.usage(), root.usage(), child.available());
        assert_eq!(left, 10_000 - 9420);
        for kind in [Kind::Frames, Kind::Threads, Kind::Endpoints, Kind::Notifications, Kind::Process, Kind::Messages] {
            assert_eq!(child.charge(kind, left + 1), Err(Exhausted));
            assert_eq!(Charge::new(&child, kind, u64::MAX).err(), Some(Exhausted));
        }
        assert_eq!(child.grant(left + 1).err(), Some(Exhausted));
        assert_eq!((child.usage(), root.usage()), (mine, parents), "a refusal changed a figure");
        // Exactly what is left is still granted.
        child.charge(Kind::Messages, left).unwrap();
        assert_eq!(child.available(), 0);
    }

    #[test]
    fn a_revoked_budget_refuses_everything_and_changes_nothing() {
        let root = Budget::root(1000);
        let child = root.grant(500).unwrap();
        child.charge(Kind::Threads, 100).unwrap();
        child.close();
        let (mine, parents) = (child.usage(), root.usage());
        assert_eq!(child.charge(Kind::Messages, 1), Err(Exhausted));
        assert_eq!(child.charge(Kind::Frames, 0), Err(Exhausted), "not even nothing");
        assert!(child.grant(1).is_err());
        assert_eq!((child.usage(), root.usage()), (mine, parents));
    }

    #[test]
    fn message_bytes_are_charged_apart_and_given_back_when_dropped() {
        let root = Budget::root(10_000);
        let b = root.grant(5000).unwrap();
        let held: Vec<_> = (0..4).map(|_| ChargedBytes::zeroed(&b, 1024).unwrap()).collect();
        assert!(held.iter().all(|m| m.len() == 1024 && m.iter().all(|&x| x == 0)));
        let u = b.usage();
        assert_eq!((u.objects[Kind::Messages as usize], u.bytes[Kind::Messages as usize]), (4, 4096));
        let before = (b.usage(), root.usage());
        assert!(ChargedBytes::zeroed(&b, 1024).is_err(), "a fifth full buffer is past the limit");
        assert_eq!((b.usage(), root.usage()), before, "the refused buffer left nothing charged");
        let empty = ChargedBytes::zeroed(&b, 0).unwrap();
        assert_eq!((empty.len(), b.usage().objects[Kind::Messages as usize]), (0, 4), "no bytes, no charge");
        drop(held);
        assert_eq!(b.usage(), Usage { limit: 5000, peak: 4096, ..Default::default() });
    }

    #[test]
    fn message_bytes_the_heap_cannot_hold_are_refused_with_nothing_charged() {
        let b = Budget::root(1 << 20);
        let before = b.usage();
        let r = crate::alloc_failure::refusing(|| ChargedBytes::zeroed(&b, 1024).map(drop));
        assert_eq!(r, Err(Exhausted));
        assert_eq!(b.usage(), before);
        assert!(ChargedBytes::zeroed(&b, 1024).is_ok());
    }

    #[test]
    fn a_huge_charge_cannot_wrap_around() {
        let b = Budget::root(u64::MAX - 1);
        b.charge(Kind::Frames, 10).unwrap();
        assert_eq!(b.charge(Kind::Frames, u64::MAX - 5), Err(Exhausted));
        assert_eq!(b.usage().used, 10);
    }

    #[test]
    fn a_grant_is_carved_out_of_the_parent() {
        let root = Budget::root(100);
        let a = root.grant(60).unwrap();
        assert_eq!(root.available(), 40);
        assert_eq!(root.grant(50).err(), Some(Exhausted), "siblings cannot be promised more than the parent has");
        let b = root.grant(40).unwrap();
        // Each child spends its own share only.
        a.charge(Kind::Threads, 60).unwrap();
        assert_eq!(a.charge(Kind::Threads, 1), Err(Exhausted));
        b.charge(Kind::Threads, 40).unwrap();
        assert_eq!(root.charge(Kind::Frames, 1), Err(Exhausted));
    }

    #[test]
    fn closing_returns_the_unused_part_at_once_and_the_rest_as_it_is_released() {
        let root = Budget::root(100);
        let child = root.grant(60).unwrap();
        child.charge(Kind::Frames, 25).unwrap();
        child.charge(Kind::Frames, 5).unwrap();
        child.close();
        assert_eq!(child.charge(Kind::Frames, 1), Err(Exhausted), "a closed budget refuses everything");
        assert_eq!(root.available(), 40 + 30);
        assert_eq!(root.usage().objects[Kind::Grants as usize], 0, "a closed grant is not open any more");
        child.release(Kind::Frames, 25);
        assert_eq!(root.available(), 95);
        child.release(Kind::Frames, 5);
        assert_eq!(root.available(), 100);
        assert_eq!(child.usage().limit, 0);
        // Released memory does not let a revoked child allocate again.
        assert_eq!(child.charge(Kind::Frames, 1), Err(Exhausted));
        drop(child);
        let u = root.usage();
        assert_eq!((u.used, u.objects[Kind::Grants as usize], u.bytes[Kind::Grants as usize]), (0, 0, 0));
    }

    #[test]
    fn a_grandchild_returns_through_a_closed_child() {
        let root = Budget::root(1000);
        let child = root.grant(500).unwrap();
        let grandchild = child.grant(300).unwrap();
        grandchild.charge(Kind::Frames, 100).unwrap();
        child.close();
        // The child's unused 200 are back; its grant to the grandchild is still out.
        assert_eq!(root.available(), 700);
        grandchild.close();
        assert_eq!(root.available(), 900, "the grandchild's unused 200 pass through the closed child");
        grandchild.release(Kind::Frames, 100);
        assert_eq!(root.available(), 1000);
        drop(grandchild);
        drop(child);
        assert_eq!(root.usage().objects, [0; KINDS]);
    }

    #[test]
    fn dropping_an_open_budget_returns_its_whole_grant() {
        let root = Budget::root(100);
        let child = root.grant(70).unwrap();
        drop(child);
        assert_eq!(root.available(), 100);
        assert_eq!(root.usage().objects[Kind::Grants as usize], 0);
    }

    #[test]
    fn a_charge_is_given_back_when_dropped() {
        let root = Budget::root(100);
        let c = Charge::new(&root, Kind::Endpoints, 30).unwrap();
        assert_eq!(root.usage().objects[Kind::Endpoints as usize], 1);
        assert!(Charge::new(&root, Kind::Endpoints, 80).is_err());
        drop(c);
        assert_eq!(root.usage(), Usage { limit: 100, peak: 30, ..Default::default() });
    }

    #[test]
    fn the_root_cannot_be_closed() {
        let root = Budget::root(100);
        root.close();
        root.charge(Kind::Frames, 100).unwrap();
    }

    #[test]
    fn only_the_parent_is_a_parent() {
        let root = Budget::root(100);
        let a = root.grant(10).unwrap();
        let b = a.grant(5).unwrap();
        assert!(root.is_parent_of(&a) && a.is_parent_of(&b));
        assert!(!root.is_parent_of(&b) && !b.is_parent_of(&a));
    }
}
