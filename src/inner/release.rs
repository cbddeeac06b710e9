//! Giving references up: `release` (explicit references), the drop of a
//! proxy or guard (roots), a thread's 1→0 transition and the last hold.

use super::resolve::Held;
use super::{Inner, Kind};
use crate::local::{refs, settled, total, ThreadTable, ROOT_ONE};
use crate::slot::Slot;
use crate::sync::{AtomicU64, Ordering};
use crate::{Error, Handle, Released};

impl<T: Send + Sync + 'static> Inner<T> {
    /// `release`: gives up one explicit reference of the calling thread.
    ///
    /// The fast path makes no call it returns from (each exit is a tail
    /// call or a return), so it keeps nothing in callee-saved registers and
    /// has no prologue: the thread's table cache, else
    /// [`Inner::release_uncached`]. Inlined into the caller like `retain`'s,
    /// so its result stays in registers.
    #[inline(always)]
    pub(crate) fn release(&self, h: Handle) -> Result<Released, Error> {
        match self.cached_table(h) {
            Some(table) => self.release_in(table, h),
            None => self.release_uncached(h),
        }
    }

    /// `release` when the thread's table cache does not hold this
    /// registry's table: its thread directory, else the general path.
    #[cold]
    #[inline(never)]
    fn release_uncached(&self, h: Handle) -> Result<Released, Error> {
        match self.table_uncached(h) {
            Some(table) => self.release_in(table, h),
            None => self.release_slow(h),
        }
    }

    /// `release` with the calling thread's `table` found.
    #[inline(always)]
    fn release_in(&self, table: &ThreadTable<T>, h: Handle) -> Result<Released, Error> {
        // The entry first: only a thread with an explicit reference goes on
        // (and reads the slot).
        let Some((loc, entry, e)) = self.entry_in(table, h) else {
            return self.release_slow(h);
        };
        if refs(e) == 0 || !crate::local::names(e, h) {
            return self.release_slow(h);
        }
        // SAFETY: the thread's entry at `loc` was non-zero (it holds an
        // explicit reference). Only the thread's last reference reads the
        // slot, so the others do not even load its page pointer.
        self.remove_ref_of(entry, e, h, table, || unsafe { self.slot_held_at(loc) })
    }

    /// [`Inner::let_go`] out of line, for `release`'s fast path. Its
    /// result is returned in registers: nothing is stored between the
    /// hold's RMW and the caller's next use of the result. (`finalize` and
    /// `let_go_observed` are called, not tail-called: the compiler zeroes
    /// the result's payload register after them, so this keeps a stack
    /// frame of one push.)
    #[inline(never)]
    fn let_go_out(&self, h: Handle, slot: &Slot<T>, table: &ThreadTable<T>) -> Released {
        self.let_go(h, slot, table)
    }

    /// The general path of `release`.
    #[inline(never)]
    fn release_slow(&self, h: Handle) -> Result<Released, Error> {
        let held = self.resolve_explicit(h, true)?;
        self.remove_ref(held)
    }

    /// One explicit reference less in a held entry (which has one); the
    /// thread's last one lets go of its hold, by a tail call (so the fast
    /// path keeps no register across it).
    #[inline(always)]
    fn remove_ref(&self, held: Held<'_, T>) -> Result<Released, Error> {
        self.remove_ref_of(held.entry, held.e, held.h, held.table, || held.slot)
    }

    /// [`Inner::remove_ref`] from the entry (`e` its value, with an
    /// explicit reference) and the way to `h`'s slot, wanted only for the
    /// thread's last reference.
    #[inline(always)]
    fn remove_ref_of<'a>(
        &'a self,
        entry: &AtomicU64,
        e: u64,
        h: Handle,
        table: &'a ThreadTable<T>,
        slot: impl FnOnce() -> &'a Slot<T>,
    ) -> Result<Released, Error> {
        let left = e - Kind::Ref.one();
        let n = total(left);
        if n != 0 {
            // Not the thread's last reference: nothing shared changes.
            entry.store(left, Ordering::Relaxed);
            return Ok(Released::Held(n));
        }
        // The thread holds nothing more: its entry goes, generation and all
        // (see `settled`).
        entry.store(0, Ordering::Relaxed);
        Ok(self.let_go_out(h, slot(), table))
    }

    /// The calling thread's count for `h` just went 1 → 0 (its entry is
    /// stored): its hold goes. Inlined into its few out-of-line callers.
    ///
    /// Shaped so that its usual path (no diagnostics, no death observers)
    /// makes tail calls only: no register is kept across a call, so its
    /// callers push none before the hold's atomic RMW.
    #[inline]
    pub(crate) fn let_go(&self, h: Handle, slot: &Slot<T>, table: &ThreadTable<T>) -> Released {
        if self.deaths.observed() {
            return self.let_go_observed(h, slot, table);
        }
        if slot.drop_hold() {
            return self.finalize(slot, h, Some(table));
        }
        Released::Held(0)
    }

    /// [`Inner::let_go`] with the diagnostics or death observers told.
    #[cold]
    #[inline(never)]
    fn let_go_observed(&self, h: Handle, slot: &Slot<T>, table: &ThreadTable<T>) -> Released {
        self.lost(h, table);
        self.drop_hold(slot, h, Some(table))
    }

    /// Drops a root (proxy or guard) of the calling thread from its
    /// `entry`; `true` if that was the thread's last reference to the
    /// object; the caller must then call [`Inner::root_gone`]. Touches
    /// nothing but the entry, so a proxy's drop stays a few instructions.
    #[inline(always)]
    pub(crate) fn release_root(entry: &AtomicU64) -> bool {
        let left = settled(entry.load(Ordering::Relaxed).wrapping_sub(ROOT_ONE));
        entry.store(left, Ordering::Relaxed);
        left == 0
    }

    /// The calling thread's last reference to `h`, a root, is gone (its
    /// entry is zero): its hold goes. `true` if `table` belongs to an exited
    /// thread and that was its last late hold: the caller must then call
    /// [`Inner::late_hold_gone`] once it holds no reference into the table.
    #[cold]
    #[inline(never)]
    #[must_use]
    pub(crate) fn root_gone(&self, slot: &Slot<T>, h: Handle, table: &ThreadTable<T>) -> bool {
        // In a forked child the thread-local store was harmless, but
        // finalizing may take locks that a vanished thread held: leak instead.
        if crate::fork::forked() {
            return false;
        }
        // Read first (only this thread writes it, in its exit hook, which
        // `let_go`'s user code cannot start), so nothing but the result is
        // kept across the call.
        let exited = table.exited.load(Ordering::Relaxed);
        self.let_go(h, slot, table);
        exited
    }

    /// The calling thread's count for `h` just went 1 → 0: tell the
    /// diagnostics and the death observers (interners drop `h` from this
    /// thread's caches: an entry is kept only while the thread holds its
    /// object, so no cache keeps a key alive after its object died).
    #[inline]
    pub(crate) fn lost(&self, h: Handle, table: &ThreadTable<T>) {
        self.diag.last_reference(h, table.thread);
        self.deaths.let_go(h);
    }

    /// Drops one hold; finalizes if it was the last.
    pub(crate) fn drop_hold(
        &self,
        slot: &Slot<T>,
        h: Handle,
        table: Option<&ThreadTable<T>>,
    ) -> Released {
        if slot.drop_hold() {
            self.finalize(slot, h, table)
        } else {
            Released::Held(0)
        }
    }
}
