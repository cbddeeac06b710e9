//! Thread identity: a small dense index per live thread, and exit hooks.
//!
//! Every thread that uses tether gets a process-wide index (`tid`), reused
//! after the thread exits, so per-thread tables can be found with one array
//! lookup. A thread-local with a destructor runs each registry's exit hook
//! (invariant 7: thread exit is a release) and then frees the index.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};

use crate::limits::{GEN_BITS, INDEX_BITS};
use crate::sync::thread_locals;

/// `TID` value of a thread that has not used tether yet.
const UNASSIGNED: u32 = 0;
/// `TID` value of a thread whose exit hooks have run.
const EXITED: u32 = u32::MAX;

/// Something to run when a thread exits: a registry releasing that thread's
/// references.
pub(crate) trait ExitHook: Send + Sync {
    /// The thread with index `tid` is exiting; runs on that thread.
    fn thread_exit(&self, tid: u32);
}

/// A thread's inbox in one registry, kept by the thread itself: if the
/// registry is dropped (on another thread) while this thread lives, values
/// sent home to it stay here and are dropped on this thread — at its exit,
/// or at its next `pump()` or first use of a registry — never elsewhere.
pub(crate) trait Leftovers: Send + Sync {
    /// Closes the inbox (no more values come) and drops what it holds.
    fn close_and_drop(&self);
    /// Whether values wait in it.
    fn has_values(&self) -> bool;
}

/// One registry this thread uses: its exit hook, and this thread's inbox
/// there (which outlives the registry while the thread lives).
struct Hook {
    registry: Weak<dyn ExitHook>,
    inbox: Arc<dyn Leftovers>,
}

/// Process-wide allocator of thread indices (lowest free first, so indices
/// stay dense).
#[derive(Debug)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct TidAlloc {
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
}

impl TidAlloc {
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) const fn new() -> Self {
        TidAlloc {
            free: BinaryHeap::new(),
            next: 0,
        }
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        if let Some(Reverse(t)) = self.free.pop() {
            return Some(t);
        }
        // Leave room for the UNASSIGNED/EXITED encodings of `TID`.
        if self.next >= EXITED - 2 {
            return None;
        }
        self.next += 1;
        Some(self.next - 1)
    }

    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn free(&mut self, tid: u32) {
        self.free.push(Reverse(tid));
    }
}

/// The process-wide thread-index allocator.
#[cfg(not(loom))]
static TIDS: crate::sync::Mutex<TidAlloc> = crate::sync::Mutex::new(TidAlloc::new());

/// A thread index for a thread starting to use tether.
#[cfg(not(loom))]
fn tid_alloc() -> Option<u32> {
    TIDS.lock().alloc()
}

/// Returns an exiting thread's index for reuse.
#[cfg(not(loom))]
fn tid_free(tid: u32) {
    TIDS.lock().free(tid);
}

/// Under loom, thread indices are never reused within one execution, and
/// restart from 0 in each execution (so every execution is deterministic).
///
/// Reuse is ordered in production by the allocator's mutex (the exiting
/// thread nulls its directory cells before freeing its index). A loom-visible
/// mutex cannot be used — loom tears its statics down before the main model
/// thread's thread-locals, whose destructor frees the index — and with an
/// invisible one loom would explore a reuse without that ordering, which no
/// real execution can produce.
///
/// The counter is a *std* thread-local: loom runs all threads of one model as
/// coroutines on the test's OS thread, while the test harness runs several
/// models in parallel on different OS threads.
#[cfg(loom)]
fn tid_alloc() -> Option<u32> {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
    static EXECUTIONS: StdAtomicU64 = StdAtomicU64::new(0);
    std::thread_local! {
        static NEXT: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
    }
    loom::lazy_static! {
        static ref EXECUTION: u64 = EXECUTIONS.fetch_add(1, StdOrdering::Relaxed);
    }
    let execution = *EXECUTION;
    NEXT.with(|next| {
        let (seen, n) = next.get();
        let n = if seen == execution { n } else { 0 };
        next.set((execution, n + 1));
        Some(n)
    })
}

/// Under loom indices are not reused (see `tid_alloc`).
#[cfg(loom)]
fn tid_free(_tid: u32) {}

/// Per-thread record whose destructor runs the exit hooks.
struct ThreadState {
    tid: Cell<u32>,
    hooks: RefCell<Vec<Hook>>,
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        let tid = self.tid.get();
        // Hooks may (through `Drop` of stored values) touch other registries;
        // take the list each round so no `RefCell` borrow is held meanwhile.
        loop {
            let hooks = std::mem::take(&mut *self.hooks.borrow_mut());
            if hooks.is_empty() {
                break;
            }
            for hook in hooks {
                match hook.registry.upgrade() {
                    // It drains and closes the inbox itself.
                    Some(registry) => registry.thread_exit(tid),
                    // Dropped elsewhere: what it sent here is dropped here.
                    None => hook.inbox.close_and_drop(),
                }
            }
        }
        let _ = TID.try_with(|t| t.set(EXITED));
        tid_free(tid);
    }
}

/// A table cache slot's value when it holds no table: key 0 is never a
/// registry's.
const NO_TABLE: (u64, *const ()) = (0, std::ptr::null());

/// Slots of a thread's table cache: one per registry tag (tags are
/// `1..=MAX_TAG`; slot 0 stays empty). Under loom one slot serves every
/// tag, so a model that switches registries on a thread reaches the
/// registry's thread directory (the concurrent part).
#[cfg(not(loom))]
const CACHE_SLOTS: usize = crate::limits::MAX_TAG as usize + 1;
#[cfg(loom)]
const CACHE_SLOTS: usize = 1;

/// A thread's table cache: `(registry key, this thread's table there)`,
/// direct-mapped by the registry's tag. The registries alive have distinct
/// tags while there are at most 255 of them (`crate::tag`), so each has a
/// slot of its own: a thread that uses several registries in turn finds
/// every table at the cost of one (one load and a compare of the key), with
/// no search and no eviction. Registries beyond 255 share tags, and the
/// sharers of a tag evict each other from its slot (each finds its table
/// through its directory then). A slot is written only as a whole pair, so a
/// key never sits beside another registry's table. 4 KiB per thread.
struct TableCache {
    slots: [Cell<(u64, *const ())>; CACHE_SLOTS],
}

impl TableCache {
    const fn new() -> Self {
        TableCache {
            slots: [const { Cell::new(NO_TABLE) }; CACHE_SLOTS],
        }
    }
}

/// The cache slot of a registry key (a registry's `handle_key`, whose low
/// [`TAG_BITS`](crate::limits::TAG_BITS) bits are its tag) or of a tag.
#[inline(always)]
fn slot_of(key_or_tag: u64) -> usize {
    // In range for any argument: CACHE_SLOTS is a power of two.
    (key_or_tag as usize) & (CACHE_SLOTS - 1)
}

thread_locals! {
    /// `tid + 1`, or UNASSIGNED / EXITED. No destructor, so it stays readable
    /// while other thread-locals are destroyed.
    static TID: Cell<u32> = Cell::new(UNASSIGNED);
    /// The tables of the last registries this thread used (see
    /// [`TableCache`]). No destructor.
    static TABLE_CACHE: TableCache = TableCache::new();
    /// Runs the exit hooks when the thread's thread-locals are destroyed.
    static STATE: ThreadState =
        ThreadState { tid: Cell::new(UNASSIGNED), hooks: RefCell::new(Vec::new()) };
}

/// The calling thread's index; `None` once its exit hooks have run.
#[inline]
pub(crate) fn current() -> Option<u32> {
    let t = TID.try_with(Cell::get).unwrap_or(EXITED);
    if t != UNASSIGNED && t != EXITED {
        return Some(t - 1);
    }
    assign(t)
}

#[cold]
fn assign(t: u32) -> Option<u32> {
    if t == EXITED {
        return None;
    }
    let tid = tid_alloc()?;
    // Touching STATE registers its destructor; it fails if the thread is
    // already tearing down its thread-locals.
    if STATE.try_with(|s| s.tid.set(tid)).is_err() {
        tid_free(tid);
        return None;
    }
    if TID.try_with(|c| c.set(tid + 1)).is_err() {
        return None;
    }
    Some(tid)
}

/// The calling thread's index if it has one (never assigns one).
pub(crate) fn assigned() -> Option<u32> {
    let t = TID.try_with(Cell::get).unwrap_or(EXITED);
    (t != UNASSIGNED && t != EXITED).then(|| t - 1)
}

/// Registers `registry`'s exit hook to run when the calling thread exits,
/// and keeps the thread's `inbox` there until then (see [`Leftovers`]).
/// `false` if the thread is already exiting.
pub(crate) fn on_exit(registry: Weak<dyn ExitHook>, inbox: Arc<dyn Leftovers>) -> bool {
    drop_leftovers();
    STATE
        .try_with(|s| {
            let mut hooks = s.hooks.borrow_mut();
            if hooks.len() >= 8 && hooks.len().is_power_of_two() {
                hooks.retain(|h| h.registry.strong_count() > 0);
            }
            hooks.push(Hook { registry, inbox });
        })
        .is_ok()
}

/// Drops, on the calling thread, the values that dropped registries sent
/// home to it (see [`Leftovers`]), and forgets those registries. Called on
/// slow paths only (`pump`, a thread's first use of a registry).
pub(crate) fn drop_leftovers() {
    let dead: Vec<Hook> = STATE
        .try_with(|s| {
            let Ok(mut hooks) = s.hooks.try_borrow_mut() else {
                return Vec::new(); // the exit hooks are running
            };
            if hooks.iter().all(|h| h.registry.strong_count() > 0) {
                return Vec::new();
            }
            let (dead, live) = std::mem::take(&mut *hooks)
                .into_iter()
                .partition(|h| h.registry.strong_count() == 0);
            *hooks = live;
            dead
        })
        .unwrap_or_default();
    // Outside the borrow: the values' `Drop`s may use other registries.
    for hook in dead {
        if hook.inbox.has_values() {
            hook.inbox.close_and_drop();
        }
    }
}

/// The calling thread's cached `(registry key, table)` in the slot of
/// `tag`; [`NO_TABLE`] if none (or while thread-locals are torn down). The
/// table is the registry's iff the key is its `cache_key`.
#[inline(always)]
pub(crate) fn cached_table(tag: u64) -> (u64, *const ()) {
    TABLE_CACHE
        .try_with(|c| c.slots[slot_of(tag)].get())
        .unwrap_or(NO_TABLE)
}

/// Bytes of one cache slot: a power of two, so a slot's byte offset is its
/// tag shifted.
const SLOT_BYTES: usize = std::mem::size_of::<Cell<(u64, *const ())>>();
const _: () = assert!(SLOT_BYTES == 16);

/// [`cached_table`] of the tag of the handle whose raw form is `raw`: its
/// slot's byte offset is taken from `raw` with one shift and one mask (the
/// fast path of every operation on a handle).
#[inline(always)]
pub(crate) fn cached_table_of(raw: u64) -> (u64, *const ()) {
    const SHIFT: u32 = INDEX_BITS + GEN_BITS - SLOT_BYTES.trailing_zeros();
    let offset = (raw >> SHIFT) as usize & ((CACHE_SLOTS - 1) * SLOT_BYTES);
    TABLE_CACHE
        .try_with(|c| {
            // SAFETY: `offset` is a multiple of SLOT_BYTES at most
            // `(CACHE_SLOTS - 1) * SLOT_BYTES` (the mask), so it is the
            // offset of a slot of the array: slot `slot_of(raw tag)`.
            unsafe { &*c.slots.as_ptr().byte_add(offset) }.get()
        })
        .unwrap_or(NO_TABLE)
}

/// Caches the calling thread's table of the registry whose `handle_key` is
/// `key`, in the slot of its tag (evicting a registry that shares the tag).
#[inline]
pub(crate) fn cache_table(key: u64, table: *const ()) {
    let _ = TABLE_CACHE.try_with(|c| c.slots[slot_of(key)].set((key, table)));
}

/// In a `fork()` child handler: forgets the forking thread's cached tables,
/// whatever registries they belong to, so the child's first registry call
/// takes the slow path, which sees the fork (see `Inner::my_table`).
///
/// Only touches this thread's own cache, a `const`-initialised thread-local
/// without a destructor: no allocation, no lock.
#[cfg_attr(any(loom, not(unix)), allow(dead_code))]
pub(crate) fn forget_cache_after_fork() {
    let _ = TABLE_CACHE.try_with(|c| {
        for slot in &c.slots {
            slot.set(NO_TABLE);
        }
    });
}

/// Forgets the cached table of the registry whose `handle_key` is `key`, if
/// its slot holds it (its thread is exiting, or the registry is being
/// dropped).
pub(crate) fn uncache_table(key: u64) {
    let _ = TABLE_CACHE.try_with(|c| {
        let slot = &c.slots[slot_of(key)];
        if slot.get().0 == key {
            slot.set(NO_TABLE);
        }
    });
}

/// The keys in the calling thread's cache, by slot (0: empty).
#[cfg(all(test, not(loom)))]
fn cached_keys() -> Vec<u64> {
    TABLE_CACHE
        .try_with(|c| c.slots.iter().map(|s| s.get().0).collect())
        .unwrap_or_default()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::limits::MAX_TAG;

    /// A fake table address for key `k` (never dereferenced here).
    fn table(k: u64) -> *const () {
        (k as usize * 64) as *const ()
    }

    /// A registry key with serial `serial` and tag `tag`, as `Inner::new`
    /// makes them.
    fn key(serial: u64, tag: u64) -> u64 {
        serial << crate::limits::TAG_BITS | tag
    }

    /// Looks `k` up the way `Inner::cached_table` does: the slot of its tag, then
    /// the key.
    fn find(k: u64) -> Option<*const ()> {
        let (key, p) = cached_table(k & MAX_TAG);
        // The handle form finds the same slot.
        let raw = (k & MAX_TAG) << (INDEX_BITS + GEN_BITS) | 12345;
        assert_eq!(cached_table_of(raw), (key, p));
        (key == k).then_some(p)
    }

    // Each test runs on its own thread: the cache is the thread's.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().expect("test thread");
    }

    #[test]
    fn every_tag_has_its_own_slot() {
        on_fresh_thread(|| {
            assert!(cached_keys().iter().all(|&k| k == 0));
            let keys: Vec<u64> = (1..=MAX_TAG).map(|t| key(1000 + t, t)).collect();
            for &k in &keys {
                cache_table(k, table(k));
            }
            // All 255 at once: none evicted another.
            for &k in &keys {
                assert_eq!(find(k), Some(table(k)), "key {k:#x}");
            }
            // The cache, read whole: slot t holds the key of tag t.
            let cached = cached_keys();
            assert_eq!(cached.len(), MAX_TAG as usize + 1);
            assert_eq!(cached[0], 0, "tag 0 is never a registry's");
            for &k in &keys {
                assert_eq!(cached[(k & MAX_TAG) as usize], k);
            }
            // A handle's tag selects the slot; another registry's key there
            // never matches.
            assert_eq!(find(key(7, 3)), None);
        });
    }

    #[test]
    fn a_registry_sharing_a_tag_evicts_the_other() {
        on_fresh_thread(|| {
            let (a, b) = (key(1, 9), key(2, 9));
            cache_table(a, table(a));
            cache_table(b, table(b));
            assert_eq!(find(a), None);
            assert_eq!(find(b), Some(table(b)));
            // Uncaching a key that is not in its slot leaves the slot alone.
            uncache_table(a);
            assert_eq!(find(b), Some(table(b)));
            uncache_table(b);
            assert_eq!(find(b), None);
        });
    }

    #[test]
    fn uncache_and_fork_clear() {
        on_fresh_thread(|| {
            let keys: Vec<u64> = (1..=4).map(|t| key(t, t)).collect();
            for &k in &keys {
                cache_table(k, table(k));
            }
            uncache_table(keys[1]);
            assert_eq!(find(keys[1]), None);
            for &k in [keys[0], keys[2], keys[3]].iter() {
                assert_eq!(find(k), Some(table(k)));
            }
            // A refill of a key replaces its pair.
            cache_table(keys[0], table(77));
            assert_eq!(find(keys[0]), Some(table(77)));
            assert_eq!(cached_keys().iter().filter(|&&k| k != 0).count(), 3);
            forget_cache_after_fork();
            assert!(cached_keys().iter().all(|&k| k == 0));
        });
    }
}
