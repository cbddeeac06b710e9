//! Slot allocation: claiming a free slot for an insert, and freeing a
//! finalized one (see [`crate::free`] for the protocol).

use super::Inner;
use crate::free::{CACHE, FRESH_BATCH};
use crate::local::ThreadTable;
use crate::slot::Slot;
use crate::Handle;

impl<T: Send + Sync + 'static> Inner<T> {
    /// Claims a free slot for an insert by `table`'s thread (its inbox goes
    /// in the slot's `home`). `None` if every slot is taken: the registry is
    /// full.
    #[inline]
    pub(super) fn claim_slot(&self, table: &ThreadTable<T>) -> Option<(u32, &Slot<T>)> {
        while let Some(i) = table.free.pop() {
            if let Some(slot) = self.try_claim(table, i) {
                return Some((i, slot));
            }
        }
        self.claim_slow(table)
    }

    /// Claims slot `i` if it is free.
    #[inline]
    fn try_claim(&self, table: &ThreadTable<T>, i: u32) -> Option<&Slot<T>> {
        let slot = self.slots.get(i as usize)?;
        slot.try_claim(std::sync::Arc::as_ptr(&table.inbox).cast_mut())
            .then_some(slot)
    }

    /// The thread's cache is empty: the global list, fresh slots, then the
    /// other threads' caches, then the global list once more (a cache may
    /// have been spilled there meanwhile).
    #[cold]
    fn claim_slow(&self, table: &ThreadTable<T>) -> Option<(u32, &Slot<T>)> {
        if let Some(got) = self.claim_from_list(table, true) {
            return Some(got);
        }
        if let Some(got) = self.steal(table) {
            return Some(got);
        }
        self.claim_from_list(table, false)
    }

    /// From the global list (and, with `fresh`, from never-used slots),
    /// moving up to half a cache of further hints into `table`'s cache.
    fn claim_from_list(&self, table: &ThreadTable<T>, fresh: bool) -> Option<(u32, &Slot<T>)> {
        let mut a = self.alloc.lock();
        while let Some(i) = a.free.pop() {
            if let Some(slot) = self.try_claim(table, i) {
                // Up to half a cache of further hints; one the cache
                // refuses stays in the list, so no free slot is lost.
                for _ in 0..CACHE / 2 {
                    match a.free.last() {
                        Some(&hint) if table.free.push(hint) => {
                            a.free.pop();
                        }
                        _ => break,
                    }
                }
                return Some((i, slot));
            }
        }
        if !fresh || a.next >= self.capacity {
            return None;
        }
        // A few never-used slots at once: the first for this insert, the
        // rest cached, so two threads' slots do not share cache lines.
        let first = a.next;
        let last = first.saturating_add(FRESH_BATCH).min(self.capacity);
        let mut end = first;
        while end < last && self.slots.get_or_alloc(end as usize).is_some() {
            end += 1;
        }
        a.next = end;
        drop(a);
        for hint in (first + 1..end).rev() {
            if !table.free.push(hint) {
                self.alloc.lock().free.push(hint);
            }
        }
        if first == end {
            return None; // unreachable: indices below the capacity have pages
        }
        // Nobody else knew the fresh slot: the claim succeeds.
        self.try_claim(table, first).map(|slot| (first, slot))
    }

    /// At the bottom: claims a slot from any thread's cache.
    fn steal(&self, table: &ThreadTable<T>) -> Option<(u32, &Slot<T>)> {
        let tables = self.tables.lock();
        let mut got = None;
        for t in &tables.list {
            t.free.peek(|i| {
                if got.is_none() {
                    got = self.try_claim(table, i).map(|slot| (i, slot));
                }
            });
            if got.is_some() {
                break;
            }
        }
        got
    }

    /// Frees the slot of the finalized object `h` (its value already taken)
    /// under its next generation, into the cache of `table` (the calling
    /// thread's) or the global list; or retires it if the generation is
    /// exhausted.
    pub(super) fn free_slot(&self, slot: &Slot<T>, h: Handle, table: Option<&ThreadTable<T>>) {
        let next = h.generation() + 1;
        if next > self.config.max_generation {
            slot.retire();
            self.alloc.lock().retired += 1;
            return;
        }
        slot.publish_free(next);
        match table {
            Some(t) if !t.exited.load(crate::sync::Ordering::Relaxed) => {
                if !t.free.push(h.index()) {
                    let mut a = self.alloc.lock();
                    t.free.spill(CACHE / 2, &mut a.free);
                    drop(a);
                    let pushed = t.free.push(h.index());
                    debug_assert!(pushed, "a spilled cache has room");
                }
            }
            _ => self.alloc.lock().free.push(h.index()),
        }
    }

    /// Gives back slot `index`, claimed by `table`'s thread and never
    /// filled (its claim undone): it is free under its current generation.
    pub(super) fn give_back(&self, table: &ThreadTable<T>, index: u32) {
        if table.exited.load(crate::sync::Ordering::Relaxed) || !table.free.push(index) {
            self.alloc.lock().free.push(index);
        }
    }

    /// A thread is leaving: its cached slots go to the global list.
    pub(super) fn spill_cache(&self, table: &ThreadTable<T>) {
        let mut a = self.alloc.lock();
        table.free.spill(usize::MAX, &mut a.free);
    }
}
