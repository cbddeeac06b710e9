//! `Registry::snapshot()`: every live object with its home, per-thread
//! holders, pins and outstanding transfers; per-thread pending queue sizes;
//! the panic and fork flags. Also the `Error` messages (STYLE §4: lowercase
//! phrases that say what happened and what to do).

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Handle, Registry};

#[test]
fn an_empty_registry_has_an_empty_snapshot() {
    let reg: Registry<Tracked> = Registry::new();
    let s = reg.snapshot();
    assert!(s.objects.is_empty());
    assert_eq!(s.live, 0);
    assert_eq!(s.drop_panics, 0);
    assert!(!s.forked);
    assert_eq!(s.pending(), 0);
}

#[test]
fn snapshot_reports_home_holders_pins_transfers_and_pending() {
    let log = DropLog::new();
    let reg = Registry::new();
    let main = thread::current().id();

    // a: home = main, main holds 1, pinned once, one transfer in flight.
    let a = reg.insert(Tracked::new(&log, 1)).expect("insert a");
    reg.retain(a).expect("retain a");
    reg.pin(a).expect("pin a");
    let ta = reg.transfer(a).expect("transfer a");
    // b: home = main, held only by the worker (2 references).
    let b = reg.insert(Tracked::new(&log, 2)).expect("insert b");
    let tb = reg.transfer(b).expect("transfer b");

    let (ready_tx, ready_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (after_tx, after_rx) = mpsc::channel();
    let r2 = reg.clone();
    let worker = spawn("snap-worker", move || {
        let hb = r2.claim(tb).expect("claim b");
        r2.retain(hb).expect("retain b");
        ready_tx.send(thread::current().id()).expect("send");
        release_rx.recv().expect("release");
        assert_eq!(rel(r2.release(hb)), Rel::Held(1));
        assert_eq!(rel(r2.release(hb)), Rel::Queued);
        // Main is parked on a channel: its inbox now holds b's value.
        after_tx.send(r2.snapshot()).expect("send");
    });
    let wid = common::recv(&ready_rx, "worker ready");

    let s = reg.snapshot();
    assert_eq!(s.live, 2);
    assert_eq!(s.objects.len(), 2);
    let oa = s.object(a).expect("a is in the snapshot");
    assert_eq!(oa.handle, a);
    assert_eq!(oa.home, Some(main));
    assert_eq!(oa.pins, 1);
    assert_eq!(oa.transfers, 1);
    let ha: Vec<_> = oa.holders.iter().filter(|h| h.count > 0).collect();
    assert_eq!(ha.len(), 1, "only main holds a");
    assert_eq!((ha[0].thread, ha[0].count, ha[0].exited), (main, 1, false));

    let ob = s.object(b).expect("b is in the snapshot");
    assert_eq!(ob.home, Some(main), "home is the inserting thread");
    assert_eq!((ob.pins, ob.transfers), (0, 0));
    let hb: Vec<_> = ob.holders.iter().filter(|h| h.count > 0).collect();
    assert_eq!(hb.len(), 1, "only the worker holds b");
    assert_eq!((hb[0].thread, hb[0].count, hb[0].exited), (wid, 2, false));

    let tw = s
        .threads
        .iter()
        .find(|t| t.thread == wid)
        .expect("the worker is in snapshot().threads");
    assert_eq!(tw.name.as_deref(), Some("snap-worker"));
    assert!(!tw.exited);
    assert_eq!(s.pending(), 0);

    // Now let the worker release b last: it is queued to main.
    release_tx.send(()).expect("send");
    let s2 = common::recv(&after_rx, "worker snapshot");
    join(worker);
    assert_eq!(s2.live, 1, "queued values are not live");
    assert!(s2.object(b).is_none(), "b is no longer a live object");
    assert_eq!(s2.pending(), 1, "b's value waits in main's inbox");
    let tm = s2
        .threads
        .iter()
        .find(|t| t.thread == main)
        .expect("main is in snapshot().threads");
    assert_eq!(tm.pending, 1, "the pending count is per home thread");
    assert_eq!(log.count(), 0);

    assert_eq!(reg.pump(), 1);
    let s3 = reg.snapshot();
    assert_eq!(s3.pending(), 0);
    assert_eq!(log.count(), 1);
    drop(ta);
    assert_eq!(reg.snapshot().object(a).expect("a").transfers, 0);
}

#[test]
fn snapshot_object_of_a_stale_or_foreign_handle_is_none() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert!(reg.snapshot().object(h).is_some());
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert!(reg.snapshot().object(h).is_none());
    let other = Registry::new();
    let ho = other.insert(Tracked::new(&log, 2)).expect("insert");
    assert!(reg.snapshot().object(ho).is_none());
}

#[test]
fn snapshot_live_matches_len() {
    let log = DropLog::new();
    let reg = Registry::new();
    let hs: Vec<Handle> = (0..10)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("insert"))
        .collect();
    for h in hs.iter().take(4) {
        assert_eq!(rel(reg.release(*h)), Rel::Finalized);
    }
    let s = reg.snapshot();
    assert_eq!(s.live, 6);
    assert_eq!(reg.len(), 6);
    assert_eq!(s.objects.len(), 6);
    let listed: HashSet<Handle> = s.objects.iter().map(|o| o.handle).collect();
    let expected: HashSet<Handle> = hs[4..].iter().copied().collect();
    assert_eq!(listed, expected);
}

#[test]
fn error_messages_are_distinct_lowercase_phrases() {
    let h = Handle::from_raw(42).expect("in range");
    let all = [
        Error::Stale(h),
        Error::Invalid(42),
        Error::ForeignRegistry(h),
        Error::NotHeld(h),
        Error::NotPinned(h),
        Error::Overflow(h),
        Error::Full,
        Error::Forked,
        Error::TransferClaimed,
        Error::ThreadExited,
    ];
    let mut seen = HashSet::new();
    for e in all {
        let msg = e.to_string();
        let first = msg.chars().next().expect("non-empty message");
        assert!(
            !first.is_uppercase(),
            "{e:?}: message should start lowercase: {msg:?}"
        );
        assert!(!msg.ends_with('.'), "{e:?}: no trailing period: {msg:?}");
        assert!(
            msg.split_whitespace().count() >= 4,
            "{e:?}: message should say what happened and what to do: {msg:?}"
        );
        assert!(seen.insert(msg.clone()), "{e:?}: duplicate message {msg:?}");
    }
    // Messages about a handle name it.
    for e in [
        Error::Stale(h),
        Error::ForeignRegistry(h),
        Error::NotHeld(h),
        Error::NotPinned(h),
        Error::Overflow(h),
        Error::Invalid(42),
    ] {
        assert!(
            e.to_string().contains("42"),
            "{e:?} does not name the id: {e}"
        );
    }
}

#[test]
fn error_is_a_std_error() {
    fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<Error>();
}

#[test]
fn snapshot_display_is_a_table_of_the_live_objects() {
    let log = DropLog::new();
    let reg = Registry::new();
    let a = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let b = reg.insert(Tracked::new(&log, 2)).expect("insert");
    reg.pin(b).expect("pin");
    let text = reg.snapshot().to_string();
    for h in [a, b] {
        assert!(text.contains(&h.to_string()), "{h} missing from:\n{text}");
    }
    assert!(
        text.lines().count() >= 3,
        "a header and one row per object:\n{text}"
    );
    assert_eq!(rel(reg.release(a)), Rel::Finalized);
    let text = reg.snapshot().to_string();
    assert!(
        !text.contains(&a.to_string()),
        "finalized {a} listed:\n{text}"
    );
    assert!(text.contains(&b.to_string()));
}
