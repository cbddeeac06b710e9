//! Loom models of weak references (DESIGN §9): an upgrade racing the last
//! release wins (the object stays alive with the new reference) or returns
//! `None` — never a reference to a finalized or queued value, never a
//! resurrection.
#![cfg(loom)]

use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{Registry, Released};

/// The home upgrades a weak reference while a worker drops the object's
/// last reference (queued home). If the upgrade wins, the value is alive
/// and stays alive while the home holds it; if it loses, it is `None`. In
/// every case the value is dropped exactly once, at home.
#[test]
fn upgrade_racing_the_last_remote_release_never_resurrects() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(1)).unwrap();
        let w = reg.downgrade(h).unwrap();
        let t = reg.transfer(h).unwrap(); // the home keeps no reference
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap()
            })
        };
        if let Some(p) = w.upgrade() {
            assert_eq!(p.id, 1);
            assert_eq!(drops.total(), 0, "an upgraded value is alive");
            drop(p); // maybe the last now: finalized here
        }
        let theirs = worker.join().unwrap();
        reg.pump();
        assert!(w.upgrade().is_none(), "dead stays dead");
        assert!(
            !matches!(theirs, Released::Finalized),
            "not home: {theirs:?}"
        );
        assert_eq!((drops.total(), drops.at_home()), (1, 1), "once, at home");
        assert!(reg.is_empty());
    });
}

/// A worker upgrades a weak reference while the home drops the last
/// reference (finalized at once, on the home). A won upgrade keeps the value
/// alive until the worker lets go (then it is queued home); a lost one is
/// `None`.
#[test]
fn upgrade_racing_the_homes_finalization_never_sees_the_value_go() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let p = reg.insert_proxy(drops.value(1)).unwrap();
        let w = p.downgrade();
        let worker = {
            let drops = drops.clone();
            thread::spawn(move || {
                if let Some(q) = w.upgrade() {
                    assert_eq!(q.id, 1);
                    assert_eq!(drops.total(), 0, "an upgraded value is alive");
                    drop(q);
                }
                let again = w.upgrade();
                let total = drops.total();
                assert!(
                    again.is_none() || total == 0,
                    "again {:?} total {total}",
                    again.as_ref().map(|p| p.handle())
                );
            })
        };
        drop(p); // the home's last reference
        worker.join().unwrap();
        reg.pump();
        assert_eq!((drops.total(), drops.at_home()), (1, 1), "once, at home");
        assert!(reg.is_empty());
    });
}
