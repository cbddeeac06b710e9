//! Loom models of tether's concurrent invariants (DESIGN §3).
//!
//! Each model is small: two or three threads, capacity 1-2, a few operations.
#![cfg(loom)]

use loom::sync::mpsc;
use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{Error, Registry, Released, Transfer};

/// Invariants 1, 2, 8: the last two references are released at the same time
/// on the home thread and on a worker: finalized exactly once, on the home
/// thread (directly, or queued to it and drained by `pump`).
#[test]
fn concurrent_last_releases_finalize_once_at_home() {
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
        let mine = reg.release(h).unwrap();
        let theirs = worker.join().unwrap();
        reg.pump();
        assert_eq!(drops.total(), 1, "finalized exactly once");
        assert_eq!(drops.at_home(), 1, "finalized on the home thread");
        let finals = [mine, theirs]
            .iter()
            .filter(|r| !matches!(r, Released::Held(_)))
            .count();
        assert_eq!(
            finals, 1,
            "exactly one release was the last: {mine:?} {theirs:?}"
        );
        assert!(reg.is_empty());
        assert_eq!(reg.snapshot().drop_panics, 0);
    });
}

/// Invariant 6: between `transfer` on the home thread and `claim` on a
/// worker, the object stays alive although the home releases everything.
#[test]
fn transfer_in_flight_keeps_object_alive() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(42)).unwrap();
        reg.retain(h).unwrap();
        let t = reg.transfer(h).unwrap();
        let worker = {
            let drops = drops.clone();
            thread::spawn(move || {
                let p = t.claim().unwrap();
                assert_eq!(p.id, 42);
                assert_eq!(drops.total(), 0, "alive while claimed");
            })
        };
        reg.release(h).unwrap();
        worker.join().unwrap();
        reg.pump();
        assert_eq!(drops.total(), 1);
        assert_eq!(drops.at_home(), 1);
    });
}

/// A worker that claims the transfer it receives and releases it: its
/// thread's last reference, sent home (or dropped, if home has exited).
fn claim_and_release(
    reg: &Registry<Tracked>,
    from_home: mpsc::Receiver<Transfer<Tracked>>,
) -> thread::JoinHandle<()> {
    let reg = reg.clone();
    thread::spawn(move || {
        let h = reg.claim(from_home.recv().unwrap()).unwrap();
        reg.release(h).unwrap();
    })
}

/// Invariants 2, 7, 8 and the inbox Dekker handshake: a worker's final
/// release races its home thread's `pump` and its exit. The value is dropped exactly once —
/// by the home's exit drain or by the worker — and never stranded in a
/// closed inbox (a liveness check: the main thread waits for the drop). A
/// second object from the same home, held by the main thread throughout,
/// keeps the exited home's inbox alive, so a stranded value would stay
/// stranded rather than be swept up when the inbox is freed.
#[test]
fn remote_release_racing_home_exit_is_never_lost() {
    loom_tests::model(|| {
        let drops = Drops::new();
        let reg: Registry<Tracked> = Registry::builder().capacity(2).build();
        let (to_worker, from_home) = mpsc::channel();
        let (to_main, from_home_main) = mpsc::channel();
        let home = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                drops.set_home();
                let a = reg.insert(drops.value(1)).unwrap();
                let b = reg.insert(drops.value(2)).unwrap();
                to_main.send(reg.transfer(b).unwrap()).unwrap();
                to_worker.send(reg.transfer(a).unwrap()).unwrap();
                reg.pump();
                // exits: thread-local destructors drain and close the inbox
            })
        };
        let worker = claim_and_release(&reg, from_home);
        let b = reg.claim(from_home_main.recv().unwrap()).unwrap();
        home.join().unwrap();
        worker.join().unwrap();
        drops.wait_for(1);
        assert_eq!(
            drops.total(),
            1,
            "value 1 dropped exactly once; value 2 still held"
        );
        // Queued if the home's exit hook has not run yet, else dropped here.
        reg.release(b).unwrap();
        drops.wait_for(2);
        assert_eq!(drops.total(), 2);
        assert!(reg.is_empty());
        assert_eq!(reg.snapshot().drop_panics, 0);
    });
}

/// Invariants 2, 7, 8 and the inbox handshakes, through a drain stopped at
/// its limit: two values wait in the home's inbox; the home drains one
/// (`pump_at_most(1)`: the rest stays flagged) and exits while a worker's
/// final release sends a third. The third is dropped exactly once — by the
/// home's exit drain or by the worker — never stranded: the flag the
/// stopped drain leaves must not cut the chain from the worker's swap to
/// the home's next drain (it is set by an RMW, not a store). A fourth
/// object, held by the main thread throughout, keeps the inbox alive.
#[test]
fn limited_drain_racing_a_remote_release_and_exit_never_strands() {
    loom_tests::model(|| {
        let drops = Drops::new();
        let reg: Registry<Tracked> = Registry::builder().capacity(4).build();
        let (to_worker, from_home) = mpsc::channel();
        let (to_main, from_home_main) = mpsc::channel();
        let (queued, wait_queued) = mpsc::channel();
        let home = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                drops.set_home();
                let hs: Vec<_> = (1..=4)
                    .map(|i| reg.insert(drops.value(i)).unwrap())
                    .collect();
                for &h in &[hs[0], hs[1], hs[3]] {
                    to_main.send(reg.transfer(h).unwrap()).unwrap();
                }
                to_worker.send(reg.transfer(hs[2]).unwrap()).unwrap();
                wait_queued.recv().unwrap();
                assert_eq!(reg.pump_at_most(1), 1);
                // exits: thread-local destructors drain and close the inbox
            })
        };
        let worker = claim_and_release(&reg, from_home);
        for _ in 0..2 {
            let h = reg.claim(from_home_main.recv().unwrap()).unwrap();
            assert_eq!(reg.release(h).unwrap(), Released::Queued);
        }
        let kept = reg.claim(from_home_main.recv().unwrap()).unwrap();
        queued.send(()).unwrap();
        home.join().unwrap();
        worker.join().unwrap();
        drops.wait_for(3);
        assert_eq!(drops.total(), 3, "values 1-3 dropped exactly once");
        reg.release(kept).unwrap();
        drops.wait_for(4);
        assert_eq!(drops.total(), 4);
        assert!(reg.is_empty());
    });
}

/// Invariants 5, 13: the home thread, holding no reference, takes a `get`
/// guard (its access as home) while a worker drops the object's last other
/// reference. Either the guard comes first — then it keeps the object alive:
/// the worker's release is not the last, the worker is not blocked (it is
/// joined while the guard lives), and dropping the guard finalizes here — or
/// the release comes first and the guard is refused (`Stale`), never handed
/// out on a dying object.
#[test]
fn guard_blocks_finalization_not_threads() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let h = reg.insert(drops.value(7)).unwrap();
        let t = reg.transfer(h).unwrap(); // the home keeps nothing
        let worker = {
            let reg = reg.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap()
            })
        };
        match reg.get(h) {
            Ok(g) => {
                assert_eq!(g.id, 7);
                let released = worker.join().unwrap();
                assert_eq!(released, Released::Held(0), "the guard still holds it");
                assert_eq!(g.id, 7, "still alive under the guard");
                assert_eq!(drops.total(), 0);
                drop(g);
                assert_eq!(
                    drops.total(),
                    1,
                    "the guard was the last reference: finalized here"
                );
            }
            Err(e) => {
                assert_eq!(e, Error::Stale(h), "refused only once it died");
                assert_eq!(worker.join().unwrap(), Released::Queued);
                reg.pump();
                assert_eq!(drops.total(), 1);
            }
        }
        assert_eq!(drops.at_home(), 1, "finalized on the home thread");
        assert!(reg.is_empty());
    });
}

/// Invariants 2, 4: a stale handle retained while its slot is freed and
/// reused never resolves to the new object, and no value is dropped twice
/// (a retain must never resurrect an object being finalized). Capacity 1
/// forces reuse.
#[test]
fn stale_handle_never_resolves_to_reused_slot() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let old = reg.insert(drops.value(1)).unwrap();
        let t = reg.transfer(old).unwrap();
        let worker = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                let h = reg.claim(t).unwrap();
                reg.release(h).unwrap();
                // Reuses the slot if the old object is gone; the worker is the
                // new object's home and releases it at once.
                let new = reg.insert(drops.value(2)).ok();
                if let Some(new) = new {
                    assert_eq!(reg.get(new).unwrap().id, 2);
                    assert_eq!(reg.release(new).unwrap(), Released::Finalized);
                }
                new
            })
        };
        // The home may retain its object by handle, as long as it lives.
        match reg.retain(old) {
            Ok(_) => {
                assert_eq!(
                    reg.get(old).unwrap().id,
                    1,
                    "old handle must name the old object"
                );
                reg.release(old).unwrap();
            }
            Err(e) => assert_eq!(e, Error::Stale(old)),
        }
        let new = worker.join().unwrap();
        reg.pump();
        // Value 2 is dropped either by its release or, when the insert found
        // the slot still taken (`Full`), as the handed-back value.
        assert_eq!(drops.total(), 2, "every value dropped exactly once");
        if let Some(new) = new {
            assert_ne!(new, old);
        }
        assert_eq!(reg.retain(old), Err(Error::Stale(old)));
        assert!(reg.is_empty());
        assert_eq!(reg.snapshot().drop_panics, 0);
    });
}
