//! The public registry type: the explicit (raw handle) layer. Waking a
//! sleeping home thread is in `wake.rs`, closing and shutting down in
//! `shutdown.rs`.

mod shutdown;
mod wake;

use std::fmt;
use std::sync::Arc;

use crate::inner::{Inner, Kind, Missed};
use crate::{
    Builder, Error, Event, Guard, Handle, InsertError, LeakReport, Proxy, Snapshot, Transfer, Weak,
};

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Released {
    /// The object is still alive; the calling thread has `n` references
    /// left (explicit ones plus its live proxies and guards). Other threads,
    /// pins or transfers may keep it alive when `n == 0`.
    Held(u32),
    /// That was the last reference: the value was dropped now, on this thread.
    Finalized,
    /// That was the last reference, on a thread that is not the object's
    /// home: the value was sent to its home thread, which drops it at its next
    /// registry call or [`Registry::pump`].
    Queued,
}

/// A shared table of objects with per-thread reference counts.
///
/// `Registry` is a cheap handle to one shared table: `clone` it to give other
/// threads access. See the [crate docs](crate) for the rules.
///
/// The table lives as long as any `Registry` clone, [`Proxy`] or
/// [`Transfer`] of it. When the last one is dropped, objects still held by
/// explicit references, pins or unclaimed raw tokens can never be released
/// any more: they are dropped then, on that thread (panics caught). Keep a
/// registry alive for as long as its objects matter.
///
/// ```
/// use tether::{Registry, Released};
///
/// let reg = Registry::new();
/// let h = reg.insert(String::from("object"))?;     // this thread: 1 reference
/// assert_eq!(reg.retain(h)?, 2);
/// assert_eq!(&*reg.get(h)?, "object");
/// assert_eq!(reg.release(h)?, Released::Held(1));
/// assert_eq!(reg.release(h)?, Released::Finalized); // dropped here
/// assert!(reg.get(h).is_err());                      // never resolves again
/// # Ok::<(), tether::Error>(())
/// ```
pub struct Registry<T: Send + Sync + 'static> {
    pub(crate) inner: Arc<Inner<T>>,
}

impl<T: Send + Sync + 'static> Registry<T> {
    /// A registry with the default settings (see [`Builder`]).
    pub fn new() -> Self {
        Builder::new().build()
    }

    /// A [`Builder`] to set capacity, thread-exit policy and finalization.
    pub fn builder() -> Builder<T> {
        Builder::new()
    }

    /// Stores `value`. The calling thread becomes its *home* thread (where it
    /// is finalized) and holds one reference.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] at capacity, [`Error::Forked`] in a forked child,
    /// [`Error::ThreadExited`] from a late thread-local destructor. The
    /// [`InsertError`] hands the value back.
    #[track_caller]
    pub fn insert(&self, value: T) -> Result<Handle, InsertError<T>> {
        self.inner.insert(value, Kind::Ref).map(|held| held.h)
    }

    /// Stores `value` and returns a [`Proxy`] holding this thread's reference.
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let p = reg.insert_proxy(vec![1, 2, 3]).unwrap();
    /// assert_eq!(p.len(), 3);
    /// drop(p); // last reference: finalized here
    /// assert!(reg.is_empty());
    /// ```
    ///
    /// # Errors
    ///
    /// As [`insert`](Registry::insert).
    #[track_caller]
    pub fn insert_proxy(&self, value: T) -> Result<Proxy<T>, InsertError<T>> {
        let held = self.inner.insert(value, Kind::Root)?;
        Ok(Proxy::new(&self.inner, held))
    }

    /// Adds one reference of the calling thread; returns its count after.
    ///
    /// Allowed if the thread already holds the object, is its home thread, or
    /// the object is pinned (invariant 5). Retaining a handle the thread
    /// already holds touches only the thread's own counter.
    ///
    /// ```
    /// # use tether::{Error, Registry};
    /// let reg = Registry::new();
    /// let h = reg.insert(1)?;
    /// assert_eq!(reg.retain(h)?, 2);
    /// let reg2 = reg.clone();
    /// std::thread::spawn(move || {
    ///     // A thread that holds nothing cannot take a reference by id.
    ///     assert_eq!(reg2.retain(h), Err(Error::NotHeld(h)));
    /// }).join().unwrap();
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] for any other thread (a guessed id gives no access),
    /// [`Error::Stale`] / [`Error::Invalid`] / [`Error::ForeignRegistry`] for
    /// ids that do not name a live object of this registry,
    /// [`Error::Overflow`] at the count limit (nothing changes).
    #[inline]
    #[track_caller]
    pub fn retain(&self, h: Handle) -> Result<u32, Error> {
        match self.inner.retain(h) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed("retain", e)),
        }
    }

    /// Gives up one explicit reference of the calling thread.
    ///
    /// When it was the last reference of the last holder, the object is
    /// finalized: here if this is its home thread (or home finalization is
    /// off, or the home thread has exited), otherwise queued to its home.
    ///
    /// ```
    /// # use tether::{Error, Registry, Released};
    /// let reg = Registry::new();
    /// let h = reg.insert("x")?;
    /// assert_eq!(reg.release(h)?, Released::Finalized);
    /// assert_eq!(reg.release(h), Err(Error::Stale(h))); // no double release
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] if the thread holds no explicit reference (counts are
    /// per thread: one thread can never release another's; proxies and guards
    /// release themselves on drop). Nothing changes on error.
    #[inline]
    #[track_caller]
    pub fn release(&self, h: Handle) -> Result<Released, Error> {
        match self.inner.release(h) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed("release", e)),
        }
    }

    /// Borrows the object. The [`Guard`] counts as a reference of this thread
    /// while it lives, so the object cannot be finalized under it; it holds
    /// no lock and blocks nobody.
    ///
    /// # Errors
    ///
    /// As [`retain`](Registry::retain).
    #[inline]
    #[track_caller]
    pub fn get(&self, h: Handle) -> Result<Guard<'_, T>, Error> {
        match self.inner.add_fast(h, Kind::Root) {
            Ok(held) => Ok(Guard::new(&self.inner, held)),
            Err(missed) => self.get_cold(h, missed),
        }
    }

    /// The calling thread's count for `h`: explicit references plus live
    /// proxies and guards; `Ok(0)` for a live object it does not hold.
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let h = reg.insert(0u8)?;
    /// let p = reg.proxy(h)?;
    /// assert_eq!(reg.count(h)?, 2); // one explicit reference + one proxy
    /// let reg2 = reg.clone();
    /// std::thread::spawn(move || assert_eq!(reg2.count(h), Ok(0))).join().unwrap();
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] and friends for ids that do not name a live object.
    #[track_caller]
    pub fn count(&self, h: Handle) -> Result<u32, Error> {
        match self.inner.count(h) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed("count", e)),
        }
    }

    /// Every thread holding `h`, with its count (exited threads whose
    /// references were kept by [`ThreadExit::Leak`](crate::ThreadExit::Leak)
    /// included). Pins and transfers are in the [`Snapshot`].
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let h = reg.insert('x')?;
    /// reg.retain(h)?;
    /// assert_eq!(reg.holders(h)?, vec![(std::thread::current().id(), 2)]);
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] and friends for ids that do not name a live object.
    #[track_caller]
    pub fn holders(&self, h: Handle) -> Result<Vec<(std::thread::ThreadId, u32)>, Error> {
        let holders = match self.inner.holders(h) {
            Ok(v) => v,
            Err(e) => return Err(self.failed("holders", e)),
        };
        Ok(holders.into_iter().map(|(t, n, _)| (t, n)).collect())
    }

    /// Pins the object: the registry itself holds a reference, so the object
    /// lives until [`unpin`](Registry::unpin) even if every thread lets go,
    /// and every thread may `get`/`retain` it. Pins are counted.
    ///
    /// ```
    /// # use tether::{Registry, Released};
    /// let reg = Registry::new();
    /// let h = reg.insert("globalThis")?;
    /// reg.pin(h)?;
    /// assert_eq!(reg.release(h)?, Released::Held(0)); // the pin keeps it alive
    /// let reg2 = reg.clone();
    /// std::thread::spawn(move || {
    ///     assert_eq!(*reg2.get(h).unwrap(), "globalThis"); // any thread may use it
    /// }).join().unwrap();
    /// reg.unpin(h)?;                                    // finalized now
    /// assert!(reg.is_empty());
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The access rule of [`retain`](Registry::retain).
    #[track_caller]
    pub fn pin(&self, h: Handle) -> Result<(), Error> {
        match self.inner.pin(h) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed("pin", e)),
        }
    }

    /// Removes one pin. If nothing else holds the object it is finalized
    /// (by this thread's rules, as a release).
    ///
    /// # Errors
    ///
    /// [`Error::NotPinned`] if the object has no pin; the access rule of
    /// [`retain`](Registry::retain).
    #[track_caller]
    pub fn unpin(&self, h: Handle) -> Result<(), Error> {
        match self.inner.unpin(h) {
            Ok(v) => Ok(v),
            Err(e) => Err(self.failed("unpin", e)),
        }
    }

    /// Moves one of the calling thread's explicit references into a
    /// [`Transfer`] that another thread can [`claim`](Registry::claim). The
    /// object stays alive while the transfer is in flight, even if this
    /// thread releases everything.
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let h = reg.insert(42)?;
    /// let t = reg.transfer(h)?;            // our only reference is now in flight
    /// let reg2 = reg.clone();
    /// std::thread::spawn(move || {
    ///     let h = reg2.claim(t).unwrap();  // the worker holds it now
    ///     assert_eq!(*reg2.get(h).unwrap(), 42);
    ///     reg2.release(h).unwrap();        // last one: queued to the home thread
    /// }).join().unwrap();
    /// assert_eq!(reg.pump(), 1);           // finalized here, on its home thread
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] if the thread has no explicit reference to give.
    #[track_caller]
    pub fn transfer(&self, h: Handle) -> Result<Transfer<T>, Error> {
        if let Err(e) = self.inner.transfer_out(h) {
            return Err(self.failed("transfer", e));
        }
        Ok(Transfer::new(Arc::clone(&self.inner), h))
    }

    /// Claims a transfer on the receiving thread: +1 explicit reference.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignRegistry`] if `t` belongs to another registry,
    /// [`Error::Overflow`] at the count limit, [`Error::Closed`] after
    /// [`close`](Registry::close). On error the transfer is dropped, which
    /// releases its reference normally: nothing leaks.
    #[inline]
    #[track_caller]
    pub fn claim(&self, t: Transfer<T>) -> Result<Handle, Error> {
        if !Arc::ptr_eq(&t.inner, &self.inner) {
            return Err(self.failed("claim", Error::ForeignRegistry(t.handle())));
        }
        if let Err(e) = self.inner.claim_in(t.handle(), Kind::Ref) {
            return Err(self.failed("claim", e));
        }
        Ok(t.consume())
    }

    /// Claims a transfer from its raw form ([`Transfer::into_raw`]).
    ///
    /// ```
    /// # use tether::{Error, Registry};
    /// let reg = Registry::new();
    /// let h = reg.insert(5)?;
    /// let raw: u64 = reg.transfer(h)?.into_raw(); // e.g. a JS number
    /// let reg2 = reg.clone();
    /// std::thread::spawn(move || {
    ///     let h = reg2.claim_raw(raw).unwrap();
    ///     assert_eq!(reg2.claim_raw(raw), Err(Error::TransferClaimed));
    ///     reg2.release(h).unwrap();
    /// }).join().unwrap();
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::TransferClaimed`] for a token already claimed,
    /// [`Error::Invalid`] for a value this registry never issued.
    #[track_caller]
    pub fn claim_raw(&self, raw: u64) -> Result<Handle, Error> {
        let t = match self.inner.raw_in(raw) {
            Ok(t) => t,
            Err(e) => return Err(self.failed("claim_raw", e)),
        };
        self.claim(Transfer::new(Arc::clone(&self.inner), t))
    }

    /// A [`Proxy`] holding one more reference of this thread.
    ///
    /// # Errors
    ///
    /// As [`retain`](Registry::retain).
    #[inline]
    #[track_caller]
    pub fn proxy(&self, h: Handle) -> Result<Proxy<T>, Error> {
        match self.inner.add_fast(h, Kind::Root) {
            Ok(held) => Ok(Proxy::new(&self.inner, held)),
            Err(missed) => self.proxy_cold(h, missed),
        }
    }

    /// A weak reference to `h`'s object (DESIGN §9): it finds the object
    /// again, on any thread, while it lives, and keeps nothing alive. Only a
    /// thread with access may make one (rule 5: it holds the object, is its
    /// home thread, or the object is pinned).
    ///
    /// ```
    /// # use tether::{Error, Registry};
    /// let reg = Registry::new();
    /// let h = reg.insert(String::from("a"))?;
    /// let w = reg.downgrade(h)?;
    /// let worker = {
    ///     let reg = reg.clone();
    ///     std::thread::spawn(move || {
    ///         // a stranger may not make one from a guessed id...
    ///         assert_eq!(reg.downgrade(h).unwrap_err(), Error::NotHeld(h));
    ///         // ...but may upgrade one it was given
    ///         w.upgrade().map(|p| p.len())
    ///     })
    /// };
    /// assert_eq!(worker.join().unwrap(), Some(1));
    /// # Ok::<(), tether::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotHeld`] for a thread without access; for a bad or dead id,
    /// what it is (`Stale`, `Invalid`, `ForeignRegistry`); `Forked`,
    /// `ThreadExited`.
    #[track_caller]
    pub fn downgrade(&self, h: Handle) -> Result<Weak<T>, Error> {
        match self.inner.check_access(h) {
            Ok(()) => Ok(Weak::new(&self.inner, h)),
            Err(e) => Err(self.failed("downgrade", e)),
        }
    }

    /// Runs every finalization queued for the calling (home) thread; returns
    /// how many. Inside a drain already running on this thread (a value's
    /// `Drop` run by `pump` or by an ordinary call's bounded drain) it
    /// returns 0 without draining: the running drain drops the rest once
    /// that `Drop` returns, and draining from within would nest without
    /// bound. Calls that take or give up a reference (`insert`, `retain`,
    /// `release`, `get`, `proxy`, `pin`, `unpin`, `claim`, `claim_raw`) on the
    /// home thread also drain a bounded batch when something is pending (one
    /// relaxed load otherwise); diagnostics and `transfer` do not.
    pub fn pump(&self) -> usize {
        self.inner.pump()
    }

    /// A point-in-time view of every live object, for diagnostics.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(&self.inner)
    }

    /// Number of live objects (values queued for finalization are not live).
    ///
    /// Exact when no other thread is inserting or releasing at the same
    /// moment; while they are, a value between two of their operations
    /// (never above the capacity). It takes the registry's table lock and
    /// adds up one counter pair per thread: meant for diagnostics and
    /// tests, not for a hot loop.
    ///
    /// In a child process after `fork()`: 0 (nothing can be read there).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// `true` if no object is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The capacity this registry was built with.
    pub fn capacity(&self) -> usize {
        self.inner.capacity as usize
    }

    /// Every live object with its home, holders and counts, pins, transfers,
    /// age and backtraces (where kept): the answer to "who holds this, and
    /// since where?". See [`LeakReport`].
    pub fn leak_report(&self) -> LeakReport {
        LeakReport::take(&self.inner)
    }

    /// Panics caught in the event hook so far (they never reach the registry).
    pub fn hook_panics(&self) -> u64 {
        self.inner.diag.hook_panics()
    }

    /// `get` past its fast path.
    #[inline(never)]
    #[track_caller]
    fn get_cold<'a>(&'a self, h: Handle, missed: Missed<'a, T>) -> Result<Guard<'a, T>, Error> {
        let held = match self.inner.acquire_missed(h, Kind::Root, missed) {
            Ok(held) => held,
            Err(e) => return Err(self.failed("get", e)),
        };
        Ok(Guard::new(&self.inner, held))
    }

    /// `proxy` past its fast path.
    #[inline(never)]
    #[track_caller]
    fn proxy_cold<'a>(&'a self, h: Handle, missed: Missed<'a, T>) -> Result<Proxy<T>, Error> {
        let held = match self.inner.acquire_missed(h, Kind::Root, missed) {
            Ok(held) => held,
            Err(e) => return Err(self.failed("proxy", e)),
        };
        Ok(Proxy::new(&self.inner, held))
    }

    /// Applies the misuse policy to a failed call.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn failed(&self, operation: &'static str, e: Error) -> Error {
        self.inner.diag.failed(operation, e)
    }

    pub(crate) fn from_inner(inner: Arc<Inner<T>>) -> Self {
        inner.registry_cloned();
        Registry { inner }
    }
}

impl<T: Send + Sync + 'static> Clone for Registry<T> {
    /// Another handle to the same table.
    fn clone(&self) -> Self {
        Registry::from_inner(Arc::clone(&self.inner))
    }
}

impl<T: Send + Sync + 'static> Drop for Registry<T> {
    /// The last `Registry` dropped while objects are still held sends the
    /// [`LeakReport`] to the event hook / `tracing` as [`Event::Leaked`]
    /// (never to stderr uninvited) — once per registry, even if a proxy's
    /// [`Proxy::registry`] later lends out and drops a `Registry` again.
    fn drop(&mut self) {
        if !self.inner.registry_dropped()
            || crate::fork::forked()
            || self.inner.len() == 0
            || !self.inner.diag.listening()
            || !self.inner.diag.first_leak_report()
        {
            return;
        }
        let report = LeakReport::take(&self.inner);
        if !report.is_empty() {
            self.inner.diag.deliver(&Event::Leaked {
                report,
                thread: crate::sync::current_thread().0,
            });
        }
    }
}

impl<T: Send + Sync + 'static> Default for Registry<T> {
    fn default() -> Self {
        Registry::new()
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Registry<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}
