//! Taking references: `insert`, `retain`, `get`/`proxy` (roots), a
//! transfer's claim, and the access rule (invariant 5) on a thread's first
//! reference.

use std::ptr;
use std::sync::Arc;

use super::resolve::{Held, Resolved, Unheld};
use super::{Inner, Kind};
use crate::local::ThreadTable;
use crate::local::{first, total};
use crate::page::Loc;
use crate::sync::{self, AtomicU64, Ordering};
use crate::{Error, Handle, InsertError};

/// What an acquire's fast path found when it could not add: the calling
/// thread's zero entry for `h` in its cached table (its first reference),
/// or `None` (the general path finds everything itself). Two words, so it
/// is passed in registers (the entry's location is worked out again from
/// the handle, which costs less than passing it).
pub(crate) struct Missed<'a, T>(Option<(&'a ThreadTable<T>, &'a AtomicU64)>);

/// What [`Inner::retain_first`] did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum First {
    /// The thread's first reference is taken: its count is 1.
    Taken,
    /// Taken, and the diagnostics are to be told.
    Untold,
    /// Nothing changed: the general path decides.
    Other,
}

impl<'a, T> Missed<'a, T> {
    /// The fast path's findings: `entry` of `table`, of value `e`.
    #[inline(always)]
    fn of(table: &'a ThreadTable<T>, entry: &'a AtomicU64, e: u64) -> Self {
        Missed((e == 0).then_some((table, entry)))
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// Inserts `value`; the calling thread becomes its home and holds one
    /// reference of `kind`.
    pub(crate) fn insert(&self, value: T, kind: Kind) -> Result<Held<'_, T>, InsertError<T>> {
        if self.is_closed() {
            let e = if crate::fork::forked() {
                Error::Forked
            } else {
                Error::Closed
            };
            return Err(InsertError::new(e, value));
        }
        // No fork check on the way: in a forked child `table()` says
        // `Forked` (the fork cleared the thread's table cache, and neither
        // the directory path nor `register` serves a child).
        let table = match self.table() {
            Ok(t) => t,
            Err(e) => return Err(InsertError::new(e, value)),
        };
        self.maybe_drain(table);
        let Some((index, slot)) = self.claim_slot(table) else {
            return Err(InsertError::new(Error::Full, value));
        };
        let Some(entry) = table.entry_or_alloc(index) else {
            // Unreachable: the index is below MAX_CAPACITY. Give the slot
            // back, lose nothing.
            slot.unclaim();
            self.give_back(table, index);
            return Err(InsertError::new(Error::Full, value));
        };
        // Counted before it is published, so any finalization of it (on any
        // thread) happens after the count: see `len` and `quiescent`. And
        // counted before `closed` is checked again, with a fence between (a
        // Dekker handshake with `close`): either `shutdown`, reading the
        // counts after closing, sees this insert (and waits for its object),
        // or this insert sees `closed` and gives its slot back. So `shutdown`
        // never says `Ok` while an insert can still complete.
        table.inserted.bump();
        sync::fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            slot.unclaim();
            self.give_back(table, index);
            table.finalized.bump(); // balances `inserted`: nothing was live
            return Err(InsertError::new(Error::Closed, value));
        }
        // The claim stored the inbox's address in the slot; this is the
        // lent count that goes with it (given back through `take`).
        let home = table.lend_home();
        debug_assert!(ptr::eq(home, slot.home_addr()));
        let generation = slot.fill(value);
        let h = Handle::new(self.tag, generation, index);
        let e = first(kind.one(), h);
        entry.store(e, Ordering::Relaxed);
        self.diag.inserted(h, table.thread);
        Ok(Held {
            slot,
            table,
            entry,
            h,
            e,
        })
    }

    /// Whether a thread's entry `e` can take one more reference: its total
    /// stays within `max_count`.
    ///
    /// Either kind fits the entry then: `refs(e) <= total(e) < max_count
    /// <= MAX_COUNT`, so no field carries into the next (see
    /// [`crate::local`]).
    #[inline]
    pub(crate) fn has_room(&self, e: u64) -> bool {
        // total(e) < max_count, compared on the whole entry: the total is
        // its top field.
        e < self.count_limit
    }

    /// `retain`: +1 explicit reference for the calling thread; its new
    /// count. Inlined into the caller (its fast path is a few instructions;
    /// every other case is a call).
    #[inline(always)]
    pub(crate) fn retain(&self, h: Handle) -> Result<u32, Error> {
        let Some((table, _, entry, e)) = self.my_entry(h) else {
            return self.retain_missed(h, Missed(None));
        };
        // As `add_fast`, without the slot: `retain` wants the new count only.
        if self.can_add(e, h) {
            let e = e + Kind::Ref.one();
            entry.store(e, Ordering::Relaxed);
            return Ok(total(e));
        }
        if e == 0 {
            return match self.retain_first(h, table, entry) {
                First::Taken => Ok(1),
                first => self.retain_first_missed(h, table, entry, first),
            };
        }
        self.retain_missed(h, Missed(None))
    }

    /// A thread's first reference by `retain`, the usual way: its zero
    /// `entry` in its cached `table`, the object live, the thread its home
    /// or the object pinned. Leaf code (no call, nothing kept in
    /// callee-saved registers: row G3, a thread's 0→1→0); what it could
    /// not finish it says, and [`Inner::retain_first_missed`] does.
    #[inline(never)]
    fn retain_first(&self, h: Handle, table: &ThreadTable<T>, entry: &AtomicU64) -> First {
        let mine = Arc::as_ptr(&table.inbox);
        let Some(u) = self.unheld_at(table, entry, h) else {
            return First::Other;
        };
        let e = first(Kind::Ref.one(), h);
        if u.slot.hold_first(h, mine).is_err() {
            // Nothing changed: the general path says why.
            return First::Other;
        }
        entry.store(e, Ordering::Relaxed);
        if self.diag.is_active() {
            return First::Untold;
        }
        First::Taken
    }

    /// `retain` past its fast path, with the count in registers.
    #[inline(never)]
    fn retain_missed<'a>(&'a self, h: Handle, missed: Missed<'a, T>) -> Result<u32, Error> {
        self.acquire_missed(h, Kind::Ref, missed)
            .map(|held| held.count())
    }

    /// `retain` past [`Inner::retain_first`], which said `first` (not
    /// `Taken`) about the thread's zero `entry` in its `table`.
    #[cold]
    #[inline(never)]
    fn retain_first_missed<'a>(
        &'a self,
        h: Handle,
        table: &'a ThreadTable<T>,
        entry: &'a AtomicU64,
        first: First,
    ) -> Result<u32, Error> {
        match first {
            First::Untold => {
                self.diag.first_reference(h, table.thread);
                Ok(1)
            }
            First::Taken | First::Other => self.retain_missed(h, Missed::of(table, entry, 0)),
        }
    }

    /// `retain`'s fast path alone: +1 if the calling thread already holds
    /// `h` (and has room), else `false` and nothing changes.
    #[inline]
    pub(crate) fn retain_held(&self, h: Handle) -> bool {
        self.add_fast(h, Kind::Ref).is_ok()
    }

    /// One more reference of `kind` for the calling thread. Access rule
    /// (invariant 5): the thread already holds the object, is its home
    /// thread, or the object is pinned.
    ///
    /// Callers that wrap the result (a guard, a proxy) call
    /// [`Inner::add_fast`] and [`Inner::acquire_missed`] themselves, so the
    /// fast path's result stays in registers.
    #[inline]
    pub(crate) fn acquire(&self, h: Handle, kind: Kind) -> Result<Held<'_, T>, Error> {
        match self.add_fast(h, kind) {
            Ok(held) => Ok(held),
            Err(missed) => self.acquire_missed_out(h, kind, missed),
        }
    }

    #[inline(never)]
    fn acquire_missed_out<'a>(
        &'a self,
        h: Handle,
        kind: Kind,
        missed: Missed<'a, T>,
    ) -> Result<Held<'a, T>, Error> {
        self.acquire_missed(h, kind, missed)
    }

    /// The fast path of every acquire ([`Inner::lookup`] spelled out, so
    /// that nothing but the entry's new value is computed on the way): one
    /// more reference of `kind` if the calling thread already holds `h` and
    /// has room. `Err`: nothing changed; take [`Inner::acquire_missed`]
    /// with what it found.
    #[inline(always)]
    pub(crate) fn add_fast(&self, h: Handle, kind: Kind) -> Result<Held<'_, T>, Missed<'_, T>> {
        let Some((table, loc, entry, e)) = self.my_entry(h) else {
            return Err(Missed(None));
        };
        if !self.can_add(e, h) {
            return Err(Missed::of(table, entry, e));
        }
        // SAFETY: the thread's entry at `loc` is non-zero.
        let slot = unsafe { self.slot_held_at(loc) };
        let e = e + kind.one();
        entry.store(e, Ordering::Relaxed);
        Ok(Held {
            slot,
            table,
            entry,
            h,
            e,
        })
    }

    /// Whether a thread whose entry at `h`'s index is `e` holds the object
    /// `h` names and has room for one more reference: `e != 0 &&
    /// has_room(e)` in one compare (see `held_limit`), and the generation.
    #[inline(always)]
    fn can_add(&self, e: u64, h: Handle) -> bool {
        e.wrapping_sub(1) < self.held_limit && crate::local::names(e, h)
    }

    /// Every other acquire: a thread's first reference (its 0→1
    /// transition, whose access rule runs here), a count at its limit
    /// (`Overflow`), and the general path. Inlined into each caller's own
    /// out-of-line cold path (`Registry::get_cold`, ...), with what the
    /// fast path found: a thread's zero entry for `h` is not looked up
    /// again.
    #[inline(always)]
    pub(crate) fn acquire_missed<'a>(
        &'a self,
        h: Handle,
        kind: Kind,
        missed: Missed<'a, T>,
    ) -> Result<Held<'a, T>, Error> {
        let unheld = missed
            .0
            .and_then(|(table, entry)| self.unheld_at(table, entry, h));
        match unheld {
            Some(u) => self.first_reference(u, kind, false),
            None => self.acquire_slow(h, kind, false),
        }
    }

    /// The fast way to a thread's first reference: its cached table has a
    /// zero entry at `h`'s index, the slot's page is there, and nothing is
    /// pending. `None`: take the general path.
    #[inline(always)]
    fn unheld_fast(&self, h: Handle) -> Option<Unheld<'_, T>> {
        let (table, _, entry, 0) = self.my_entry(h)? else {
            return None;
        };
        self.unheld_at(table, entry, h)
    }

    /// [`Inner::unheld_fast`] from the calling thread's zero `entry` for
    /// `h` in its `table`.
    #[inline(always)]
    pub(super) fn unheld_at<'a>(
        &'a self,
        table: &'a ThreadTable<T>,
        entry: &'a AtomicU64,
        h: Handle,
    ) -> Option<Unheld<'a, T>> {
        // No capacity check: a slot at or past the capacity is never
        // claimed, so it never holds a live object and the first hold is
        // refused; its state (never issued) then says `Invalid`.
        let slot = self.slots.at(Loc::of(h.index() as usize))?;
        Some(Unheld {
            slot,
            table,
            entry: Some(entry),
            h,
        })
    }

    /// `acquire` without the access rule, for interners (knowing the key is
    /// the capability) and weak references: any thread may take a reference
    /// to the object while it lives. A dead object is `Err(Stale)`, never
    /// resurrected.
    pub(crate) fn acquire_granted(&self, h: Handle, kind: Kind) -> Result<Held<'_, T>, Error> {
        match self.unheld_fast(h) {
            Some(u) => self.first_reference(u, kind, true),
            None => self.acquire_slow(h, kind, true),
        }
    }

    /// The general path of `acquire` (`granted`: skip the access rule).
    fn acquire_slow(&self, h: Handle, kind: Kind, granted: bool) -> Result<Held<'_, T>, Error> {
        match self.resolve(h)? {
            Resolved::Held(held) => self.add(held, kind).ok_or(Error::Overflow(h)),
            Resolved::Unheld(u) => self.first_reference(u, kind, granted),
        }
    }

    /// One more reference of `kind` in a held entry, if it has room: the
    /// hold with its new entry; `None` (nothing stored) at the limit.
    #[inline(always)]
    pub(crate) fn add<'a>(&self, held: Held<'a, T>, kind: Kind) -> Option<Held<'a, T>> {
        // Not a method of `Held`: the limit is the registry's.
        if !self.has_room(held.e) {
            return None;
        }
        let e = held.e + kind.one();
        held.entry.store(e, Ordering::Relaxed);
        Some(Held { e, ..held })
    }

    /// A thread's first reference (its 0→1 transition): the access check
    /// and the slot's hold, then the entry (its page allocated only once
    /// access is granted, so probing guessed ids does not grow the table).
    #[inline(always)]
    fn first_reference<'a>(
        &'a self,
        u: Unheld<'a, T>,
        kind: Kind,
        granted: bool,
    ) -> Result<Held<'a, T>, Error> {
        self.first_hold(&u, granted)?;
        let Some(entry) = u.entry.or_else(|| u.table.entry_or_alloc(u.h.index())) else {
            // Unreachable: the index is below the capacity. Give the hold back.
            self.drop_hold(u.slot, u.h, Some(u.table));
            return Err(Error::Invalid(u.h.to_raw()));
        };
        let e = first(kind.one(), u.h);
        entry.store(e, Ordering::Relaxed);
        self.diag.first_reference(u.h, u.table.thread);
        Ok(Held {
            slot: u.slot,
            table: u.table,
            entry,
            h: u.h,
            e,
        })
    }

    /// The access check of a thread's first reference, and the slot's hold
    /// that goes with it (the caller then stores the entry, or hands the
    /// hold on). The rule (invariant 5) is decided about the object the
    /// hold actually lands on (see [`crate::slot::Slot::hold_first`]): a refused thread
    /// takes no hold.
    #[inline]
    pub(crate) fn first_hold(&self, u: &Unheld<'_, T>, granted: bool) -> Result<(), Error> {
        let (slot, h) = (u.slot, u.h);
        if granted {
            // The object may die any time: `try_hold` refuses a dead or
            // reused slot.
            slot.try_hold(h)?;
            return Ok(());
        }
        let mine = Arc::as_ptr(&u.table.inbox);
        slot.hold_first(h, mine)
            .map_err(|state| slot.first_refusal(state, h, mine))
    }

    /// A transfer claimed: its in-flight hold becomes a reference of `kind`
    /// of the calling thread. On error the caller still owns the transfer's
    /// hold.
    pub(crate) fn claim_in(&self, h: Handle, kind: Kind) -> Result<Held<'_, T>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let slot = self.slot(h)?;
        let table = self.table()?;
        self.maybe_drain(table);
        let entry = table
            .entry_or_alloc(h.index())
            .ok_or(Error::Invalid(h.to_raw()))?;
        let e = entry.load(Ordering::Relaxed);
        let claimed = || {
            self.diag.emit(|| crate::Event::Claimed {
                handle: h,
                thread: table.thread,
            })
        };
        if e == 0 {
            // The transfer's hold becomes the thread's.
            let e = first(kind.one(), h);
            entry.store(e, Ordering::Relaxed);
            claimed();
            self.diag.first_reference(h, table.thread);
            return Ok(Held {
                slot,
                table,
                entry,
                h,
                e,
            });
        }
        let held = Held {
            slot,
            table,
            entry,
            h,
            e,
        };
        let held = self.add(held, kind).ok_or(Error::Overflow(h))?;
        // The thread already had a hold: the transfer's is surplus. Not the
        // last.
        let last = slot.drop_hold();
        debug_assert!(!last, "a claiming holder cannot drop the last hold");
        claimed();
        debug_assert!(total(held.e) >= 1);
        Ok(held)
    }
}
