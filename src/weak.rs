//! A reference that does not keep its object alive (DESIGN §9).

use std::fmt;
use std::sync::{self, Arc};

use crate::inner::Inner;
use crate::proxy::Parts;
use crate::{Error, Handle, Proxy, Registry};

/// A weak reference: finds its object again while it is alive, without
/// keeping it alive.
///
/// Made by [`Proxy::downgrade`] or [`Registry::downgrade`] — only by a
/// thread with access to the object (rule 5: it holds it, is its home, or
/// the object is pinned). `Clone + Send + Sync`; it counts nothing, so an
/// object with only weak references left is finalized as usual.
/// [`upgrade`](Weak::upgrade) works on **any** thread: a weak reference is a
/// capability, like a [`Transfer`](crate::Transfer) that does not keep its
/// object alive, and there is no raw `u64` form (a raw id could be forged).
///
/// `upgrade` gives the calling thread a new reference while the object is
/// live, and `None` once its last reference is gone — from then on, even
/// while the value still waits in its home thread's inbox to be dropped.
/// An upgrade racing the last release either wins (the object stays alive
/// with the new reference) or returns `None`: it never hands out a
/// finalized or queued object, never resurrects one, and never the object
/// a reused slot holds now (the generation tells them apart).
///
/// A weak reference keeps nothing alive — not the object, and not the
/// registry either: once every `Registry`, `Proxy` and `Transfer` of it is
/// gone (and with them every object), `upgrade` returns `None`.
/// [`Registry::snapshot`] and [`Registry::leak_report`] do not list weak
/// references, as they hold nothing.
///
/// # A proxy cache
///
/// The classic use: a worker keeps one proxy per remote object while it
/// lives, and asks the home thread for the object again once it is gone.
///
/// ```
/// use std::collections::HashMap;
/// use tether::{Handle, Proxy, Registry, Transfer, Weak};
///
/// /// A worker's cache: remote id -> weak reference.
/// struct Cache<T: Send + Sync + 'static> {
///     weak: HashMap<Handle, Weak<T>>,
/// }
///
/// impl<T: Send + Sync + 'static> Cache<T> {
///     /// The object as a proxy: from the cache while it lives, otherwise
///     /// re-claimed through the home thread (here `ask_home`, which sends
///     /// the request and returns the transfer the home answers with).
///     fn get(&mut self, h: Handle, ask_home: impl FnOnce(Handle) -> Transfer<T>) -> Proxy<T> {
///         if let Some(p) = self.weak.get(&h).and_then(Weak::upgrade) {
///             return p;
///         }
///         let p = ask_home(h).claim().expect("the home answers with a live object");
///         self.weak.insert(h, p.downgrade());
///         p
///     }
/// }
///
/// let reg = Registry::new();
/// let h = reg.insert(String::from("remote object"))?; // the home keeps a reference
/// let (answers, rx) = std::sync::mpsc::channel();
/// answers.send(reg.proxy(h)?.transfer()).unwrap();     // the home's answer to one request
/// let w = std::thread::spawn(move || {
///     let mut cache = Cache { weak: HashMap::new() };
///     let p = cache.get(h, |_| rx.recv().unwrap());     // asks the home
///     let q = cache.get(h, |_| unreachable!());         // found again: no request
///     assert_eq!(*q, "remote object");
///     cache.weak.remove(&h).unwrap()                    // the proxies go, the weak stays
/// })
/// .join()
/// .unwrap();
/// assert!(w.upgrade().is_some());                       // the home still holds it
/// reg.release(h)?;                                      // the last reference
/// assert!(w.upgrade().is_none());                       // dead: never resurrected
/// # Ok::<(), tether::Error>(())
/// ```
pub struct Weak<T: Send + Sync + 'static> {
    /// Does not keep the registry alive: a registry dropped with objects
    /// still held (say, leaked explicit references) finalizes them then,
    /// whatever weak references remain.
    inner: sync::Weak<Inner<T>>,
    handle: Handle,
}

impl<T: Send + Sync + 'static> Weak<T> {
    /// A weak reference to `handle`, made after the access check.
    pub(crate) fn new(inner: &Arc<Inner<T>>, handle: Handle) -> Self {
        Weak {
            inner: Arc::downgrade(inner),
            handle,
        }
    }

    /// The object's handle (whether or not it is still alive).
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// The registry the object lives (or lived) in, while anything keeps
    /// that registry alive (a `Registry`, a `Proxy` or a `Transfer` of it).
    pub fn registry(&self) -> Option<Registry<T>> {
        self.inner.upgrade().map(Registry::from_inner)
    }

    /// A new reference of the calling thread, as a proxy, while the object
    /// is live; `None` once its last reference is gone (see the type's
    /// docs), and wherever the thread cannot take a reference at all
    /// ([`try_upgrade`](Weak::try_upgrade) says why).
    ///
    /// An upgrade that gives the thread its first reference to the object
    /// is a [`FirstReference`](crate::Event::FirstReference) event.
    #[inline]
    pub fn upgrade(&self) -> Option<Proxy<T>> {
        self.try_upgrade().ok()
    }

    /// [`upgrade`](Weak::upgrade), with the reason it failed.
    ///
    /// # Errors
    ///
    /// [`Error::Stale`] once the object's last reference is gone (the normal
    /// "dead" answer); [`Error::Overflow`] at the thread's count limit;
    /// [`Error::Closed`] for a thread without a reference once the registry
    /// is closed; [`Error::ThreadExited`] during the thread's exit;
    /// [`Error::Forked`] in a forked child.
    #[inline]
    pub fn try_upgrade(&self) -> Result<Proxy<T>, Error> {
        // The registry gone means every object of it is gone too.
        let inner = self.inner.upgrade().ok_or(Error::Stale(self.handle))?;
        let parts = Parts::of(inner.upgrade(self.handle)?);
        // The proxy takes over this `Arc` (one count, as for a claim).
        Ok(Proxy::adopt(inner, parts))
    }

    /// Whether the object is live at this moment — a hint, for pruning a
    /// cache of dead entries: it may die right after a `true`. A `false` is
    /// final: a dead object never comes back.
    pub fn is_live(&self) -> bool {
        self.inner
            .upgrade()
            .is_some_and(|inner| inner.is_live(self.handle))
    }
}

impl<T: Send + Sync + 'static> Clone for Weak<T> {
    /// Another weak reference to the same object (counts nothing).
    fn clone(&self) -> Self {
        Weak {
            inner: sync::Weak::clone(&self.inner),
            handle: self.handle,
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Weak")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}
