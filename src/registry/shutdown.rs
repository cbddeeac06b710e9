//! Two-phase shutdown: `close`, then `shutdown` waits (never hangs) for
//! the holders to let go and the homes to drop what was sent to them.

use std::time::{Duration, Instant};

use super::Registry;
use crate::LeakReport;

impl<T: Send + Sync + 'static> Registry<T> {
    /// Closes the registry, phase one of a two-phase shutdown: from now on
    /// `insert`, `insert_proxy`, `claim`, `claim_raw`, `Transfer::claim` and
    /// interning a new object return [`Error::Closed`](crate::Error::Closed). Threads that hold
    /// objects keep working: `get`, `retain`, `release`, proxies and `pump`
    /// work as before, so holders can finish and let go. A claim refused
    /// this way drops its transfer, releasing the transfer's reference.
    /// Closing cannot be undone.
    ///
    /// ```
    /// # use tether::{Error, Registry};
    /// let reg = Registry::new();
    /// let h = reg.insert(1)?;
    /// reg.close();
    /// assert_eq!(reg.insert(2).unwrap_err().error(), Error::Closed);
    /// assert_eq!(*reg.get(h)?, 1);         // holders keep working
    /// reg.release(h)?;
    /// # Ok::<(), tether::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close();
    }

    /// Whether [`close`](Registry::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Two-phase shutdown that never hangs: [`close`](Registry::close)s the
    /// registry, then pumps this thread's finalization queue while waiting
    /// (sleeping between checks, up to 10 ms) for the holders to let go.
    /// `Ok(())` means every object was finalized: none is live, none is
    /// still being inserted (an insert racing `close` either completes
    /// before `Ok` is possible or fails with [`Error::Closed`](crate::Error::Closed)), and every
    /// value released to a home thread was dropped there. At `timeout`,
    /// `Err` with the [`LeakReport`] of whatever is still held — and it is
    /// still held: nothing is freed under a holder — and of the values still
    /// queued, with their home threads ([`LeakReport::pending_at`]). Call it
    /// on the home thread of the objects (usually the main thread), after
    /// releasing its own references: another home thread's queue is
    /// dropped only when that thread next calls the registry or `pump`s.
    ///
    /// Called from a value's `Drop` that a drain of this thread's queue is
    /// running (inside `pump`), while more values wait in that queue, it
    /// returns `Err` at once: they can only be dropped after that `Drop`
    /// returns.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let h = reg.insert("stuck")?;
    /// let t = reg.transfer(h)?;
    /// let reg2 = reg.clone();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let worker = std::thread::spawn(move || {
    ///     let h = reg2.claim(t).unwrap();
    ///     rx.recv().unwrap();          // a worker that does not let go in time
    ///     reg2.release(h).unwrap();
    /// });
    /// # while reg.snapshot().object(h).unwrap().transfers != 0 { std::thread::yield_now(); }
    /// let report = reg.shutdown(Duration::from_millis(20)).unwrap_err();
    /// assert_eq!(report.objects[0].handle, h);
    /// tx.send(()).unwrap();
    /// worker.join().unwrap();
    /// assert!(reg.shutdown(Duration::from_secs(5)).is_ok());
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The leak report, if objects are still live at the timeout. In a child
    /// process after `fork()`, at once, a report with
    /// [`LeakReport::forked`] set.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), LeakReport> {
        self.close();
        if crate::fork::forked() {
            // Nothing can be waited for in a child: fail fast.
            return Err(self.leak_report());
        }
        let deadline = Instant::now() + timeout;
        let mut nap = Duration::from_micros(50);
        loop {
            self.pump();
            if self.inner.quiescent() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline || self.inner.stuck_in_own_drain() {
                // At the timeout; or called from a value's `Drop` run by a
                // drain of this thread's inbox, which holds more values: they
                // are dropped only after that `Drop` returns, so waiting
                // would only reach the timeout.
                return Err(self.leak_report());
            }
            crate::sync::nap(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }
}
