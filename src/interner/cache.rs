//! The per-thread interner caches (see the parent module's docs).
//!
//! Each thread has a list of caches, one per interner it used lately (at
//! most [`CACHES_PER_THREAD`]; the oldest idle one is evicted), and a *hot*
//! one-entry pointer to the cache it used last: `(interner serial, cache)`.
//! A thread interning keys of one interner in a loop finds its cache with a
//! thread-local load and one compare — no list walk, no `dyn Any` downcast.
//!
//! A cache's slots are in a `RefCell`: a lookup holds a shared borrow while
//! the key's `Eq` (user code) runs, so a re-entrant call that would change
//! or drop that cache finds it busy and leaves it alone.
//!
//! Keys a cache lets go of are dropped after its borrows end, with their
//! `Drop`'s panic caught and counted in the interner's `key_panics`: the
//! thread's last reference drops them inside `release()` (or its exit),
//! which must not unwind.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::drop_keys;
use crate::sync::AtomicU64;
use crate::Handle;

/// Entries of one thread's cache for one interner.
const CACHE_SLOTS: usize = 64;
/// Interners a thread caches at once.
const CACHES_PER_THREAD: usize = 8;

crate::sync::thread_locals! {
    /// The calling thread's caches: `(interner serial, Cache<K>)`.
    static CACHES: RefCell<Caches> = RefCell::new(Caches { list: Vec::new() });
    /// The cache this thread used last: `(interner serial, *const Cache<K>)`;
    /// serial 0 (never an interner's) when none. No destructor, so it stays
    /// readable while other thread-locals are destroyed.
    static HOT: Cell<(u64, *const ())> = Cell::new((0, std::ptr::null()));
}

/// One thread's caches.
struct Caches {
    list: Vec<(u64, Box<dyn AnyCache>)>,
}

impl Caches {
    /// Takes the cache at `i` out of the list, first clearing `HOT` if it
    /// points to it (the one place a cache leaves the list while the thread
    /// runs; the caller drops it after the borrows end).
    fn remove(&mut self, i: usize) -> Box<dyn AnyCache> {
        let (serial, cache) = self.list.remove(i);
        if hot().0 == serial {
            set_hot(0, std::ptr::null());
        }
        cache
    }
}

impl Drop for Caches {
    /// The thread is exiting: `HOT` must not outlive the boxes it points
    /// into, and the cached keys' `Drop` is user code: each key is dropped
    /// with its panic caught and counted (a panic escaping a thread-local
    /// destructor aborts the process).
    fn drop(&mut self) {
        set_hot(0, std::ptr::null());
        for (_, cache) in self.list.drain(..) {
            for key in cache.take_all() {
                drop_keys(key, cache.key_panics());
            }
        }
    }
}

/// A cache entry: `(hash, key, handle)`.
type Entry<K> = Option<(u64, K, Handle)>;

/// One thread's direct-mapped cache for one interner.
struct Cache<K> {
    slots: RefCell<Box<[Entry<K>]>>,
    /// The interner's count of panics in `K`'s `Drop`.
    key_panics: Arc<AtomicU64>,
}

impl<K> Cache<K> {
    fn new(key_panics: &Arc<AtomicU64>) -> Self {
        Cache {
            slots: RefCell::new((0..CACHE_SLOTS).map(|_| None).collect()),
            key_panics: Arc::clone(key_panics),
        }
    }

    /// The handle cached for `key`, if any (`None` while the cache is busy).
    #[inline]
    fn get<Q>(&self, key: &Q, hash: u64) -> Option<Handle>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let slots = self.slots.try_borrow().ok()?;
        let (h, k, handle) = slots[slot_of(hash)].as_ref()?;
        (*h == hash && k.borrow() == key).then_some(*handle)
    }
}

/// A `Cache<K>` of any `K`.
trait AnyCache {
    fn as_any(&self) -> &dyn Any;
    /// A lookup is running in it (its key's `Eq` may be on the stack).
    fn busy(&self) -> bool;
    /// Removes the entries naming `h`; returns their keys to be dropped.
    fn forget(&self, h: Handle) -> Vec<Box<dyn Any>>;
    /// Where panics of its keys' `Drop` are counted.
    fn key_panics(&self) -> &Arc<AtomicU64>;
    /// Removes every entry; returns their keys to be dropped.
    fn take_all(&self) -> Vec<Box<dyn Any>>;
}

impl<K: 'static> AnyCache for Cache<K> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn busy(&self) -> bool {
        self.slots.try_borrow_mut().is_err()
    }

    fn forget(&self, h: Handle) -> Vec<Box<dyn Any>> {
        let mut keys: Vec<Box<dyn Any>> = Vec::new();
        let Ok(mut slots) = self.slots.try_borrow_mut() else {
            return keys; // busy: the entry stays (validated on use anyway)
        };
        for slot in slots.iter_mut() {
            if slot.as_ref().is_some_and(|(_, _, x)| *x == h) {
                if let Some((_, k, _)) = slot.take() {
                    keys.push(Box::new(k));
                }
            }
        }
        keys
    }

    fn key_panics(&self) -> &Arc<AtomicU64> {
        &self.key_panics
    }

    fn take_all(&self) -> Vec<Box<dyn Any>> {
        let Ok(mut slots) = self.slots.try_borrow_mut() else {
            return Vec::new();
        };
        slots
            .iter_mut()
            .filter_map(|slot| slot.take().map(|(_, k, _)| Box::new(k) as Box<dyn Any>))
            .collect()
    }
}

#[inline]
fn hot() -> (u64, *const ()) {
    HOT.try_with(Cell::get).unwrap_or((0, std::ptr::null()))
}

#[inline]
fn set_hot(serial: u64, cache: *const ()) {
    let _ = HOT.try_with(|c| c.set((serial, cache)));
}

/// Makes `cache` (interner `serial`'s, in this thread's list) the hot one.
fn make_hot<K>(serial: u64, cache: &Cache<K>) {
    let p: *const Cache<K> = cache;
    set_hot(serial, p.cast());
}

/// The calling thread's cached handle for `key` in interner `serial`.
///
/// `K` must be the key type of the interner with that serial.
#[inline]
pub(super) fn lookup<K, Q>(serial: u64, key: &Q, hash: u64) -> Option<Handle>
where
    K: std::borrow::Borrow<Q> + 'static,
    Q: Eq + ?Sized,
{
    let (s, p) = hot();
    if s != serial {
        return lookup_cold::<K, Q>(serial, key, hash);
    }
    // SAFETY: `HOT` holds a serial only together with a pointer to that
    // interner's `Cache<K>` in a box owned by this thread's `CACHES` list
    // (`make_hot`, from `lookup_cold` and `remember`). It is cleared before
    // the box can be freed: `Caches::remove` (eviction, `drop_cache`) clears
    // it when it takes that box out of the list, and `Caches::drop` before
    // the list's boxes are dropped at thread exit. A box is only removed while
    // its cache is not busy, i.e. while no `Cache::get` borrows it, so the
    // reference below is never left dangling while user code (the key's
    // `Eq`) runs under it. Serials are never reused, and the box under a
    // serial is always created by that interner, with its own `K` — the `K`
    // its methods pass here.
    let cache = unsafe { &*p.cast::<Cache<K>>() };
    cache.get(key, hash)
}

/// `lookup` when this interner's cache is not the hot one.
#[cold]
fn lookup_cold<K, Q>(serial: u64, key: &Q, hash: u64) -> Option<Handle>
where
    K: std::borrow::Borrow<Q> + 'static,
    Q: Eq + ?Sized,
{
    let p = CACHES
        .try_with(|caches| {
            let caches = caches.try_borrow().ok()?;
            let (_, cache) = caches.list.iter().find(|(s, _)| *s == serial)?;
            let cache = cache.as_any().downcast_ref::<Cache<K>>()?;
            make_hot(serial, cache);
            Some(std::ptr::from_ref(cache))
        })
        .ok()
        .flatten()?;
    // SAFETY: as in `lookup`: `p` was just made the hot cache; the box lives
    // until it is removed, which needs it idle (and then clears `HOT`).
    unsafe { &*p }.get(key, hash)
}

/// Caches `key → handle` in interner `serial`'s cache of the calling thread
/// and makes it the hot one. `owned` is the key (cloned by the caller,
/// outside any borrow); whatever the cache lets go of is dropped here, after
/// the borrows end (a panicking key `Drop` counted in `key_panics`: the
/// caller holds a new reference it must not lose).
pub(super) fn remember<K: 'static>(
    serial: u64,
    key_panics: &Arc<AtomicU64>,
    owned: K,
    hash: u64,
    handle: Handle,
) {
    let dropped = CACHES.try_with(|caches| {
        let mut caches = caches.try_borrow_mut().ok()?;
        let mut evicted: Option<Box<dyn AnyCache>> = None;
        let i = match caches.list.iter().position(|(s, _)| *s == serial) {
            Some(i) => i,
            None => {
                if caches.list.len() >= CACHES_PER_THREAD {
                    // The oldest cache no lookup is using.
                    let victim = caches.list.iter().position(|(_, c)| !c.busy())?;
                    evicted = Some(caches.remove(victim));
                }
                caches
                    .list
                    .push((serial, Box::new(Cache::<K>::new(key_panics))));
                caches.list.len() - 1
            }
        };
        let cache = caches.list[i].1.as_any().downcast_ref::<Cache<K>>()?;
        let mut slots = cache.slots.try_borrow_mut().ok()?;
        let old = slots[slot_of(hash)].replace((hash, owned, handle));
        drop(slots);
        make_hot(serial, cache);
        Some((evicted, old))
    });
    if let Ok(Some((evicted, old))) = dropped {
        drop_keys(old, key_panics);
        if let Some(evicted) = evicted {
            let counter = Arc::clone(evicted.key_panics());
            drop_keys(evicted, &counter);
        }
    }
}

/// Drops interner `serial`'s cache of the calling thread (the interner is
/// gone). Other threads' entries go when they let go of the objects.
pub(super) fn drop_cache(serial: u64, key_panics: &AtomicU64) {
    let cache = CACHES.try_with(|caches| {
        let mut caches = caches.try_borrow_mut().ok()?;
        let i = caches
            .list
            .iter()
            .position(|(s, c)| *s == serial && !c.busy())?;
        Some(caches.remove(i))
    });
    drop_keys(cache, key_panics);
}

/// The calling thread no longer holds `h`: its cache entries for `h` go
/// (their keys are dropped after the caches are released).
pub(crate) fn forget_cached(h: Handle) {
    let keys = CACHES.try_with(|caches| {
        let caches = caches.try_borrow().ok()?;
        let mut keys = Vec::new();
        for (_, cache) in &caches.list {
            let forgotten = cache.forget(h);
            if !forgotten.is_empty() {
                keys.push((forgotten, Arc::clone(cache.key_panics())));
            }
        }
        Some(keys)
    });
    // Inside `release()` or a thread's exit: a key's `Drop` must not unwind.
    for (forgotten, key_panics) in keys.ok().flatten().into_iter().flatten() {
        for key in forgotten {
            drop_keys(key, &key_panics);
        }
    }
}

/// The cache slot of a hash (its best-mixed top bits).
#[inline]
fn slot_of(hash: u64) -> usize {
    (hash >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
}

/// An unkeyed multiply-rotate hash (as in FxHash): cheap, and enough for a
/// bounded cache where a collision only evicts.
#[inline]
pub(super) fn quick_hash<Q: Hash + ?Sized>(key: &Q) -> u64 {
    let mut h = QuickHasher(0);
    key.hash(&mut h);
    h.finish()
}

struct QuickHasher(u64);

impl QuickHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for QuickHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
