//! One object's slot, and the lock-free protocol on its state word.
//!
//! `state` packs `generation << 32 | pinned << 31 | issued << 30 | holds`.
//! *Holds* counts
//! what keeps the object alive: one per **thread** holding it (not per
//! reference — a thread's own count lives in its
//! [`ThreadTable`](crate::local::ThreadTable) and only its 0↔1 transitions
//! touch this word), one per pin and one per outstanding
//! [`Transfer`](crate::Transfer). *Pinned* says the object has at least one
//! pin (the access rule reads it from the word `try_hold` reads anyway);
//! the registry keeps the pin counts themselves aside, as pins are rare.
//! Transfers are not counted apart: a snapshot derives them from the holds
//! (see `Snapshot`). *Issued* says an object was published under the
//! current generation (set by `fill`, kept through its death and a
//! retirement, cleared when the slot is freed under the next generation):
//! it is what tells a dead object's id (`Stale`) from an id never issued
//! (`Invalid`) with one rule, see [`classify`].
//!
//! * An object is live iff `holds > 0`; `holds` reaches 0 exactly once per
//!   object, and the thread whose decrement did it finalizes it.
//! * `try_hold` only increments a non-zero `holds` of the right generation
//!   (CAS), so nothing resurrects a dead object and a stale handle never
//!   acquires a reused slot.
//! * The generation changes only while `holds == 0` (in [`Slot::publish_free`]), so it
//!   is stable while anybody holds the object.
//! * `home` is null iff the slot is free: an insert claims a free slot by
//!   swinging it to its inbox (CAS), and the finalizer stores null again
//!   last, after moving the value out (see [`crate::free`]).

use std::mem::MaybeUninit;
use std::ptr;
use std::ptr::NonNull;

use crate::inbox::{HomeRef, Inbox};
use crate::page::PageEntry;
use crate::sync::{AtomicPtr, AtomicU64, Ordering, UnsafeCell};
use crate::{Error, Handle};

/// The pinned flag of a state word.
const PINNED: u64 = 1 << 31;
/// The issued flag of a state word: an object was published under this
/// generation.
const ISSUED: u64 = 1 << 30;
/// The holds of a state word.
const HOLDS_MASK: u64 = ISSUED - 1;
/// Most holds an object can have (then `try_hold` says `Overflow`).
pub(crate) const MAX_HOLDS: u32 = HOLDS_MASK as u32;

/// Generation of a packed state word.
#[inline]
pub(crate) fn generation(state: u64) -> u32 {
    (state >> 32) as u32
}

/// Whether a packed state word has the pinned flag.
#[inline]
pub(crate) fn is_pinned(state: u64) -> bool {
    state & PINNED != 0
}

/// Holds of a packed state word.
#[inline]
pub(crate) fn holds(state: u64) -> u32 {
    (state & HOLDS_MASK) as u32
}

/// Storage for one object.
pub(crate) struct Slot<T> {
    /// `generation << 32 | pinned << 31 | issued << 30 | holds`, see the
    /// module docs.
    state: AtomicU64,
    /// The home thread's inbox (one lent count of it, see [`crate::inbox`])
    /// from the claim until the slot is published free again, null while
    /// the slot is free (a dangling marker once retired). Compared by address to decide "am I home";
    /// dereferenced only by the finalizer, which owns the slot exclusively.
    home: AtomicPtr<Inbox<T>>,
    /// Initialised iff the object is live (or being finalized by its owner).
    value: UnsafeCell<MaybeUninit<T>>,
}

// A 16-byte value makes a 32-byte slot: two to a cache line, none across
// two lines.
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Slot<[u64; 2]>>() == 32);

// SAFETY: a `Slot<T>` hands out `&T` to several threads at once (needs
// `T: Sync`) and moves `T` to the finalizing thread (needs `T: Send`). The
// value cell is written only by the inserting thread while the slot is free
// (not yet published) and read-moved only by the finalizer after `holds`
// reached 0 (no reference can exist then); all other accesses are shared
// reads while a hold is counted. Every other field is atomic.
unsafe impl<T: Send + Sync> Sync for Slot<T> {}
// SAFETY: as above, moving a slot between threads moves at most a `T: Send`.
unsafe impl<T: Send + Sync> Send for Slot<T> {}

impl<T> PageEntry for Slot<T> {
    /// Zeroed memory, lazily mapped, with a huge-page hint for big pages.
    #[cfg(not(loom))]
    fn new_page(len: usize) -> Box<[Self]> {
        // SAFETY: all zero bits is a valid free slot: state 0 (generation 0,
        // not issued, not pinned, no holds), a null `home`, and a
        // `MaybeUninit` value.
        unsafe { crate::page::zeroed_page::<Self>(len, true) }
    }

    #[cfg(loom)]
    fn new_page(len: usize) -> Box<[Self]> {
        (0..len)
            .map(|_| Slot {
                state: AtomicU64::new(0),
                home: AtomicPtr::new(ptr::null_mut()),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect()
    }
}

impl<T> Slot<T> {
    /// The current state word (acquire: pairs with the publishing store of
    /// `fill` and the generation bump of `publish_free`).
    #[inline]
    pub(crate) fn state(&self) -> u64 {
        self.state.load(Ordering::Acquire)
    }

    /// Classifies `h` against this slot: `Ok` if it names the live object.
    #[inline]
    pub(crate) fn check(&self, h: Handle) -> Result<(), Error> {
        classify(self.state(), h)
    }

    /// Checks that `h` names the object the caller already holds.
    ///
    /// The caller holds the object, so the generation cannot change under it
    /// and a relaxed load suffices.
    #[inline]
    pub(crate) fn check_held(&self, h: Handle) -> Result<(), Error> {
        let g = generation(self.state.load(Ordering::Relaxed));
        if g == h.generation() {
            Ok(())
        } else if h.generation() < g {
            Err(Error::Stale(h))
        } else {
            Err(Error::Invalid(h.to_raw()))
        }
    }

    /// Adds one hold if `h` names the live object (never resurrects).
    /// Returns the state word the hold was added to: whatever the caller
    /// decides about the object (is it pinned?) it reads from there, as
    /// that is the object the hold landed on.
    pub(crate) fn try_hold(&self, h: Handle) -> Result<u64, Error> {
        self.hold_from(self.state(), h, |_| true)
            .map_err(|state| refusal(state, h))
    }

    /// [`Slot::try_hold`] on a state word that also passes `allow`, from
    /// `cur`, the word as the caller read it (acquire): the word the hold
    /// was added to, or `Err` with the word that failed (nothing changed).
    /// One CAS when uncontended, and no call.
    #[inline(always)]
    fn hold_from(&self, mut cur: u64, h: Handle, allow: impl Fn(u64) -> bool) -> Result<u64, u64> {
        loop {
            // The live object `h` names, with room for one more hold: a
            // compare of the generation and one of the holds (`0` wraps
            // around). A live object is always issued.
            if generation(cur) != h.generation()
                || holds(cur).wrapping_sub(1) >= MAX_HOLDS - 1
                || !allow(cur)
            {
                return Err(cur);
            }
            match self.state.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(cur),
                Err(actual) => cur = actual,
            }
        }
    }

    /// A hold for a thread's first reference under the access rule
    /// (invariant 5), for the thread whose inbox is `mine`: if `h` names
    /// the live object and the thread is its home or it is pinned, decided
    /// on the word the CAS replaces. Strangers are refused without writing
    /// the word. `Err`: nothing changed, [`Slot::first_refusal`] says why.
    ///
    /// The home is read only for a word that is not pinned (a pinned
    /// object admits every thread): the home shares the state word's cache
    /// line, and under contention a second read of that line is a second
    /// chance to lose it to the other thread before the CAS (two threads
    /// taking and dropping their first reference to one pinned object:
    /// 148.8 -> 111.8 ns per operation, medians of 15 alternating runs of
    /// `benches/ops.rs pinned_first_last_2t`, 2026-12-06, Intel Xeon).
    ///
    /// The home is read *after* the state word, so it is the home of the
    /// object the hold lands on. The hold lands only on a word of `h`'s
    /// generation with holds, and it read such a word before the home:
    /// generations never repeat and nothing resurrects, so that one object
    /// lived from the state read to the CAS, and the home read between is
    /// its own. (The home read is ordered after the acquire load of the
    /// state, which saw the insert's publication, so it is not an earlier
    /// occupant's; nor a later one's: those are written by release stores
    /// (or RMWs continuing them) after the object's death, whose reading
    /// would order that death before the CAS. The one relaxed store, the
    /// retired marker, is no thread's inbox: read, it only refuses.)
    /// Deciding on a home read before the state word let a successor id
    /// (same index, next generation) take the hold on an object reinserted
    /// mid-check: loom model
    /// `successor_id_gives_no_access_when_the_slot_is_reused_mid_check`.
    #[inline(always)]
    pub(crate) fn hold_first(&self, h: Handle, mine: *const Inbox<T>) -> Result<(), u64> {
        let cur = self.state();
        self.hold_from(cur, h, |state| {
            is_pinned(state) || ptr::eq(self.home_addr(), mine)
        })
        .map(|_| ())
    }

    /// Why [`Slot::hold_first`] refused `h` on `state` for the thread whose
    /// inbox is `mine`: what `classify` says (a dead or never-issued id says
    /// so rather than "not held"), else `NotHeld` for a thread without
    /// access, else (at the hold limit) `Overflow`.
    ///
    /// A refusal on a word of the live object may come from a home read
    /// after that object died (null, or a later occupant's): so the home is
    /// read again, and trusted only if the object still lives after that
    /// read (then it lived throughout, and the home is its own); if it has
    /// died meanwhile, the answer is that.
    #[cold]
    #[inline(never)]
    pub(crate) fn first_refusal(&self, state: u64, h: Handle, mine: *const Inbox<T>) -> Error {
        if let Err(e) = classify(state, h) {
            return e;
        }
        let home = ptr::eq(self.home_addr(), mine);
        if let Err(e) = self.check(h) {
            return e;
        }
        if !home && !is_pinned(state) {
            Error::NotHeld(h)
        } else {
            Error::Overflow(h)
        }
    }

    /// Drops one hold; `true` if it was the last one (the caller must then
    /// finalize: it owns the slot exclusively).
    #[inline]
    pub(crate) fn drop_hold(&self) -> bool {
        // Release: this thread's uses of the value happen before the
        // finalizer's; Acquire: the finalizer sees everybody's uses.
        let prev = self.state.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(holds(prev) > 0, "hold count underflow");
        holds(prev) == 1
    }

    /// Claims this free slot for an insert by the thread whose inbox is
    /// `home`: `false` if somebody else owns it (it is live, being filled,
    /// being finalized, or retired). See [`crate::free`].
    #[inline]
    pub(crate) fn try_claim(&self, home: *mut Inbox<T>) -> bool {
        // Acquire: pairs with the release store of `publish_free`, so the
        // claimant sees the bumped generation and the moved-out value cell.
        self.home
            .compare_exchange(ptr::null_mut(), home, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives back a slot claimed by `try_claim` and never filled.
    pub(crate) fn unclaim(&self) {
        self.home.store(ptr::null_mut(), Ordering::Release);
    }

    /// Publishes `value` in a slot the caller claimed (`try_claim`); returns
    /// the object's generation. The new object has one hold: the inserting
    /// thread's. The claim's `home` becomes the object's home inbox.
    pub(crate) fn fill(&self, value: T) -> u32 {
        let g = generation(self.state.load(Ordering::Relaxed));
        // SAFETY: the caller claimed the slot (its CAS on `home` succeeded,
        // after the previous object's finalizer moved the value out), so no
        // other thread reads or writes the value cell until the release store
        // below publishes it: `holds == 0` until then, so `try_hold` refuses.
        self.value.with_mut(|v| unsafe { (*v).write(value) });
        self.state
            .store(u64::from(g) << 32 | ISSUED | 1, Ordering::Release);
        g
    }

    /// A pointer to the live value, valid while the caller holds the object.
    #[inline]
    pub(crate) fn value_ptr(&self) -> *const T {
        self.value.with(|v| v.cast::<T>())
    }

    /// Moves the value and the home inbox out of a slot whose last hold the
    /// caller just dropped. The slot stays the caller's until it calls
    /// [`publish_free`](Slot::publish_free) (or forever, if it retires it).
    ///
    /// # Safety
    ///
    /// The caller's `drop_hold` must have returned `true` for this object, and
    /// `take` must be called once for it.
    pub(crate) unsafe fn take(&self) -> (T, Option<HomeRef<T>>) {
        // Relaxed: the caller's `drop_hold` (AcqRel) already synchronised with
        // the claim and every holder; nobody else writes `home` until the slot
        // is published free.
        let home = self.home.load(Ordering::Relaxed);
        // SAFETY: `holds` reached 0 through the caller's decrement, so no hold
        // (and hence no `&T`) exists and none can be created (`try_hold`
        // refuses 0); the value was initialised by `fill` (caller's
        // precondition: the object was live) and is read exactly once.
        let value = self.value.with(|v| unsafe { ptr::read(v).assume_init() });
        // SAFETY: a non-null `home` carries the lent count the registry's
        // insert took for this object (`ThreadTable::lend_home`), handed
        // over once, here (the caller's precondition); the field keeps only
        // the address.
        let home = NonNull::new(home).map(|p| unsafe { HomeRef::from_lent(p) });
        (value, home)
    }

    /// Frees a finalized slot for reuse under generation `next`: the last
    /// thing its finalizer does to it (after `take`).
    pub(crate) fn publish_free(&self, next: u32) {
        self.state.store(u64::from(next) << 32, Ordering::Release);
        // Release: a claimant (acquire CAS) sees the new generation and the
        // value cell moved out.
        self.home.store(ptr::null_mut(), Ordering::Release);
    }

    /// Retires a finalized slot whose generation is exhausted: its `home`
    /// stays non-null (a dangling, never dereferenced marker), so no claim
    /// ever succeeds.
    pub(crate) fn retire(&self) {
        self.home
            .store(ptr::NonNull::dangling().as_ptr(), Ordering::Relaxed);
    }

    /// Sets or clears the pinned flag, as the registry's pin count for the
    /// object leaves or reaches zero (under the lock of those counts). The
    /// object is live: the pin's hold is taken before the flag is set and
    /// dropped after it is cleared. Leaves holds and generation alone.
    pub(crate) fn mark_pinned(&self, pinned: bool) {
        if pinned {
            self.state.fetch_or(PINNED, Ordering::Relaxed);
        } else {
            self.state.fetch_and(!PINNED, Ordering::Relaxed);
        }
    }

    /// The home inbox address, for "is the caller home" comparisons only
    /// (meaningful while the object is live).
    #[inline]
    pub(crate) fn home_addr(&self) -> *const Inbox<T> {
        self.home.load(Ordering::Acquire)
    }
}

/// Why `try_hold` refuses `h` on `state`: what `classify` says, else (the
/// live object, at its hold limit) `Overflow`.
#[cold]
#[inline(never)]
fn refusal(state: u64, h: Handle) -> Error {
    match classify(state, h) {
        Err(e) => e,
        Ok(()) => Error::Overflow(h),
    }
}

/// `Ok` if `state` is the live object named by `h`, else why not — one
/// rule, whatever the slot's history:
///
/// * `Stale`: this registry issued `h` and its object is dead (a lower
///   generation than the slot's, or the slot's own generation after its
///   object died and before the slot is reused, or in a retired slot).
/// * `Invalid`: `h` was never issued: a generation above the slot's, or the
///   slot's generation while no object was published under it yet (a slot
///   never used, or freed and not reused yet).
#[inline]
fn classify(state: u64, h: Handle) -> Result<(), Error> {
    let g = generation(state);
    if h.generation() < g {
        // Every generation below the slot's was issued (a slot moves to the
        // next generation only when its object dies).
        return Err(Error::Stale(h));
    }
    if h.generation() > g || state & ISSUED == 0 {
        return Err(Error::Invalid(h.to_raw()));
    }
    if holds(state) == 0 {
        return Err(Error::Stale(h));
    }
    Ok(())
}
