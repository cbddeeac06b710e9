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

/// A table cache way's value when it holds no table: key 0 is never a
/// registry's.
const NO_TABLE: (u64, *const ()) = (0, std::ptr::null());

/// How many registries' tables a thread's cache holds: a thread that uses up
/// to this many registries in turn finds each table without the slow path.
pub(crate) const CACHE_WAYS: usize = 4;

/// A thread's table cache: up to [`CACHE_WAYS`] `(registry cache key, this
/// thread's table there)` pairs, the most recently used in way 0 (the only
/// one the fast path reads). Ways move only as whole pairs, so a key never
/// sits beside another registry's table. An empty way is [`NO_TABLE`].
struct TableCache {
    ways: [Cell<(u64, *const ())>; CACHE_WAYS],
}

impl TableCache {
    const fn new() -> Self {
        TableCache {
            ways: [
                Cell::new(NO_TABLE),
                Cell::new(NO_TABLE),
                Cell::new(NO_TABLE),
                Cell::new(NO_TABLE),
            ],
        }
    }
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

/// The calling thread's most recently used `(registry cache key, table)`
/// (way 0 of its cache); [`NO_TABLE`] if none (or while thread-locals are
/// torn down).
#[inline]
pub(crate) fn cached_table() -> (u64, *const ()) {
    TABLE_CACHE
        .try_with(|c| c.ways[0].get())
        .unwrap_or(NO_TABLE)
}

/// The table cached for the registry with cache key `key` (non-zero) in a
/// way other than the first, moved to the first (swapped with the pair
/// there); `None` if no way holds `key`. For a thread that uses several
/// registries in turn: a few loads and compares, four stores on a hit.
#[cfg(not(loom))]
#[inline]
pub(crate) fn find_cached_table(key: u64) -> Option<*const ()> {
    TABLE_CACHE
        .try_with(|c| {
            // Unrolled (one straight path per way) so each hit is a few
            // loads and four stores at fixed offsets: 127 instructions per
            // pair with two registries in turn, against 133 for a loop
            // (`scripts/callgrind.sh alt2`; one registry: 118).
            const _: () = assert!(CACHE_WAYS == 4, "one `hit` per way below");
            let hit = |i: usize| {
                let pair = c.ways[i].get();
                (pair.0 == key).then(|| {
                    c.ways[i].set(c.ways[0].get());
                    c.ways[0].set(pair);
                    pair.1
                })
            };
            hit(1).or_else(|| hit(2)).or_else(|| hit(3))
        })
        .ok()
        .flatten()
}

/// Under loom only way 0 is searched: the other ways are this thread's own
/// sequential bookkeeping (unit-tested below, and by
/// `tests/registries_per_thread.rs`), while a model that switches registries
/// on a thread must reach the registry's thread directory — the concurrent
/// part (`concurrent_first_use_installs_pages_once` and its mutant
/// `page-install-without-cas`).
#[cfg(loom)]
pub(crate) fn find_cached_table(_key: u64) -> Option<*const ()> {
    None
}

/// Caches the calling thread's table of the registry with cache key `key`
/// in way 0; the other pairs move down one way, into the first empty way or
/// over the way that held `key` before, else the last pair is dropped.
#[inline]
pub(crate) fn cache_table(key: u64, table: *const ()) {
    let _ = TABLE_CACHE.try_with(|c| {
        let mut carry = (key, table);
        for way in &c.ways {
            carry = way.replace(carry);
            if carry.0 == key || carry.0 == NO_TABLE.0 {
                break;
            }
        }
    });
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
        for way in &c.ways {
            way.set(NO_TABLE);
        }
    });
}

/// Forgets the cached table of the registry with cache key `key`, in
/// whichever way holds it (its thread is exiting, or the registry is being
/// dropped).
pub(crate) fn uncache_table(key: u64) {
    let _ = TABLE_CACHE.try_with(|c| {
        for way in &c.ways {
            if way.get().0 == key {
                way.set(NO_TABLE);
            }
        }
    });
}

/// The cache keys in the calling thread's cache, way 0 first (0: empty).
#[cfg(all(test, not(loom)))]
pub(crate) fn cached_keys() -> [u64; CACHE_WAYS] {
    TABLE_CACHE
        .try_with(|c| std::array::from_fn(|i| c.ways[i].get().0))
        .unwrap_or([0; CACHE_WAYS])
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A fake table address for key `k` (never dereferenced here).
    fn table(k: u64) -> *const () {
        (k as usize * 64) as *const ()
    }

    /// Looks `k` up the way `Inner::my_table` does: way 0, then the others.
    fn find(k: u64) -> Option<*const ()> {
        let (key, p) = cached_table();
        if key == k {
            return Some(p);
        }
        find_cached_table(k)
    }

    // Each test runs on its own thread: the cache is the thread's.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().expect("test thread");
    }

    #[test]
    fn fills_move_down_and_the_fifth_evicts_the_oldest() {
        on_fresh_thread(|| {
            assert_eq!(cached_keys(), [0; CACHE_WAYS]);
            for k in 1..=5 {
                cache_table(k, table(k));
            }
            assert_eq!(cached_keys(), [5, 4, 3, 2]);
            assert_eq!(find(1), None);
            for k in 2..=5 {
                assert_eq!(find(k), Some(table(k)), "key {k}");
                assert_eq!(cached_keys()[0], k, "a hit moves to way 0");
            }
        });
    }

    #[test]
    fn a_hit_swaps_with_way_0_as_a_pair() {
        on_fresh_thread(|| {
            for k in 1..=4 {
                cache_table(k, table(k));
            }
            assert_eq!(cached_keys(), [4, 3, 2, 1]);
            assert_eq!(find_cached_table(1), Some(table(1)));
            assert_eq!(cached_keys(), [1, 3, 2, 4]);
            assert_eq!(cached_table(), (1, table(1)));
            assert_eq!(find_cached_table(4), Some(table(4)));
            assert_eq!(cached_table(), (4, table(4)));
            assert_eq!(find(1), Some(table(1)));
            assert_eq!(find(9), None);
        });
    }

    #[test]
    fn uncache_clears_the_key_in_any_way() {
        on_fresh_thread(|| {
            for way in 0..CACHE_WAYS as u64 {
                for k in 1..=4 {
                    cache_table(k, table(k));
                }
                // Key 4 - way sits in way `way`.
                let k = 4 - way;
                assert_eq!(cached_keys()[way as usize], k);
                uncache_table(k);
                assert_eq!(find(k), None);
                assert_eq!(cached_keys()[way as usize], 0);
                // A refill takes the hole, evicting nobody.
                cache_table(9, table(9));
                assert_eq!(cached_keys().iter().filter(|&&c| c != 0).count(), 4);
                uncache_table(9);
                for k in (1..=4).filter(|&o| o != k) {
                    assert_eq!(find(k), Some(table(k)), "key {k}");
                }
                forget_cache_after_fork();
                assert_eq!(cached_keys(), [0; CACHE_WAYS]);
            }
        });
    }

    #[test]
    fn refilling_a_cached_key_keeps_one_copy() {
        on_fresh_thread(|| {
            for k in 1..=4 {
                cache_table(k, table(k));
            }
            cache_table(2, table(7));
            assert_eq!(cached_keys(), [2, 4, 3, 1]);
            assert_eq!(cached_table(), (2, table(7)));
        });
    }
}
