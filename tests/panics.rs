//! Invariant 10: panics lose nothing. A panicking `Drop` of `T` — on release,
//! during `pump()`, on a remote release with home finalization off, and during
//! thread exit — is caught; the registry stays consistent for every other
//! object, no count is lost, and `snapshot().drop_panics` counts it.
//!
//! The panic messages printed by these tests are expected.

mod common;

use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Handle, Registry};

/// Proves the registry is fully usable: existing objects resolve with their
/// counts, and a fresh object goes through a whole lifecycle.
fn assert_consistent(
    reg: &Registry<Tracked>,
    log: &std::sync::Arc<DropLog>,
    others: &[(Handle, u64)],
) {
    for (h, id) in others {
        assert_eq!(reg.count(*h), Ok(1), "another object's count was lost");
        assert_eq!(reg.get(*h).expect("other object still readable").id, *id);
        assert_eq!(reg.retain(*h), Ok(2));
        assert_eq!(rel(reg.release(*h)), Rel::Held(1));
    }
    let before = log.count();
    let h = reg
        .insert(Tracked::new(log, 999))
        .expect("insert after a panic");
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), before + 1);
}

#[test]
fn a_panicking_drop_on_release_is_caught_and_counted() {
    let log = DropLog::new();
    let reg = Registry::new();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let bad = reg.insert(Tracked::panicking(&log, 2)).expect("insert");
    assert_eq!(reg.snapshot().drop_panics, 0);

    // Must return normally, not unwind into the caller.
    let r = rel(reg.release(bad));
    assert_eq!(r, Rel::Finalized, "the object was finalized (its Drop ran)");
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(reg.snapshot().drop_panics, 1);
    assert_eq!(reg.len(), 1, "only the other object is live");
    assert_eq!(reg.get(bad).err(), Some(tether::Error::Stale(bad)));
    assert_consistent(&reg, &log, &[(other, 1)]);
    assert_eq!(reg.snapshot().drop_panics, 1, "counted exactly once");
}

#[test]
fn a_panicking_drop_during_pump_does_not_stop_the_batch() {
    let log = DropLog::new();
    let reg = Registry::new();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let bad = reg.insert(Tracked::panicking(&log, 2)).expect("insert");
    let good = reg.insert(Tracked::new(&log, 3)).expect("insert");
    let t_bad = reg.transfer(bad).expect("transfer");
    let t_good = reg.transfer(good).expect("transfer");

    let r2 = reg.clone();
    let results = join(spawn("remote-releaser", move || {
        let hb = r2.claim(t_bad).expect("claim");
        let hg = r2.claim(t_good).expect("claim");
        (rel(r2.release(hb)), rel(r2.release(hg)))
    }));
    assert_eq!(results, (Rel::Queued, Rel::Queued));
    assert_eq!(log.count(), 0);

    let n = reg.pump(); // must not unwind
    assert_eq!(n, 2, "both queued finalizations ran");
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(
        log.times_dropped(3),
        1,
        "a panic lost the next queued value"
    );
    assert_eq!(reg.snapshot().drop_panics, 1);
    assert_eq!(reg.pump(), 0);
    assert_consistent(&reg, &log, &[(other, 1)]);
}

#[test]
fn a_panicking_drop_on_a_remote_release_with_home_finalization_off() {
    let log = DropLog::new();
    let reg = Registry::builder().home_finalization(false).build();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let bad = reg.insert(Tracked::panicking(&log, 2)).expect("insert");
    let t = reg.transfer(bad).expect("transfer");
    let r2 = reg.clone();
    let r = join(spawn("local-panicker", move || {
        let h = r2.claim(t).expect("claim");
        rel(r2.release(h))
    }));
    assert_eq!(r, Rel::Finalized, "the worker's release returned normally");
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(reg.snapshot().drop_panics, 1);
    assert_consistent(&reg, &log, &[(other, 1)]);
}

#[test]
fn a_panicking_drop_during_thread_exit_is_caught() {
    let log = DropLog::new();
    let reg = Registry::new();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    // The worker holds a reference to an object of ours (home: this thread)
    // and is home of two objects, one of which panics when dropped.
    reg.retain(other).expect("retain");
    let t_other = reg.transfer(other).expect("transfer");

    let r2 = reg.clone();
    let log2 = log.clone();
    let wid = join(spawn("exit-panicker", move || {
        r2.claim(t_other).expect("claim");
        r2.insert(Tracked::panicking(&log2, 2)).expect("insert");
        r2.insert(Tracked::new(&log2, 3)).expect("insert");
        thread::current().id()
    }));
    // A panic escaping a thread-local destructor would have aborted the
    // whole process; getting here means it was caught.
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(
        log.times_dropped(3),
        1,
        "the panic lost the worker's other object"
    );
    assert_eq!(log.dropped_on(2), Some(wid));
    assert_eq!(reg.snapshot().drop_panics, 1);
    // The worker's reference to `other` was released too: only home's is left.
    assert_eq!(
        common::nonzero(reg.holders(other).expect("holders")),
        vec![(thread::current().id(), 1)]
    );
    assert_consistent(&reg, &log, &[(other, 1)]);
}

#[test]
fn a_panicking_drop_inside_a_guard_drop_is_caught() {
    let log = DropLog::new();
    let reg = Registry::new();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let bad = reg.insert(Tracked::panicking(&log, 2)).expect("insert");
    let g = reg.get(bad).expect("get");
    assert!(matches!(rel(reg.release(bad)), Rel::Held(_)));
    drop(g); // last reference: finalizes here, Drop panics, must be caught
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(reg.snapshot().drop_panics, 1);
    assert_consistent(&reg, &log, &[(other, 1)]);
}

#[test]
fn a_panicking_drop_inside_a_proxy_drop_is_caught() {
    let log = DropLog::new();
    let reg = Registry::new();
    let other = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let p = reg
        .insert_proxy(Tracked::panicking(&log, 2))
        .expect("insert_proxy");
    let q = p.clone();
    drop(p);
    assert_eq!(log.count(), 0);
    drop(q);
    assert_eq!(log.times_dropped(2), 1);
    assert_eq!(reg.snapshot().drop_panics, 1);
    assert_consistent(&reg, &log, &[(other, 1)]);
}

#[test]
fn panicking_drops_at_registry_teardown_are_caught() {
    // Dropping the last handle to a registry drops what nobody can release
    // any more: a live object and a value still queued for its home thread.
    // Their panics stay inside the registry's teardown.
    let log = DropLog::new();
    let reg = Registry::new();
    let live = reg.insert(Tracked::panicking(&log, 1)).expect("insert");
    let queued = reg.insert(Tracked::panicking(&log, 2)).expect("insert");
    let t = reg.transfer(queued).expect("transfer");
    let r2 = reg.clone();
    let r = join(spawn("queues-home", move || {
        let h = r2.claim(t).expect("claim");
        rel(r2.release(h))
    }));
    assert_eq!(r, Rel::Queued);
    assert_eq!(reg.count(live), Ok(1));
    assert_eq!(log.count(), 0);
    let teardown = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(reg)));
    assert!(teardown.is_ok(), "a Drop panic escaped the registry's drop");
    assert_eq!(log.times_dropped(1), 1);
    assert_eq!(log.times_dropped(2), 1);
    assert!(log.threads().iter().all(|t| *t == thread::current().id()));
}
