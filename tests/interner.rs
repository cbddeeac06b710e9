//! Issue 6, part 2: interning without check-then-create races. The first
//! caller for a key runs `init`; concurrent callers wait for it (single
//! flight) and each gets its own reference to the same object; a failing or
//! panicking `init` poisons nothing; a re-entrant `init` of the same key is an
//! error rather than a self-deadlock; when the object is finalized its key
//! is forgotten and the next `intern` creates a fresh object; an `intern`
//! racing the final release never returns a dead handle.
//!
//! Every `init` here counts its runs. The contention tests do not rely on
//! timing: their `init` blocks until [`Interner::waiting`] shows every other
//! caller registered as a waiter of that very `init`, so the sharing they
//! assert is forced, however slow the machine (a broken interner makes the
//! wait time out after [`WATCHDOG`] instead of hanging).
//!
//! The panic messages printed by the panicking-init tests are expected.

mod common;

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use common::{join, me, recv, spawn, WATCHDOG};
use tether::{Error, Handle, InternError, Interner, Registry, Released};

/// Blocks until `names` has `n` callers registered as waiters of a running
/// `init` (called from inside that `init`). Fails after [`WATCHDOG`]: the
/// callers never became waiters.
fn until_waiting<K, T, E>(names: &Interner<K, T, E>, n: usize)
where
    K: Hash + Eq + Send + Sync + 'static,
    T: Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let deadline = Instant::now() + WATCHDOG;
    while names.waiting() != n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} callers registered as waiters after {WATCHDOG:?}",
            names.waiting()
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// The logs that `Obj`'s drops and `Maker` write from several threads at
/// once. A `parking_lot` mutex, not std's: std is not instrumented under
/// ThreadSanitizer, so a contended std mutex's acquire is invisible to it
/// and two pushes under the lock read as a data race (seen once in CI:
/// two `Obj` drops racing in `intern_racing_the_final_release...`).
type Log<T> = Arc<parking_lot::Mutex<Vec<T>>>;

/// A stored object: which `init` run made it, and its drops (value, thread).
struct Obj {
    serial: usize,
    drops: Log<(usize, ThreadId)>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.drops
            .lock()
            .push((self.serial, thread::current().id()));
    }
}

/// A counting `init` factory.
#[derive(Clone, Default)]
struct Maker {
    runs: Arc<AtomicUsize>,
    drops: Log<(usize, ThreadId)>,
    /// The threads `init` ran on.
    ran_on: Log<ThreadId>,
}

impl Maker {
    fn make(&self) -> Obj {
        let serial = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        self.ran_on.lock().push(thread::current().id());
        Obj {
            serial,
            drops: Arc::clone(&self.drops),
        }
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    fn drops(&self) -> Vec<(usize, ThreadId)> {
        self.drops.lock().clone()
    }

    fn ran_on(&self) -> Vec<ThreadId> {
        self.ran_on.lock().clone()
    }
}

type Names = Interner<String, Obj, String>;

fn setup() -> (Registry<Obj>, Names, Maker) {
    let reg = Registry::new();
    let names = Interner::new(&reg);
    (reg, names, Maker::default())
}

#[test]
fn intern_creates_once_and_adds_one_reference_per_call() {
    let (reg, names, maker) = setup();
    let a = names.intern("k", || Ok(maker.make())).expect("first");
    let b = names.intern("k", || Ok(maker.make())).expect("second");
    let c = names.intern("k", || Ok(maker.make())).expect("third");
    assert_eq!((a, b), (c, c));
    assert_eq!(maker.runs(), 1, "init ran once");
    assert_eq!(reg.count(a), Ok(3), "one reference per call");
    assert_eq!(reg.get(a).expect("get").serial, 1);
    assert_eq!(names.lookup("k"), Some(a));
    assert_eq!((names.len(), names.is_empty()), (1, false));
    assert_eq!(reg.len(), 1);
    assert_eq!(names.lookup("other"), None);
}

#[test]
fn any_thread_can_intern_an_existing_key_and_gets_its_own_reference() {
    let (reg, names, maker) = setup();
    let h = names.intern("k", || Ok(maker.make())).expect("intern");
    let (names2, maker2, r2) = (names.clone(), maker.clone(), reg.clone());
    let (w, got, count, serial, released) = join(spawn("not-home", move || {
        // Holds nothing, the object is not pinned: knowing the key is the
        // capability.
        let got = names2.intern("k", || Ok(maker2.make())).expect("intern");
        let count = r2.count(got);
        let serial = r2.get(got).expect("get").serial;
        (me(), got, count, serial, r2.release(got))
    }));
    assert_eq!(got, h);
    assert_eq!(
        (count, serial),
        (Ok(1), 1),
        "its own reference, same object"
    );
    assert_eq!(released, Ok(Released::Held(0)), "the home still holds it");
    assert_eq!(maker.runs(), 1);
    assert_eq!(reg.count(h), Ok(1), "the home's count is untouched");
    assert!(reg
        .holders(h)
        .expect("holders")
        .iter()
        .all(|(t, _)| *t != w));
}

#[test]
fn after_the_last_release_the_key_is_forgotten_and_the_next_intern_creates_afresh() {
    let (reg, names, maker) = setup();
    let a = names.intern("k", || Ok(maker.make())).expect("intern");
    names.intern("k", || Ok(maker.make())).expect("again");
    assert_eq!(reg.release(a), Ok(Released::Held(1)));
    assert_eq!(names.lookup("k"), Some(a), "still alive");
    assert_eq!(reg.release(a), Ok(Released::Finalized));
    assert_eq!(maker.drops(), [(1, me())]);
    assert_eq!(names.lookup("k"), None, "forgotten");
    assert_eq!((names.len(), names.is_empty()), (0, true));

    let b = names.intern("k", || Ok(maker.make())).expect("fresh");
    assert_ne!(a, b);
    assert_eq!(maker.runs(), 2, "init ran again");
    assert_eq!(reg.get(b).expect("get").serial, 2);
    assert_eq!(reg.get(a).err(), Some(Error::Stale(a)));
}

#[test]
fn a_remote_final_release_forgets_the_key_at_once() {
    let (reg, names, maker) = setup();
    let a = names.intern("k", || Ok(maker.make())).expect("intern");
    let t = reg.transfer(a).expect("transfer");
    let r2 = reg.clone();
    let released = join(spawn("remote-releaser", move || {
        let a = r2.claim(t).expect("claim");
        r2.release(a)
    }));
    assert_eq!(released, Ok(Released::Queued));
    assert_eq!(names.lookup("k"), None, "dead, even if not yet dropped");
    let b = names.intern("k", || Ok(maker.make())).expect("fresh");
    assert_ne!(a, b);
    assert_eq!(maker.runs(), 2);
    assert_eq!(
        reg.pump(),
        0,
        "the intern's registry call already drained it"
    );
    assert_eq!(
        maker.drops(),
        [(1, me())],
        "the old value, on its home thread"
    );
}

#[test]
fn a_failing_init_returns_its_error_inserts_nothing_and_the_next_call_retries() {
    let (reg, names, maker) = setup();
    let err = names
        .intern("k", || Err("disk full".to_owned()))
        .expect_err("init failed");
    match &err {
        InternError::Init(e) => assert_eq!(**e, "disk full"),
        other => panic!("expected Init, got {other:?}"),
    }
    assert!(err.to_string().contains("disk full"), "{err}");
    assert!(reg.is_empty(), "nothing inserted");
    assert_eq!((names.lookup("k"), names.len()), (None, 0));

    let h = names.intern("k", || Ok(maker.make())).expect("retry");
    assert_eq!(maker.runs(), 1);
    assert_eq!(reg.get(h).expect("get").serial, 1);
}

#[test]
fn a_panicking_init_propagates_and_does_not_poison_the_key() {
    let (reg, names, maker) = setup();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        names.intern("k", || -> Result<Obj, String> {
            panic!("intentional panic in init (test)")
        })
    }));
    let payload = caught.expect_err("the panic reaches the caller");
    assert_eq!(
        payload.downcast_ref::<&str>().copied(),
        Some("intentional panic in init (test)")
    );
    assert!(reg.is_empty());
    assert_eq!(names.lookup("k"), None);
    let h = names
        .intern("k", || Ok(maker.make()))
        .expect("not poisoned");
    assert_eq!(maker.runs(), 1, "init ran again");
    assert_eq!(reg.count(h), Ok(1));
}

#[test]
fn init_that_interns_the_same_key_on_the_same_thread_gets_reentrant() {
    let (reg, names, maker) = setup();
    let inner: parking_lot::Mutex<Option<Result<Handle, InternError<String>>>> =
        parking_lot::Mutex::new(None);
    let other: parking_lot::Mutex<Option<Handle>> = parking_lot::Mutex::new(None);
    let h = names
        .intern("k", || {
            *inner.lock() = Some(names.intern("k", || Ok(maker.make())));
            // A different key inside init works, and init may use the registry.
            let o = names
                .intern("other", || Ok(maker.make()))
                .expect("other key");
            *other.lock() = Some(o);
            assert_eq!(reg.count(o), Ok(1));
            Ok(maker.make())
        })
        .expect("the outer intern succeeds");
    assert_eq!(inner.into_inner(), Some(Err(InternError::Reentrant)));
    let o = other.into_inner().expect("interned");
    assert_ne!(h, o);
    assert_eq!(maker.runs(), 2, "the re-entrant call ran no init");
    assert_eq!(
        (names.lookup("k"), names.lookup("other")),
        (Some(h), Some(o))
    );
    assert_eq!((reg.count(h), reg.count(o)), (Ok(1), Ok(1)));
    assert_eq!(reg.get(h).expect("get").serial, 2);
}

/// `n` threads intern one key; the `init` that runs waits until the other
/// `n - 1` callers are registered waiters of it, so each of them provably
/// shares its object rather than making one.
#[test]
fn concurrent_interns_of_one_key_run_init_once_and_share_the_object() {
    for n in [4, 8] {
        let (reg, names, maker) = setup();
        let start = Arc::new(Barrier::new(n));
        let all_released = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|_| {
                let (names, maker, reg) = (names.clone(), maker.clone(), reg.clone());
                let (start, all_released) = (Arc::clone(&start), Arc::clone(&all_released));
                spawn("contender", move || {
                    start.wait();
                    let h = names
                        .intern("k", || {
                            until_waiting(&names, n - 1);
                            Ok(maker.make())
                        })
                        .expect("intern");
                    let count = reg.count(h);
                    let serial = reg.get(h).expect("usable").serial;
                    let released = reg.release(h);
                    // Everyone has let go before anyone pumps or exits, so the
                    // home thread is alive to finalize.
                    all_released.wait();
                    let pumped = reg.pump();
                    (h, count, serial, released, pumped)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(join).collect();

        assert_eq!(maker.runs(), 1, "{n} threads: init ran exactly once");
        assert_eq!(names.waiting(), 0, "every waiter was woken");
        let handles: HashSet<_> = results.iter().map(|r| r.0).collect();
        assert_eq!(handles.len(), 1, "everyone got the same handle");
        for (_, count, serial, released, _) in &results {
            assert_eq!(*count, Ok(1), "each thread holds exactly its own reference");
            assert_eq!(*serial, 1);
            assert!(released.is_ok(), "{released:?}");
        }
        let home = maker.ran_on()[0];
        let drops = maker.drops();
        assert_eq!(drops, [(1, home)], "finalized once, on the home thread");
        let finalized_directly = results
            .iter()
            .filter(|r| r.3 == Ok(Released::Finalized))
            .count();
        let pumped: usize = results.iter().map(|r| r.4).sum();
        assert_eq!(finalized_directly + pumped, 1);
        assert!(reg.is_empty());
        assert_eq!(names.lookup("k"), None);
    }
}

/// `n` threads intern one key; the `init` that runs fails only once the other
/// `n - 1` callers wait for it: `init` ran once and all `n` callers get that
/// one error (the same `Arc`), none runs `init` of its own.
#[test]
fn concurrent_interns_with_a_failing_init_all_fail_and_the_key_is_not_poisoned() {
    let n = 6;
    let (reg, names, maker) = setup();
    let start = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (names, maker) = (names.clone(), maker.clone());
            let start = Arc::clone(&start);
            spawn("failing-contender", move || {
                start.wait();
                names.intern("k", || {
                    // Only the first run waits: a second one (a waiter that
                    // did not share the failure) is counted at once.
                    if maker.runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        until_waiting(&names, n - 1);
                    }
                    Err("backend down".to_owned())
                })
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(join).collect();
    assert_eq!(maker.runs(), 1, "init ran once; the waiters ran none");
    let mut distinct = Vec::<Arc<String>>::new();
    for r in &results {
        match r {
            Err(InternError::Init(e)) => {
                assert_eq!(**e, "backend down");
                if !distinct.iter().any(|d| Arc::ptr_eq(d, e)) {
                    distinct.push(Arc::clone(e));
                }
            }
            other => panic!("every caller gets the init error, got {other:?}"),
        }
    }
    assert_eq!(
        distinct.len(),
        1,
        "the one failure is shared by all {n} callers"
    );
    assert_eq!(names.waiting(), 0);
    assert!(reg.is_empty());
    assert_eq!(names.lookup("k"), None);

    let h = names
        .intern("k", || Ok(maker.make()))
        .expect("not poisoned");
    assert_eq!(reg.count(h), Ok(1));
}

/// The creator's `init` panics only once the other caller waits for it: the
/// waiter gets exactly `InitPanicked` (it ran no `init`, nothing was
/// inserted), the panic goes to the creator's caller, and the key is not
/// poisoned.
#[test]
fn waiters_of_a_panicking_init_get_init_panicked_and_the_key_is_not_poisoned() {
    let (reg, names, maker) = setup();
    let (tx_started, rx_started) = mpsc::channel();
    let saw_waiter = Arc::new(AtomicBool::new(false));
    let (names2, saw_waiter2) = (names.clone(), Arc::clone(&saw_waiter));
    let creator = spawn("panicking-creator", move || {
        catch_unwind(AssertUnwindSafe(|| {
            names2.intern("k", || -> Result<Obj, String> {
                tx_started.send(()).expect("started");
                until_waiting(&names2, 1);
                saw_waiter2.store(true, Ordering::SeqCst);
                panic!("intentional panic in init (test)")
            })
        }))
        .is_err()
    });
    recv(&rx_started, "init started");
    let waited = names.intern("k", || Ok(maker.make()));
    assert!(join(creator), "the creator's caller got the panic");
    assert!(
        saw_waiter.load(Ordering::SeqCst),
        "init panicked while the waiter waited"
    );
    assert_eq!(waited, Err(InternError::InitPanicked));
    assert_eq!(maker.runs(), 0, "the waiter ran no init");
    assert!(reg.is_empty());
    assert_eq!((names.lookup("k"), names.waiting()), (None, 0));
    let h = names
        .intern("k", || Ok(maker.make()))
        .expect("not poisoned");
    assert_eq!(reg.get(h).expect("get").serial, 1);
}

#[test]
fn intern_racing_the_final_release_always_returns_a_usable_handle() {
    let (reg, names, maker) = setup();
    let rounds = 200;
    let (names2, maker2, r2) = (names.clone(), maker.clone(), reg.clone());
    let go = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let (go2, done2) = (Arc::clone(&go), Arc::clone(&done));
    let racer = spawn("racer", move || {
        for _ in 0..rounds {
            go2.wait();
            let h = names2
                .intern("k", || Ok(maker2.make()))
                .expect("intern while the object dies");
            // Never a dead handle: the old object retained before it died, or
            // a fresh one.
            assert!(r2.get(h).is_ok(), "the returned handle is usable");
            assert_eq!(r2.count(h), Ok(1));
            r2.release(h).expect("release");
            done2.wait();
        }
    });
    for _ in 0..rounds {
        let h = names.intern("k", || Ok(maker.make())).expect("intern");
        go.wait();
        reg.release(h)
            .expect("the final release, racing the intern");
        done.wait();
        reg.pump();
        assert!(reg.is_empty(), "everything let go this round");
    }
    join(racer);
    let drops = maker.drops();
    assert_eq!(
        drops.len(),
        maker.runs(),
        "every object finalized exactly once"
    );
    let serials: HashSet<_> = drops.iter().map(|d| d.0).collect();
    assert_eq!(serials.len(), drops.len());
    assert!(names.is_empty());
}

#[test]
fn interning_a_new_key_on_a_closed_registry_is_refused_with_closed() {
    let (reg, names, maker) = setup();
    let held = names.intern("held", || Ok(maker.make())).expect("intern");
    reg.close();
    assert_eq!(
        names.intern("new", || Ok(maker.make())),
        Err(InternError::Registry(Error::Closed))
    );
    assert_eq!(
        maker.runs(),
        1,
        "refused before init ran: nothing made for nothing"
    );
    assert_eq!(names.lookup("new"), None);
    assert_eq!(reg.len(), 1, "nothing new was inserted");
    // A holder keeps working with its own key...
    assert_eq!(names.intern("held", || Ok(maker.make())), Ok(held));
    assert_eq!(reg.count(held), Ok(2));
    // ...but a thread that holds nothing cannot become a new holder.
    let names2 = names.clone();
    let stranger = join(spawn("stranger-after-close", move || {
        names2.intern("held", || Err("unused".to_owned()))
    }));
    assert_eq!(stranger, Err(InternError::Registry(Error::Closed)));
}

#[test]
fn intern_proxy_gives_a_proxy_and_leaves_only_the_proxy_counted() {
    let (reg, names, maker) = setup();
    let p = names
        .intern_proxy("k", || Ok(maker.make()))
        .expect("intern_proxy");
    let h = p.handle();
    assert_eq!(p.serial, 1);
    assert_eq!(reg.count(h), Ok(1), "the proxy is the only reference");
    assert_eq!(
        reg.release(h),
        Err(Error::NotHeld(h)),
        "no explicit reference"
    );
    let q = names.intern_proxy("k", || Ok(maker.make())).expect("again");
    assert_eq!((q.handle(), reg.count(h)), (h, Ok(2)));
    assert_eq!(maker.runs(), 1);
    drop(q);
    drop(p);
    assert_eq!(maker.drops(), [(1, me())], "the last proxy finalized it");
    assert_eq!(names.lookup("k"), None);
}

#[test]
fn interner_debug_and_registry() {
    let (reg, names, maker) = setup();
    let h = names.intern("k", || Ok(maker.make())).expect("intern");
    let text = format!("{names:?}");
    assert!(text.contains("Interner"), "{text}");
    assert!(text.contains("keys: 1"), "{text}");
    let same = names.registry();
    assert_eq!(same.count(h), Ok(1), "the registry the objects live in");
    assert_eq!(reg.len(), same.len());
}

/// A key that counts its live copies (the caller's and the interner's).
struct CountedKey {
    name: &'static str,
    live: Arc<AtomicIsize>,
}

impl CountedKey {
    fn new(name: &'static str, live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::SeqCst);
        CountedKey {
            name,
            live: Arc::clone(live),
        }
    }
}

impl Clone for CountedKey {
    fn clone(&self) -> Self {
        CountedKey::new(self.name, &self.live)
    }
}

impl Drop for CountedKey {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PartialEq for CountedKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for CountedKey {}

impl Hash for CountedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl Borrow<str> for CountedKey {
    fn borrow(&self) -> &str {
        self.name
    }
}

#[test]
fn keys_are_dropped_when_their_object_dies() {
    let live = Arc::new(AtomicIsize::new(0));
    let maker = Maker::default();
    let reg: Registry<Obj> = Registry::new();
    let names: Interner<CountedKey, Obj, String> = Interner::new(&reg);
    let key = CountedKey::new("k", &live);
    assert_eq!(live.load(Ordering::SeqCst), 1);

    let h = names.intern(&key, || Ok(maker.make())).expect("intern");
    let stored = live.load(Ordering::SeqCst) - 1;
    assert!(
        stored >= 1,
        "the interner keeps the key while the object lives"
    );
    names.intern(&key, || Ok(maker.make())).expect("again");
    assert_eq!(
        live.load(Ordering::SeqCst) - 1,
        stored,
        "no copy per lookup"
    );
    assert_eq!(names.lookup("k"), Some(h), "borrowed lookups work");

    reg.release(h).expect("release");
    assert_eq!(live.load(Ordering::SeqCst) - 1, stored, "still alive");
    reg.release(h).expect("release: finalized");
    assert_eq!(
        live.load(Ordering::SeqCst),
        1,
        "only the caller's key is left"
    );

    // A failed init keeps no key either.
    let err = names.intern(&key, || Err("nope".to_owned()));
    assert!(matches!(err, Err(InternError::Init(_))));
    assert_eq!(live.load(Ordering::SeqCst), 1);

    // Nor does dropping the interner with a live object.
    let h = names.intern(&key, || Ok(maker.make())).expect("intern");
    drop(names);
    assert_eq!(live.load(Ordering::SeqCst), 1, "the key map went with it");
    reg.release(h).expect("the object outlives its interner");
    drop(key);
    assert_eq!(live.load(Ordering::SeqCst), 0);
}

#[test]
fn every_interner_of_a_registry_forgets_its_own_dead_keys() {
    let (reg, first, maker) = setup();
    let a = first.intern("k", || Ok(maker.make())).expect("intern");
    // A second and a third interner of the same registry (the third comes
    // after the second was dropped), with a key of their own.
    let second: Names = Interner::new(&reg);
    let b = second.intern("k", || Ok(maker.make())).expect("intern");
    assert_ne!(a, b, "interners do not share keys");
    drop(second);
    let third: Names = Interner::new(&reg);
    let c = third.intern("k", || Ok(maker.make())).expect("intern");

    assert_eq!(reg.release(a), Ok(Released::Finalized));
    assert_eq!(first.lookup("k"), None, "the first interner was told");
    let a2 = first.intern("k", || Ok(maker.make())).expect("fresh");
    assert_ne!(a2, a);
    assert_eq!(reg.release(c), Ok(Released::Finalized));
    assert_eq!(third.lookup("k"), None, "the third interner was told");
    assert_eq!(reg.release(b), Ok(Released::Finalized));
    assert_eq!(reg.release(a2), Ok(Released::Finalized));
    assert_eq!(maker.runs(), 4);
    assert!(reg.is_empty());
}
