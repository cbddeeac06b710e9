//! A thread's own table of counts in one registry.
//!
//! One `AtomicU64` per slot index: `total << 42 | refs << 21 | generation`,
//! where `total = refs + roots` is everything the thread holds on the
//! object and `generation` is the generation of that object (the one the
//! thread holds at this index).
//!
//! * `refs` are explicit references (from `insert`, `retain`, `claim`); only
//!   they can be given up with `release` or `transfer`.
//! * `roots` are live [`Proxy`](crate::Proxy)s and [`Guard`](crate::Guard)s,
//!   which hand out `&T`: they release themselves on drop, so no `release()`
//!   call can pull a reference out from under a borrowed value.
//! * `generation` lets a thread check that a handle names the object it
//!   holds from its own entry: the fast paths never read the object's slot
//!   for that (one cache line per operation on a held handle, wherever
//!   the object lives among millions).
//!
//! Keeping the total rather than the roots, in the high bits, makes the
//! fast path's checks single operations: the limit check is one compare of
//! the whole entry (`entry >= max_count << 42`), and the count that
//! `retain` and `release` report is one shift. `refs <= total <=
//! MAX_COUNT` always holds: every increment checks the total first
//! (against `max_count <= MAX_COUNT`, also in `Proxy::clone`), so neither
//! field carries into the next.
//!
//! The thread holds the object (one *hold* in the slot's state word) iff its
//! entry is non-zero (iff its total is: an entry whose total reaches 0 is
//! stored as 0, generation and all, see [`settled`]). Only the owning
//! thread writes its table, with a plain load and store (no
//! read-modify-write, no shared cache line): retaining a handle the thread
//! already holds is an ordinary increment. Other threads only read entries,
//! for `holders()` and snapshots.

use std::ptr::{self, NonNull};
use std::sync::Arc;

use crate::free::FreeCache;
use crate::inbox::{HomeRef, Inbox, LEND_BATCH};
use crate::limits::{GEN_BITS, INDEX_BITS};
use crate::page::{Loc, Pages};
use crate::sync::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, ThreadId};
use crate::Handle;

/// Where an entry keeps its explicit references (above the generation).
const REFS_SHIFT: u32 = GEN_BITS;
/// Where an entry keeps its total (above the explicit references).
const TOTAL_SHIFT: u32 = REFS_SHIFT + GEN_BITS;
/// The generation bits of an entry (its lowest).
const GEN_MASK: u64 = (1 << GEN_BITS) - 1;
/// The explicit references of an entry, shifted down.
const REFS_MASK: u64 = (1 << (TOTAL_SHIFT - REFS_SHIFT)) - 1;

/// The largest count a thread can have on one object (references, proxies
/// and guards together): what its explicit references fit in.
pub(crate) const MAX_COUNT: u32 = REFS_MASK as u32;
const _: () = assert!(
    MAX_COUNT as u64 <= u64::MAX >> TOTAL_SHIFT,
    "the total fits too"
);

/// One in the total of an entry: a root (proxy or guard).
pub(crate) const ROOT_ONE: u64 = 1 << TOTAL_SHIFT;
/// One explicit reference in an entry: one in its refs and one in its total.
pub(crate) const REF_ONE: u64 = ROOT_ONE | 1 << REFS_SHIFT;

/// Explicit references of an entry.
#[inline]
pub(crate) fn refs(entry: u64) -> u32 {
    ((entry >> REFS_SHIFT) & REFS_MASK) as u32
}

/// Roots (proxies and guards) of an entry.
#[inline]
pub(crate) fn roots(entry: u64) -> u32 {
    total(entry).wrapping_sub(refs(entry))
}

/// Everything the thread holds, as reported by `count()`.
#[inline]
pub(crate) fn total(entry: u64) -> u32 {
    (entry >> TOTAL_SHIFT) as u32
}

/// The entry of a thread's first reference (`one`: [`REF_ONE`] or
/// [`ROOT_ONE`]) to the object `h` names.
#[inline]
pub(crate) fn first(one: u64, h: Handle) -> u64 {
    one | u64::from(h.generation())
}

/// Whether `h` names the object a thread holds with the non-zero `entry`:
/// the entry's generation is `h`'s (one shift, one xor, one test).
#[inline(always)]
pub(crate) fn names(entry: u64, h: Handle) -> bool {
    (entry ^ h.to_raw() >> INDEX_BITS) & GEN_MASK == 0
}

/// The entry to store once a count was taken off a held `entry`: itself
/// while its total is non-zero, else 0 (the thread holds nothing: its
/// generation goes too).
#[inline(always)]
pub(crate) fn settled(entry: u64) -> u64 {
    if entry < ROOT_ONE {
        0
    } else {
        entry
    }
}

/// The entries at or above which a thread's count is at `max_count`.
#[inline]
pub(crate) fn count_limit(max_count: u32) -> u64 {
    u64::from(max_count) << TOTAL_SHIFT
}

/// The entry `entry` leaves once its explicit references are gone: its
/// roots alone (0 if it has none).
#[inline]
pub(crate) fn roots_only(entry: u64) -> u64 {
    settled((u64::from(roots(entry)) * ROOT_ONE) | (entry & GEN_MASK))
}

/// See the module docs.
///
/// `repr(C)`: the fast path reads `inbox` (its pending flag) and the first
/// pages of `counts`, which lead the struct so they share a cache line.
#[repr(C)]
pub(crate) struct ThreadTable<T> {
    /// This thread's inbox as a home thread.
    pub(crate) inbox: Arc<Inbox<T>>,
    counts: Pages<AtomicU64>,
    pub(crate) thread: ThreadId,
    pub(crate) name: Option<String>,
    /// The thread's exit hook has run.
    pub(crate) exited: AtomicBool,
    /// After the exit hook: the entries still non-zero (proxies and guards
    /// that outlive it, in thread-locals destroyed later; explicit
    /// references kept by `ThreadExit::Leak`), plus one the hook itself
    /// holds while it runs user code. The table is freed when it reaches 0
    /// (see `Inner::late_hold_gone`). Owner only.
    pub(crate) late: AtomicUsize,
    /// A drain is running on this thread (a `Drop` re-entering the registry
    /// does not start a nested one).
    draining: AtomicBool,
    /// Slots this thread freed, to reuse without the global lock.
    pub(crate) free: FreeCache,
    /// Objects this thread inserted, ever (see [`Counter`]).
    pub(crate) inserted: Counter,
    /// Objects this thread finalized, ever (see [`Counter`]).
    pub(crate) finalized: Counter,
    /// Of those, values this thread started sending to another thread's
    /// inbox (counted before `finalized`), and values it has sent (counted
    /// after the send): the difference is on its way (see `Inner::quiescent`).
    pub(crate) sending: Counter,
    /// See `sending`.
    pub(crate) sent: Counter,
    /// Values this thread took out of an inbox and dropped (its own, or,
    /// as a sender whose home exited meanwhile, that home's). See
    /// `Inner::quiescent`.
    pub(crate) received: Counter,
    /// Lent counts of `inbox` (see [`crate::inbox`]) that the table keeps
    /// for the next inserts (see [`ThreadTable::lend_home`]). Owner only.
    credits: AtomicUsize,
    /// Another home's inbox, of which the table keeps `returned_n` lent
    /// counts given back by this thread's finalizations, to return them
    /// together (see [`ThreadTable::keep_returned`]). Owner only.
    returned: AtomicPtr<Inbox<T>>,
    /// See `returned`.
    returned_n: AtomicUsize,
}

/// Most lent counts of its own inbox a table keeps in reserve.
const MAX_CREDITS: usize = 1024;

impl<T> Drop for ThreadTable<T> {
    fn drop(&mut self) {
        let credits = self.credits.load(Ordering::Relaxed);
        if let (Some(inbox), true) = (
            NonNull::new(Arc::as_ptr(&self.inbox).cast_mut()),
            credits > 0,
        ) {
            // SAFETY: the table owns `credits` lent counts of its inbox
            // (taken by `lend` or kept by `keep_home`), given up once, here;
            // its own `inbox` field keeps the inbox alive meanwhile.
            unsafe { Inbox::give_back(inbox, credits) };
        }
        self.return_kept();
    }
}

/// A count that only the owning thread bumps (a load and a store, no
/// read-modify-write) and any thread reads. The registry's `len()` is the
/// sum of every table's `inserted - finalized`.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Owner only: +1. Release: a reader that sees the new value also sees
    /// what the owner did before (see `Inner::len`).
    #[inline]
    pub(crate) fn bump(&self) {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n + 1, Ordering::Release);
    }

    /// Any thread: the current value.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

impl<T> ThreadTable<T> {
    pub(crate) fn new(thread: ThreadId, name: Option<String>) -> Self {
        ThreadTable {
            inbox: Arc::new(Inbox::new()),
            counts: Pages::new(),
            thread,
            name,
            exited: AtomicBool::new(false),
            late: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            free: FreeCache::new(),
            inserted: Counter::new(),
            finalized: Counter::new(),
            sending: Counter::new(),
            sent: Counter::new(),
            received: Counter::new(),
            credits: AtomicUsize::new(0),
            returned: AtomicPtr::new(ptr::null_mut()),
            returned_n: AtomicUsize::new(0),
        }
    }

    /// Owner only: one lent count of this thread's inbox for a new
    /// object's slot (given back through `Slot::take`'s [`HomeRef`]). The
    /// table takes them from the inbox [`LEND_BATCH`] at a time, and keeps
    /// those [`ThreadTable::keep_home`] returns, so an insert does no
    /// atomic read-modify-write on the inbox's counts but once a batch.
    #[inline]
    pub(crate) fn lend_home(&self) -> *const Inbox<T> {
        let mut c = self.credits.load(Ordering::Relaxed);
        if c == 0 {
            self.inbox.lend(LEND_BATCH);
            c = LEND_BATCH;
        }
        self.credits.store(c - 1, Ordering::Relaxed);
        Arc::as_ptr(&self.inbox)
    }

    /// Whether `home` is this table's inbox.
    #[inline]
    pub(crate) fn is_home(&self, home: &HomeRef<T>) -> bool {
        ptr::eq(home.as_ptr(), Arc::as_ptr(&self.inbox))
    }

    /// Owner only: takes back the lent count of an object finalized on
    /// its home thread (`home` must be this table's inbox), for the next
    /// [`ThreadTable::lend_home`].
    #[inline]
    pub(crate) fn keep_home(&self, home: HomeRef<T>) {
        debug_assert!(self.is_home(&home));
        let c = self.credits.load(Ordering::Relaxed);
        if c < MAX_CREDITS {
            let _ = home.into_lent();
            self.credits.store(c + 1, Ordering::Relaxed);
        }
        // Else `home` drops: its count goes back to the inbox.
    }

    /// Owner only: keeps the lent count of an object of another home that
    /// this thread finalized, to give it back with the others of that home
    /// (one RMW); first gives back those of the home kept before, if it is
    /// another. See [`crate::inbox`].
    #[inline]
    pub(crate) fn keep_returned(&self, home: HomeRef<T>) {
        let n = self.returned_n.load(Ordering::Relaxed);
        if ptr::eq(self.returned.load(Ordering::Relaxed), home.as_ptr()) {
            let _ = home.into_lent();
            self.returned_n.store(n + 1, Ordering::Relaxed);
            return;
        }
        self.return_kept();
        self.returned
            .store(home.into_lent().as_ptr(), Ordering::Relaxed);
        self.returned_n.store(1, Ordering::Relaxed);
    }

    /// Owner only (or the table's drop): gives back the lent counts kept
    /// by [`ThreadTable::keep_returned`].
    #[cold]
    fn return_kept(&self) {
        let n = self.returned_n.load(Ordering::Relaxed);
        if let (Some(inbox), true) = (NonNull::new(self.returned.load(Ordering::Relaxed)), n > 0) {
            self.returned.store(ptr::null_mut(), Ordering::Relaxed);
            self.returned_n.store(0, Ordering::Relaxed);
            // SAFETY: the table kept `n` lent counts of `inbox` (each from
            // a `HomeRef`), given back once, here.
            unsafe { Inbox::give_back(inbox, n) };
        }
    }

    /// The entry for slot `index`, if its page exists.
    #[inline]
    pub(crate) fn entry(&self, index: u32) -> Option<&AtomicU64> {
        self.counts.get(index as usize)
    }

    /// The entry at `loc`, if its page exists.
    #[inline]
    pub(crate) fn entry_at(&self, loc: Loc) -> Option<&AtomicU64> {
        self.counts.at(loc).map(crate::sync::direct)
    }

    /// The entry for slot `index`, allocating its page.
    #[inline]
    pub(crate) fn entry_or_alloc(&self, index: u32) -> Option<&AtomicU64> {
        self.counts.get_or_alloc(index as usize)
    }

    /// The current value of the entry for `index` (0 if never touched).
    #[inline]
    pub(crate) fn load(&self, index: u32) -> u64 {
        self.entry(index).map_or(0, |e| e.load(Ordering::Relaxed))
    }

    /// The thread's count for the object `h` names, if it holds that
    /// object: its entry at `h`'s index is non-zero and of `h`'s
    /// generation (a thread holding another object at that index — `h`'s
    /// died and the slot was reused meanwhile — is not its holder).
    pub(crate) fn count_of(&self, h: Handle) -> Option<u32> {
        let e = self.load(h.index());
        (e != 0 && names(e, h)).then(|| total(e))
    }

    /// Calls `f(index, entry)` for every allocated entry.
    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(usize, &AtomicU64)) {
        self.counts.for_each_page(|first, page| {
            for (off, e) in page.iter().enumerate() {
                f(first + off, e);
            }
        });
    }

    /// How many entries are non-zero (objects the thread holds).
    pub(crate) fn held_objects(&self) -> usize {
        let mut n = 0;
        self.for_each_entry(|_, e| n += usize::from(e.load(Ordering::Relaxed) != 0));
        n
    }

    /// Starts a drain unless one is already running on this thread.
    pub(crate) fn begin_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::Relaxed)
    }

    /// Whether a drain is running on this thread (owner only).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ends the drain started by `begin_drain`.
    pub(crate) fn end_drain(&self) {
        self.draining.store(false, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::limits::{MAX_GENERATION, MAX_TAG};

    const GENS: [u32; 7] = [
        0,
        1,
        2,
        0x15_5555,
        0x0a_aaaa,
        MAX_GENERATION - 1,
        MAX_GENERATION,
    ];

    /// The generations the tests below use: distinct, each one a handle
    /// keeps as it is.
    #[test]
    fn the_test_generations_are_distinct_and_valid() {
        for (i, g) in GENS.iter().enumerate() {
            assert!(!GENS[..i].contains(g), "{g:#x} twice");
            assert_eq!(Handle::new(1, *g, 0).generation(), *g);
        }
    }

    /// The fields of an entry never carry into each other, at every limit.
    #[test]
    fn fields_stay_apart_at_their_limits() {
        for g in GENS {
            let h = Handle::new(MAX_TAG, g, (1 << INDEX_BITS) - 1);
            // MAX_COUNT explicit references, then roots up to MAX_COUNT in all.
            let mut e = first(REF_ONE, h);
            for _ in 1..MAX_COUNT {
                e += REF_ONE;
            }
            assert_eq!((refs(e), total(e), roots(e)), (MAX_COUNT, MAX_COUNT, 0));
            assert!(names(e, h), "generation {g:#x} kept");
            assert!(e < count_limit(MAX_COUNT) + ROOT_ONE);
            assert!(e >= count_limit(MAX_COUNT), "at the limit");
            // Half of them roots instead.
            let mut e = first(ROOT_ONE, h);
            for i in 1..MAX_COUNT {
                e += if i % 2 == 0 { ROOT_ONE } else { REF_ONE };
            }
            assert_eq!(total(e), MAX_COUNT);
            assert_eq!(refs(e) + roots(e), MAX_COUNT);
            assert!(names(e, h));
            // Explicit references gone: the roots and the generation stay.
            let r = roots_only(e);
            assert_eq!((refs(r), total(r)), (0, roots(e)));
            assert!(names(r, h));
        }
    }

    /// `names` compares the generation only, at every bit of it, and ignores
    /// the tag and index bits around it in the raw handle.
    #[test]
    fn names_compares_exactly_the_generation() {
        for g in GENS {
            for (tag, index) in [(1, 0), (MAX_TAG, (1 << INDEX_BITS) - 1), (77, 12345)] {
                let e = first(REF_ONE, Handle::new(tag, g, index)) + ROOT_ONE;
                for (tag2, index2) in [(1, 0), (MAX_TAG, 9)] {
                    assert!(names(e, Handle::new(tag2, g, index2)), "gen {g:#x}");
                    for bit in 0..GEN_BITS {
                        let other = g ^ (1 << bit);
                        assert!(
                            !names(e, Handle::new(tag2, other, index2)),
                            "gen {g:#x} vs {other:#x}"
                        );
                    }
                }
            }
        }
    }

    /// The thread's last count gone, the entry is 0 (holds nothing), its
    /// generation and all; any count left keeps the entry as it is.
    #[test]
    fn an_entry_whose_total_reaches_zero_settles_to_zero() {
        for g in GENS {
            let h = Handle::new(3, g, 5);
            assert_eq!(settled(first(REF_ONE, h) - REF_ONE), 0);
            assert_eq!(settled(first(ROOT_ONE, h) - ROOT_ONE), 0);
            assert_eq!(roots_only(first(REF_ONE, h) + REF_ONE), 0);
            let two = first(REF_ONE, h) + ROOT_ONE;
            assert_eq!(settled(two - REF_ONE), two - REF_ONE);
            assert_eq!(total(settled(two - ROOT_ONE)), 1);
            assert!(names(settled(two - ROOT_ONE), h));
        }
    }
}
