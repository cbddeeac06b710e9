//! Free slots: who may fill a slot next.
//!
//! A free slot belongs to whoever *claims* it: [`Slot::try_claim`] swings its
//! `home` pointer from null to the inserting thread's inbox with a CAS, and
//! only the finalizer of the slot's object stores null again, after the
//! value has been moved out and the generation bumped. So the lists below
//! are only *hints* where free slots are: an index may sit in two lists at
//! once, or in a list after somebody else claimed its slot, and nothing goes
//! wrong — the CAS decides, and a failed claim just drops the stale entry.
//!
//! * Each thread keeps a small [`FreeCache`] of the slots it freed. Only the
//!   owner writes it (plain loads and stores, no read-modify-write), so an
//!   insert after a release on the same thread touches no shared line but
//!   the slot's own. It spills half to the global list when it is full, and
//!   refills from the global list when it is empty.
//! * The global [`FreeList`] (under the registry's `alloc` lock) holds the
//!   rest, and `next`, the first slot never handed out.
//! * An insert that finds no free slot anywhere else, at capacity, *steals*:
//!   it reads every other thread's cache and claims what it can. A full
//!   registry is therefore really full (`Err(Full)` only when every slot is
//!   live or being finalized), however the free slots are spread.
//!
//! [`Slot::try_claim`]: crate::slot::Slot::try_claim

use crate::sync::{AtomicU32, AtomicUsize, Ordering};

/// Slots a thread's cache holds at most.
#[cfg(not(loom))]
pub(crate) const CACHE: usize = 32;
/// Tiny under loom, so models reach the spill and refill paths.
#[cfg(loom)]
pub(crate) const CACHE: usize = 2;

/// Fresh slots (never used) handed to a thread at once, so that two threads'
/// first slots do not share a cache line.
#[cfg(not(loom))]
pub(crate) const FRESH_BATCH: u32 = 8;
/// One at a time under loom (fewer atomics to explore).
#[cfg(loom)]
pub(crate) const FRESH_BATCH: u32 = 1;

/// Slot allocation bookkeeping shared by all threads (under a lock).
#[derive(Debug, Default)]
pub(crate) struct FreeList {
    /// Free slot indices (hints, see the module docs).
    pub(crate) free: Vec<u32>,
    /// Slots `0..next` have been handed out at least once.
    pub(crate) next: u32,
    /// Slots whose generation is exhausted; never reused.
    pub(crate) retired: u32,
}

/// A thread's cache of free slot indices.
///
/// Written only by its owning thread; any thread may read it (to steal).
/// The atomics are there so those reads are not data races: the owner's
/// accesses compile to plain loads and stores.
pub(crate) struct FreeCache {
    len: AtomicUsize,
    slots: [AtomicU32; CACHE],
}

impl FreeCache {
    pub(crate) fn new() -> Self {
        FreeCache {
            len: AtomicUsize::new(0),
            slots: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Owner only: adds `index`; `false` if the cache is full.
    #[inline]
    pub(crate) fn push(&self, index: u32) -> bool {
        let n = self.len.load(Ordering::Relaxed);
        let Some(cell) = self.slots.get(n) else {
            return false;
        };
        cell.store(index, Ordering::Relaxed);
        // Release: a stealer that reads the new length reads the entry.
        self.len.store(n + 1, Ordering::Release);
        true
    }

    /// Owner only: takes the most recently pushed index.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let n = self.len.load(Ordering::Relaxed);
        let i = n.checked_sub(1)?;
        let index = self.slots.get(i)?.load(Ordering::Relaxed);
        self.len.store(i, Ordering::Relaxed);
        Some(index)
    }

    /// Owner only: moves the oldest `n` entries (at most all) to `out`.
    pub(crate) fn spill(&self, n: usize, out: &mut Vec<u32>) {
        let len = self.len.load(Ordering::Relaxed);
        let n = n.min(len);
        out.extend(self.slots[..n].iter().map(|c| c.load(Ordering::Relaxed)));
        for (to, from) in (n..len).enumerate() {
            let index = self.slots[from].load(Ordering::Relaxed);
            self.slots[to].store(index, Ordering::Relaxed);
        }
        self.len.store(len - n, Ordering::Release);
    }

    /// Any thread: the entries as they are now (possibly stale, possibly
    /// changing under the reader — they are hints).
    pub(crate) fn peek(&self, mut f: impl FnMut(u32)) {
        let n = self.len.load(Ordering::Acquire).min(CACHE);
        for cell in &self.slots[..n] {
            f(cell.load(Ordering::Relaxed));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn cache_is_a_bounded_stack_that_spills_its_oldest() {
        let c = FreeCache::new();
        assert_eq!(c.pop(), None);
        for i in 0..CACHE as u32 {
            assert!(c.push(i));
        }
        assert!(!c.push(99), "full");
        let mut out = Vec::new();
        c.spill(CACHE / 2, &mut out);
        assert_eq!(out, (0..CACHE as u32 / 2).collect::<Vec<_>>());
        let mut seen = Vec::new();
        c.peek(|i| seen.push(i));
        assert_eq!(seen, (CACHE as u32 / 2..CACHE as u32).collect::<Vec<_>>());
        assert_eq!(c.pop(), Some(CACHE as u32 - 1));
        assert!(c.push(7));
        assert_eq!(c.pop(), Some(7));
        c.spill(usize::MAX, &mut out);
        assert_eq!(out.len(), CACHE - 1);
        assert_eq!(c.pop(), None);
    }
}
