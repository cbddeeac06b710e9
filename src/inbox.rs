//! A home thread's inbox: values whose last reference was released elsewhere.
//!
//! Point-to-point: each thread (per registry) has its own inbox, referenced by
//! the slots of the objects it is home of. A remote final release moves the
//! value into its home's inbox and returns at once (the channel is
//! unbounded and lock-free: the sender never waits for the home thread). The
//! home thread drops the values at its next call that takes or gives up a
//! reference (a bounded batch, after one relaxed load of `pending`) or at
//! `pump()`.
//!
//! # Closing
//!
//! When the home thread exits, it drains its inbox, closes it, and drains
//! again. A sender checks `closed` after sending. The two sides meet on
//! `pending`, with read-modify-writes only (no fence): the sender's
//! `pending.swap(true, AcqRel)` comes after its send and before its second
//! look at `closed`; `close` stores `closed` and then does an RMW on
//! `pending` (`fetch_or(false, AcqRel)`). Every write to `pending` is an RMW,
//! so the two RMWs are ordered in `pending`'s modification order and the
//! later one reads from a release sequence the earlier one heads:
//!
//! * the sender's first: `close` synchronises with it, so the value sent
//!   happens before the home's drain after `close`, which takes it;
//! * `close`'s first: the sender synchronises with it and sees `closed`,
//!   and drains the inbox itself ([`Sent::Orphaned`]).
//!
//! Either way a value is never stranded in an inbox nobody reads.
//!
//! # Waking the home (DESIGN §8)
//!
//! A home thread that sleeps in its event loop sets a *notifier*; a `pending()`
//! future registers a *waker*. Both hear of the **idle → pending edge** only:
//! `armed` is set when the home's drain empties the inbox and swapped off by
//! the first sender after that, which alone calls the notifier and wakes the
//! waker. No wake-up is lost, by the same kind of handshake on `pending`:
//! the sender swaps `pending` on (above) and then looks at `armed`; the
//! home's re-arm stores `armed` and then does an RMW on `pending`
//! (`fetch_or(false, AcqRel)`). If the re-arm's RMW comes first, the sender
//! synchronises with it and finds the edge armed (or taken by a later
//! sender, which notifies); if the sender's swap comes first, the re-arm
//! reads `true` and leaves it there, so the home's next `has_pending()` (one
//! relaxed load, after the RMW in the home's program order: coherence) reads
//! `true` too. So a value queued after the home's last drain either finds
//! the edge armed (and notifies) or is seen by the home's next
//! `has_pending()` / `pending()`.
//!
//! # Lifetime
//!
//! A thread's table owns its inbox (an `Arc`, shared with the thread's exit
//! hook), and every object homed there keeps the inbox alive too, until its
//! value has been dropped or sent home: a claimed slot's `home` is one
//! *lent* count ([`HomeRef`] once the slot is taken). Lent counts are
//! counted in `lent`, not in the `Arc`'s strong count, so that they move in
//! batches instead of one read-modify-write per object on a line the home
//! thread writes: the home's table takes [`LEND_BATCH`] at once for its next
//! inserts and keeps those that come back from its own finalizations, and a
//! thread that finalizes objects of another home keeps the counts it gets
//! back and returns them together (`ThreadTable::keep_returned`), when it
//! finalizes an object of yet another home or its table goes (so it keeps
//! at most one foreign inbox alive). While `lent > 0` the lent counts
//! together own one strong count of the `Arc`: taken by the `lend` that
//! finds `lent == 0`, given up by the `give_back` that brings it to 0.
//!
//! (Loom models these handshakes exactly: they rest on RMW read-from
//! chains and acquire/release, not on SeqCst accesses, which loom treats as
//! AcqRel.)

use crate::caught::{call_caught, drop_caught};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::Waker;

use crate::sync::channel::{self, Receiver, Sender};
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::Handle;

/// A home thread's notifier (see [`Registry::set_notify`](crate::Registry::set_notify)).
pub(crate) type Notifier = Arc<dyn Fn() + Send + Sync>;

/// See the module docs.
pub(crate) struct Inbox<T> {
    /// Each value travels with the handle it had, for the `Finalized` event.
    tx: Sender<(Handle, T)>,
    rx: Receiver<(Handle, T)>,
    /// Set by senders after a send; cleared (swapped) by the draining thread.
    /// Written by read-modify-writes only (see the module docs).
    pending: AtomicBool,
    /// The home thread has exited: send nothing more.
    closed: AtomicBool,
    /// The idle → pending edge is open: the next sender notifies (see the
    /// module docs). Set at creation and by a drain that empties the inbox.
    armed: AtomicBool,
    /// A notifier or a waker is set: senders look at `armed` only then.
    listening: AtomicBool,
    /// Lent counts outstanding (see the module docs).
    lent: AtomicUsize,
    /// What to call on the edge, and what to wake. Locked only to set them
    /// and by the one sender that takes an edge; never while user code runs.
    listeners: Mutex<Listeners>,
}

/// See [`Inbox::listeners`].
#[derive(Default)]
struct Listeners {
    notifier: Option<Notifier>,
    waker: Option<Waker>,
}

/// What happened when a sender took the idle → pending edge.
pub(crate) enum Edge {
    /// Nobody to tell, or not this sender's edge.
    Quiet,
    /// The notifier ran (and the waker, if any, was woken).
    Notified,
    /// The notifier panicked (caught); the value stays queued.
    NotifierPanicked,
}

/// What became of a value sent home.
pub(crate) enum Sent<T> {
    /// In the inbox; the home thread will drop it.
    Queued,
    /// The home thread has exited; the caller must drop the value itself.
    Closed(T),
    /// The home thread exited while the value was being sent: the caller must
    /// drain the inbox itself (see the module docs).
    Orphaned,
}

impl<T> Inbox<T> {
    pub(crate) fn new() -> Self {
        let (tx, rx) = channel::unbounded();
        Inbox {
            tx,
            rx,
            pending: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            armed: AtomicBool::new(true),
            listening: AtomicBool::new(false),
            lent: AtomicUsize::new(0),
            listeners: Mutex::new(Listeners::default()),
        }
    }

    /// Sets (or, with `None`, clears) the notifier.
    pub(crate) fn set_notifier(&self, f: Option<Notifier>) {
        let mut l = self.listeners.lock();
        let old = std::mem::replace(&mut l.notifier, f);
        self.listening
            .store(l.notifier.is_some() || l.waker.is_some(), Ordering::SeqCst);
        drop(l);
        drop(old); // the user's closure, dropped with no lock held
    }

    /// Forgets the notifier and the waker (the home thread is exiting).
    pub(crate) fn clear_listeners(&self) {
        let old = std::mem::take(&mut *self.listeners.lock());
        self.listening.store(false, Ordering::SeqCst);
        drop(old);
    }

    /// Registers `waker` for the next edge; then whether a value is pending
    /// already (`true`: ready, do not wait), as the re-arm's RMW reads it
    /// (see the module docs).
    pub(crate) fn register_waker(&self, waker: &Waker) -> bool {
        {
            let mut l = self.listeners.lock();
            match &l.waker {
                Some(w) if w.will_wake(waker) => {}
                _ => l.waker = Some(waker.clone()),
            }
            self.listening.store(true, Ordering::SeqCst);
        }
        // Already pending (one relaxed load, as `has_pending`): ready,
        // without re-opening the edge.
        if self.pending.load(Ordering::Relaxed) {
            return true;
        }
        // Idle: nothing pending. The edge is reopened here too, not only by
        // a drain: a sender may have taken it for a value that the last
        // drain had already taken (it queued before that drain and took
        // the edge after the drain re-armed), and a waiting future, unlike
        // a woken event loop, does not drain before it sleeps again. The
        // re-arm's RMW is the handshake with the senders, for `listening`
        // (stored above) as for `armed`: a sender whose swap comes after it
        // sees both (and the waker, under the lock); one whose swap comes
        // before is seen by it (then: ready).
        self.rearm()
    }

    /// Takes the idle → pending edge if it is open: calls the notifier and
    /// wakes the waker (outside the lock). Called by a sender after `send`
    /// queued its value (and swapped `pending` on).
    #[inline]
    pub(crate) fn take_edge(&self) -> Edge {
        // Inline: nobody listening, or the edge taken already (every value
        // but a batch's first) costs two relaxed loads and no call.
        if !self.listening.load(Ordering::Relaxed) || !self.armed.load(Ordering::Relaxed) {
            return Edge::Quiet;
        }
        self.take_armed_edge()
    }

    /// [`Inbox::take_edge`] on an edge that looked armed: swaps it off
    /// (one sender wins) and notifies.
    #[cold]
    #[inline(never)]
    fn take_armed_edge(&self) -> Edge {
        if !self.armed.swap(false, Ordering::AcqRel) {
            return Edge::Quiet;
        }
        let (notifier, waker) = {
            let mut l = self.listeners.lock();
            (l.notifier.clone(), l.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        match notifier {
            None => Edge::Quiet,
            Some(f) if call_caught(|| f()) => Edge::NotifierPanicked,
            Some(_) => Edge::Notified,
        }
    }

    /// The drain emptied the inbox: re-opens the edge, then an RMW on
    /// `pending` paired with the senders' swap (see the module docs);
    /// returns `pending` as that RMW read it (`true`: a value came since the
    /// drain's swap, and `pending` stays set).
    fn rearm(&self) -> bool {
        self.armed.store(true, Ordering::Relaxed);
        // Release: a sender whose swap reads from this RMW (or from a later
        // RMW in its release sequence: every write to `pending` is an RMW)
        // sees `armed`. Acquire: a sender whose swap came first is seen here.
        self.pending.fetch_or(false, Ordering::AcqRel)
    }

    /// One relaxed load: is anything waiting?
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Values waiting (diagnostics).
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }

    /// Sends `value` home. Never blocks. After `Sent::Queued` the sender
    /// calls [`Inbox::take_edge`] (the home's notifier may be due).
    #[inline]
    pub(crate) fn send(&self, h: Handle, value: T) -> Sent<T> {
        if self.closed.load(Ordering::Acquire) {
            return Sent::Closed(value);
        }
        if let Err(e) = self.tx.send((h, value)) {
            // Unreachable: the inbox owns its receiver. Hand the value back.
            return Sent::Closed(channel_value(e).1);
        }
        // Release: the value is queued before `pending` says so; a drain or
        // `close` whose RMW reads from this one sees it. Acquire: if
        // `close`'s RMW (or a re-arm's) came first, this swap reads from its
        // release sequence and sees `closed` (`armed`). See the module docs.
        self.pending.swap(true, Ordering::AcqRel);
        if self.closed.load(Ordering::Relaxed) {
            return Sent::Orphaned;
        }
        Sent::Queued
    }

    /// Marks the inbox closed (home thread exiting). Drain after this: the
    /// drain takes every value whose sender did not see `closed`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // The handshake with the senders' swap (see the module docs). The
        // drain after this starts with a swap on `pending` that pairs the
        // same way; this RMW makes `close` hold on its own (that drain is
        // skipped if one is already running on this thread).
        self.pending.fetch_or(false, Ordering::AcqRel);
    }

    /// Takes up to `limit` values, handing each to `finalize`; returns how
    /// many. With `only_if_pending`, returns 0 at once unless `pending` is set.
    pub(crate) fn drain(
        &self,
        limit: usize,
        only_if_pending: bool,
        mut finalize: impl FnMut(Handle, T),
    ) -> usize {
        let was_pending = self.pending.swap(false, Ordering::AcqRel);
        if only_if_pending && !was_pending {
            return 0;
        }
        let mut n = 0;
        while n < limit {
            match self.rx.try_recv() {
                Ok((h, v)) => {
                    finalize(h, v);
                    n += 1;
                }
                Err(_) => {
                    self.rearm();
                    return n;
                }
            }
        }
        // Stopped at the limit: leave the rest flagged for the next call —
        // unless there is no rest (then this drain emptied the inbox).
        if self.rx.is_empty() {
            self.rearm();
        } else {
            // An RMW, not a store: a store by this thread would end the
            // release sequence of a sender's swap (see the module docs).
            self.pending.fetch_or(true, Ordering::AcqRel);
        }
        n
    }
}

/// Lent counts a home's table takes at once (see the module docs).
pub(crate) const LEND_BATCH: usize = 64;

impl<T> Inbox<T> {
    /// Lends `n` more counts of this inbox, for the caller's table's
    /// reserve (see the module docs).
    #[cold]
    #[inline(never)]
    pub(crate) fn lend(self: &Arc<Self>, n: usize) {
        if self.lent.fetch_add(n, Ordering::AcqRel) == 0 {
            // SAFETY: `self` is a live `Arc`: this is the strong count the
            // lent counts own from now until `give_back` brings `lent` to 0
            // — which happens after this: it gives back counts lent from
            // here on (every earlier one was given back already).
            unsafe { Arc::increment_strong_count(Arc::as_ptr(self)) };
        }
    }

    /// Gives back `n` lent counts of the inbox at `inbox`; the last one
    /// gives up the lent counts' strong count, which may free the inbox.
    ///
    /// # Safety
    ///
    /// The caller owns `n >= 1` lent counts of `inbox`, gives them up here,
    /// and uses `inbox` afterwards only through another count it holds.
    pub(crate) unsafe fn give_back(inbox: NonNull<Self>, n: usize) {
        // SAFETY: the caller's counts keep the inbox alive until here.
        let lent = unsafe { &inbox.as_ref().lent };
        // AcqRel: every RMW on `lent` is in the release sequence the last
        // give-back reads from, so every holder's use of the inbox happens
        // before the strong count goes (as in `Arc`'s own drop).
        if lent.fetch_sub(n, Ordering::AcqRel) == n {
            // SAFETY: `lent` reached 0: the strong count `lend` took for
            // the lent counts, given up once.
            unsafe { Arc::decrement_strong_count(inbox.as_ptr().cast_const()) };
        }
    }
}

/// One lent count of an inbox (see the module docs): the `home` of a slot
/// whose value was just taken out. Dropping it gives the count back.
pub(crate) struct HomeRef<T>(NonNull<Inbox<T>>);

impl<T> HomeRef<T> {
    /// # Safety
    ///
    /// `inbox` carries one lent count, which the caller gives to the
    /// `HomeRef`.
    #[inline]
    pub(crate) unsafe fn from_lent(inbox: NonNull<Inbox<T>>) -> Self {
        HomeRef(inbox)
    }

    /// The inbox's address (compared, never dereferenced).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const Inbox<T> {
        self.0.as_ptr()
    }

    /// The count, now the caller's to give back (with
    /// [`Inbox::give_back`]).
    #[inline]
    pub(crate) fn into_lent(self) -> NonNull<Inbox<T>> {
        let inbox = self.0;
        std::mem::forget(self);
        inbox
    }
}

impl<T> Deref for HomeRef<T> {
    type Target = Inbox<T>;

    #[inline]
    fn deref(&self) -> &Inbox<T> {
        // SAFETY: the lent count keeps the inbox alive while `self` lives.
        unsafe { self.0.as_ref() }
    }
}

impl<T> Drop for HomeRef<T> {
    fn drop(&mut self) {
        // SAFETY: `self` owns one lent count and is not used again.
        unsafe { Inbox::give_back(self.0, 1) };
    }
}

impl<T: Send> crate::tid::Leftovers for Inbox<T> {
    fn close_and_drop(&self) {
        self.close();
        self.drain(usize::MAX, false, |_, v| {
            drop_caught(v);
        });
    }

    fn has_values(&self) -> bool {
        self.len() > 0
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        // Normally empty (drained at thread exit / by `pump`). Whatever is left
        // when a registry is torn down is dropped here, never double-panicking.
        while let Ok(v) = self.rx.try_recv() {
            drop_caught(v);
        }
    }
}

#[cfg(not(loom))]
fn channel_value<T>(e: crossbeam_channel::SendError<T>) -> T {
    e.into_inner()
}

#[cfg(loom)]
fn channel_value<T>(e: T) -> T {
    e
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Lent counts keep the inbox alive after its table's own `Arc` is
    /// gone, and the last one given back frees it; a second batch lent
    /// after every count came back takes the strong count again.
    #[test]
    fn lent_counts_keep_the_inbox_alive_until_the_last_is_given_back() {
        let inbox = Arc::new(Inbox::<u32>::new());
        let weak = Arc::downgrade(&inbox);
        let p = NonNull::from(&*inbox);
        inbox.lend(2);
        assert_eq!(Arc::strong_count(&inbox), 2, "one for all lent counts");
        // SAFETY: one of the two counts lent above, each handed over once.
        let (a, b) = unsafe { (HomeRef::from_lent(p), HomeRef::from_lent(p)) };
        drop(a);
        assert_eq!(Arc::strong_count(&inbox), 2);
        let b = b.into_lent();
        // SAFETY: the last count lent, given back once.
        unsafe { Inbox::give_back(b, 1) };
        assert_eq!(Arc::strong_count(&inbox), 1, "none lent: none kept");
        inbox.lend(3);
        drop(inbox);
        assert!(weak.upgrade().is_some(), "the lent counts keep it");
        // SAFETY: the three counts of the second batch, given back once.
        unsafe { Inbox::give_back(p, 3) };
        assert!(weak.upgrade().is_none(), "the last count freed it");
    }
}
