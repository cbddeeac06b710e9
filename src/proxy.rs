//! The RAII layer: one reference of the current thread as a value.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;

use crate::inner::{Held, Inner, Kind};
use crate::local::{ThreadTable, ROOT_ONE};
use crate::slot::Slot;
use crate::sync::{AtomicU64, Ordering};
use crate::{Error, Handle, Registry, Transfer, Weak};

/// One reference of the current thread, as a value: `Clone` is +1, `Drop` is
/// -1, `Deref` gives the object.
///
/// A proxy is `!Send`: it is *this thread's* reference. To hand an object
/// to another thread, turn a proxy into a [`Transfer`] with
/// [`transfer`](Proxy::transfer) and [`claim`](Transfer::claim) it there.
///
/// Cloning and dropping touch only this thread's own counter (no atomic
/// read-modify-write, no shared cache line) unless the count crosses zero.
/// A proxy's reference cannot be given up with
/// [`Registry::release`] — only by dropping the proxy — so `&*proxy` is
/// always valid.
///
/// ```
/// # use tether::Registry;
/// let reg = Registry::new();
/// let p = reg.insert_proxy(String::from("shared")).unwrap();
/// let q = p.clone();                       // +1 for this thread
/// assert_eq!(reg.count(p.handle())?, 2);
/// drop(q);                                 // -1
/// assert_eq!(p.len(), 6);                  // Deref<Target = String>
/// # Ok::<(), tether::Error>(())
/// ```
pub struct Proxy<T: Send + Sync + 'static> {
    /// Keeps the registry alive (and names this thread's table); an `Rc` so
    /// cloning a proxy costs no atomic read-modify-write (an `Arc` would).
    home: Rc<ProxyHome<T>>,
    slot: NonNull<Slot<T>>,
    entry: NonNull<AtomicU64>,
    handle: Handle,
    /// `!Send`, `!Sync`: the entry may be written only by its own thread.
    _thread_bound: PhantomData<*const ()>,
}

/// A hold's addresses without its borrow of the registry, so that the
/// caller can move its `Arc` of the registry into the proxy
/// ([`Proxy::adopt`]).
pub(crate) struct Parts<T> {
    table: NonNull<ThreadTable<T>>,
    slot: NonNull<Slot<T>>,
    entry: NonNull<AtomicU64>,
    handle: Handle,
}

impl<T> Parts<T> {
    /// `held`'s addresses (the hold itself is the proxy-to-be's root).
    pub(crate) fn of(held: Held<'_, T>) -> Self {
        Parts {
            table: NonNull::from(held.table),
            slot: NonNull::from(held.slot),
            entry: NonNull::from(held.entry),
            handle: held.h,
        }
    }
}

/// What all proxies of one family share: the registry and this thread's table.
struct ProxyHome<T> {
    inner: Arc<Inner<T>>,
    table: NonNull<ThreadTable<T>>,
    /// The registry's count limit in entry form (see [`Inner::has_room`]),
    /// beside the `Rc`'s count that `clone` writes anyway.
    count_limit: u64,
}

impl<T: Send + Sync + 'static> Proxy<T> {
    /// Wraps one root the caller has just added to `held`'s entry.
    pub(crate) fn new(inner: &Arc<Inner<T>>, held: Held<'_, T>) -> Self {
        Self::adopt(Arc::clone(inner), Parts::of(held))
    }

    /// Wraps one root the caller has just added to an entry, taking over
    /// the caller's `Arc` of the registry (no second count).
    pub(crate) fn adopt(inner: Arc<Inner<T>>, parts: Parts<T>) -> Self {
        let count_limit = inner.count_limit();
        Proxy {
            home: Rc::new(ProxyHome {
                inner,
                table: parts.table,
                count_limit,
            }),
            slot: parts.slot,
            entry: parts.entry,
            handle: parts.handle,
            _thread_bound: PhantomData,
        }
    }

    // SAFETY (for the three accessors below): the slot and the entry live in
    // pages that never move and are freed only when the registry is dropped,
    // which `self.home` prevents. The table is owned by the registry's table
    // list until its thread exits, and an exiting thread whose table still
    // has roots (this proxy is one) keeps it in the list. The proxy is
    // `!Send`, so these are used on the entry's own thread only.
    fn slot(&self) -> &Slot<T> {
        // SAFETY: see above.
        unsafe { self.slot.as_ref() }
    }

    fn table(&self) -> &ThreadTable<T> {
        // SAFETY: see above.
        unsafe { self.home.table.as_ref() }
    }

    fn entry(&self) -> &AtomicU64 {
        // SAFETY: see above.
        unsafe { self.entry.as_ref() }
    }

    /// The object's handle.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The registry the object lives in.
    pub fn registry(&self) -> Registry<T> {
        Registry::from_inner(Arc::clone(&self.home.inner))
    }

    /// A weak reference to the object: finds it again (on any thread) while
    /// it lives, without keeping it alive. See [`Weak`].
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let p = reg.insert_proxy(5u8).unwrap();
    /// let w = p.downgrade();
    /// assert_eq!(w.upgrade().map(|q| *q), Some(5));
    /// drop(p);                                  // the last reference
    /// assert!(w.upgrade().is_none());
    /// ```
    pub fn downgrade(&self) -> Weak<T> {
        Weak::new(&self.home.inner, self.handle)
    }

    /// Like `clone`, but returns [`Error::Overflow`] instead of panicking when
    /// the thread's count is at its limit
    /// ([`Builder::max_count`](crate::Builder::max_count)).
    ///
    /// # Errors
    ///
    /// [`Error::Overflow`] at the limit (the count is unchanged),
    /// [`Error::Forked`] in a forked child.
    pub fn try_clone(&self) -> Result<Proxy<T>, Error> {
        if crate::fork::forked() {
            return Err(Error::Forked);
        }
        let e = self.entry().load(Ordering::Relaxed);
        if e >= self.home.count_limit {
            return Err(Error::Overflow(self.handle));
        }
        Ok(self.add_root(e))
    }

    /// `Drop`'s rare path: this thread's last reference to the object is
    /// gone. Out of line, so the common drop stays a load and a store.
    #[cold]
    #[inline(never)]
    fn last_root_gone(&self) {
        if self
            .home
            .inner
            .root_gone(self.slot(), self.handle, self.table())
        {
            // SAFETY: the table pointer is this proxy family's, and no
            // reference into it is held any more.
            unsafe { self.home.inner.late_hold_gone(self.home.table.as_ptr()) }
        }
    }

    #[inline]
    fn add_root(&self, e: u64) -> Proxy<T> {
        self.entry().store(e + ROOT_ONE, Ordering::Relaxed);
        Proxy {
            home: Rc::clone(&self.home),
            slot: self.slot,
            entry: self.entry,
            handle: self.handle,
            _thread_bound: PhantomData,
        }
    }

    /// Sends this proxy's reference in flight: the object stays alive until
    /// the [`Transfer`] is claimed (as a proxy on the receiving thread with
    /// [`Transfer::claim`]) or dropped.
    ///
    /// ```
    /// # use tether::Registry;
    /// let reg = Registry::new();
    /// let t = reg.insert_proxy(7u32).unwrap().transfer();
    /// let n = std::thread::spawn(move || *t.claim().unwrap()).join().unwrap();
    /// assert_eq!(n, 7);
    /// ```
    ///
    /// # Aborts
    ///
    /// Like `Arc::clone`, aborts the process if the object's hold count would
    /// pass 2^30 - 1 (only reachable by leaking a billion transfers).
    pub fn transfer(self) -> Transfer<T> {
        let e = self.entry().load(Ordering::Relaxed);
        let held = Held {
            slot: self.slot(),
            table: self.table(),
            entry: self.entry(),
            h: self.handle,
            e,
        };
        let moved = self.home.inner.hand_off(held, Kind::Root);
        match moved {
            Ok(false) => {}
            // SAFETY: the table pointer is this proxy family's, and no
            // reference into it is held any more.
            Ok(true) => unsafe { self.home.inner.late_hold_gone(self.home.table.as_ptr()) },
            // The object is live (we hold it): only overflow can fail.
            Err(_) => std::process::abort(),
        }
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so reading `home` out moves it
        // exactly once; the proxy's root was just moved into the transfer,
        // so skipping `Proxy::drop` is what we want.
        let home = unsafe { std::ptr::read(&this.home) };
        Transfer::new(Arc::clone(&home.inner), this.handle)
    }
}

impl<T: Send + Sync + 'static> Clone for Proxy<T> {
    /// +1 for this thread: a plain increment of its own counter.
    ///
    /// # Panics
    ///
    /// If this thread's count for the object (references, proxies and
    /// guards) is at its limit ([`Builder::max_count`](crate::Builder::max_count),
    /// 2^21 - 1 by default): the same rule as `retain`, `proxy` and `get`,
    /// which return [`Error::Overflow`] there. The count is unchanged and
    /// nothing is lost. Use [`try_clone`](Proxy::try_clone) to get the
    /// error instead.
    #[inline]
    #[track_caller]
    fn clone(&self) -> Self {
        let e = self.entry().load(Ordering::Relaxed);
        if e >= self.home.count_limit {
            overflow(self.handle);
        }
        self.add_root(e)
    }
}

/// `Proxy::clone` past the count limit.
#[cold]
#[inline(never)]
#[track_caller]
fn overflow(h: Handle) -> ! {
    panic!(
        "tether: Proxy::clone of {h}: {}; use Proxy::try_clone to get the error instead",
        Error::Overflow(h)
    )
}

impl<T: Send + Sync + 'static> Drop for Proxy<T> {
    /// -1 for this thread; the last reference finalizes (or queues) the object.
    #[inline]
    fn drop(&mut self) {
        if Inner::<T>::release_root(self.entry()) {
            self.last_root_gone();
        }
    }
}

impl<T: Send + Sync + 'static> Deref for Proxy<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this proxy is a root of this thread, so the thread holds
        // the object: it is live, its value initialised, and it is only ever
        // shared (`&T`) until the last hold is dropped.
        unsafe { &*self.slot().value_ptr() }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Proxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}
