//! Loom model of the access rule (invariant 5) racing slot reuse (issue 15,
//! item 3).
#![cfg(loom)]

use loom::thread;
use loom_tests::{Drops, Tracked};
use tether::{Error, Handle, Registry};

/// The home thread probes the *successor* id of its object X (same index,
/// next generation) after handing its only reference to a worker, while the
/// worker releases X and inserts its own object Y into the reused slot.
/// The home may access X (its own object) but never Y (the worker's, never
/// given to it, not pinned): a probe is refused whichever object the slot
/// holds when its hold lands. Deciding access from the occupant seen before
/// the hold's CAS (X, whose home the prober is) let the hold land on Y.
#[test]
fn successor_id_gives_no_access_when_the_slot_is_reused_mid_check() {
    loom_tests::model(|| {
        let drops = Drops::new();
        drops.set_home();
        let reg: Registry<Tracked> = Registry::builder().capacity(1).build();
        let x = reg.insert(drops.value(1)).unwrap();
        let succ = Handle::from_raw(x.to_raw() + (1 << 24)).unwrap();
        let t = reg.transfer(x).unwrap();
        let worker = {
            let reg = reg.clone();
            let drops = drops.clone();
            thread::spawn(move || {
                let x = reg.claim(t).unwrap();
                reg.release(x).unwrap(); // queued home; the slot is free
                let y = reg.insert(drops.value(2)).unwrap();
                assert_eq!(y, succ, "Y took X's slot under the next generation");
                reg.release(y).unwrap();
            })
        };
        match reg.get(succ) {
            Ok(g) => panic!("the home got access to the worker's object {}", g.id),
            Err(e) => assert!(
                matches!(e, Error::NotHeld(_) | Error::Stale(_) | Error::Invalid(_)),
                "{e:?}"
            ),
        }
        worker.join().unwrap();
        reg.pump();
        assert_eq!(drops.total(), 2, "both finalized exactly once");
        assert!(reg.is_empty());
    });
}
