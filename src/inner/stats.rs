//! Counting and looking: `count`, `holders`, `len`, `shutdown`'s quiescence
//! check, and the raw views that snapshots and leak reports are made of.

use std::sync::Arc;

use super::Inner;
use crate::local::{total, ThreadTable};
use crate::slot::{generation, holds, Slot};
use crate::sync::{self, Ordering};
use crate::{Error, Handle};

impl<T: Send + Sync + 'static> Inner<T> {
    /// `count`: the calling thread's own count.
    pub(crate) fn count(&self, h: Handle) -> Result<u32, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let e = self.my_table().map_or(0, |t| t.load(h.index()));
        if e != 0 {
            slot.check_held(h)?;
            return Ok(total(e));
        }
        slot.check(h)?;
        Ok(0)
    }

    /// `holders`: every thread's count, exited threads included.
    pub(crate) fn holders(&self, h: Handle) -> Result<Vec<(sync::ThreadId, u32, bool)>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        slot.check(h)?;
        let mut out = Vec::new();
        for t in self.tables.lock().list.iter() {
            if let Some(count) = t.count_of(h) {
                out.push((t.thread, count, t.exited.load(Ordering::Relaxed)));
            }
        }
        // The object might have died meanwhile: report that rather than a
        // mix of two objects' holders.
        slot.check(h)?;
        Ok(out)
    }

    /// Live objects: every table's inserts minus every finalization.
    ///
    /// Insertions are read first. A finalization of a slot's previous object
    /// happens before the slot is claimed again, so whoever sees an insert
    /// also sees the finalization before it in the same slot: the sum counts
    /// at most one object per slot and never exceeds the capacity. While
    /// other threads insert and release it is a moment's approximation; it
    /// is exact once they are done (joined, or synchronised otherwise).
    ///
    /// 0 in a child process after `fork()`, without taking the lock: a
    /// parent thread that does not exist in the child may have held it.
    pub(crate) fn len(&self) -> usize {
        if crate::fork::forked() {
            return 0;
        }
        let tables = self.tables.lock();
        let inserted = tables.total(tables.inserted, |t| &t.inserted);
        let finalized = tables.total(tables.finalized, |t| &t.finalized)
            + self.loose_finalized.load(Ordering::SeqCst);
        usize::try_from(inserted.saturating_sub(finalized)).unwrap_or(usize::MAX)
    }

    /// No object is live and every value sent to a home inbox has been
    /// dropped: once this is seen, every object inserted before was
    /// finalized (its `Drop` ran, at home or where the design says), except
    /// one whose `Drop` is running right now where it was released.
    ///
    /// Each count only grows. For a value sent home one thread bumps
    /// `sending`, then `finalized`, then (after the send) `sent`, and the
    /// thread that drops it out of the inbox bumps `received` after its
    /// `Drop` returned; an insert is counted before its object is published,
    /// so before any finalization of it. Reading from the end of that chain
    /// back — `received`, then finalizations, then `sent`, then `sending`,
    /// then insertions — a finalization seen implies its insert is seen (no
    /// false zero) and its `sending` too, so a value still on its way shows
    /// as `sending > sent`, and one in an inbox (or being dropped out of it)
    /// as `sent > received`. Threads without a table count in the `loose_*`
    /// read-modify-writes instead.
    pub(crate) fn quiescent(&self) -> bool {
        if crate::fork::forked() {
            return false; // and no lock in a child, see `len`
        }
        let tables = self.tables.lock();
        let received = tables.total(tables.received, |t| &t.received)
            + self.loose_received.load(Ordering::SeqCst);
        let finalized = tables.total(tables.finalized, |t| &t.finalized)
            + self.loose_finalized.load(Ordering::SeqCst);
        let sent = tables.total(tables.sent, |t| &t.sent) + self.loose_sent.load(Ordering::SeqCst);
        let sending = tables.total(tables.sending, |t| &t.sending)
            + self.loose_sending.load(Ordering::SeqCst);
        if sending != sent || sent != received {
            return false;
        }
        tables.total(tables.inserted, |t| &t.inserted) == finalized
    }

    /// Whether the calling thread is inside a drain of its own inbox (a
    /// value's `Drop` run by `pump` or an ordinary call) while its inbox
    /// still holds values: those can only be dropped once that `Drop`
    /// returns (a nested `pump` does not drain).
    pub(crate) fn stuck_in_own_drain(&self) -> bool {
        self.my_table()
            .is_some_and(|t| t.is_draining() && t.inbox.len() > 0)
    }

    /// Raw view for snapshots: calls `f` with every table (under the lock).
    pub(crate) fn with_tables<R>(&self, f: impl FnOnce(&[Arc<ThreadTable<T>>]) -> R) -> R {
        f(&self.tables.lock().list)
    }

    /// Raw view for snapshots: `(handle, slot, holds)` of every live object.
    pub(crate) fn for_each_live(&self, mut f: impl FnMut(Handle, &Slot<T>, u32)) {
        let next = self.alloc.lock().next;
        for i in 0..next {
            if let Some(slot) = self.slots.get(i as usize) {
                let s = slot.state();
                if holds(s) > 0 {
                    f(Handle::new(self.tag, generation(s), i), slot, holds(s));
                }
            }
        }
    }

    /// Finalizer panics caught so far.
    pub(crate) fn drop_panics(&self) -> u64 {
        self.drop_panics.load(Ordering::Relaxed)
    }

    /// Slots retired because their generation was exhausted.
    pub(crate) fn retired(&self) -> u32 {
        self.alloc.lock().retired
    }
}
