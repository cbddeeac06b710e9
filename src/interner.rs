//! Interning without check-then-create races: one object per key, created
//! once (single flight), forgotten when it dies.
//!
//! # Protocol
//!
//! The key map (`K` → `Ready(handle)` or `Pending(flight)`) is guarded by one
//! mutex that is never held while user code runs (`init`, `Drop` of `T`,
//! `K`'s `Hash`, `Clone` and `Drop`), `K`'s `Eq` excepted: it runs under the
//! lock to find the caller's key, before that call changes anything.
//!
//! * **Ready**: the caller takes a reference with the interner's capability
//!   (knowing the key): `try_hold` on the slot succeeds while the object
//!   lives and refuses a dead one, so the result is never a dead handle. A
//!   dead entry is removed and the call retries — creating a fresh object.
//! * **Pending**: another caller is running `init`. The waiter registers under
//!   the map lock and sleeps on the flight's condition variable.
//! * **Absent**: the caller installs a flight, runs `init` with no lock held,
//!   inserts the value, and publishes under the map lock: `Ready(handle)` in
//!   the map and, for each registered waiter, one in-flight transfer hold
//!   that the waiter claims as its own reference — so every waiter gets the
//!   same object even if the creator releases it at once. A failed (or
//!   panicking) `init` removes the entry and hands its error to the waiters:
//!   the next call retries, nothing is poisoned.
//!
//! Objects die through the registry as usual; the registry tells every
//! interner of the handle (after the slot is freed), and the entry naming
//! exactly that handle is removed.
//!
//! # User code in the key
//!
//! `K`'s `Hash`, `Eq`, `Clone` and `Drop` may panic at any call (invariant
//! 10). A key is hashed once per call, before the lock; the map never hashes
//! a key itself, and the interner's own steps — publishing a flight,
//! removing a failed one, forgetting a dead object — find their entry by a
//! stored id, running no key code (see `interner/keys.rs`). So a panic in
//! `Hash`, `Eq` or `Clone` happens only before the call that ran it has
//! changed anything (or, for the cache's clone after a success, after it has
//! given its new reference back), and reaches that call's caller; no flight
//! is left running, no waiter stranded, no lock held. Keys the interner lets
//! go of inside a release or a thread's exit are dropped with their `Drop`'s
//! panic caught and counted ([`Interner::key_panics`]), so `release()` never
//! unwinds and a dying object still goes home.
//!
//! # The per-thread cache
//!
//! Each thread keeps a small direct-mapped cache per interner (64 entries,
//! `key → handle`, filled by its own successful calls), and a one-entry
//! thread-local pointer to the cache it used last, so a thread interning in
//! one interner finds its cache with a load and a compare. A hit is used only
//! if the thread still holds that handle, which the registry's own fast path
//! checks: while the thread holds the object it is alive, so the key still
//! maps to it (a key's entry changes only when its object dies). A thread
//! interning a key it already holds therefore pays a thread-local lookup, a
//! cheap unkeyed hash, one key comparison and a retain — no lock, no shared
//! write. Collisions only evict (the cache is bounded), so a hostile key set
//! costs lookups, never memory. An entry (a clone of its key) lives only
//! while its thread holds the object: the thread's last reference removes
//! it, so no cache keeps a key alive after its object died.

use std::borrow::Borrow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

mod cache;
mod flight;
mod forget;
mod keys;

use keys::{drop_keys, ByKey, Place, Prehashed, Probe, Stored};

use crate::inner::deaths::Deaths;
use crate::inner::{Inner, Kind};
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering};
use crate::{Error, Handle, Proxy, Registry};

/// Why [`Interner::intern`] failed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InternError<E> {
    /// `init` failed (on this thread, or on the thread this call waited
    /// for: every waiter gets the same error, shared). The key is not
    /// poisoned: the next call runs `init` again.
    #[error("the object's init failed: {0}")]
    Init(Arc<E>),
    /// `init` panicked on the thread this call waited for (the panic itself
    /// goes to that thread's caller).
    #[error("the object's init panicked on another thread; call intern again to retry")]
    InitPanicked,
    /// `init` of this key asked for the same key on the same thread: it
    /// would wait for itself forever.
    #[error("init of a key interned the same key again on the same thread; break the cycle")]
    Reentrant,
    /// The registry refused (e.g. [`Error::Full`], [`Error::Closed`],
    /// [`Error::Overflow`]); a value made by `init` was dropped.
    #[error(transparent)]
    Registry(Error),
}

impl<E> Clone for InternError<E> {
    fn clone(&self) -> Self {
        match self {
            InternError::Init(e) => InternError::Init(Arc::clone(e)),
            InternError::InitPanicked => InternError::InitPanicked,
            InternError::Reentrant => InternError::Reentrant,
            InternError::Registry(e) => InternError::Registry(*e),
        }
    }
}

impl<E> From<Error> for InternError<E> {
    fn from(e: Error) -> Self {
        InternError::Registry(e)
    }
}

/// One object per key, created once however many threads ask at the same
/// time, and forgotten when it dies.
///
/// [`intern`](Interner::intern) returns a handle with one new reference of
/// the calling thread — any thread: knowing the key is the capability, as a
/// claimed transfer is. The first caller for a key runs `init` (with no lock
/// held; it may use the registry); concurrent callers for the same key wait
/// and each gets its own reference to the same object. If `init` fails,
/// every waiter gets the error and the next call retries. When the object is
/// finalized (every holder let go), its key is forgotten: the next `intern`
/// creates a fresh object. A call racing the last release either retains
/// the old object before it dies or creates a new one — never a dead handle.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use tether::{Interner, Registry};
///
/// let reg: Registry<String> = Registry::new();
/// let dirs: Interner<String, String, std::io::Error> = Interner::new(&reg);
/// let created = AtomicUsize::new(0);
/// let make = || {
///     created.fetch_add(1, Ordering::Relaxed);
///     Ok::<_, std::io::Error>("/tmp/cache".to_owned()) // e.g. create the directory
/// };
///
/// let a = dirs.intern("cache", make)?;
/// let b = dirs.intern("cache", make)?;     // same object, one more reference
/// assert_eq!(a, b);
/// assert_eq!(created.load(Ordering::Relaxed), 1);
/// assert_eq!(reg.count(a)?, 2);
///
/// reg.release(a)?;
/// reg.release(b)?;                          // finalized: the key is forgotten
/// assert_eq!(dirs.lookup("cache"), None);
/// let c = dirs.intern("cache", make)?;     // a fresh object
/// assert_ne!(c, a);
/// assert_eq!(created.load(Ordering::Relaxed), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `K`'s `Eq` runs under the interner's lock and must not call the
/// interner. `K`'s `Hash`, `Eq`, `Clone` and `Drop` may panic: the panic
/// reaches the caller whose call ran it, before that call changed anything,
/// or is caught and counted ([`key_panics`](Interner::key_panics)) where it
/// would break a release; no waiter, key or count is lost (see the module
/// docs). `Interner` is `Clone` (clones share one key map).
pub struct Interner<K, T: Send + Sync + 'static, E = Infallible> {
    shared: Arc<Shared<K, T, E>>,
}

struct Shared<K, T: Send + Sync + 'static, E> {
    inner: Arc<Inner<T>>,
    /// Keys this interner's per-thread caches.
    serial: u64,
    /// Hashes each call's key once, before the lock (see `keys.rs`).
    hasher: RandomState,
    /// Panics of `K`'s `Drop` caught by this interner and its caches.
    key_panics: Arc<AtomicU64>,
    map: Mutex<Map<K, E>>,
    /// Deaths told while the map lock was taken (perhaps by the very thread
    /// that is told, from a key's `Eq`): forgotten at the next intern.
    dead: Mutex<Vec<Handle>>,
}

struct Map<K, E> {
    /// Found by a caller's key (its `Eq`) or by a place (no user code).
    by_key: HashMap<Stored<K>, Entry<E>, BuildHasherDefault<Prehashed>>,
    /// Where each live object's key is stored.
    by_handle: HashMap<Handle, Place>,
    /// The id of the next stored key (ids start at 1: 0 is a lookup by key).
    next_id: u64,
}

enum Entry<E> {
    Ready(Handle),
    Pending(Arc<Flight<E>>),
}

/// One running `init`, with the callers waiting for it.
struct Flight<E> {
    /// The creating thread's registry id (to refuse a re-entrant intern).
    creator: Option<u32>,
    state: Mutex<FlightState<E>>,
    done: Condvar,
}

enum FlightState<E> {
    Running { waiters: u32 },
    Done(Result<Handle, InternError<E>>),
}

impl<K, T, E> Interner<K, T, E>
where
    K: Hash + Eq + Send + Sync + 'static,
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// An interner storing its objects in `registry`.
    pub fn new(registry: &Registry<T>) -> Self {
        let shared = Arc::new(Shared {
            inner: Arc::clone(&registry.inner),
            serial: crate::sync::next_interner_serial(),
            hasher: RandomState::new(),
            key_panics: Arc::new(AtomicU64::new(0)),
            dead: Mutex::new(Vec::new()),
            map: Mutex::new(Map {
                by_key: HashMap::default(),
                by_handle: HashMap::new(),
                next_id: 1,
            }),
        });
        let forget: Arc<dyn Deaths> = shared.clone();
        registry
            .inner
            .deaths
            .add(Arc::downgrade(&forget), cache::forget_cached);
        Interner { shared }
    }

    /// The object for `key`, with one new reference of the calling thread;
    /// `init` makes it if there is none (see the type docs).
    ///
    /// A thread that already holds the key's object is served by its
    /// per-thread cache: a thread-local lookup, one key comparison and a
    /// retain of a held handle — no lock (see the module docs).
    ///
    /// # Errors
    ///
    /// [`InternError::Init`] if `init` failed (here or on the thread this call
    /// waited for), [`InternError::InitPanicked`], [`InternError::Reentrant`],
    /// or [`InternError::Registry`] (`Full`, `Closed` for a new object or a
    /// new holder after [`Registry::close`], `Overflow`, `Forked`).
    #[inline]
    pub fn intern<Q>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Handle, InternError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let hash = cache::quick_hash(key);
        let cached = cache::lookup::<K, Q>(self.shared.serial, key, hash);
        if let Some(h) = cached {
            if self.shared.inner.retain_held(h) {
                return Ok(h); // the thread holds it: alive, still the key's
            }
        }
        self.intern_miss(key, hash, cached, init)
    }

    /// `intern` when the thread's cache cannot serve it.
    #[inline(never)]
    fn intern_miss<Q>(
        &self,
        key: &Q,
        hash: u64,
        cached: Option<Handle>,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Handle, InternError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let result = self.intern_slow(key, init);
        if let Ok(h) = result {
            if cached != Some(h) {
                // `K`'s clone may panic: give the new reference back first.
                match catch_unwind(AssertUnwindSafe(|| key.to_owned())) {
                    Ok(owned) => {
                        cache::remember(
                            self.shared.serial,
                            &self.shared.key_panics,
                            owned,
                            hash,
                            h,
                        );
                    }
                    Err(payload) => {
                        let _ = self.shared.inner.release(h);
                        resume_unwind(payload);
                    }
                }
            }
        }
        result
    }

    /// `intern` through the shared map.
    fn intern_slow<Q>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Handle, InternError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let inner = &self.shared.inner;
        self.shared.forget_deferred();
        // `K`'s `Hash`: once, with no lock held.
        let probe = ByKey {
            hash: self.shared.hasher.hash_one(key),
            key,
        };
        let probe: &dyn Probe<Q> = &probe;
        loop {
            let map = self.shared.map.lock();
            match map.by_key.get(probe) {
                Some(Entry::Ready(h)) => {
                    let h = *h;
                    drop(map);
                    let taken = if inner.is_closed() {
                        // Closed: only threads that hold it (or may by the
                        // access rule) get more references.
                        inner.acquire(h, Kind::Ref).map_err(|e| match e {
                            Error::NotHeld(_) => Error::Closed,
                            e => e,
                        })
                    } else {
                        inner.acquire_granted(h, Kind::Ref)
                    };
                    match taken {
                        Ok(_) => return Ok(h),
                        // Dying: forget it and create a fresh one.
                        Err(Error::Stale(_)) => self.shared.died(h),
                        Err(e) => return Err(InternError::Registry(e)),
                    }
                }
                Some(Entry::Pending(flight)) => {
                    let flight = Arc::clone(flight);
                    if flight.creator.is_some() && flight.creator == crate::tid::current() {
                        return Err(InternError::Reentrant);
                    }
                    if let FlightState::Running { waiters } = &mut *flight.state.lock() {
                        *waiters += 1;
                    }
                    drop(map);
                    return self.wait(&flight);
                }
                None => {
                    drop(map);
                    if inner.is_closed() {
                        return Err(InternError::Registry(Error::Closed)); // before running init
                    }
                    // `K`'s clone and drop run outside the lock.
                    let owned = key.to_owned();
                    let mut map = self.shared.map.lock();
                    if map.by_key.contains_key(probe) {
                        drop(map);
                        continue; // somebody else got there first
                    }
                    let flight = Arc::new(Flight {
                        creator: crate::tid::current(),
                        state: Mutex::new(FlightState::Running { waiters: 0 }),
                        done: Condvar::new(),
                    });
                    let place = Place {
                        hash: probe.place().hash,
                        id: map.next_id,
                    };
                    map.next_id += 1;
                    let stored = Stored { place, key: owned };
                    // From here to the publish no key code runs: the map
                    // compares ids and hashes the stored hash.
                    map.by_key
                        .insert(stored, Entry::Pending(Arc::clone(&flight)));
                    drop(map);
                    return self.create(place, &flight, init);
                }
            }
        }
    }

    /// As [`intern`](Interner::intern), returning a [`Proxy`].
    ///
    /// # Errors
    ///
    /// As [`intern`](Interner::intern).
    pub fn intern_proxy<Q>(
        &self,
        key: &Q,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<Proxy<T>, InternError<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let h = self.intern(key, init)?;
        let inner = &self.shared.inner;
        let proxy = inner
            .acquire(h, Kind::Root)
            .map(|held| Proxy::new(inner, held));
        // The explicit reference was only a step: the proxy holds the object
        // (or, on error, the reference is given back).
        let _ = inner.release(h);
        proxy.map_err(InternError::Registry)
    }

    /// The handle the key currently maps to, if any — taking no reference
    /// (it may die at any moment; use [`intern`](Interner::intern) to hold it).
    pub fn lookup<Q>(&self, key: &Q) -> Option<Handle>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let probe = ByKey {
            hash: self.shared.hasher.hash_one(key),
            key,
        };
        let probe: &dyn Probe<Q> = &probe;
        match self.shared.map.lock().by_key.get(probe) {
            Some(Entry::Ready(h)) => Some(*h),
            _ => None,
        }
    }

    /// Keys that map to an object (keys being created excluded).
    pub fn len(&self) -> usize {
        self.shared.map.lock().by_handle.len()
    }

    /// `true` if no key maps to an object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Panics of `K`'s `Drop` that this interner caught: keys it dropped
    /// inside a release, a thread's exit or a flight's cleanup (a dead
    /// object's key, a cache's copy, a failed `init`'s key), where unwinding
    /// would have broken the call. The key is gone all the same.
    pub fn key_panics(&self) -> u64 {
        self.shared.key_panics.load(Ordering::Relaxed)
    }

    /// Callers registered as waiters of a running `init` (another thread's):
    /// each gets that `init`'s outcome. For tests that must know a caller
    /// waits on a flight before letting its `init` finish; not a stable API.
    #[doc(hidden)]
    pub fn waiting(&self) -> usize {
        let map = self.shared.map.lock();
        map.by_key
            .values()
            .map(|entry| match entry {
                Entry::Pending(flight) => match &*flight.state.lock() {
                    FlightState::Running { waiters } => *waiters as usize,
                    FlightState::Done(_) => 0,
                },
                Entry::Ready(_) => 0,
            })
            .sum()
    }

    /// The registry the objects live in.
    pub fn registry(&self) -> Registry<T> {
        Registry::from_inner(Arc::clone(&self.shared.inner))
    }
}

impl<K, T: Send + Sync + 'static, E> Drop for Shared<K, T, E> {
    /// Drops the calling thread's cache of this interner. Other threads'
    /// cache entries go when they let go of the object (or exit).
    fn drop(&mut self) {
        cache::drop_cache(self.serial, &self.key_panics);
    }
}

impl<K, T: Send + Sync + 'static, E> Clone for Interner<K, T, E> {
    fn clone(&self) -> Self {
        Interner {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, T: Send + Sync + 'static, E> fmt::Debug for Interner<K, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.shared.map.lock();
        f.debug_struct("Interner")
            .field("keys", &map.by_handle.len())
            .field(
                "creating",
                &map.by_key.len().saturating_sub(map.by_handle.len()),
            )
            .finish_non_exhaustive()
    }
}
