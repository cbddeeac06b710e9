//! The shared registry state and its protocol.
//!
//! Hot paths (`retain`/`release`/`get` of a handle the thread already holds)
//! touch only the calling thread's own [`ThreadTable`] entry plus a relaxed
//! read of the slot's generation. The slot's state word is written only on a
//! thread's 0↔1 transitions, pins and transfers (see [`crate::slot`]).
//! Locks (`alloc`, `tables`, `raw`) guard bookkeeping only and are never held
//! while user code (`Drop` of `T`) runs.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Weak};

use crate::diag::{Diag, DiagConfig};
use crate::free::FreeList;
use crate::inbox::Sent;
use crate::interner::Forget;
use crate::limits::{DRAIN_BATCH, TAG_BITS};
use crate::local::{refs, total, Counter, ThreadTable, REF_ONE, ROOT_ONE};
use crate::page::{Loc, Pages};
use crate::slot::{generation, holds, is_pinned, Slot};
use crate::sync::{self, AtomicBool, AtomicPtr, AtomicU64, Mutex, Ordering};
use crate::tid::{self, ExitHook};
use crate::{Error, Handle, InsertError, Released, ThreadExit};

mod alloc;
mod teardown;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) capacity: u32,
    pub(crate) thread_exit: ThreadExit,
    pub(crate) home_finalization: bool,
    pub(crate) max_count: u32,
    pub(crate) max_generation: u32,
    pub(crate) diag: DiagConfig,
}

/// Every thread table, and what departed tables counted.
pub(crate) struct Tables<T> {
    /// Live threads' tables, and exited threads' that still hold something
    /// (leaked references, proxies dropped after thread exit).
    pub(crate) list: Vec<Arc<ThreadTable<T>>>,
    /// Objects inserted by tables no longer in `list`.
    inserted: u64,
    /// Objects finalized by tables no longer in `list`.
    finalized: u64,
    /// Values sent home by tables no longer in `list`, begun and done.
    sending: u64,
    /// See `sending`.
    sent: u64,
    /// Values taken out of an inbox and dropped by tables no longer in
    /// `list`.
    received: u64,
}

impl<T> Tables<T> {
    /// `departed` (what tables no longer listed counted) plus every listed
    /// table's `count`.
    fn total(&self, departed: u64, count: impl Fn(&ThreadTable<T>) -> &Counter) -> u64 {
        departed + self.list.iter().map(|t| count(t).get()).sum::<u64>()
    }
}

/// The state shared by all clones of a [`Registry`](crate::Registry).
///
/// `repr(C)`, aligned to a cache line: what every fast path reads (the tag,
/// the table-cache key, the limits and the first slot pages) shares the
/// first line.
#[repr(C, align(64))]
pub(crate) struct Inner<T> {
    pub(crate) tag: u64,
    /// The key of this registry in the per-thread table cache: its serial,
    /// unique for the life of the process (never reused, unlike addresses),
    /// shifted above the tag bits, which stay zero.
    cache_key: u64,
    /// `cache_key | tag`: what a cache key ORed with a handle's tag equals
    /// exactly when the cache holds this registry's table and the handle
    /// carries this registry's tag (the two occupy disjoint bits), so
    /// `lookup` checks both with one comparison.
    handle_key: u64,
    /// `config.capacity`, beside the other fast-path fields.
    pub(crate) capacity: u32,
    /// `config.max_count << 32`, beside the other fast-path fields: an
    /// entry is at the limit iff it is at least this (its total is in the
    /// high half, see [`crate::local`]).
    count_limit: u64,
    slots: Pages<Slot<T>>,
    pub(crate) config: Config,
    alloc: Mutex<FreeList>,
    /// Objects finalized by a thread without a table (an unclaimed transfer
    /// dropped on a fresh thread): the rare case of `len()`'s count.
    loose_finalized: AtomicU64,
    /// Values sent home by threads without a table, begun and done (others
    /// count in their table: `sending`, `sent`).
    loose_sending: AtomicU64,
    /// See `loose_sending`.
    loose_sent: AtomicU64,
    /// Values taken out of an inbox and dropped by a thread without a table
    /// (a sender whose home exited meanwhile; others count in their table:
    /// `received`).
    loose_received: AtomicU64,
    /// `tid` → this thread's table. Each cell is read and written only by
    /// the thread that currently owns that `tid`.
    threads: Pages<AtomicPtr<ThreadTable<T>>>,
    /// Owns every table (see [`Tables`]).
    tables: Mutex<Tables<T>>,
    raw: Mutex<crate::token::RawTransfers>,
    /// Slot index → pins of its live object, for objects with any (the
    /// slot's state word carries only a pinned flag). Pins are rare: a
    /// lock is fine. Never held while user code runs.
    pins: Mutex<HashMap<u32, u32>>,
    drop_panics: AtomicU64,
    /// Events, misuse policy, origins (see [`crate::diag`]).
    pub(crate) diag: Diag,
    /// `close()` was called: no new inserts or claims.
    closed: AtomicBool,
    /// Live `Registry` values (not proxies or transfers): the leak report
    /// goes out when the last one is dropped.
    registries: AtomicU64,
    /// Interners to tell when an object dies (see [`crate::interner`]).
    forgetters: Mutex<Vec<Weak<dyn Forget>>>,
    has_forgetters: AtomicBool,
    me: Weak<Inner<T>>,
}

/// Where a reference goes in a thread's entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Explicit (`insert`, `retain`, `claim`): releasable with `release`.
    Ref,
    /// A proxy or guard: released by its drop only.
    Root,
}

impl Kind {
    fn one(self) -> u64 {
        match self {
            Kind::Ref => REF_ONE,
            Kind::Root => ROOT_ONE,
        }
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    pub(crate) fn new(config: Config) -> Arc<Self> {
        crate::fork::install_fork_handler();
        let serial = sync::next_registry_serial() + 1;
        // Distinct among the registries alive (see `crate::tag`).
        let tag = crate::tag::alloc();
        // Serials count registries created: far below 2^(64 - TAG_BITS), so
        // the shift loses nothing and keys stay unique and non-zero.
        let cache_key = serial << TAG_BITS;
        let diag = Diag::new(config.diag.clone());
        Arc::new_cyclic(|me| Inner {
            tag,
            cache_key,
            handle_key: cache_key | tag,
            capacity: config.capacity,
            count_limit: u64::from(config.max_count) << 32,
            slots: Pages::new(),
            config,
            alloc: Mutex::new(FreeList::default()),
            loose_finalized: AtomicU64::new(0),
            loose_sending: AtomicU64::new(0),
            loose_sent: AtomicU64::new(0),
            loose_received: AtomicU64::new(0),
            threads: Pages::new(),
            tables: Mutex::new(Tables {
                list: Vec::new(),
                inserted: 0,
                finalized: 0,
                sending: 0,
                sent: 0,
                received: 0,
            }),
            raw: Mutex::new(crate::token::RawTransfers::new(serial)),
            pins: Mutex::new(HashMap::new()),
            drop_panics: AtomicU64::new(0),
            diag,
            closed: AtomicBool::new(false),
            registries: AtomicU64::new(1),
            forgetters: Mutex::new(Vec::new()),
            has_forgetters: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    // ----- lookups ---------------------------------------------------------

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

    /// The calling thread's table, if it has one.
    ///
    /// Fast path: the thread's one-entry cache `(registry key, table)`.
    ///
    /// A hit also means the process has not forked since (invariant 9, at
    /// no cost): the `fork()` child handler clears the cache of the forking
    /// thread, the only thread a child has, and [`Inner::my_table_slow`]
    /// never fills it in a child. So the fast paths built on this one
    /// (`lookup`) need no fork check of their own.
    #[inline]
    pub(crate) fn my_table(&self) -> Option<&ThreadTable<T>> {
        let (key, p) = tid::cached_table();
        if key == self.cache_key {
            // SAFETY: the cache holds this registry's key.
            return Some(unsafe { self.cached(p) });
        }
        self.my_table_slow()
    }

    /// The table the thread's cache points at.
    ///
    /// # Safety
    ///
    /// `p` was read from the calling thread's table cache together with the
    /// key `self.cache_key`. The cache holds this registry's key only while
    /// it holds this thread's own table of this registry: `register` and
    /// `my_table_slow` fill it with a table owned by `self.tables`, and this
    /// thread's exit hook for this registry clears it before the table can
    /// be freed. Keys are never reused, so an entry of a dropped registry
    /// never matches.
    #[inline(always)]
    unsafe fn cached(&self, p: *const ()) -> &ThreadTable<T> {
        // SAFETY: by the precondition, a live table of this registry, kept
        // alive while `&self` is borrowed on this thread.
        unsafe { &*p.cast::<ThreadTable<T>>() }
    }

    #[cold]
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

    /// Drains a bounded batch of this thread's queued finalizations if any are
    /// pending: one relaxed load when nothing is.
    #[inline]
    pub(crate) fn maybe_drain(&self, table: &ThreadTable<T>) {
        if table.inbox.has_pending() {
            self.drain(table, DRAIN_BATCH, true);
        }
    }

    #[cold]
    fn drain(&self, table: &ThreadTable<T>, limit: usize, only_if_pending: bool) -> usize {
        if !table.begin_drain() {
            return 0;
        }
        let n = table.inbox.drain(limit, only_if_pending, |h, v| {
            self.dispose(h, v, Some(table));
            table.received.bump();
        });
        table.end_drain();
        n
    }

    /// `pump()`: every queued finalization of the calling thread.
    pub(crate) fn pump(&self) -> usize {
        if crate::fork::forked() {
            return 0;
        }
        tid::drop_leftovers();
        match self.my_table() {
            Some(t) => self.drain(t, usize::MAX, false),
            None => 0,
        }
    }

    // ----- the protocol ----------------------------------------------------

    /// Inserts `value`; the calling thread becomes its home and holds one
    /// reference of `kind`.
    #[allow(clippy::type_complexity)]
    pub(crate) fn insert(
        &self,
        value: T,
        kind: Kind,
    ) -> Result<(Handle, &Slot<T>, &ThreadTable<T>, &AtomicU64), InsertError<T>> {
        if crate::fork::forked() {
            return Err(InsertError::new(Error::Forked, value));
        }
        if self.is_closed() {
            return Err(InsertError::new(Error::Closed, value));
        }
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
            self.alloc.lock().free.push(index);
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
        // count that goes with it (given back by `take`'s `Arc::from_raw`).
        let home = table.lend_home();
        debug_assert!(ptr::eq(home, slot.home_addr()));
        let generation = slot.fill(value);
        entry.store(kind.one(), Ordering::Relaxed);
        let h = Handle::new(self.tag, generation, index);
        self.diag.inserted(h, table.thread);
        Ok((h, slot, table, entry))
    }

    /// The fast path of every operation on a handle: the calling thread's
    /// own entry `e` and the slot, if no queued finalization is waiting to
    /// be drained, and either the thread holds the object `h` names (`e !=
    /// 0`, generations match) or it holds nothing at that index (`e == 0`,
    /// index within the capacity: a 0→1 transition, whose access check is
    /// the caller's). One location computation serves both arrays; nothing
    /// shared is written. `None`: take the general path.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn lookup(&self, h: Handle) -> Option<(&Slot<T>, &ThreadTable<T>, &AtomicU64, u64)> {
        let (table, loc, entry, e) = self.my_entry(h)?;
        if e == 0 {
            let slot = self.slots.at(loc)?;
            return (h.index() < self.capacity).then_some((slot, table, entry, 0));
        }
        Some((self.held_slot(h, loc)?, table, entry, e))
    }

    /// The start of every fast path: the calling thread's table, `h`'s
    /// location, and the thread's entry there with its value, if no queued
    /// finalization is waiting to be drained. `h`'s generation is not
    /// checked yet (see [`Inner::held_slot`]).
    #[inline(always)]
    fn my_entry(&self, h: Handle) -> Option<(&ThreadTable<T>, Loc, &AtomicU64, u64)> {
        // First, so that the entry's address does not wait for the loads
        // below.
        let loc = Loc::of(h.index() as usize);
        // No fork check here: in a forked child the cache misses (see
        // `my_table`), so this returns `None` and the general path says
        // `Forked`.
        let (key, p) = tid::cached_table();
        let table = if key | h.tag() == self.handle_key {
            // SAFETY: a handle's tag is below 2^TAG_BITS and a cache key's
            // low TAG_BITS bits are zero, so the OR equals `handle_key` only
            // if `key == self.cache_key` (and `h.tag() == self.tag`).
            unsafe { self.cached(p) }
        } else if h.tag() == self.tag {
            self.my_table_slow()? // another registry's table was cached
        } else {
            return None;
        };
        let entry = table.entry_at(loc)?;
        let e = entry.load(Ordering::Relaxed);
        if table.inbox.has_pending() {
            return None; // the general path drains first
        }
        Some((table, loc, entry, e))
    }

    /// The slot at `loc` if it holds the object `h` names, for a thread
    /// whose entry there is non-zero: the thread holds the object at this
    /// index, so its generation is stable, and `h` names it iff the
    /// generations match.
    #[inline(always)]
    fn held_slot(&self, h: Handle, loc: Loc) -> Option<&Slot<T>> {
        let slot = self.slots.at(loc)?;
        (slot.held_generation() == h.generation()).then_some(slot)
    }

    /// `max_count << 32`: an entry is at the limit iff it is at least this
    /// (see [`Inner::has_room`]).
    #[inline]
    pub(crate) fn count_limit(&self) -> u64 {
        self.count_limit
    }

    /// Whether a thread's entry `e` can take one more reference: its total
    /// stays within `max_count`.
    ///
    /// Either kind fits the entry then: `refs(e) <= total(e) < max_count
    /// <= u32::MAX`, so neither half carries over.
    #[inline]
    pub(crate) fn has_room(&self, e: u64) -> bool {
        // total(e) < max_count, compared on the whole entry: the low half
        // (refs) is below 2^32.
        e < self.count_limit
    }

    /// `retain`: +1 explicit reference for the calling thread.
    #[inline]
    pub(crate) fn retain(&self, h: Handle) -> Result<u32, Error> {
        if let Some((slot, table, entry, e)) = self.lookup(h) {
            if e == 0 {
                return self
                    .first_acquire(h, slot, table, entry, Kind::Ref, false)
                    .map(|(.., n)| n);
            }
            if let Some(n) = self.add_held(entry, e, Kind::Ref) {
                return Ok(n);
            }
        }
        self.acquire_slow(h, Kind::Ref, false).map(|(.., n)| n)
    }

    /// One more reference of `kind` in a thread's non-zero entry `e`, if it
    /// has room: stores it and returns the thread's new count; `None`
    /// (nothing stored) at the limit.
    #[inline(always)]
    fn add_held(&self, entry: &AtomicU64, e: u64, kind: Kind) -> Option<u32> {
        if !self.has_room(e) {
            return None;
        }
        let next = e + kind.one();
        entry.store(next, Ordering::Relaxed);
        Some(total(next))
    }

    /// `retain`'s fast path alone: +1 if the calling thread already holds
    /// `h` (and has room), else `false` and nothing changes.
    #[inline]
    pub(crate) fn retain_held(&self, h: Handle) -> bool {
        match self.lookup(h) {
            Some((_, _, entry, e)) => e != 0 && self.add_held(entry, e, Kind::Ref).is_some(),
            None => false,
        }
    }

    /// Adds one reference of `kind` for the calling thread; returns its entry
    /// and count. Access rule (invariant 5): the thread already holds the
    /// object, is its home thread, or the object is pinned.
    #[inline]
    #[allow(clippy::type_complexity)]
    pub(crate) fn acquire(
        &self,
        h: Handle,
        kind: Kind,
    ) -> Result<(&Slot<T>, &ThreadTable<T>, &AtomicU64, u32), Error> {
        self.acquire_as(h, kind, false)
    }

    /// `acquire` without the access rule, for interners (knowing the key is
    /// the capability): any thread may take a reference to the key's object
    /// while it lives. A dead object is `Err(Stale)`, never resurrected.
    #[allow(clippy::type_complexity)]
    pub(crate) fn acquire_granted(
        &self,
        h: Handle,
        kind: Kind,
    ) -> Result<(&Slot<T>, &ThreadTable<T>, &AtomicU64, u32), Error> {
        self.acquire_as(h, kind, true)
    }

    /// The held-handle fast path of both, then the general path (`granted`:
    /// skip the access rule).
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn acquire_as(
        &self,
        h: Handle,
        kind: Kind,
        granted: bool,
    ) -> Result<(&Slot<T>, &ThreadTable<T>, &AtomicU64, u32), Error> {
        if let Some((slot, table, entry, e)) = self.lookup(h) {
            if e == 0 {
                return self.first_acquire(h, slot, table, entry, kind, granted);
            }
            if let Some(n) = self.add_held(entry, e, kind) {
                return Ok((slot, table, entry, n));
            }
        }
        self.acquire_slow(h, kind, granted)
    }

    /// A thread's 0→1 transition found by `lookup` (its entry exists and is
    /// zero): the access check and the slot's hold, then the entry.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn first_acquire<'a>(
        &'a self,
        h: Handle,
        slot: &'a Slot<T>,
        table: &'a ThreadTable<T>,
        entry: &'a AtomicU64,
        kind: Kind,
        granted: bool,
    ) -> Result<(&'a Slot<T>, &'a ThreadTable<T>, &'a AtomicU64, u32), Error> {
        self.first_hold(h, slot, table, granted)?;
        Ok(self.first_taken(h, slot, table, entry, kind))
    }

    /// After a thread's first hold on `h`: its entry gets the reference.
    #[inline]
    #[allow(clippy::type_complexity)]
    fn first_taken<'a>(
        &self,
        h: Handle,
        slot: &'a Slot<T>,
        table: &'a ThreadTable<T>,
        entry: &'a AtomicU64,
        kind: Kind,
    ) -> (&'a Slot<T>, &'a ThreadTable<T>, &'a AtomicU64, u32) {
        entry.store(kind.one(), Ordering::Relaxed);
        self.diag.first_reference(h, table.thread);
        (slot, table, entry, 1)
    }

    /// The general path of `acquire`: drains, classifies errors, and takes a
    /// thread's first hold (its 0→1 transition).
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn acquire_slow(
        &self,
        h: Handle,
        kind: Kind,
        granted: bool,
    ) -> Result<(&Slot<T>, &ThreadTable<T>, &AtomicU64, u32), Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let table = self.table()?;
        self.maybe_drain(table);
        if let Some(entry) = table.entry(h.index()) {
            let e = entry.load(Ordering::Relaxed);
            if e != 0 {
                slot.check_held(h)?;
                let n = self.add_held(entry, e, kind).ok_or(Error::Overflow(h))?;
                return Ok((slot, table, entry, n));
            }
        }
        // The count page is allocated only once access is granted: probing
        // guessed ids does not grow the caller's table.
        self.first_hold(h, slot, table, granted)?;
        let Some(entry) = table.entry_or_alloc(h.index()) else {
            // Unreachable: the index is below the capacity. Give the hold back.
            self.drop_hold(slot, h, Some(table));
            return Err(Error::Invalid(h.to_raw()));
        };
        Ok(self.first_taken(h, slot, table, entry, kind))
    }

    /// A thread's 0→1 transition: access check, then a hold on the slot.
    ///
    /// The access rule (invariant 5) is decided about the object the hold
    /// actually lands on. A check before the hold reads the slot's occupant
    /// *then*, which may die and be replaced by the object a successor id
    /// names (same index, next generation) before `try_hold`'s CAS: so the
    /// rule is checked again on the state word the CAS replaced and the
    /// home of the object now held, and a refused hold is given back.
    #[inline]
    fn first_hold(
        &self,
        h: Handle,
        slot: &Slot<T>,
        table: &ThreadTable<T>,
        granted: bool,
    ) -> Result<(), Error> {
        let mine = Arc::as_ptr(&table.inbox);
        if granted {
            // The object may die any time: `try_hold` refuses a dead or
            // reused slot.
            slot.try_hold(h)?;
            return Ok(());
        }
        // A stranger is refused without writing the shared state word (and
        // a dead or never-issued `h` says so rather than "not held").
        if !ptr::eq(slot.home_addr(), mine) && !slot.pinned() {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        }
        let state = slot.try_hold(h)?;
        // Now `h`'s object is held: its home is stable, and `state` says
        // whether it was pinned when the hold was added.
        if is_pinned(state) || ptr::eq(slot.home_addr(), mine) {
            return Ok(());
        }
        self.drop_hold(slot, h, Some(table));
        Err(Error::NotHeld(h))
    }

    /// `release`: gives up one explicit reference of the calling thread.
    #[inline]
    pub(crate) fn release(&self, h: Handle) -> Result<Released, Error> {
        // The entry first: only a thread with an explicit reference goes on.
        let Some((table, loc, entry, e)) = self.my_entry(h) else {
            return self.release_slow(h);
        };
        if refs(e) == 0 {
            return self.release_slow(h);
        }
        let Some(slot) = self.held_slot(h, loc) else {
            return self.release_slow(h);
        };
        let left = e - REF_ONE;
        entry.store(left, Ordering::Relaxed);
        if left != 0 {
            // Not the thread's last reference: nothing shared changes.
            return Ok(Released::Held(total(left)));
        }
        Ok(self.let_go(h, slot, table))
    }

    /// The calling thread's count for `h` just went 1 → 0 (its entry is
    /// stored): its hold goes.
    #[inline(never)]
    fn let_go(&self, h: Handle, slot: &Slot<T>, table: &ThreadTable<T>) -> Released {
        self.lost(h, table);
        self.drop_hold(slot, h, Some(table))
    }

    /// The general path of `release`.
    #[inline(never)]
    fn release_slow(&self, h: Handle) -> Result<Released, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let Some(table) = self.my_table() else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        self.maybe_drain(table);
        let entry = table.entry(h.index());
        let e = entry.map_or(0, |e| e.load(Ordering::Relaxed));
        let (Some(entry), true) = (entry, refs(e) != 0) else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        slot.check_held(h)?;
        let left = e - REF_ONE;
        entry.store(left, Ordering::Relaxed);
        if left != 0 {
            return Ok(Released::Held(total(left)));
        }
        Ok(self.let_go(h, slot, table))
    }

    /// Drops a root (proxy or guard) of the calling thread from its
    /// `entry`; `true` if that was the thread's last reference to the
    /// object; the caller must then call [`Inner::root_gone`]. Touches
    /// nothing but the entry, so a proxy's drop stays a few instructions.
    #[inline(always)]
    pub(crate) fn release_root(entry: &AtomicU64) -> bool {
        let left = entry.load(Ordering::Relaxed).wrapping_sub(ROOT_ONE);
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
        self.let_go(h, slot, table);
        table.exited.load(Ordering::Relaxed)
    }

    /// The calling thread's count for `h` just went 1 → 0: tell the
    /// diagnostics, and drop `h` from this thread's interner caches (an
    /// entry is kept only while the thread holds its object, so no cache
    /// keeps a key alive after its object died).
    #[inline]
    pub(crate) fn lost(&self, h: Handle, table: &ThreadTable<T>) {
        self.diag.last_reference(h, table.thread);
        if self.has_forgetters.load(Ordering::Relaxed) {
            crate::interner::forget_cached(h);
        }
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

    /// The last hold of `h` was just dropped by the calling thread.
    #[cold]
    fn finalize(&self, slot: &Slot<T>, h: Handle, table: Option<&ThreadTable<T>>) -> Released {
        // SAFETY: our `drop_hold` returned true: the slot is ours alone.
        let (value, home) = unsafe { slot.take() };
        // `Some` iff the value must travel to another thread's inbox.
        let home = match (home, table) {
            (Some(home), Some(t)) if Arc::ptr_eq(&home, &t.inbox) => {
                t.keep_home(home);
                None
            }
            (home, _) => home.filter(|_| self.config.home_finalization),
        };
        if home.is_some() {
            // On its way home: `shutdown` waits for it (see `quiescent`).
            match table {
                Some(t) => t.sending.bump(),
                None => {
                    self.loose_sending.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        // Not live any more — before the slot can be reused, so `len()`
        // never exceeds the capacity (see `len`).
        match table {
            Some(t) => t.finalized.bump(),
            None => {
                self.loose_finalized.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.diag.died(h);
        self.free_slot(slot, h, table);
        self.tell_forgetters(h);
        let Some(home) = home else {
            self.dispose(h, value, table);
            return Released::Finalized;
        };
        let sent = home.send(h, value);
        // Release: the value is in the inbox before the count says so.
        match table {
            Some(t) => t.sent.bump(),
            None => {
                self.loose_sent.fetch_add(1, Ordering::SeqCst);
            }
        }
        match sent {
            Sent::Queued => {
                self.diag.emit(|| crate::Event::QueuedHome {
                    handle: h,
                    thread: thread_of(table),
                });
                Released::Queued
            }
            Sent::Closed(value) => {
                self.dispose(h, value, table);
                self.count_received(table);
                Released::Finalized
            }
            Sent::Orphaned => {
                // The home thread exited during our send: it may have missed
                // the value, so drop whatever is left here.
                home.drain(usize::MAX, false, |h, v| {
                    self.dispose(h, v, table);
                    self.count_received(table);
                });
                Released::Finalized
            }
        }
    }

    /// One value sent home (or handed back by a closed inbox) was dropped by
    /// the calling thread (`table`, if it has one): see `quiescent`.
    fn count_received(&self, table: Option<&ThreadTable<T>>) {
        match table {
            Some(t) => t.received.bump(),
            None => {
                self.loose_received.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Drops the value of `h` on the calling thread (`on` is its table, if
    /// known), catching a panic in its `Drop` (invariant 10).
    pub(crate) fn dispose(&self, h: Handle, value: T, on: Option<&ThreadTable<T>>) {
        let panicked = match catch_unwind(AssertUnwindSafe(move || drop(value))) {
            Ok(()) => false,
            Err(payload) => {
                self.drop_panics.fetch_add(1, Ordering::Relaxed);
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                true
            }
        };
        self.diag.emit(|| crate::Event::Finalized {
            handle: h,
            thread: thread_of(on),
            panicked,
        });
    }

    /// `transfer`: moves one explicit reference of the calling thread into a
    /// new in-flight transfer.
    pub(crate) fn transfer_out(&self, h: Handle) -> Result<(), Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let Some(table) = self.my_table() else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        let entry = table.entry(h.index());
        let e = entry.map_or(0, |e| e.load(Ordering::Relaxed));
        let (Some(entry), true) = (entry, refs(e) != 0) else {
            slot.check(h)?;
            return Err(Error::NotHeld(h));
        };
        slot.check_held(h)?;
        // A live thread's table: never its last late hold.
        let _ = self.hand_to_transfer(slot, h, table, entry, e, Kind::Ref)?;
        Ok(())
    }

    /// Moves one reference of `kind` out of the calling thread's `entry`
    /// in `table` (currently `e`, holding at least one) into a new in-flight
    /// transfer. Fails (changing nothing) only if the slot's hold count
    /// would overflow. `Ok(true)` as [`Inner::root_gone`]'s `true`: the
    /// exited `table`'s last late hold went into the transfer.
    pub(crate) fn hand_to_transfer(
        &self,
        slot: &Slot<T>,
        h: Handle,
        table: &ThreadTable<T>,
        entry: &AtomicU64,
        e: u64,
        kind: Kind,
    ) -> Result<bool, Error> {
        let left = e - kind.one();
        if left != 0 {
            // The thread keeps its hold; the token needs its own.
            slot.try_hold(h)?;
        } // else: the thread's hold becomes the token's.
        entry.store(left, Ordering::Relaxed);
        self.diag.emit(|| crate::Event::Transferred {
            handle: h,
            thread: table.thread,
        });
        if left != 0 {
            return Ok(false);
        }
        self.lost(h, table);
        Ok(table.exited.load(Ordering::Relaxed))
    }

    /// Adds `n` in-flight transfer holds to the live object `h`, which the
    /// caller holds (an interner handing its waiters their references).
    pub(crate) fn mint_transfers(&self, h: Handle, n: u32) -> Result<(), Error> {
        let slot = self.slot(h)?;
        for minted in 0..n {
            if let Err(e) = slot.try_hold(h) {
                for _ in 0..minted {
                    slot.drop_hold();
                }
                return Err(e);
            }
        }
        if n > 0 {
            if let Some(table) = self.my_table() {
                for _ in 0..n {
                    self.diag.emit(|| crate::Event::Transferred {
                        handle: h,
                        thread: table.thread,
                    });
                }
            }
        }
        Ok(())
    }

    /// Turns an in-flight transfer's hold into a reference of `kind` for the
    /// calling thread. On error the caller still owns the transfer's hold.
    #[allow(clippy::type_complexity)]
    pub(crate) fn claim_in(
        &self,
        h: Handle,
        kind: Kind,
    ) -> Result<(&Slot<T>, &ThreadTable<T>, &AtomicU64), Error> {
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
        if e == 0 {
            // The token's hold becomes the thread's.
            entry.store(kind.one(), Ordering::Relaxed);
            self.diag.emit(|| crate::Event::Claimed {
                handle: h,
                thread: table.thread,
            });
            self.diag.first_reference(h, table.thread);
            return Ok((slot, table, entry));
        }
        if self.add_held(entry, e, kind).is_none() {
            return Err(Error::Overflow(h));
        }
        // The thread already had a hold: the token's is surplus. Not the last.
        let last = slot.drop_hold();
        debug_assert!(!last, "a claiming holder cannot drop the last hold");
        self.diag.emit(|| crate::Event::Claimed {
            handle: h,
            thread: table.thread,
        });
        Ok((slot, table, entry))
    }

    /// Releases an in-flight transfer that is dropped unclaimed.
    pub(crate) fn drop_transfer(&self, h: Handle) -> Released {
        if crate::fork::forked() {
            return Released::Held(0);
        }
        let Ok(slot) = self.slot(h) else {
            return Released::Held(0);
        };
        let table = self.my_table();
        self.drop_hold(slot, h, table)
    }

    /// `pin`: one more pin (and hold) on the object.
    pub(crate) fn pin(&self, h: Handle) -> Result<(), Error> {
        let (slot, table, temporary) = self.hold_for_op(h)?;
        if !temporary {
            // The thread keeps its own hold: the pin needs one of its own.
            slot.try_hold(h)?;
        } // else: the temporary hold becomes the pin's.
        if !self.add_pin(slot, h) {
            self.drop_hold(slot, h, Some(table));
            return Err(Error::Overflow(h));
        }
        self.diag.emit(|| crate::Event::Pinned {
            handle: h,
            thread: table.thread,
        });
        Ok(())
    }

    /// `unpin`: removes one pin (and its hold).
    pub(crate) fn unpin(&self, h: Handle) -> Result<(), Error> {
        let (slot, table, temporary) = self.hold_for_op(h)?;
        let result = if self.remove_pin(slot, h) {
            // The pin's hold: not the last, the caller holds one too.
            let last = slot.drop_hold();
            debug_assert!(!last, "unpin cannot drop the last hold");
            self.diag.emit(|| crate::Event::Unpinned {
                handle: h,
                thread: table.thread,
            });
            Ok(())
        } else {
            Err(Error::NotPinned(h))
        };
        if temporary {
            self.drop_hold(slot, h, Some(table));
        }
        result
    }

    /// Counts one more pin of the live object `h` (the caller already took
    /// the pin's hold); `false` at `u32::MAX` pins.
    fn add_pin(&self, slot: &Slot<T>, h: Handle) -> bool {
        let mut pins = self.pins.lock();
        let n = pins.entry(h.index()).or_insert(0);
        if *n == u32::MAX {
            return false;
        }
        *n += 1;
        if *n == 1 {
            slot.mark_pinned(true);
        }
        true
    }

    /// Removes one pin of the live object `h` if it has one (the caller then
    /// drops the pin's hold).
    fn remove_pin(&self, slot: &Slot<T>, h: Handle) -> bool {
        let mut pins = self.pins.lock();
        let Some(n) = pins.get_mut(&h.index()) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            pins.remove(&h.index());
            slot.mark_pinned(false);
        }
        true
    }

    /// Slot index → pins, for every object with a pin (diagnostics).
    pub(crate) fn all_pins(&self) -> HashMap<u32, u32> {
        self.pins.lock().clone()
    }

    /// Makes sure the calling thread holds `h` for the duration of an
    /// operation: `temporary == true` if a hold was taken just for it (by the
    /// access rule) and must be given back or handed on.
    fn hold_for_op(&self, h: Handle) -> Result<(&Slot<T>, &ThreadTable<T>, bool), Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let slot = self.slot(h)?;
        let table = self.table()?;
        self.maybe_drain(table);
        if table.load(h.index()) != 0 {
            slot.check_held(h)?;
            return Ok((slot, table, false));
        }
        self.first_hold(h, slot, table, false)?;
        Ok((slot, table, true))
    }

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
            let e = t.load(h.index());
            if e != 0 {
                out.push((t.thread, total(e), t.exited.load(Ordering::Relaxed)));
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

/// The thread an event happened on: `table`'s, else the calling thread.
fn thread_of<T>(table: Option<&ThreadTable<T>>) -> sync::ThreadId {
    table.map_or_else(|| sync::current_thread().0, |t| t.thread)
}
