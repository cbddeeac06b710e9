//! Issue 16, item 2: an interner key's `Hash`, `Eq` and `Drop` are user
//! code, and may panic at any call. Wherever that happens no waiter is
//! stranded, no key is jammed, no hold leaks, `release()` never unwinds, a
//! dying object still goes home to be dropped, and `shutdown` still
//! succeeds.
//!
//! Each test arms a trap in a key ([`Traps`]): the key's `Hash`, `Eq` or
//! `Drop` panics at its next call (or the call after next), wherever the
//! interner makes it. The regressions arm it at the two points where the
//! interner used to run key code mid-transition: while a flight with a
//! waiter is running (the publish step), and right before the last release
//! of an object made on another thread (its key forgotten while the value is
//! on its way home). The panic messages printed are expected.

mod common;

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{join, me, recv, spawn, DropLog, Tracked, WATCHDOG};
use tether::{InternError, Interner, Registry, Released};

/// Which of a key's user code a trap makes panic.
#[derive(Clone, Copy, Debug)]
enum Trap {
    Hash,
    Eq,
    Clone,
    Drop,
}

/// Traps shared by every copy of one key. Each is disarmed (`-1`) or counts
/// down the calls it lets through; the call that finds it at `0` panics
/// and disarms it.
#[derive(Debug)]
struct Traps {
    hash: AtomicIsize,
    eq: AtomicIsize,
    clone: AtomicIsize,
    drop: AtomicIsize,
    /// Panics thrown so far.
    fired: AtomicUsize,
}

impl Traps {
    fn new() -> Arc<Self> {
        Arc::new(Traps {
            hash: AtomicIsize::new(-1),
            eq: AtomicIsize::new(-1),
            clone: AtomicIsize::new(-1),
            drop: AtomicIsize::new(-1),
            fired: AtomicUsize::new(0),
        })
    }

    fn counter(&self, trap: Trap) -> &AtomicIsize {
        match trap {
            Trap::Hash => &self.hash,
            Trap::Eq => &self.eq,
            Trap::Clone => &self.clone,
            Trap::Drop => &self.drop,
        }
    }

    /// The `skip + 1`-th call of `trap` from now panics.
    fn arm(&self, trap: Trap, skip: isize) {
        self.counter(trap).store(skip, Ordering::SeqCst);
    }

    fn disarm(&self) {
        for trap in [Trap::Hash, Trap::Eq, Trap::Clone, Trap::Drop] {
            self.counter(trap).store(-1, Ordering::SeqCst);
        }
    }

    /// One call of `trap`: panics if it is the armed one.
    fn call(&self, trap: Trap) {
        let c = self.counter(trap);
        let mut n = c.load(Ordering::SeqCst);
        while n >= 0 {
            match c.compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(0) => {
                    self.fired.fetch_add(1, Ordering::SeqCst);
                    panic!("intentional panic in {trap:?} of a key (test)");
                }
                Ok(_) => return,
                Err(now) => n = now,
            }
        }
    }

    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }
}

/// A key whose `Hash`, `Eq`, `Clone` and `Drop` spring its [`Traps`].
#[derive(Debug)]
struct Key {
    name: &'static str,
    traps: Arc<Traps>,
}

impl Key {
    fn new(name: &'static str, traps: &Arc<Traps>) -> Self {
        Key {
            name,
            traps: Arc::clone(traps),
        }
    }
}

impl Clone for Key {
    fn clone(&self) -> Self {
        self.traps.call(Trap::Clone);
        Key::new(self.name, &self.traps)
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.traps.call(Trap::Hash);
        self.name.hash(state);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.traps.call(Trap::Eq);
        if !Arc::ptr_eq(&self.traps, &other.traps) {
            other.traps.call(Trap::Eq);
        }
        self.name == other.name
    }
}

impl Eq for Key {}

impl Drop for Key {
    fn drop(&mut self) {
        if !thread::panicking() {
            self.traps.call(Trap::Drop);
        }
    }
}

type Keys = Interner<Key, Tracked, String>;

fn setup() -> (Registry<Tracked>, Keys, Arc<DropLog>, Arc<Traps>) {
    let reg = Registry::new();
    let names = Interner::new(&reg);
    (reg, names, DropLog::new(), Traps::new())
}

/// Blocks until `names` has `n` callers waiting on a running `init`; fails
/// after [`WATCHDOG`].
fn until_waiting(names: &Keys, n: usize) {
    let deadline = Instant::now() + WATCHDOG;
    while names.waiting() != n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} callers waiting after {WATCHDOG:?}",
            names.waiting()
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// The creator's `init` arms `trap` once a waiter is parked on its flight:
/// the waiter must come back (it did not: the publish step hashed and
/// compared the key, its panic skipped the publish and left the flight
/// `Running`, the waiter asleep, the key jammed). The interner runs no key
/// code once the flight is installed, so both callers get the object.
fn key_code_armed_while_a_waiter_waits(trap: Trap) {
    let (reg, names, log, traps) = setup();
    let key = Key::new("k", &traps);
    let (tx_started, rx_started) = mpsc::channel();
    let waiter = {
        let (names, reg, key) = (names.clone(), reg.clone(), key.clone());
        spawn("waiter", move || {
            recv(&rx_started, "init started");
            let got = names.intern(&key, || Err("the waiter ran init".to_owned()));
            let count = got.as_ref().map(|h| reg.count(*h)).ok();
            let released = got.as_ref().map(|h| reg.release(*h)).ok();
            (got, count, released)
        })
    };
    let created = catch_unwind(AssertUnwindSafe(|| {
        names.intern(&key, || {
            tx_started.send(()).expect("started");
            until_waiting(&names, 1);
            traps.arm(trap, 0);
            Ok(Tracked::new(&log, 1))
        })
    }));
    // Before the fix: the watchdog fires here (the waiter never wakes).
    let (waited, count, released) = join(waiter);
    traps.disarm();
    let h = match created {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => panic!("the creator's intern failed: {e:?}"),
        Err(_) => panic!("the {trap:?} panic reached the creator: it ran after init"),
    };
    assert_eq!(waited, Ok(h), "the waiter got the object");
    assert_eq!(count, Some(Ok(1)), "its own reference");
    assert_eq!(released, Some(Ok(Released::Held(0))));
    assert_eq!(traps.fired(), 0, "no key code ran after init");
    assert_eq!(names.waiting(), 0);
    assert_eq!((names.len(), names.lookup(&key)), (1, Some(h)));
    assert_eq!(reg.count(h), Ok(1), "the creator's reference, nothing more");
    assert_eq!(
        reg.snapshot().objects[0].transfers,
        0,
        "no minted hold left"
    );

    // The key's code panicking now, in a call that is not served by a
    // cache (call 1 of Hash is the cache's, call 2 the map's; Eq runs in the
    // map only), reaches that caller and changes nothing.
    let skip = if matches!(trap, Trap::Hash) { 1 } else { 0 };
    let (names2, key2, traps2) = (names.clone(), key.clone(), Arc::clone(&traps));
    let panicked = join(spawn("unlucky", move || {
        traps2.arm(trap, skip);
        let r = catch_unwind(AssertUnwindSafe(|| {
            names2.intern(&key2, || Err("unreachable".to_owned()))
        }));
        traps2.disarm();
        r.is_err()
    }));
    assert!(panicked, "the {trap:?} panic reached its caller");
    assert_eq!(traps.fired(), 1);
    assert_eq!((names.len(), names.lookup(&key)), (1, Some(h)));
    assert_eq!((reg.len(), reg.count(h)), (1, Ok(1)));

    // A later intern of the key from a thread with no cache works.
    let (names3, reg3, key3) = (names.clone(), reg.clone(), key.clone());
    let later = join(spawn("later", move || {
        let h = names3.intern(&key3, || Err("unreachable".to_owned()));
        let released = h.as_ref().map(|h| reg3.release(*h)).ok();
        (h, released)
    }));
    assert_eq!(later, (Ok(h), Some(Ok(Released::Held(0)))));

    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(log.per_id().get(&1), Some(&1), "dropped once");
    assert_eq!((names.len(), names.lookup(&key)), (0, None));
    assert_eq!(reg.shutdown(WATCHDOG).map_err(|r| r.to_string()), Ok(()));
}

#[test]
fn a_key_hash_panic_armed_while_a_waiter_waits_strands_nobody() {
    key_code_armed_while_a_waiter_waits(Trap::Hash);
}

#[test]
fn a_key_eq_panic_armed_while_a_waiter_waits_strands_nobody() {
    key_code_armed_while_a_waiter_waits(Trap::Eq);
}

/// The object is made (and homed) on this thread, its only reference sent
/// to a worker; the worker arms `trap` and releases: the object dies there,
/// its value is sent home and its key forgotten. Before the fix the forget
/// hashed and compared the key (and dropped the interner's copies) inside
/// `release()`: the panic unwound out of it, the value was dropped on the
/// worker, and the registry counted it as on its way home forever, so
/// `shutdown` failed every time.
fn key_code_armed_at_a_remote_death(trap: Trap) {
    let (reg, names, log, traps) = setup();
    let key = Key::new("k", &traps);
    let h = names
        .intern(&key, || Ok(Tracked::new(&log, 1)))
        .expect("intern");
    let t = reg.transfer(h).expect("transfer"); // this thread keeps nothing
    let (reg2, traps2) = (reg.clone(), Arc::clone(&traps));
    let (worker, released) = join(spawn("last-releaser", move || {
        let h = reg2.claim(t).expect("claim");
        traps2.arm(trap, 0);
        let released = catch_unwind(AssertUnwindSafe(|| reg2.release(h)));
        (me(), released.map_err(|_| "release() unwound"))
    }));
    assert_eq!(released, Ok(Ok(Released::Queued)), "the value went home");
    assert_eq!(log.count(), 0, "nothing dropped on the worker");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(1), Some(me()), "dropped at home");
    assert_ne!(Some(worker), log.dropped_on(1));
    let panics = traps.fired();
    traps.disarm();
    match trap {
        Trap::Hash | Trap::Eq | Trap::Clone => {
            assert_eq!(panics, 0, "forget runs no Hash, Eq or Clone");
        }
        Trap::Drop => {
            assert_eq!(panics, 1, "the interner's copy of the key was dropped");
            assert_eq!(names.key_panics(), 1, "and its panic counted");
        }
    }
    assert_eq!((names.len(), names.lookup(&key)), (0, None), "forgotten");
    assert!(reg.is_empty());
    // Not jammed (before the fix a `Hash`/`Eq` panic here left the dead
    // handle mapped, and the next intern spun on it forever).
    let (names2, key2, log2) = (names.clone(), key.clone(), Arc::clone(&log));
    let fresh = join(spawn("fresh", move || {
        names2
            .intern(&key2, || Ok(Tracked::new(&log2, 2)))
            .map(|h| (h, names2.registry().release(h)))
    }));
    assert!(
        matches!(fresh, Ok((f, Ok(Released::Finalized))) if f != h),
        "a fresh object: {fresh:?}"
    );
    assert_eq!(
        reg.shutdown(WATCHDOG).map_err(|r| r.to_string()),
        Ok(()),
        "nothing is left on its way home"
    );
}

#[test]
fn a_key_hash_panic_when_its_object_dies_on_a_worker_loses_nothing() {
    key_code_armed_at_a_remote_death(Trap::Hash);
}

#[test]
fn a_key_eq_panic_when_its_object_dies_on_a_worker_loses_nothing() {
    key_code_armed_at_a_remote_death(Trap::Eq);
}

#[test]
fn a_key_drop_panic_when_its_object_dies_on_a_worker_loses_nothing() {
    key_code_armed_at_a_remote_death(Trap::Drop);
}

/// A worker that interned the key has it in its cache; the cache's copy of
/// the key is dropped at the worker's last reference, inside `release()`.
/// Before the fix its `Drop` panic unwound out of `release()` after the
/// worker's count was cleared but before its hold was dropped: the object
/// stayed live with no holder, forever.
#[test]
fn a_cached_key_drop_panic_at_the_last_reference_loses_nothing() {
    let (reg, names, log, traps) = setup();
    let key = Key::new("k", &traps);
    let h = names
        .intern(&key, || Ok(Tracked::new(&log, 1)))
        .expect("intern");
    let (reg2, names2, key2, traps2) =
        (reg.clone(), names.clone(), key.clone(), Arc::clone(&traps));
    let (go, wait_go) = mpsc::channel();
    let worker = spawn("cached-holder", move || {
        let h = names2
            .intern(&key2, || Err("unreachable".to_owned()))
            .expect("intern");
        recv(&wait_go, "go");
        traps2.arm(Trap::Drop, 0);
        let released = catch_unwind(AssertUnwindSafe(|| reg2.release(h)));
        let fired = traps2.fired();
        traps2.disarm();
        (released.map_err(|_| "release() unwound"), fired)
    });
    // The worker holds it now; this thread lets go first.
    let deadline = Instant::now() + WATCHDOG;
    while reg.holders(h).expect("holders").len() < 2 {
        assert!(Instant::now() < deadline, "the worker never interned");
        thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(reg.release(h), Ok(Released::Held(0)));
    go.send(()).expect("go");
    let (released, fired) = join(worker);
    assert_eq!(released, Ok(Ok(Released::Queued)), "the value went home");
    assert_eq!(fired, 1, "the cached copy of the key was dropped");
    assert_eq!(names.key_panics(), 1, "and its panic counted");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(1), Some(me()), "dropped at home");
    assert!(reg.is_empty(), "nothing left live");
    assert_eq!((names.len(), names.lookup(&key)), (0, None), "forgotten");
    assert_eq!(reg.shutdown(WATCHDOG).map_err(|r| r.to_string()), Ok(()));
}

/// An `Eq` panic in a lookup (under the interner's lock) reaches its
/// caller and leaves no lock held: a running flight still publishes, and
/// other callers still get in.
#[test]
fn an_eq_panic_in_a_lookup_leaves_no_lock_held() {
    let (reg, names, log, traps) = setup();
    let key = Key::new("k", &traps);
    let h = names
        .intern(&key, || Ok(Tracked::new(&log, 1)))
        .expect("intern");
    let (names2, key2, traps2) = (names.clone(), key.clone(), Arc::clone(&traps));
    let panicked = join(spawn("unlucky", move || {
        traps2.arm(Trap::Eq, 0);
        let r = catch_unwind(AssertUnwindSafe(|| names2.lookup(&key2)));
        traps2.disarm();
        r.is_err()
    }));
    assert!(panicked);
    assert_eq!(names.lookup(&key), Some(h), "the lock is free");
    let other = Key::new("other", &traps);
    let o = names
        .intern(&other, || Ok(Tracked::new(&log, 2)))
        .expect("another key");
    assert_eq!(names.len(), 2);
    assert_eq!(reg.release(o), Ok(Released::Finalized));
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(log.count(), 2);
    assert!(names.is_empty());
}

/// A failed `init`'s key is dropped after the flight is settled, its
/// `Drop`'s panic caught and counted: the waiter and the creator both get
/// the `init` error.
#[test]
fn a_key_drop_panic_after_a_failed_init_strands_nobody() {
    let (reg, names, _log, traps) = setup();
    let key = Key::new("k", &traps);
    let (tx_started, rx_started) = mpsc::channel();
    let waiter = {
        let (names, key) = (names.clone(), key.clone());
        spawn("waiter", move || {
            recv(&rx_started, "init started");
            // The key goes back too: dropped here, it could spring the trap.
            (
                names.intern(&key, || Err("the waiter ran init".to_owned())),
                key,
            )
        })
    };
    let created = catch_unwind(AssertUnwindSafe(|| {
        names.intern(&key, || {
            tx_started.send(()).expect("started");
            until_waiting(&names, 1);
            traps.arm(Trap::Drop, 0);
            Err("init failed".to_owned())
        })
    }));
    let (waited, waiter_key) = join(waiter);
    traps.disarm();
    drop(waiter_key);
    assert!(
        matches!(&waited, Err(InternError::Init(e)) if **e == "init failed"),
        "{waited:?}"
    );
    let created = created.map_err(|_| "the key's Drop panic reached the creator");
    assert!(
        matches!(&created, Ok(Err(InternError::Init(e))) if **e == "init failed"),
        "{created:?}"
    );
    assert_eq!(traps.fired(), 1, "the failed flight's key was dropped");
    assert_eq!(names.key_panics(), 1, "and its panic counted");
    assert_eq!(
        (names.len(), names.waiting(), names.lookup(&key)),
        (0, 0, None)
    );
    assert!(reg.is_empty());
}

/// A new key's intern clones it twice: for the map before `init`, and for
/// the thread's cache after the object is made and published. A panic in
/// the second reaches the caller, who then holds nothing: the new reference
/// is given back (before, it stayed counted for a thread that never got its
/// handle), and the key is forgotten with its object.
#[test]
fn a_key_clone_panic_after_a_successful_intern_gives_the_reference_back() {
    let (reg, names, log, traps) = setup();
    let key = Key::new("k", &traps);
    traps.arm(Trap::Clone, 1);
    let made = catch_unwind(AssertUnwindSafe(|| {
        names.intern(&key, || Ok(Tracked::new(&log, 1)))
    }));
    traps.disarm();
    assert!(made.is_err(), "the clone's panic reached the caller");
    assert_eq!(traps.fired(), 1);
    assert_eq!(
        log.count(),
        1,
        "the object lost its only reference: finalized"
    );
    assert!(reg.is_empty(), "no reference kept for the caller");
    assert_eq!((names.len(), names.lookup(&key)), (0, None));
    let h = names
        .intern(&key, || Ok(Tracked::new(&log, 2)))
        .expect("the key works");
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(reg.shutdown(WATCHDOG).map_err(|r| r.to_string()), Ok(()));
}
