//! Loom models of the interner (issue 6, item 8): single flight, interning
//! racing the final release, and a failing `init` with a waiter.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{mpsc, Arc};
use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{InternError, Interner, Registry};

const KEY: u32 = 7;

/// Pumps and yields to the model's other threads until `n` values were
/// dropped: a worker's exit hook runs after loom's `join` returns.
fn wait_for_drops(reg: &Registry<Tracked>, drops: &Drops, n: usize) {
    while drops.total() < n {
        reg.pump();
        thread::yield_now();
    }
}

/// Two threads intern one key while both end up holding it: `init` runs
/// once, both get the same handle, each holds one reference, and the object
/// is finalized exactly once after both let go.
#[test]
fn two_threads_interning_one_key_init_runs_once() {
    loom_tests::model(|| {
        let drops = Drops::new();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let interner: Interner<u32, Tracked, ()> = Interner::new(&reg);
        let inits = Arc::new(AtomicUsize::new(0));
        let (to_main, from_worker) = mpsc::channel();
        let (to_worker, from_main) = mpsc::channel::<()>();
        let worker = {
            let (reg, interner, inits, drops) =
                (reg.clone(), interner.clone(), inits.clone(), drops.clone());
            thread::spawn(move || {
                let h = interner
                    .intern(&KEY, || {
                        inits.fetch_add(1, Ordering::SeqCst);
                        Ok(drops.value(1))
                    })
                    .unwrap();
                assert_eq!(reg.count(h), Ok(1), "the worker's own reference");
                to_main.send(h).unwrap();
                from_main.recv().unwrap(); // both hold it now
                reg.release(h).unwrap();
                reg.pump();
            })
        };
        let h = interner
            .intern(&KEY, || {
                inits.fetch_add(1, Ordering::SeqCst);
                Ok(drops.value(2))
            })
            .unwrap();
        assert_eq!(reg.count(h), Ok(1), "main's own reference");
        let theirs = from_worker.recv().unwrap();
        assert_eq!(theirs, h, "both threads got the same object");
        assert_eq!(inits.load(Ordering::SeqCst), 1, "init ran once");
        to_worker.send(()).unwrap();
        reg.release(h).unwrap();
        reg.pump();
        worker.join().unwrap();
        wait_for_drops(&reg, &drops, 1);
        reg.pump();
        assert_eq!(drops.total(), 1, "finalized exactly once");
        assert_eq!(interner.lookup(&KEY), None, "the dead key is forgotten");
    });
}

/// `intern` races the final release of the key's object on another thread:
/// it either retains the old object before it dies or creates a new one —
/// the handle it returns is always live.
#[test]
fn intern_racing_final_release_never_returns_a_dead_handle() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let interner: Interner<u32, Tracked, ()> = Interner::new(&reg);
        let inits = Arc::new(AtomicUsize::new(0));
        let make = |id| {
            let (inits, drops) = (inits.clone(), drops.clone());
            move || {
                inits.fetch_add(1, Ordering::SeqCst);
                Ok(drops.value(id))
            }
        };
        let old = interner.intern(&KEY, make(1)).unwrap();
        let t = reg.transfer(old).unwrap(); // main keeps nothing
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap(); // the last reference
            })
        };
        let h = interner.intern(&KEY, make(2)).unwrap();
        assert!(reg.get(h).is_ok(), "never a dead handle");
        if h == old {
            assert_eq!(inits.load(Ordering::SeqCst), 1, "retained the old object");
        } else {
            assert_eq!(inits.load(Ordering::SeqCst), 2, "created a fresh one");
            assert_eq!(reg.get(h).unwrap().id, 2);
        }
        worker.join().unwrap();
        reg.release(h).unwrap();
        let created = inits.load(Ordering::SeqCst);
        wait_for_drops(&reg, &drops, created.saturating_sub(1));
        reg.pump();
        assert_eq!(drops.total(), created, "every object finalized once");
        assert!(reg.is_empty());
        assert_eq!(interner.lookup(&KEY), None);
    });
}

/// Main's `init` fails while a worker interns the same key with an `init`
/// that succeeds. Nobody hangs; a waiter of the failed flight gets the
/// error; a failure never poisons the key; whatever succeeded is one live
/// object with consistent counts.
#[test]
fn failing_init_with_a_waiter_does_not_poison_the_key() {
    loom_tests::model(|| {
        let drops = Drops::new();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let interner: Interner<u32, Tracked, &'static str> = Interner::new(&reg);
        let worker = {
            let (reg, interner, drops) = (reg.clone(), interner.clone(), drops.clone());
            thread::spawn(move || match interner.intern(&KEY, || Ok(drops.value(1))) {
                Ok(h) => {
                    assert!(reg.get(h).is_ok());
                    reg.release(h).unwrap();
                    true
                }
                Err(InternError::Init(e)) => {
                    assert_eq!(*e, "main's init failed");
                    false
                }
                Err(e) => panic!("unexpected {e:?}"),
            })
        };
        let mine = interner.intern(&KEY, || Err("main's init failed"));
        let worker_ok = worker.join().unwrap();
        match &mine {
            // Main waited for the worker's successful init.
            Ok(h) => {
                assert!(worker_ok, "main got the worker's object");
                reg.release(*h).unwrap();
            }
            Err(InternError::Init(e)) => assert_eq!(**e, "main's init failed"),
            Err(e) => panic!("unexpected {e:?}"),
        }
        // Not poisoned: the next call creates (or finds) a live object.
        let h = interner.intern(&KEY, || Ok(drops.value(3))).unwrap();
        assert!(reg.get(h).is_ok());
        reg.release(h).unwrap();
        let created = usize::from(worker_ok) + 1;
        wait_for_drops(&reg, &drops, created);
        assert_eq!(drops.total(), created);
    });
}
