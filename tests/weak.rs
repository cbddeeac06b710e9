//! Weak references (DESIGN §9): `downgrade` needs access, `upgrade` works on
//! any thread while the object is live and never after.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use common::{join, spawn, DropLog, Tracked};
use tether::{Error, Event, Handle, Registry, Released, Weak};

#[test]
fn weak_is_clone_send_sync_and_counts_nothing() {
    fn send_sync<X: Clone + Send + Sync>() {}
    send_sync::<Weak<String>>();

    let log = DropLog::new();
    let reg = Registry::new();
    let p = reg.insert_proxy(Tracked::new(&log, 1)).unwrap();
    let h = p.handle();
    let w = p.downgrade();
    let w2 = w.clone();
    assert_eq!(w.handle(), h);
    assert_eq!(reg.count(h), Ok(1), "a weak reference counts nothing");
    assert_eq!(reg.holders(h).unwrap().len(), 1);
    let snap = reg.snapshot();
    assert_eq!(snap.objects.len(), 1);
    assert_eq!(
        snap.objects[0].holders.len(),
        1,
        "weak references are not listed"
    );
    drop(p);
    assert_eq!(log.count(), 1, "finalized with two weak references left");
    assert!(reg.is_empty());
    assert!(w.upgrade().is_none() && w2.upgrade().is_none());
    assert!(!w.is_live());
    assert!(format!("{w:?}").contains("Weak"));
}

#[test]
fn upgrade_of_a_live_object_is_a_new_reference_of_this_thread() {
    let reg = Registry::new();
    let h = reg.insert(String::from("live")).unwrap();
    let w = reg.downgrade(h).unwrap();
    assert!(w.is_live());
    let p = w.upgrade().expect("live");
    assert_eq!(*p, "live");
    assert_eq!(p.handle(), h);
    assert_eq!(reg.count(h), Ok(2));
    let q = w.try_upgrade().unwrap();
    assert_eq!(reg.count(h), Ok(3));
    drop((p, q));
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert!(w.upgrade().is_none());
    assert_eq!(w.try_upgrade().unwrap_err(), Error::Stale(h));
    assert_eq!(w.registry().map(|r| r.len()), Some(0));
}

#[test]
fn upgrade_on_a_worker_that_held_nothing_is_its_first_reference() {
    let events = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let reg = {
        let events = Arc::clone(&events);
        Registry::builder()
            .on_event(move |e| {
                if let Event::FirstReference { handle, thread } = e {
                    events.lock().push((*handle, *thread));
                }
            })
            .build()
    };
    let p = reg.insert_proxy(7u32).unwrap();
    let h = p.handle();
    let w = p.downgrade();
    let (worker, n, holders) = {
        let reg = reg.clone();
        join(spawn("upgrader", move || {
            let q = w.upgrade().expect("the home holds it");
            let n = reg.count(h).unwrap();
            let holders = reg.holders(h).unwrap().len();
            (std::thread::current().id(), (*q, n), holders)
        }))
    };
    assert_eq!(n, (7, 1), "the worker's own count");
    assert_eq!(holders, 2, "home and worker");
    assert!(
        events.lock().contains(&(h, worker)),
        "the upgrade was the worker's FirstReference"
    );
    // The worker's proxy was dropped on the worker: the home still holds it.
    assert_eq!(reg.count(h), Ok(1));
    drop(p);
    assert!(reg.is_empty());
}

#[test]
fn upgrade_after_the_slot_is_reused_is_none() {
    let reg = Registry::builder().capacity(1).build();
    let a = reg.insert_proxy(1u8).unwrap();
    let w = a.downgrade();
    drop(a);
    let b = reg.insert_proxy(2u8).unwrap();
    assert_eq!(
        b.handle().to_raw() & 0xFF_FFFF,
        w.handle().to_raw() & 0xFF_FFFF,
        "the very slot"
    );
    assert_ne!(b.handle(), w.handle());
    assert!(w.upgrade().is_none(), "the generation tells them apart");
    assert_eq!(w.try_upgrade().unwrap_err(), Error::Stale(w.handle()));
    assert!(!w.is_live());
    assert_eq!(reg.count(b.handle()), Ok(1), "b untouched");
}

#[test]
fn upgrade_is_none_once_the_value_is_queued_before_the_home_drops_it() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).unwrap();
    let w = reg.downgrade(h).unwrap();
    let t = reg.transfer(h).unwrap(); // the home keeps nothing
    let (queued, on_worker) = {
        let reg = reg.clone();
        let w = w.clone();
        let log = Arc::clone(&log);
        join(spawn("last holder", move || {
            let h = reg.claim(t).unwrap();
            let r = reg.release(h).unwrap();
            // The home has made no call since: the value waits in its inbox.
            (r, (w.upgrade().is_none(), log.count()))
        }))
    };
    assert_eq!(queued, Released::Queued);
    assert_eq!(
        on_worker,
        (true, 0),
        "None while the value waits in the inbox"
    );
    assert_eq!(log.count(), 0, "still waiting in the home's inbox");
    assert!(!w.is_live());
    // The home's upgrade drains its inbox first (as every call that takes a
    // reference does), then finds the object dead.
    assert!(w.upgrade().is_none());
    assert_eq!(log.count(), 1);
    assert_eq!(reg.pump(), 0);
}

#[test]
fn downgrade_is_refused_to_a_stranger_and_allowed_to_home_holder_and_pin() {
    let reg = Registry::new();
    let h = reg.insert(1u32).unwrap();
    let pinned = reg.insert(2u32).unwrap();
    reg.pin(pinned).unwrap();
    // The home keeps access after giving its reference away.
    let t = reg.transfer(h).unwrap();
    assert!(reg.downgrade(h).is_ok(), "the home thread");
    let (stranger, holder, pin, w) = {
        let reg = reg.clone();
        join(spawn("stranger", move || {
            let stranger = reg.downgrade(h).map(|w| w.handle());
            let pin = reg.downgrade(pinned).map(|w| w.handle());
            let h2 = reg.claim(t).unwrap();
            let w = reg.downgrade(h2).unwrap();
            reg.release(h2).unwrap();
            (stranger, w.handle() == h, pin, w)
        }))
    };
    assert_eq!(stranger, Err(Error::NotHeld(h)));
    assert!(holder, "a holder may");
    assert_eq!(pin, Ok(pinned), "anyone may, of a pinned object");
    assert_eq!(
        reg.len(),
        1,
        "the worker's release was h's last: queued home"
    );
    assert!(w.upgrade().is_none());
    drop(w);
    assert_eq!(
        reg.release(h).unwrap_err(),
        Error::Stale(h),
        "dead (drained by the call)"
    );
    assert_eq!(reg.downgrade(h).unwrap_err(), Error::Stale(h));
    reg.unpin(pinned).unwrap();
    reg.release(pinned).unwrap();
}

#[test]
fn downgrade_of_bad_ids_says_what_they_are() {
    let reg: Registry<u32> = Registry::new();
    let other: Registry<u32> = Registry::new();
    let h = other.insert(1).unwrap();
    assert_eq!(reg.downgrade(h).unwrap_err(), Error::ForeignRegistry(h));
    let mine = reg.insert(1).unwrap();
    let forged = Handle::from_raw(mine.to_raw() + (1 << 24)).unwrap();
    assert_eq!(
        reg.downgrade(forged).unwrap_err(),
        Error::Invalid(forged.to_raw())
    );
    reg.release(mine).unwrap();
    assert_eq!(reg.downgrade(mine).unwrap_err(), Error::Stale(mine));
    other.release(h).unwrap();
}

#[test]
fn a_strangers_failed_downgrade_takes_nothing_and_changes_nothing() {
    let reg = Registry::new();
    let p = reg.insert_proxy(3u64).unwrap();
    let h = p.handle();
    {
        let reg = reg.clone();
        join(spawn("prober", move || {
            for _ in 0..100 {
                assert_eq!(reg.downgrade(h).unwrap_err(), Error::NotHeld(h));
            }
            assert_eq!(reg.count(h), Ok(0));
        }));
    }
    assert_eq!(reg.holders(h).unwrap().len(), 1);
    assert_eq!(reg.snapshot().objects[0].holders.len(), 1);
    drop(p);
    assert!(reg.is_empty());
}

#[test]
fn upgrade_at_the_count_limit_or_after_close() {
    let reg = Registry::builder().max_count(2).build();
    let p = reg.insert_proxy(0u8).unwrap();
    let w = p.downgrade();
    let q = w.upgrade().unwrap();
    assert_eq!(w.try_upgrade().unwrap_err(), Error::Overflow(p.handle()));
    assert!(w.upgrade().is_none(), "no reference past the limit");
    drop(q);
    reg.close();
    // A holder may still add references after close...
    assert!(w.upgrade().is_some());
    // ...a thread without one may not (its shutdown waits for holders).
    let err = {
        let w = w.clone();
        join(spawn("late", move || w.try_upgrade().map(|_| ())))
    };
    assert_eq!(err, Err(Error::Closed));
    drop(p);
}

/// Invariant 12 for weak references: a value's `Drop` may upgrade weak
/// references — to another live object (a new reference, given back) and to
/// itself (`None`: it is being finalized).
#[test]
fn a_drop_upgrading_weak_references_sees_the_living_and_not_itself() {
    struct Node {
        me: Mutex<Option<Weak<Node>>>,
        other: Option<Weak<Node>>,
        seen: Arc<parking_lot::Mutex<Vec<(bool, bool)>>>,
    }
    impl Drop for Node {
        fn drop(&mut self) {
            let me = self
                .me
                .lock()
                .unwrap()
                .as_ref()
                .map(|w| w.upgrade().is_some());
            let other = self.other.as_ref().map(|w| w.upgrade().is_some());
            self.seen
                .lock()
                .push((me.unwrap_or(true), other.unwrap_or(false)));
        }
    }
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let reg = Registry::new();
    let b = reg
        .insert_proxy(Node {
            me: Mutex::new(None),
            other: None,
            seen: Arc::clone(&seen),
        })
        .unwrap();
    let a = reg
        .insert_proxy(Node {
            me: Mutex::new(None),
            other: Some(b.downgrade()),
            seen: Arc::clone(&seen),
        })
        .unwrap();
    *a.me.lock().unwrap() = Some(a.downgrade());
    drop(a); // its Drop upgrades itself (None) and b (live)
    assert_eq!(*seen.lock(), vec![(false, true)]);
    assert_eq!(reg.count(b.handle()), Ok(1), "b's upgrade was given back");
    drop(b);
    assert!(reg.is_empty());
}

/// The race of DESIGN §9 on real threads: the last reference goes on one
/// thread while others upgrade. Every successful upgrade must see the value
/// alive for as long as it holds it, the value is dropped exactly once, and
/// no upgrade succeeds after the drop. Three shapes: the home releases last
/// (finalized at once, on the home), a worker releases last (queued home),
/// and home finalization off (finalized on the worker).
#[test]
fn upgrades_racing_the_last_release_never_see_a_dead_value() {
    // A resurrection can leave a value never dropped (or dropped twice):
    // the watchdog turns a wait for it into a failure.
    common::with_watchdog("upgrade race", race_upgrades_with_last_releases);
}

fn race_upgrades_with_last_releases() {
    /// Per-round drop flags and the drop count, shared through one `Arc`
    /// that the test thread keeps to the end (so that no other thread drops
    /// its last clone: ThreadSanitizer cannot see `Arc::drop`'s fence in the
    /// uninstrumented std).
    struct Flags {
        dropped: Vec<AtomicBool>,
        drops: AtomicUsize,
    }
    struct Witness {
        round: usize,
        flags: Arc<Flags>,
    }
    impl Drop for Witness {
        fn drop(&mut self) {
            // Counted, not asserted: the registry catches a panicking Drop.
            self.flags.dropped[self.round].store(true, Ordering::SeqCst);
            self.flags.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rounds = if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    };
    for shape in 0..3 {
        let reg = Registry::builder().home_finalization(shape != 2).build();
        let flags = Arc::new(Flags {
            dropped: (0..rounds).map(|_| AtomicBool::new(false)).collect(),
            drops: AtomicUsize::new(0),
        });
        let won = Arc::new(AtomicU64::new(0));
        let go = Arc::new(Barrier::new(2));
        let (tx, rx) = std::sync::mpsc::channel::<Option<(Weak<Witness>, usize)>>();
        let upgrader = {
            let (go, won, flags) = (Arc::clone(&go), Arc::clone(&won), Arc::clone(&flags));
            spawn("upgrader", move || {
                while let Ok(Some((w, round))) = rx.recv() {
                    go.wait();
                    // Keep trying until the object is gone.
                    while let Some(p) = w.upgrade() {
                        assert!(
                            !flags.dropped[round].load(Ordering::SeqCst),
                            "a dead value upgraded"
                        );
                        won.fetch_add(1, Ordering::Relaxed);
                        drop(p);
                    }
                    assert!(w.upgrade().is_none(), "dead stays dead");
                }
            })
        };
        for round in 0..rounds {
            let p = reg
                .insert_proxy(Witness {
                    round,
                    flags: Arc::clone(&flags),
                })
                .unwrap();
            tx.send(Some((p.downgrade(), round))).unwrap();
            if shape == 0 {
                go.wait();
                drop(p); // the home's last: finalized here, or by the upgrader's drop
            } else {
                let t = p.transfer();
                let releaser = spawn("releaser", move || drop(t.claim().unwrap()));
                go.wait();
                join(releaser);
            }
            // Wait for the upgrader to see it dead, then collect it.
            while !flags.dropped[round].load(Ordering::SeqCst) {
                reg.pump();
                std::thread::yield_now();
            }
        }
        tx.send(None).unwrap();
        join(upgrader);
        reg.pump();
        assert_eq!(
            flags.drops.load(Ordering::SeqCst),
            rounds,
            "shape {shape}: each once"
        );
        assert!(reg.is_empty());
        assert!(
            won.load(Ordering::Relaxed) > 0,
            "shape {shape}: the race was run"
        );
    }
}

/// A weak reference keeps nothing alive, not even the registry: dropping the
/// last `Registry` (with an object still held by a leaked explicit
/// reference) finalizes that object then, and the weak reference is dead.
#[test]
fn a_weak_reference_does_not_keep_the_registry_or_its_objects_alive() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).unwrap(); // never released
    let w = reg.downgrade(h).unwrap();
    assert!(w.registry().is_some());
    drop(reg);
    assert_eq!(log.count(), 1, "finalized with the registry");
    assert!(w.upgrade().is_none());
    assert_eq!(w.try_upgrade().unwrap_err(), Error::Stale(h));
    assert!(w.registry().is_none());
    assert!(!w.is_live());
    // Made from a proxy, on another thread: the proxy keeps the registry.
    let reg = Registry::new();
    let p = reg.insert_proxy(Tracked::new(&log, 2)).unwrap();
    drop(reg);
    let w = p.downgrade();
    let alive = {
        let w = w.clone();
        join(spawn("upgrader", move || w.upgrade().map(|q| q.id)))
    };
    assert_eq!(alive, Some(2));
    drop(p);
    assert_eq!(log.count(), 2);
    assert!(w.registry().is_none() && w.upgrade().is_none());
}
