//! Waking a sleeping home thread (DESIGN §8): its notifier, its pending
//! flag, a bounded drain and the `pending()` future.

use super::Registry;
use crate::{Error, Pending};

impl<T: Send + Sync + 'static> Registry<T> {
    /// Sets the calling (home) thread's **notifier**: how this thread wants
    /// to hear that values were queued for it while it sleeps in its event
    /// loop (post to the loop, write an eventfd, send on a channel). One
    /// per registry and thread; setting it again replaces it. A thread with
    /// no table yet is registered.
    ///
    /// It is called on the releasing thread, right after that thread
    /// queued a value here, never under a registry lock, and **at most
    /// once per idle → pending edge**: after a notify, no further notify
    /// until this thread has drained its queue empty (any drain: `pump`,
    /// `pump_at_most` when it empties the queue, the bounded drain of an
    /// ordinary call). **No wake-up is lost**: a value queued after this
    /// thread's last drain either triggers a notify or is seen by its next
    /// [`has_pending`](Registry::has_pending) / [`pending`](Registry::pending).
    /// So an event loop that pumps, then checks `has_pending()`, then
    /// sleeps until notified never sleeps with work queued. (A woken loop
    /// must pump before it sleeps again — the drain is what reopens the
    /// edge; a notify can come for a value an earlier drain already took.
    /// `has_pending()` may likewise say `true` for such a value: then the
    /// pump finds nothing.) A panicking
    /// notifier is caught and counted in [`hook_panics`](Registry::hook_panics);
    /// the value stays queued. Thread exit clears it.
    ///
    /// ```
    /// # use tether::Registry;
    /// use std::sync::mpsc;
    /// let reg: Registry<String> = Registry::new();
    /// let (wake, woken) = mpsc::channel::<()>();       // this thread's event loop
    /// reg.set_notify(move || { let _ = wake.send(()); })?;
    /// let h = reg.insert("x".to_owned())?;
    /// let t = reg.transfer(h)?;
    /// let r2 = reg.clone();
    /// std::thread::spawn(move || { let h = r2.claim(t).unwrap(); r2.release(h).unwrap(); });
    /// woken.recv().unwrap();                           // the loop sleeps until woken
    /// assert_eq!(reg.pump(), 1);
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Forked`] in a forked child, [`Error::ThreadExited`] from a
    /// late thread-local destructor.
    pub fn set_notify(&self, f: impl Fn() + Send + Sync + 'static) -> Result<(), Error> {
        self.inner.set_notify(Some(std::sync::Arc::new(f)))
    }

    /// Clears the calling thread's notifier (see
    /// [`set_notify`](Registry::set_notify)).
    pub fn clear_notify(&self) {
        let _ = self.inner.set_notify(None);
    }

    /// Whether values wait in the calling thread's queue: one relaxed load
    /// (after the thread's table is found); drains nothing.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.inner.has_pending()
    }

    /// Runs at most `max` of the finalizations queued for the calling
    /// thread; returns how many. When it empties the queue it re-arms the
    /// notifier (see [`set_notify`](Registry::set_notify)). Nested inside a
    /// drain on this thread it returns 0, as [`pump`](Registry::pump) does.
    pub fn pump_at_most(&self, max: usize) -> usize {
        self.inner.pump_at_most(max)
    }

    /// A future that is ready once the calling thread's queue has work (it
    /// drains nothing). See [`Pending`].
    pub fn pending(&self) -> Pending<'_, T> {
        Pending::new(self)
    }
}
