//! Capability tables: what a process may name, and with which rights.
//!
//! A process names kernel objects only through *handles*, indices into its own table. A handle
//! carries the slot's generation, so a handle kept after its slot was deleted and reused is
//! *stale* and refused, and a number that was never handed out is refused as *forged*. Every use
//! checks the rights the operation needs.
//!
//! Revocation follows derivation. Each slot holds a [`CapNode`]; a capability passed to another
//! process, or derived with fewer rights, is a new node whose parent is the node it came from.
//! `revoke` marks the holder's node revoked and gives the holder a fresh node in its place, so
//! every capability derived from the old one (in any process, in any message in flight) stops
//! working at its next use, while the holder keeps its own.
//!
//! This module is pure (generic over the object type) and host-tested.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

pub use abi::cap::{Rights, SLOTS};

/// Why a handle was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapError {
    /// Out of range, never issued, or its slot is empty.
    Invalid,
    /// The slot was reused since this handle was issued.
    Stale,
    /// The capability, or one it was derived from, was revoked.
    Revoked,
    /// The capability lacks a right the operation needs.
    NoRights,
    /// No free slot.
    Full,
    /// Deriving would make the chain of derivations longer than [`MAX_DEPTH`].
    TooDeep,
    /// The kernel heap cannot hold the new capability node (`fallible::try_arc`).
    NoMemory,
}

/// The longest chain of derivations (and passes) from an original capability. Validity checks
/// walk the chain and dropping the last holder drops it, so a program must not be able to grow
/// it without bound (derive, delete the parent, repeat).
pub const MAX_DEPTH: u32 = 32;

/// One capability: an object, the rights it confers, and where it was derived from.
pub struct CapNode<T> {
    pub object: T,
    pub rights: Rights,
    /// Set by the mint that gave this capability its identity (0: none); an endpoint passes it
    /// to the receiver so that a server can tell its clients apart.
    pub badge: u64,
    parent: Option<Arc<CapNode<T>>>,
    /// Derivations from the original (0 for it).
    depth: u32,
    revoked: AtomicBool,
}

impl<T: Clone> CapNode<T> {
    /// An original capability (no parent): the one the object's creator holds.
    pub fn root(object: T, rights: Rights) -> Arc<Self> {
        Arc::new(Self::root_node(object, rights))
    }

    /// Like [`root`](Self::root), for a system call: `NoMemory` instead of an abort.
    pub fn try_root(object: T, rights: Rights) -> Result<Arc<Self>, CapError> {
        crate::fallible::try_arc(Self::root_node(object, rights)).map_err(|_| CapError::NoMemory)
    }

    fn root_node(object: T, rights: Rights) -> Self {
        Self { object, rights, badge: 0, parent: None, depth: 0, revoked: AtomicBool::new(false) }
    }

    /// A capability derived from `self` with at most its rights, and a badge if `self` has
    /// none yet (a badge, once set, is fixed).
    pub fn derive(self: &Arc<Self>, rights: Rights, badge: u64) -> Result<Arc<Self>, CapError> {
        if self.depth >= MAX_DEPTH {
            return Err(CapError::TooDeep);
        }
        crate::fallible::try_arc(Self {
            object: self.object.clone(),
            rights: self.rights & rights,
            badge: if self.badge != 0 { self.badge } else { badge },
            parent: Some(self.clone()),
            depth: self.depth + 1,
            revoked: AtomicBool::new(false),
        })
        .map_err(|_| CapError::NoMemory)
    }

    /// Whether this capability and every one it derives from are still in force.
    pub fn is_valid(&self) -> bool {
        let mut node = Some(self);
        while let Some(n) = node {
            if n.revoked.load(Ordering::Acquire) {
                return false;
            }
            node = n.parent.as_deref();
        }
        true
    }

    /// A node like this one (same object, rights, badge, parent) but with no children.
    fn fresh_copy(&self) -> Result<Arc<Self>, CapError> {
        crate::fallible::try_arc(Self {
            object: self.object.clone(),
            rights: self.rights,
            badge: self.badge,
            parent: self.parent.clone(),
            depth: self.depth,
            revoked: AtomicBool::new(false),
        })
        .map_err(|_| CapError::NoMemory)
    }
}

struct Slot<T> {
    generation: u32,
    cap: Option<Arc<CapNode<T>>>,
}

/// A process's capability table.
pub struct CapTable<T> {
    slots: Vec<Slot<T>>,
}

/// The handle for slot `index` at `generation`.
pub const fn handle(index: usize, generation: u32) -> u64 {
    abi::cap::handle(index, generation)
}

fn split(h: u64) -> Option<(usize, u32)> {
    let index = (h & 0xffff) as usize;
    let generation = h >> 16;
    if index >= SLOTS || generation == 0 || generation > u32::MAX as u64 {
        return None;
    }
    Some((index, generation as u32))
}

impl<T: Clone> Default for CapTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> CapTable<T> {
    pub const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    /// Puts `cap` in the lowest free slot and returns its handle.
    pub fn insert(&mut self, cap: Arc<CapNode<T>>) -> Result<u64, CapError> {
        if let Some(i) = self.slots.iter().position(|s| s.cap.is_none()) {
            let slot = &mut self.slots[i];
            slot.cap = Some(cap);
            return Ok(handle(i, slot.generation));
        }
        if self.slots.len() >= SLOTS || self.slots.try_reserve(1).is_err() {
            return Err(CapError::Full);
        }
        self.slots.push(Slot { generation: 1, cap: Some(cap) });
        Ok(handle(self.slots.len() - 1, 1))
    }

    /// The capability `h` names, if it is valid and has every right in `needed`.
    pub fn get(&self, h: u64, needed: Rights) -> Result<Arc<CapNode<T>>, CapError> {
        self.lookup(h, needed).cloned()
    }

    /// Like [`get`](Self::get), but borrowed from the table: no reference count is touched
    /// (the IPC fastpath holds the table's lock while it uses the capability).
    #[inline]
    pub fn lookup(&self, h: u64, needed: Rights) -> Result<&Arc<CapNode<T>>, CapError> {
        let (index, generation) = split(h).ok_or(CapError::Invalid)?;
        let slot = self.slots.get(index).ok_or(CapError::Invalid)?;
        let cap = slot.cap.as_ref().ok_or(CapError::Invalid)?;
        if slot.generation != generation {
            return Err(CapError::Stale);
        }
        if !cap.is_valid() {
            return Err(CapError::Revoked);
        }
        if !cap.rights.contains(needed) {
            return Err(CapError::NoRights);
        }
        Ok(cap)
    }

    /// Empties the slot of `h`; its handle (and copies of the number) become stale.
    pub fn delete(&mut self, h: u64) -> Result<Arc<CapNode<T>>, CapError> {
        self.get(h, Rights::empty()).or_else(|e| match e {
            // A revoked capability can still be deleted.
            CapError::Revoked => Ok(self.slots[split(h).unwrap().0].cap.clone().unwrap()),
            e => Err(e),
        })?;
        let (index, _) = split(h).ok_or(CapError::Invalid)?;
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1).max(1);
        Ok(slot.cap.take().expect("checked above"))
    }

    /// Revokes every capability derived from `h` (copies passed on, minted, in messages); the
    /// holder keeps `h`.
    pub fn revoke(&mut self, h: u64) -> Result<(), CapError> {
        let old = self.get(h, Rights::empty())?;
        let (index, _) = split(h).ok_or(CapError::Invalid)?;
        // The holder's fresh node first: if the heap cannot hold it, nothing is revoked.
        self.slots[index].cap = Some(old.fresh_copy()?);
        old.revoked.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether an `insert` would find a slot (the heap permitting): checked before work that
    /// must not be done unless its capability can be handed out (`spawn`).
    pub fn has_room(&self) -> bool {
        self.slots.len() < SLOTS || self.slots.iter().any(|s| s.cap.is_none())
    }

    /// Handles in use (for reports).
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.cap.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every valid capability, for teardown (the table is dropped afterwards).
    pub fn drain(&mut self) -> Vec<Arc<CapNode<T>>> {
        self.slots.iter_mut().filter_map(|s| s.cap.take()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(obj: u32, rights: Rights) -> (CapTable<u32>, u64) {
        let mut t = CapTable::new();
        let h = t.insert(CapNode::root(obj, rights)).unwrap();
        (t, h)
    }

    #[test]
    fn rights_are_checked_on_every_use() {
        let (t, h) = table_with(7, Rights::SEND | Rights::GRANT);
        assert_eq!(t.get(h, Rights::SEND).unwrap().object, 7);
        assert_eq!(t.get(h, Rights::SEND | Rights::GRANT).unwrap().object, 7);
        assert_eq!(t.get(h, Rights::RECV).err(), Some(CapError::NoRights));
        assert_eq!(t.get(h, Rights::SEND | Rights::RECV).err(), Some(CapError::NoRights));
    }

    #[test]
    fn lookup_checks_like_get_without_touching_the_count() {
        let (mut t, h) = table_with(7, Rights::SEND);
        let count = Arc::strong_count(t.lookup(h, Rights::SEND).unwrap());
        assert_eq!(t.lookup(h, Rights::SEND).unwrap().object, 7);
        assert_eq!(Arc::strong_count(t.lookup(h, Rights::empty()).unwrap()), count);
        assert_eq!(t.lookup(h, Rights::RECV).err(), Some(CapError::NoRights));
        assert_eq!(t.lookup(h + 1, Rights::empty()).err(), Some(CapError::Invalid));
        t.revoke(h).unwrap();
        let derived = t.get(h, Rights::empty()).unwrap().derive(Rights::SEND, 0).unwrap();
        let hd = t.insert(derived).unwrap();
        t.revoke(h).unwrap();
        assert_eq!(t.lookup(hd, Rights::SEND).err(), Some(CapError::Revoked));
        t.delete(h).unwrap();
        assert_eq!(t.lookup(h, Rights::empty()).err(), Some(CapError::Invalid));
    }

    #[test]
    fn forged_handles_are_refused() {
        let (t, h) = table_with(1, Rights::ALL);
        for forged in [0, 1, h + 1, h ^ (1 << 16), handle(SLOTS, 1), u64::MAX, 0xdead_beef_0000, h | 1 << 60] {
            assert!(t.get(forged, Rights::empty()).is_err(), "{forged:#x} accepted");
        }
    }

    #[test]
    fn stale_handles_are_refused_after_reuse() {
        let (mut t, h) = table_with(1, Rights::ALL);
        t.delete(h).unwrap();
        assert_eq!(t.get(h, Rights::empty()).err(), Some(CapError::Invalid));
        let h2 = t.insert(CapNode::root(2, Rights::ALL)).unwrap();
        assert_eq!(h2 & 0xffff, h & 0xffff, "slot reused");
        assert_ne!(h2, h);
        assert_eq!(t.get(h, Rights::empty()).err(), Some(CapError::Stale));
        assert_eq!(t.get(h2, Rights::empty()).unwrap().object, 2);
        assert_eq!(t.delete(h).err(), Some(CapError::Stale));
    }

    #[test]
    fn derivation_only_narrows_rights_and_fixes_the_badge() {
        let root = CapNode::root(3u32, Rights::SEND | Rights::GRANT);
        let child = root.derive(Rights::SEND | Rights::RECV, 42).unwrap();
        assert_eq!(child.rights, Rights::SEND);
        assert_eq!(child.badge, 42);
        let grandchild = child.derive(Rights::ALL, 99).unwrap();
        assert_eq!(grandchild.rights, Rights::SEND);
        assert_eq!(grandchild.badge, 42, "a badge cannot be changed once set");
    }

    #[test]
    fn revoke_cuts_off_every_derived_copy_but_not_the_holder() {
        let (mut a, ha) = table_with(5, Rights::ALL);
        let mut b = CapTable::new();
        let mut c = CapTable::new();
        // a passes to b, b passes on to c, and a keeps a message in flight.
        let hb = b.insert(a.get(ha, Rights::GRANT).unwrap().derive(Rights::ALL, 0).unwrap()).unwrap();
        let hc = c.insert(b.get(hb, Rights::GRANT).unwrap().derive(Rights::SEND, 0).unwrap()).unwrap();
        let in_flight = a.get(ha, Rights::empty()).unwrap().derive(Rights::SEND, 0).unwrap();
        a.revoke(ha).unwrap();
        assert!(a.get(ha, Rights::ALL).is_ok(), "the holder keeps its capability");
        assert_eq!(b.get(hb, Rights::empty()).err(), Some(CapError::Revoked));
        assert_eq!(c.get(hc, Rights::empty()).err(), Some(CapError::Revoked));
        assert!(!in_flight.is_valid());
        // What the holder derives after the revocation works.
        let hb2 = b.insert(a.get(ha, Rights::empty()).unwrap().derive(Rights::SEND, 0).unwrap()).unwrap();
        assert!(b.get(hb2, Rights::SEND).is_ok());
        // A revoked capability can be deleted, freeing its slot.
        assert!(b.delete(hb).is_ok());
    }

    #[test]
    fn revoking_a_middle_link_leaves_siblings_above_it_alone() {
        let (mut a, ha) = table_with(5, Rights::ALL);
        let mut b = CapTable::new();
        let hb = b.insert(a.get(ha, Rights::empty()).unwrap().derive(Rights::ALL, 0).unwrap()).unwrap();
        let leaf = b.get(hb, Rights::empty()).unwrap().derive(Rights::SEND, 0).unwrap();
        let sibling = a.get(ha, Rights::empty()).unwrap().derive(Rights::SEND, 0).unwrap();
        b.revoke(hb).unwrap();
        assert!(!leaf.is_valid());
        assert!(sibling.is_valid());
        assert!(b.get(hb, Rights::ALL).is_ok());
        let _ = &mut a;
    }

    #[test]
    fn derivation_chains_are_bounded() {
        // Derive, delete the parent, repeat: the chain stops at MAX_DEPTH.
        let (mut t, mut h) = table_with(1, Rights::ALL);
        let mut made = 0;
        loop {
            let parent = t.get(h, Rights::empty()).unwrap();
            match parent.derive(Rights::ALL, 0) {
                Ok(child) => {
                    let h2 = t.insert(child).unwrap();
                    t.delete(h).unwrap();
                    h = h2;
                    made += 1;
                }
                Err(e) => {
                    assert_eq!(e, CapError::TooDeep);
                    break;
                }
            }
        }
        assert_eq!(made, MAX_DEPTH);
        assert!(t.get(h, Rights::ALL).is_ok(), "the deepest copy still works");
    }

    /// Every slot's generation and what it holds: equal before and after a refused call
    /// means the call changed nothing.
    fn contents(t: &CapTable<u32>) -> Vec<(u32, Option<(u32, u32, u64)>)> {
        t.slots.iter().map(|s| (s.generation, s.cap.as_ref().map(|c| (c.object, c.rights.bits(), c.badge)))).collect()
    }

    #[test]
    fn a_full_table_refuses_an_insert_and_is_unchanged() {
        let mut t = CapTable::new();
        for i in 0..SLOTS {
            t.insert(CapNode::root(i as u32, Rights::ALL)).unwrap();
        }
        t.delete(handle(7, 1)).unwrap();
        t.insert(CapNode::root(700, Rights::SEND)).unwrap();
        assert!(!t.has_room());
        let before = contents(&t);
        let refused = CapNode::root(9999, Rights::ALL);
        assert_eq!(t.insert(refused.clone()).err(), Some(CapError::Full));
        assert_eq!(contents(&t), before);
        assert_eq!((t.len(), t.slots.len()), (SLOTS, SLOTS));
        assert_eq!(Arc::strong_count(&refused), 1, "the table kept no reference to what it refused");
    }

    #[test]
    fn a_table_the_heap_cannot_grow_refuses_an_insert_and_is_unchanged() {
        let mut t = CapTable::new();
        let mut handles = Vec::new();
        while t.slots.len() < t.slots.capacity() || t.slots.is_empty() {
            handles.push(t.insert(CapNode::root(handles.len() as u32, Rights::ALL)).unwrap());
        }
        assert!(t.has_room(), "the bound is not what refuses here");
        let before = contents(&t);
        let node = CapNode::root(42, Rights::ALL);
        let r = crate::alloc_failure::refusing(|| t.insert(node.clone()));
        assert_eq!(r, Err(CapError::Full));
        assert_eq!(contents(&t), before);
        assert_eq!(Arc::strong_count(&node), 1);
        // A free slot needs no heap: reuse works while the heap refuses.
        t.delete(handles[1]).unwrap();
        let r = crate::alloc_failure::refusing(|| t.insert(node.clone()));
        assert_eq!(r, Ok(handle(1, 2)));
        // And once the heap has room again, the table grows.
        assert!(t.insert(CapNode::root(43, Rights::ALL)).is_ok());
    }

    #[test]
    fn a_derivation_refused_by_a_full_table_leaves_no_child_behind() {
        // `cap_derive`: the copy is made, then inserted; a refused insert drops it again.
        let (mut t, h) = table_with(1, Rights::ALL);
        for i in 1..SLOTS {
            t.insert(CapNode::root(i as u32, Rights::ALL)).unwrap();
        }
        let parent = t.get(h, Rights::empty()).unwrap();
        let refs = Arc::strong_count(&parent);
        let before = contents(&t);
        let child = parent.derive(Rights::SEND, 5).unwrap();
        assert_eq!(t.insert(child).err(), Some(CapError::Full));
        assert_eq!(Arc::strong_count(&parent), refs, "the refused copy no longer holds its parent");
        assert_eq!(contents(&t), before);
    }

    #[test]
    fn nodes_the_heap_cannot_hold_are_refused_and_change_nothing() {
        let (mut t, h) = table_with(1, Rights::ALL);
        let parent = t.get(h, Rights::empty()).unwrap();
        let refs = Arc::strong_count(&parent);
        let before = contents(&t);
        use crate::alloc_failure::refusing;
        assert_eq!(refusing(|| parent.derive(Rights::SEND, 5).err()), Some(CapError::NoMemory));
        assert_eq!(refusing(|| CapNode::try_root(2u32, Rights::ALL).err()), Some(CapError::NoMemory));
        // A revocation whose fresh node cannot be made revokes nothing.
        let child = parent.derive(Rights::SEND, 0).unwrap();
        assert_eq!(refusing(|| t.revoke(h)), Err(CapError::NoMemory));
        assert!(child.is_valid() && parent.is_valid());
        assert_eq!(contents(&t), before);
        drop(child);
        assert_eq!(Arc::strong_count(&parent), refs);
        assert!(CapNode::try_root(2u32, Rights::ALL).is_ok());
    }

    #[test]
    fn refused_handles_change_nothing() {
        let (mut t, h) = table_with(1, Rights::SEND);
        t.insert(CapNode::root(2, Rights::ALL)).unwrap();
        t.delete(h).unwrap();
        let before = contents(&t);
        for bad in [h, 0, handle(SLOTS, 1), handle(5, 1), u64::MAX] {
            assert!(t.delete(bad).is_err());
            assert!(t.revoke(bad).is_err());
            assert!(t.get(bad, Rights::empty()).is_err());
        }
        assert_eq!(contents(&t), before);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = CapTable::new();
        for i in 0..SLOTS {
            t.insert(CapNode::root(i as u32, Rights::ALL)).unwrap();
        }
        assert_eq!(t.insert(CapNode::root(0, Rights::ALL)).err(), Some(CapError::Full));
        assert_eq!(t.len(), SLOTS);
        let h = handle(3, 1);
        t.delete(h).unwrap();
        assert_eq!(t.insert(CapNode::root(9, Rights::ALL)).unwrap(), handle(3, 2));
        assert_eq!(t.drain().len(), SLOTS);
        assert!(t.is_empty());
    }
}
