//! A fixed-capacity vector: the bridge has no heap, and its tables have known bounds.

use core::ops::{Deref, DerefMut};

/// The vector is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Copy)]
pub struct FixedVec<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> FixedVec<T, N> {
    pub fn new() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
        }
    }

    pub fn push(&mut self, item: T) -> Result<(), Full> {
        if self.len == N {
            return Err(Full);
        }
        self.items[self.len] = item;
        self.len += 1;
        Ok(())
    }

    pub fn insert(&mut self, index: usize, item: T) -> Result<(), Full> {
        if self.len == N {
            return Err(Full);
        }
        self.items.copy_within(index..self.len, index + 1);
        self.items[index] = item;
        self.len += 1;
        Ok(())
    }

    pub fn remove(&mut self, index: usize) -> T {
        let item = self.items[index];
        self.items.copy_within(index + 1..self.len, index);
        self.len -= 1;
        item
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T: Copy + Default, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Deref for FixedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T: Copy + Default, const N: usize> DerefMut for FixedVec<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

impl<T: Copy + Default + core::fmt::Debug, const N: usize> core::fmt::Debug for FixedVec<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_beyond_capacity_fails_without_losing_items() {
        let mut v: FixedVec<u32, 2> = FixedVec::new();
        v.push(1).unwrap();
        v.push(2).unwrap();
        assert_eq!(v.push(3), Err(Full));
        assert_eq!(&v[..], &[1, 2]);
    }

    #[test]
    fn insert_and_remove_keep_order() {
        let mut v: FixedVec<u32, 4> = FixedVec::new();
        v.push(1).unwrap();
        v.push(3).unwrap();
        v.insert(1, 2).unwrap();
        assert_eq!(&v[..], &[1, 2, 3]);
        assert_eq!(v.remove(0), 1);
        assert_eq!(&v[..], &[2, 3]);
    }
}
