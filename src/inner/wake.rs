//! Waking a sleeping home thread (DESIGN §8): its notifier, its pending
//! flag, a bounded drain, and the `pending()` future's waker. The edge
//! protocol itself is in [`crate::inbox`].

use std::task::Waker;

use super::Inner;
use crate::inbox::Notifier;
use crate::Error;

impl<T: Send + Sync + 'static> Inner<T> {
    /// Sets (`Some`) or clears the calling thread's notifier, registering
    /// the thread first if it has no table yet.
    pub(crate) fn set_notify(&self, f: Option<Notifier>) -> Result<(), Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let table = match (&f, self.my_table()) {
            (_, Some(t)) => t,
            (None, None) => return Ok(()), // nothing to clear
            (Some(_), None) => self.table()?,
        };
        table.inbox.set_notifier(f);
        Ok(())
    }

    /// Whether the calling thread's inbox has work: one relaxed load (after
    /// finding the thread's table), drains nothing.
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.my_table().is_some_and(|t| t.inbox.has_pending())
    }

    /// Drops at most `max` queued values of the calling thread; how many.
    pub(crate) fn pump_at_most(&self, max: usize) -> usize {
        if crate::fork::forked() {
            return 0;
        }
        crate::tid::drop_leftovers();
        match self.my_table() {
            Some(t) => self.drain(t, max, false),
            None => 0,
        }
    }

    /// For `pending()`: `true` if the calling thread's inbox has work; else
    /// `waker` is woken on its next idle → pending edge. A thread that
    /// cannot have a table (exited, forked) is told `true`: waiting would
    /// never end.
    pub(crate) fn poll_pending(&self, waker: &Waker) -> bool {
        if crate::fork::forked() {
            return true;
        }
        match self.table() {
            Ok(t) => t.inbox.register_waker(waker),
            Err(_) => true,
        }
    }
}
