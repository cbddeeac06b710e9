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
//! When the home thread exits, it drains its inbox, sets `closed`, and drains
//! again. A sender checks `closed` after sending. Both sides put a SeqCst
//! fence between their write and their read (Dekker), so either the home's
//! last drain sees the value, or the sender sees `closed` and drains the value
//! itself: a value is never stranded in an inbox nobody reads.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::channel::{self, Receiver, Sender};
use crate::sync::{fence, AtomicBool, Ordering};
use crate::Handle;

/// See the module docs.
pub(crate) struct Inbox<T> {
    /// Each value travels with the handle it had, for the `Finalized` event.
    tx: Sender<(Handle, T)>,
    rx: Receiver<(Handle, T)>,
    /// Set by senders after a send; cleared (swapped) by the draining thread.
    pending: AtomicBool,
    /// The home thread has exited: send nothing more.
    closed: AtomicBool,
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
        }
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

    /// Sends `value` home. Never blocks.
    pub(crate) fn send(&self, h: Handle, value: T) -> Sent<T> {
        if self.closed.load(Ordering::Acquire) {
            return Sent::Closed(value);
        }
        if let Err(e) = self.tx.send((h, value)) {
            // Unreachable: the inbox owns its receiver. Hand the value back.
            return Sent::Closed(channel_value(e).1);
        }
        self.pending.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.closed.load(Ordering::Relaxed) {
            return Sent::Orphaned;
        }
        Sent::Queued
    }

    /// Marks the inbox closed (home thread exiting). Drain after this.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
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
                Err(_) => return n,
            }
        }
        // Stopped at the limit: leave the rest flagged for the next call.
        self.pending.store(true, Ordering::Release);
        n
    }
}

impl<T: Send> crate::tid::Leftovers for Inbox<T> {
    fn close_and_drop(&self) {
        self.close();
        self.drain(usize::MAX, false, |_, v| {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(v)));
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
            let _ = catch_unwind(AssertUnwindSafe(move || drop(v)));
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
