//! Basic lifecycle: insert / retain / release / count / len / is_empty, the
//! three `Released` outcomes, exactly-once finalization (invariant 2) and no
//! premature release (invariant 1).

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Handle, Registry};

#[test]
fn registry_is_send_sync_clone_and_handle_is_a_small_copy_id() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_copy<T: Copy>() {}
    assert_send_sync::<Registry<Tracked>>();
    assert_copy::<Handle>();
    assert_eq!(std::mem::size_of::<Handle>(), 8, "a Handle is 8 bytes");

    // Debug does not need T: Debug (Tracked is not Debug).
    let reg: Registry<Tracked> = Registry::default();
    assert!(!format!("{reg:?}").is_empty());
}

#[test]
fn insert_retain_release_counts_and_finalizes_once_on_home() {
    let log = DropLog::new();
    let reg = Registry::new();
    assert!(reg.is_empty());
    assert_eq!(reg.len(), 0);

    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(reg.len(), 1);
    assert!(!reg.is_empty());
    assert_eq!(reg.count(h), Ok(1), "insert gives the caller one reference");

    assert_eq!(reg.retain(h), Ok(2), "retain returns the count after +1");
    assert_eq!(reg.retain(h), Ok(3));
    assert_eq!(reg.count(h), Ok(3));

    assert_eq!(rel(reg.release(h)), Rel::Held(2));
    assert_eq!(rel(reg.release(h)), Rel::Held(1));
    assert_eq!(log.count(), 0, "object finalized while still referenced");
    assert_eq!(reg.get(h).expect("still alive").id, 1);

    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(
        log.count(),
        1,
        "the last release on home drops the value now"
    );
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
    assert_eq!(reg.len(), 0);
    assert!(reg.is_empty());

    // Exactly once: nothing else can drop it again.
    assert_eq!(rel(reg.release(h)), Rel::Err(Error::Stale(h)));
    assert_eq!(reg.pump(), 0, "nothing queued for the home thread");
    assert_eq!(log.times_dropped(1), 1);
}

#[test]
fn clones_share_one_table() {
    let log = DropLog::new();
    let a = Registry::new();
    let b = a.clone();
    let h = a.insert(Tracked::new(&log, 7)).expect("insert");
    assert_eq!(b.len(), 1, "a clone sees the same objects");
    assert_eq!(b.count(h), Ok(1), "and the same per-thread counts");
    assert_eq!(b.get(h).expect("get through the clone").id, 7);
    assert_eq!(rel(b.release(h)), Rel::Finalized);
    assert_eq!(a.len(), 0);
    assert_eq!(log.count(), 1);
}

#[test]
fn many_objects_each_finalized_exactly_once() {
    let log = DropLog::new();
    let reg = Registry::new();
    let handles: Vec<Handle> = (0..200)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("insert"))
        .collect();
    let distinct: HashSet<Handle> = handles.iter().copied().collect();
    assert_eq!(distinct.len(), handles.len(), "live handles are distinct");
    assert_eq!(reg.len(), 200);

    // Each value can be read back through its own handle.
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(reg.get(*h).expect("get").id, i as u64);
    }

    // Release in an interleaved order: evens then odds.
    for h in handles
        .iter()
        .step_by(2)
        .chain(handles.iter().skip(1).step_by(2))
    {
        assert_eq!(rel(reg.release(*h)), Rel::Finalized);
    }
    assert!(reg.is_empty());
    let per_id = log.per_id();
    assert_eq!(per_id.len(), 200, "every value was dropped");
    assert!(
        per_id.values().all(|n| *n == 1),
        "some value was dropped more than once: {per_id:?}"
    );
}

#[test]
fn a_pin_alone_keeps_the_object_alive() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.pin(h).expect("home may pin");
    assert_eq!(rel(reg.release(h)), Rel::Held(0), "pinned: still alive");
    assert_eq!(log.count(), 0, "finalized while pinned");
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.get(h).expect("pinned object is reachable").id, 1);

    reg.unpin(h).expect("unpin");
    assert_eq!(log.count(), 1, "last pin gone on home: dropped now");
    assert_eq!(reg.len(), 0);
    assert_eq!(reg.retain(h), Err(Error::Stale(h)));
}

#[test]
fn pins_are_counted() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.pin(h).expect("pin 1");
    reg.pin(h).expect("pin 2");
    assert_eq!(rel(reg.release(h)), Rel::Held(0));
    reg.unpin(h).expect("unpin 1");
    assert_eq!(log.count(), 0, "one pin is left: not finalized");
    reg.unpin(h).expect("unpin 2");
    assert_eq!(log.count(), 1);
}

#[test]
fn unpin_without_pin_is_not_pinned_and_changes_nothing() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(reg.unpin(h), Err(Error::NotPinned(h)));
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 0);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

#[test]
fn a_guard_counts_as_a_reference_while_it_lives() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let g = reg.get(h).expect("get");
    assert_eq!(g.handle(), h);
    assert_eq!(reg.count(h), Ok(2), "count includes the live guard");

    let r = rel(reg.release(h));
    assert!(matches!(r, Rel::Held(_)), "guard keeps it alive: {r:?}");
    assert_eq!(log.count(), 0, "finalized under a live guard");
    assert_eq!(g.id, 1, "the guard still reads the value");
    // The explicit reference is gone; the guard is not an explicit ref.
    assert_eq!(rel(reg.release(h)), Rel::Err(Error::NotHeld(h)));

    drop(g);
    assert_eq!(log.count(), 1, "dropping the last guard on home finalizes");
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
    assert!(reg.is_empty());
}

#[test]
fn no_premature_release_while_any_thread_holds() {
    // Invariant 1 with three independent holders: home, a worker and a pin.
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain for the transfer");
    let t = reg.transfer(h).expect("transfer");
    reg.pin(h).expect("pin");

    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("lifecycle-holder", move || {
        let h = r2.claim(t).expect("claim");
        held_tx.send(()).expect("send");
        go_rx.recv().expect("go");
        assert_eq!(r2.get(h).expect("worker still holds it").id, 1);
        rel(r2.release(h))
    });
    common::recv(&held_rx, "worker claim");

    assert_eq!(
        rel(reg.release(h)),
        Rel::Held(0),
        "worker and pin still hold"
    );
    assert_eq!(log.count(), 0);
    reg.unpin(h).expect("unpin");
    assert_eq!(log.count(), 0, "worker still holds: must not be finalized");
    assert_eq!(reg.len(), 1);

    go_tx.send(()).expect("send go");
    let r = join(worker);
    assert_eq!(
        r,
        Rel::Queued,
        "last release on a non-home thread is queued"
    );
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
}
