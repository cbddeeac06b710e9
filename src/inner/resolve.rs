//! Finding things: the calling thread's table, a handle's slot, and one
//! resolve path from a handle to this thread's hold on its object.
//!
//! Every operation on a handle starts here. [`Inner::lookup`] is the fast
//! path (a cached table, nothing pending, no check that can fail slowly);
//! [`Inner::resolve`] is the general one and does every check once, in one
//! order: fork, tag, range, the thread's table, the bounded drain, the
//! thread's entry, the generation — and classifies what fails.

use std::sync::{Arc, Weak};

use super::Inner;
use crate::local::{total, ThreadTable};
use crate::page::Loc;
use crate::slot::Slot;
use crate::sync::{self, AtomicU64, Ordering};
use crate::tid::{self, ExitHook};
use crate::{Error, Handle};

/// The calling thread's hold on one object: its non-zero count entry, the
/// object's slot, and the handle that names it (generation checked). Every
/// operation on a held object is a method of this value.
pub(crate) struct Held<'a, T> {
    pub(crate) slot: &'a Slot<T>,
    pub(crate) table: &'a ThreadTable<T>,
    pub(crate) entry: &'a AtomicU64,
    pub(crate) h: Handle,
    /// The entry's value when resolved (non-zero).
    pub(crate) e: u64,
}

impl<T> Clone for Held<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Held<'_, T> {}

impl<T> Held<'_, T> {
    /// This thread's count for the object (all it holds).
    #[inline]
    pub(crate) fn count(&self) -> u32 {
        total(self.e)
    }
}

/// A live handle's slot and the calling thread's table, where the thread
/// holds nothing yet: its first reference (a 0→1 transition) needs the
/// access rule. `entry` is the thread's zero entry if its page exists.
pub(crate) struct Unheld<'a, T> {
    pub(crate) slot: &'a Slot<T>,
    pub(crate) table: &'a ThreadTable<T>,
    pub(crate) entry: Option<&'a AtomicU64>,
    pub(crate) h: Handle,
}

/// A handle resolved for the calling thread.
pub(crate) enum Resolved<'a, T> {
    /// The thread holds the object.
    Held(Held<'a, T>),
    /// It holds nothing at that index.
    Unheld(Unheld<'a, T>),
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// The slot `h` points at, after checking that this registry issued it.
    #[inline]
    pub(crate) fn slot(&self, h: Handle) -> Result<&Slot<T>, Error> {
        if h.tag() != self.tag {
            return Err(if h.tag() == 0 {
                Error::Invalid(h.to_raw())
            } else {
                Error::ForeignRegistry(h)
            });
        }
        if h.index() >= self.capacity {
            return Err(Error::Invalid(h.to_raw()));
        }
        self.slots
            .get(h.index() as usize)
            .ok_or(Error::Invalid(h.to_raw()))
    }

    /// The fast path of every operation on a handle: `h` resolved for the
    /// calling thread if its table is cached, no queued finalization waits
    /// to be drained, and either the thread holds the object `h` names
    /// (entry non-zero, generations match) or it holds nothing at that
    /// index (entry zero, the slot's page there: see
    /// [`Inner::unheld_at`]). One location
    /// computation serves both arrays; nothing shared is written. `None`:
    /// take [`Inner::resolve`].
    #[inline(always)]
    pub(crate) fn lookup(&self, h: Handle) -> Option<Resolved<'_, T>> {
        let (table, loc, entry, e) = self.my_entry(h)?;
        if e == 0 {
            return self.unheld_at(table, entry, h).map(Resolved::Unheld);
        }
        let slot = self.held_slot(e, h, loc)?;
        Some(Resolved::Held(Held {
            slot,
            table,
            entry,
            h,
            e,
        }))
    }

    /// The start of every fast path: the calling thread's table, `h`'s
    /// location, and the thread's entry there with its value, if no queued
    /// finalization is waiting to be drained. `h`'s generation is not
    /// checked yet (see [`Inner::held_slot`]).
    #[inline(always)]
    pub(crate) fn my_entry(&self, h: Handle) -> Option<(&ThreadTable<T>, Loc, &AtomicU64, u64)> {
        let table = match self.cached_table(h) {
            Some(table) => table,
            None => self.table_uncached(h)?,
        };
        let (loc, entry, e) = self.entry_in(table, h)?;
        Some((table, loc, entry, e))
    }

    /// The calling thread's table if its table cache holds it and `h`
    /// carries this registry's tag: the cache slot of `h`'s tag, one
    /// thread-local load and a compare.
    #[inline(always)]
    pub(crate) fn cached_table(&self, h: Handle) -> Option<&ThreadTable<T>> {
        // No fork check here: in a forked child the cache misses (see
        // `my_table`), so the fast paths take the general one, which says
        // `Forked`.
        let (key, p) = tid::cached_table_of(h.to_raw());
        // SAFETY: the slot of `h.tag()` holds this registry's key only if
        // `h.tag()` is this registry's tag (the key's slot is its tag's),
        // and then `p` is its table (see `Inner::cached`).
        (key == self.cache_key).then(|| unsafe { self.cached(p) })
    }

    /// The calling thread's table when its cache does not hold it (out of
    /// line, so a fast path that misses calls it without keeping its own
    /// registers across the call); `None` for a handle of another registry
    /// too.
    #[cold]
    #[inline(never)]
    pub(crate) fn table_uncached(&self, h: Handle) -> Option<&ThreadTable<T>> {
        if h.tag() != self.tag {
            return None;
        }
        self.my_table_slow()
    }

    /// The thread's entry for `h` in its `table`, with `h`'s location and
    /// the entry's value, if the entry's page exists and no queued
    /// finalization is waiting to be drained.
    #[inline(always)]
    pub(crate) fn entry_in<'a>(
        &self,
        table: &'a ThreadTable<T>,
        h: Handle,
    ) -> Option<(Loc, &'a AtomicU64, u64)> {
        let loc = Loc::of(h.index() as usize);
        let entry = table.entry_at(loc)?;
        let e = entry.load(Ordering::Relaxed);
        if table.inbox.has_pending() {
            return None; // the general path drains first
        }
        Some((loc, entry, e))
    }

    /// The slot at `loc` if it holds the object `h` names, for a thread
    /// whose entry there, `e`, is non-zero: the thread holds the object at
    /// this index, whose generation its entry keeps, and `h` names it iff
    /// the generations match. The slot itself is not read.
    #[inline(always)]
    pub(crate) fn held_slot(&self, e: u64, h: Handle, loc: Loc) -> Option<&Slot<T>> {
        if !crate::local::names(e, h) {
            return None;
        }
        // SAFETY: the thread's entry at `loc` is non-zero (the caller's).
        Some(unsafe { self.slot_held_at(loc) })
    }

    /// The slot at `loc`, read without a range or null check.
    ///
    /// # Safety
    ///
    /// The calling thread's entry at `loc` is (or was, up to its last
    /// store) non-zero: then `loc` is that of an index below the capacity
    /// (the thread has an entry there), and the thread held the object at
    /// that index, so it saw the slot's page installed: every first hold (an
    /// insert, a `try_hold`, a claim) found the slot through its page on
    /// this thread before its entry was stored.
    #[inline(always)]
    pub(crate) unsafe fn slot_held_at(&self, loc: Loc) -> &Slot<T> {
        // SAFETY: see the precondition.
        unsafe { self.slots.at_installed(loc) }
    }

    /// The general path: `h` resolved for the calling thread, creating its
    /// table on first use and draining a bounded batch of its queued
    /// finalizations first. Errors: `Forked`, `ThreadExited`, and what a
    /// bad id is (`ForeignRegistry`, `Invalid`, `Stale`).
    #[cold]
    #[inline(never)]
    pub(crate) fn resolve(&self, h: Handle) -> Result<Resolved<'_, T>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let table = self.table()?;
        self.maybe_drain(table);
        let entry = table.entry(h.index());
        let e = entry.map_or(0, |e| e.load(Ordering::Relaxed));
        match entry {
            Some(entry) if e != 0 => {
                slot.check_held(h)?;
                Ok(Resolved::Held(Held {
                    slot,
                    table,
                    entry,
                    h,
                    e,
                }))
            }
            _ => Ok(Resolved::Unheld(Unheld {
                slot,
                table,
                entry,
                h,
            })),
        }
    }

    /// `h` resolved for a thread that must already hold it with an explicit
    /// reference (`release`; `transfer`, which does not `drain`): never
    /// creates a table. A thread that holds none is `NotHeld` — or, for a
    /// dead or never-issued `h`, what `h` is.
    #[cold]
    #[inline(never)]
    pub(crate) fn resolve_explicit(&self, h: Handle, drain: bool) -> Result<Held<'_, T>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let Some(table) = self.my_table() else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        if drain {
            self.maybe_drain(table);
        }
        let entry = table.entry(h.index());
        let e = entry.map_or(0, |e| e.load(Ordering::Relaxed));
        let (Some(entry), true) = (entry, crate::local::refs(e) != 0) else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        slot.check_held(h)?;
        Ok(Held {
            slot,
            table,
            entry,
            h,
            e,
        })
    }

    /// The calling thread's table, if it has one.
    ///
    /// Fast path: the thread's table cache, in the slot of this registry's
    /// tag (see `tid::TableCache`); then the registry's thread directory.
    ///
    /// A hit also means the process has not forked since (invariant 9, at
    /// no cost): the `fork()` child handler clears every slot of the cache
    /// of the forking thread, the only thread a child has, and
    /// [`Inner::my_table_slow`] never fills it in a child. So the fast paths
    /// built on this one (`lookup`) need no fork check of their own.
    #[inline]
    pub(crate) fn my_table(&self) -> Option<&ThreadTable<T>> {
        let (key, p) = tid::cached_table(self.tag);
        if key == self.cache_key {
            // SAFETY: the cache holds this registry's key.
            return Some(unsafe { self.cached(p) });
        }
        self.my_table_slow()
    }

    /// The table a slot of the thread's cache points at.
    ///
    /// # Safety
    ///
    /// `p` was read from a slot of the calling thread's table cache together
    /// with the key `self.cache_key`. A slot holds this registry's key only
    /// while it holds this thread's own table of this registry: `register`
    /// and `my_table_slow` fill it with a table owned by `self.tables`;
    /// slots are written only as whole `(key, table)` pairs
    /// (`tid::TableCache`); and this thread's exit hook for this registry
    /// clears the key's slot before the table can be freed. Keys are never
    /// reused, so a slot left by a dropped registry never matches.
    #[inline(always)]
    unsafe fn cached(&self, p: *const ()) -> &ThreadTable<T> {
        // SAFETY: by the precondition, a live table of this registry, kept
        // alive while `&self` is borrowed on this thread.
        unsafe { &*p.cast::<ThreadTable<T>>() }
    }

    /// The calling thread's table when its cache does not hold it: from the
    /// registry's directory, then cached.
    #[cold]
    #[inline(never)]
    fn my_table_slow(&self) -> Option<&ThreadTable<T>> {
        if crate::fork::forked() {
            return None; // and never cache a table in a child (see `my_table`)
        }
        let tid = tid::current()?;
        let p = self.threads.get(tid as usize)?.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        tid::cache_table(self.cache_key, p.cast());
        // SAFETY: only the thread owning `tid` stores into its cell: a pointer
        // from `Arc::as_ptr` of a table owned by `self.tables`, which keeps it
        // alive until this same thread's exit hook nulls the cell first. So a
        // non-null value read by the owner points to a live table for as long
        // as `&self` is borrowed on this thread.
        Some(unsafe { &*p })
    }

    /// The calling thread's table, creating it on first use.
    #[inline]
    pub(crate) fn table(&self) -> Result<&ThreadTable<T>, Error> {
        match self.my_table() {
            Some(t) => Ok(t),
            None => self.register(),
        }
    }

    #[cold]
    fn register(&self) -> Result<&ThreadTable<T>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let tid = tid::current().ok_or(Error::ThreadExited)?;
        let cell = self
            .threads
            .get_or_alloc(tid as usize)
            .ok_or(Error::ThreadExited)?;
        let (thread, name) = sync::current_thread();
        let table = Arc::new(ThreadTable::new(thread, name));
        let hook: Weak<dyn ExitHook> = self.me.clone();
        let inbox: Arc<dyn tid::Leftovers> = table.inbox.clone();
        if !tid::on_exit(hook, inbox) {
            return Err(Error::ThreadExited);
        }
        let p = Arc::as_ptr(&table).cast_mut();
        self.tables.lock().list.push(table);
        cell.store(p, Ordering::Release);
        tid::cache_table(self.cache_key, p.cast());
        // SAFETY: just stored by this thread; kept alive as `Inner::cached`
        // says.
        Ok(unsafe { &*p })
    }
}
