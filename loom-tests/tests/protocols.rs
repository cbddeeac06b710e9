//! Loom models, part 2: the remaining invariants of DESIGN §3 and every other
//! atomic protocol in `src/` (page installation, the inbox `pending` flag).
#![cfg(loom)]

use loom::sync::mpsc;
use loom::thread;
use loom_tests::{inserted_or_full, Drops, Node, Tracked};
use tether::{Error, Handle, Registry, Released, ThreadExit, Transfer};

/// Invariants 1, 2, 3: a holder retains, reads and lets go (its own fast
/// path, then its last release) while another thread drops the last
/// reference *it* holds, at any point of that: the object stays alive while
/// the holder holds it, and exactly one of the two last releases finalizes
/// it, once, on the home thread (directly, or queued and pumped).
#[test]
fn holder_retains_while_other_thread_drops_its_last() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(1)).unwrap();
        reg.retain(h).unwrap();
        let t = reg.transfer(h).unwrap();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap()
            })
        };
        assert_eq!(reg.retain(h).unwrap(), 2);
        assert_eq!(reg.get(h).unwrap().id, 1);
        assert_eq!(drops.total(), 0, "alive while this thread holds it");
        assert_eq!(reg.release(h).unwrap(), Released::Held(1));
        let mine = reg.release(h).unwrap(); // this thread's last
        let theirs = worker.join().unwrap();
        reg.pump();
        let lasts = [mine, theirs]
            .iter()
            .filter(|r| !matches!(r, Released::Held(0)))
            .count();
        assert_eq!(lasts, 1, "one last release: {mine:?} {theirs:?}");
        assert_eq!((drops.total(), drops.at_home()), (1, 1));
        assert!(reg.is_empty());
    });
}

/// Invariant 6: an unclaimed raw transfer is taken back (and dropped) on one
/// thread while another claims its raw form: exactly one wins, and the
/// reference is released exactly once.
#[test]
fn raw_transfer_taken_back_racing_claim_raw() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(1)).unwrap();
        let raw = reg.transfer(h).unwrap().into_raw();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || match reg.claim_raw(raw) {
                Ok(h) => {
                    reg.release(h).unwrap();
                    true
                }
                Err(e) => {
                    assert_eq!(e, Error::TransferClaimed);
                    false
                }
            })
        };
        let took_back = match Transfer::from_raw(&reg, raw) {
            Ok(t) => {
                drop(t); // releases the token's reference
                true
            }
            Err(e) => {
                assert_eq!(e, Error::TransferClaimed);
                false
            }
        };
        let claimed = worker.join().unwrap();
        assert!(took_back ^ claimed, "exactly one side owns the token");
        reg.pump();
        assert_eq!((drops.total(), drops.at_home()), (1, 1));
        assert!(reg.is_empty());
    });
}

/// Invariant 7: a worker exits holding a reference (its exit hook releases
/// it) while the home thread releases its own: finalized exactly once, on
/// the home thread.
#[test]
fn thread_exit_racing_release() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder()
            .capacity(1)
            .thread_exit(ThreadExit::Release)
            .build();
        let h = reg.insert(drops.value(1)).unwrap();
        reg.retain(h).unwrap();
        let t = reg.transfer(h).unwrap();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                reg.claim(t).unwrap(); // and exit holding it
            })
        };
        reg.release(h).unwrap();
        worker.join().unwrap();
        // The worker's exit hook may run after `join` under loom (see README).
        while drops.total() == 0 {
            reg.pump();
            thread::yield_now();
        }
        assert_eq!((drops.total(), drops.at_home()), (1, 1));
        assert!(reg.is_empty());
    });
}

/// Invariants 1, 2: `pin`/`unpin` on one thread racing the last release on
/// another: the pinned object is never finalized under its pin, and it is
/// finalized exactly once after.
#[test]
fn pin_unpin_racing_last_release() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(1)).unwrap();
        reg.retain(h).unwrap();
        let t = reg.transfer(h).unwrap();
        let worker = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.pin(h).unwrap();
                reg.release(h).unwrap();
                assert_eq!(drops.total(), 0, "the pin keeps it alive");
                reg.unpin(h).unwrap(); // may be the last: queued home
            })
        };
        reg.release(h).unwrap();
        worker.join().unwrap();
        reg.pump();
        assert_eq!((drops.total(), drops.at_home()), (1, 1));
        assert!(reg.is_empty());
    });
}

/// Invariant 11: `insert` at capacity racing a release that frees the slot:
/// `Full` (value handed back) or success, counts consistent, and the
/// capacity is fully reusable afterwards.
#[test]
fn insert_at_capacity_racing_release() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder()
            .capacity(1)
            .home_finalization(false)
            .build();
        let a = reg.insert(drops.value(1)).unwrap();
        let t = reg.transfer(a).unwrap();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                assert_eq!(reg.release(h).unwrap(), Released::Finalized);
            })
        };
        let b = inserted_or_full(reg.insert(drops.value(2)), 2);
        assert!(reg.len() <= 1);
        worker.join().unwrap();
        if let Some(b) = b {
            assert_eq!(reg.release(b).unwrap(), Released::Finalized);
        }
        assert_eq!(drops.total(), 2);
        assert!(reg.is_empty());
        // The freed slot is reusable.
        let c = reg.insert(drops.value(3)).unwrap();
        reg.release(c).unwrap();
        assert_eq!(drops.total(), 3);
    });
}

/// Invariant 12: the `Drop` of a stored value releases another handle of the
/// same registry, while a remote release of that value races the home
/// thread's pump: no deadlock (loom reports one), everything finalized once.
#[test]
fn reentrant_drop_racing_remote_release() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Node> = Registry::builder().capacity(2).build();
        let child = reg
            .insert(Node {
                tracked: drops.value(1),
                on_drop: None,
            })
            .unwrap();
        let parent = reg
            .insert(Node {
                tracked: drops.value(2),
                on_drop: Some((reg.clone(), child)),
            })
            .unwrap();
        let t = reg.transfer(parent).unwrap();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap() // the parent's last reference
            })
        };
        reg.pump();
        assert_eq!(worker.join().unwrap(), Released::Queued);
        reg.pump(); // the parent's Drop releases the child, here
        assert_eq!((drops.total(), drops.at_home()), (2, 2));
        assert!(reg.is_empty());
    });
}

/// Page installation (the CAS in `Pages::alloc_slow`): two threads use a
/// fresh registry for the first time at once, installing the thread
/// directory's first page concurrently. Each thread then uses a second
/// registry, which displaces its one-entry table cache, so coming back to the
/// first registry reads the directory: both tables must still be there.
/// (Without the second registry the cache hides a lost page.)
#[test]
fn concurrent_first_use_installs_pages_once() {
    // Two registries' registrations and exit hooks on two threads are many
    // atomic operations (no spinning): above loom's default branch limit.
    loom_tests::model_with_branches(20_000, || {
        let reg: Registry<u32> = Registry::builder().capacity(2).build();
        let other: Registry<u32> = Registry::builder().capacity(2).build();
        let threads: Vec<_> = (0..2u32)
            .map(|i| {
                let (reg, other) = (reg.clone(), other.clone());
                thread::spawn(move || {
                    let h = reg.insert(i).unwrap();
                    // Now `other` is the cached one: `reg`'s table is found
                    // through the directory (under loom the table cache
                    // has one slot for every tag, see `tid::CACHE_SLOTS`),
                    // and a lost page would mean a fresh, empty table here
                    // and `NotHeld`.
                    other.insert(i).unwrap();
                    assert_eq!(*reg.get(h).unwrap(), i);
                    // Thread exit releases both objects.
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}

/// The inbox `pending` flag (one relaxed load per registry call): values sent
/// home while the home thread drains are never left behind. The home thread
/// only makes ordinary registry calls (never `pump`), so a lost wake-up would
/// spin forever and loom fails the model at its branch limit.
#[test]
fn pending_flag_never_loses_a_queued_value() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(3).build();
        let mine = reg.insert(drops.value(0)).unwrap();
        let (tx, rx) = mpsc::channel();
        for id in 1..=2 {
            let h = reg.insert(drops.value(id)).unwrap();
            tx.send(reg.transfer(h).unwrap()).unwrap();
        }
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    let h = reg.claim(rx.recv().unwrap()).unwrap();
                    assert_eq!(reg.release(h).unwrap(), Released::Queued);
                }
            })
        };
        while drops.total() < 2 {
            // An ordinary call drains a bounded batch when `pending` is set.
            reg.retain(mine).unwrap();
            reg.release(mine).unwrap();
            thread::yield_now();
        }
        worker.join().unwrap();
        assert_eq!((drops.total(), drops.at_home()), (2, 2));
        assert_eq!(reg.snapshot().pending(), 0);
        reg.release(mine).unwrap();
    });
}

/// Issue 6, `shutdown`: a worker's final release races the home thread's
/// `shutdown`. `Ok` means every value released to this thread was finalized
/// here: a value between "not live" and "in the home inbox" is waited for.
#[test]
fn shutdown_waits_for_a_value_on_its_way_home() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(1)).unwrap();
        let t = reg.transfer(h).unwrap();
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                // Refused if the registry closed first: the transfer is
                // dropped, which releases its reference just the same.
                if let Ok(h) = reg.claim(t) {
                    reg.release(h).unwrap();
                }
            })
        };
        let done = reg.shutdown(std::time::Duration::from_secs(3600));
        assert!(done.is_ok(), "nothing is held once the worker let go");
        assert_eq!(drops.total(), 1, "finalized before shutdown returned Ok");
        assert_eq!(drops.at_home(), 1, "on the home thread");
        worker.join().unwrap();
    });
}

/// If an insert got a slot (`h`): checks that it holds the insert's own
/// value `id`, and releases it. Whether it got one.
fn release_own(reg: &Registry<Tracked>, h: Option<Handle>, id: u32) -> bool {
    let Some(h) = h else { return false };
    assert_eq!(reg.get(h).unwrap().id, id, "its own value");
    reg.release(h).unwrap();
    true
}

/// Issue 4, slot claims (`crate::free`): a slot freed into the main thread's
/// cache is wanted at once by the main thread (popping its cache) and by a
/// worker that finds the registry otherwise full (stealing from that cache).
/// Exactly one of them gets it — the other gets `Full` with its value back —
/// every object keeps its own value, and the capacity is never exceeded.
#[test]
fn cached_free_slot_is_claimed_once() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder()
            .capacity(2)
            .home_finalization(false)
            .build();
        // Slot 0 is used and freed into this thread's cache.
        let a = reg.insert(drops.value(1)).unwrap();
        reg.release(a).unwrap();
        let worker = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                // A fresh slot, then the only free one: a steal.
                let x = reg.insert(drops.value(2)).unwrap();
                let y = inserted_or_full(reg.insert(drops.value(3)), 3);
                assert_eq!(reg.get(x).unwrap().id, 2);
                let got = release_own(&reg, y, 3);
                reg.release(x).unwrap();
                got
            })
        };
        let b = inserted_or_full(reg.insert(drops.value(4)), 4);
        assert!(reg.len() <= 2);
        let main_got = release_own(&reg, b, 4);
        let worker_got = worker.join().unwrap();
        // Full only if the other thread had the slot: at least one of the
        // two inserts succeeded.
        assert!(main_got || worker_got, "a free slot was missed");
        assert_eq!(drops.total(), 4, "every value dropped once");
        assert!(reg.is_empty());
    });
}
