//! Invariant 3: counts are per thread. A thread can only release references
//! it holds; a release by a thread whose count is zero is `Err(NotHeld)` and
//! changes nothing. Also `holders()` and `count()` as seen from each thread.

mod common;

use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use common::{count_of, join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Registry};

#[test]
fn release_by_a_non_holder_is_not_held_and_changes_nothing() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let home = thread::current().id();

    let r2 = reg.clone();
    let results = join(spawn("stranger", move || {
        // A buggy thread releasing a handle it never held, many times.
        let rs: Vec<Rel> = (0..100).map(|_| rel(r2.release(h))).collect();
        (rs, r2.count(h))
    }));
    let (rs, stranger_count) = results;
    assert!(
        rs.iter().all(|r| *r == Rel::Err(Error::NotHeld(h))),
        "every release by a non-holder must be Err(NotHeld): {rs:?}"
    );
    assert_eq!(
        stranger_count,
        Ok(0),
        "count() of a live, unheld object is 0"
    );

    assert_eq!(reg.count(h), Ok(2), "the holder's count is untouched");
    assert_eq!(
        common::nonzero(reg.holders(h).expect("holders")),
        vec![(home, 2)]
    );
    assert_eq!(log.count(), 0, "a stranger's release freed the object");
    assert_eq!(reg.get(h).expect("still usable").id, 1);

    assert_eq!(rel(reg.release(h)), Rel::Held(1));
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}

#[test]
fn one_threads_extra_release_cannot_free_an_object_another_thread_uses() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer one of two refs");
    assert_eq!(reg.count(h), Ok(1));

    let r2 = reg.clone();
    let worker = spawn("double-releaser", move || {
        let h2 = r2.claim(t).expect("claim");
        assert_eq!(h2, h, "claim resolves to the same object");
        assert_eq!(r2.count(h), Ok(1));
        let first = rel(r2.release(h));
        // The bug: releasing again.
        let second = rel(r2.release(h));
        let third = rel(r2.release(h));
        (first, second, third, r2.count(h))
    });
    let (first, second, third, after) = join(worker);
    assert_eq!(first, Rel::Held(0), "home still holds: object alive");
    assert_eq!(second, Rel::Err(Error::NotHeld(h)));
    assert_eq!(third, Rel::Err(Error::NotHeld(h)));
    assert_eq!(after, Ok(0));

    assert_eq!(reg.count(h), Ok(1), "home's count is untouched");
    assert_eq!(
        log.count(),
        0,
        "worker's extra releases freed home's object"
    );
    assert_eq!(reg.get(h).expect("home still uses it").id, 1);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}

#[test]
fn holders_and_count_report_each_thread_separately() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let home = thread::current().id();
    // Home: 1 (insert) + 2 retains = 3, then one more for the worker's token.
    reg.retain(h).expect("retain");
    reg.retain(h).expect("retain");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(reg.count(h), Ok(3));

    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("counter", move || {
        r2.claim(t).expect("claim");
        assert_eq!(r2.retain(h), Ok(2));
        assert_eq!(r2.count(h), Ok(2), "worker sees its own count");
        ready_tx
            .send((thread::current().id(), r2.holders(h).expect("holders")))
            .expect("send");
        done_rx.recv().expect("done");
        assert_eq!(rel(r2.release(h)), Rel::Held(1));
        assert_eq!(rel(r2.release(h)), Rel::Held(0));
        r2.holders(h).expect("holders after release")
    });
    let (wid, seen_by_worker) = common::recv(&ready_rx, "worker ready");
    let seen_by_home = reg.holders(h).expect("holders");
    for seen in [&seen_by_worker, &seen_by_home] {
        assert_eq!(count_of(seen, home), 3, "home holds 3: {seen:?}");
        assert_eq!(count_of(seen, wid), 2, "worker holds 2: {seen:?}");
        assert!(
            seen.iter().all(|(t, _)| *t == home || *t == wid),
            "unexpected holder: {seen:?}"
        );
    }
    assert_eq!(
        reg.count(h),
        Ok(3),
        "home's count is its own, not the total"
    );

    done_tx.send(()).expect("send");
    let after = join(worker);
    assert_eq!(count_of(&after, wid), 0, "worker let go: {after:?}");
    assert_eq!(count_of(&after, home), 3);
    for n in (0..3).rev() {
        let expect = if n == 0 { Rel::Finalized } else { Rel::Held(n) };
        assert_eq!(rel(reg.release(h)), expect);
    }
    assert_eq!(log.count(), 1);
}

#[test]
fn concurrent_holders_never_free_early() {
    // Four workers each hold one claimed reference and churn retain/release
    // on it while home keeps one; nobody's churn can free the object.
    const WORKERS: usize = 4;
    const ROUNDS: u32 = 200;
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let start = Arc::new(Barrier::new(WORKERS));
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        reg.retain(h).expect("retain for worker");
        let t = reg.transfer(h).expect("transfer");
        let r2 = reg.clone();
        let start = Arc::clone(&start);
        workers.push(spawn(&format!("churn-{i}"), move || {
            r2.claim(t).expect("claim");
            start.wait();
            for round in 0..ROUNDS {
                assert_eq!(r2.retain(h), Ok(2), "round {round}");
                assert_eq!(r2.get(h).expect("get").id, 1);
                assert_eq!(rel(r2.release(h)), Rel::Held(1), "round {round}");
            }
            assert_eq!(rel(r2.release(h)), Rel::Held(0));
            // The bug: an extra release must bounce.
            assert_eq!(rel(r2.release(h)), Rel::Err(Error::NotHeld(h)));
            // And with count 0 this worker may not retain the (now guessed)
            // handle again, even though the object is alive.
            assert_eq!(r2.retain(h), Err(Error::NotHeld(h)));
        }));
    }
    for w in workers {
        join(w);
    }
    assert_eq!(log.count(), 0, "object freed while home still holds it");
    assert_eq!(reg.count(h), Ok(1));
    let holders = common::nonzero(reg.holders(h).expect("holders"));
    assert_eq!(holders, vec![(thread::current().id(), 1)]);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}
