//! Finalization: the last hold's value dropped here or sent to its home
//! thread's inbox (DESIGN §5), and the home draining its inbox.

use super::Inner;
use crate::inbox::{Edge, HomeRef, Sent};
use crate::limits::DRAIN_BATCH;
use crate::local::ThreadTable;
use crate::slot::Slot;
use crate::sync::{self, Ordering};
use crate::tid;
use crate::{Handle, Released};

impl<T: Send + Sync + 'static> Inner<T> {
    /// Drains a bounded batch of this thread's queued finalizations if any are
    /// pending: one relaxed load when nothing is.
    #[inline]
    pub(crate) fn maybe_drain(&self, table: &ThreadTable<T>) {
        if table.inbox.has_pending() {
            self.drain(table, DRAIN_BATCH, true);
        }
    }

    #[cold]
    pub(super) fn drain(
        &self,
        table: &ThreadTable<T>,
        limit: usize,
        only_if_pending: bool,
    ) -> usize {
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

    /// The last hold of `h` was just dropped by the calling thread.
    #[cold]
    pub(super) fn finalize(
        &self,
        slot: &Slot<T>,
        h: Handle,
        table: Option<&ThreadTable<T>>,
    ) -> Released {
        // SAFETY: our `drop_hold` returned true: the slot is ours alone.
        let (value, home) = unsafe { slot.take() };
        // `Some` iff the value must travel to another thread's inbox.
        let home = match (home, table) {
            (Some(home), Some(t)) if t.is_home(&home) => {
                t.keep_home(home);
                None
            }
            (Some(home), _) if self.config.home_finalization => Some(home),
            (Some(home), t) => {
                self.return_home(home, t);
                None
            }
            (None, _) => None,
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
        self.deaths.died(h);
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
        let released = match sent {
            Sent::Queued => {
                self.diag.emit(|| crate::Event::QueuedHome {
                    handle: h,
                    thread: thread_of(table),
                });
                // Right after queueing, never under a lock: the home's
                // notifier, on its idle → pending edge (DESIGN §8).
                if let Edge::NotifierPanicked = home.take_edge() {
                    self.diag.count_hook_panic();
                }
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
        };
        // Last: the count kept the inbox alive while we used it.
        self.return_home(home, table);
        released
    }

    /// Gives back the lent count of another thread's inbox: kept by the
    /// calling thread's table (`table`, if it has one) to return with the
    /// next ones of that home, else at once (see [`crate::inbox`]).
    #[inline]
    fn return_home(&self, home: HomeRef<T>, table: Option<&ThreadTable<T>>) {
        match table {
            Some(t) => t.keep_returned(home),
            None => drop(home),
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
        let panicked = crate::caught::drop_caught(value);
        if panicked {
            self.drop_panics.fetch_add(1, Ordering::Relaxed);
        }
        self.diag.emit(|| crate::Event::Finalized {
            handle: h,
            thread: thread_of(on),
            panicked,
        });
    }
}

/// The thread an event happened on: `table`'s, else the calling thread.
fn thread_of<T>(table: Option<&ThreadTable<T>>) -> sync::ThreadId {
    table.map_or_else(|| sync::current_thread().0, |t| t.thread)
}
