//! Invariant 8 and DESIGN §5: point-to-point finalization. A final release on
//! a non-home thread returns `Queued`; the value is dropped on its home thread
//! at `pump()` or its next registry call, never on the releasing thread while
//! the home lives, and never by another thread's `pump()`. The releasing
//! thread never blocks on the home thread. `home_finalization(false)` drops on
//! the releasing thread.

mod common;

use std::sync::{mpsc, Arc};
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Handle, Registry, Transfer};

/// Inserts `n` values on the current thread and hands all their only
/// references to the returned tokens.
fn insert_and_transfer(
    reg: &Registry<Tracked>,
    log: &std::sync::Arc<DropLog>,
    ids: std::ops::Range<u64>,
) -> Vec<Transfer<Tracked>> {
    ids.map(|i| {
        let h = reg.insert(Tracked::new(log, i)).expect("insert");
        reg.transfer(h).expect("transfer")
    })
    .collect()
}

#[test]
fn remote_final_release_is_queued_and_dropped_at_pump_on_home() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let tokens = insert_and_transfer(&reg, &log, 0..3);
    let r2 = reg.clone();
    let log2 = log.clone();
    let (results, drops_on_worker, worker_pump) = join(spawn("remote-releaser", move || {
        let hs: Vec<Handle> = tokens
            .into_iter()
            .map(|t| r2.claim(t).expect("claim"))
            .collect();
        let results: Vec<Rel> = hs.iter().map(|h| rel(r2.release(*h))).collect();
        // The worker's own pump never runs another thread's queue.
        let worker_pump = r2.pump();
        (results, log2.count(), worker_pump)
    }));
    assert_eq!(results, vec![Rel::Queued; 3]);
    assert_eq!(drops_on_worker, 0, "dropped on the releasing thread");
    assert_eq!(worker_pump, 0, "a foreign pump ran home's finalizations");
    assert_eq!(log.count(), 0, "dropped before home asked for it");
    assert_eq!(reg.len(), 0, "queued values are not live");
    assert_eq!(reg.pump(), 3);
    assert_eq!(log.count(), 3);
    assert!(log.threads().iter().all(|t| *t == home), "dropped off home");
    assert_eq!(reg.pump(), 0, "finalized exactly once");
}

#[test]
fn queued_values_are_dropped_at_the_home_threads_next_registry_call() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let tokens = insert_and_transfer(&reg, &log, 0..1);
    let r2 = reg.clone();
    let r = join(spawn("remote-releaser", move || {
        let t = tokens.into_iter().next().expect("one token");
        let h = r2.claim(t).expect("claim");
        rel(r2.release(h))
    }));
    assert_eq!(r, Rel::Queued);
    assert_eq!(log.count(), 0);
    // Any registry call on home drains (a bounded batch of) its inbox.
    let h2 = reg.insert(Tracked::new(&log, 100)).expect("insert");
    assert_eq!(log.count(), 1, "insert on home did not drain its inbox");
    assert_eq!(log.dropped_on(0), Some(home));
    assert_eq!(reg.pump(), 0, "already drained");
    assert_eq!(rel(reg.release(h2)), Rel::Finalized);
}

#[test]
fn a_large_queue_is_fully_drained_by_pump_and_nothing_is_lost() {
    const N: u64 = 1000;
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let tokens = insert_and_transfer(&reg, &log, 0..N);
    let r2 = reg.clone();
    let results = join(spawn("bulk-releaser", move || {
        tokens
            .into_iter()
            .map(|t| {
                let h = r2.claim(t).expect("claim");
                rel(r2.release(h))
            })
            .filter(|r| *r == Rel::Queued)
            .count()
    }));
    assert_eq!(results, N as usize);
    assert_eq!(reg.snapshot().pending() as u64 + log.count() as u64, N);
    let pumped = reg.pump();
    assert_eq!(log.count() as u64, N, "pump() left values in the queue");
    assert!(pumped as u64 <= N);
    let per_id = log.per_id();
    assert_eq!(per_id.len() as u64, N);
    assert!(per_id.values().all(|n| *n == 1), "a value dropped twice");
    assert!(log.threads().iter().all(|t| *t == home));
    assert_eq!(reg.snapshot().pending(), 0);
}

#[test]
fn the_releasing_thread_never_blocks_on_a_parked_home() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let t = insert_and_transfer(&reg, &log, 0..1)
        .pop()
        .expect("one token");
    let (done_tx, done_rx) = mpsc::channel();
    let r2 = reg.clone();
    let log2 = log.clone();
    let worker = spawn("never-blocks", move || {
        let h = r2.claim(t).expect("claim");
        let r = rel(r2.release(h));
        done_tx.send((r, log2.count())).expect("send");
    });
    // Home parks on a channel: no registry call, no pump. If the worker's
    // release waited for home, this would never return.
    let (r, drops_on_worker) = common::recv(&done_rx, "worker's release");
    join(worker);
    assert_eq!(r, Rel::Queued);
    assert_eq!(drops_on_worker, 0);
    assert_eq!(log.count(), 0);
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(0), Some(home));
}

#[test]
fn finalizations_go_only_to_their_own_home() {
    // Two homes, A (this thread) and B; a worker releases one object of each.
    // Each value must be dropped by its own home, and pumping one home must
    // not run the other's queue.
    let log = DropLog::new();
    let reg = Registry::new();
    let a = thread::current().id();
    let ta = insert_and_transfer(&reg, &log, 0..1)
        .pop()
        .expect("token a");

    let (tb_tx, tb_rx) = mpsc::channel();
    let (released_tx, released_rx) = mpsc::channel::<()>();
    let (pumped_tx, pumped_rx) = mpsc::channel();
    let rb = reg.clone();
    let logb = log.clone();
    let home_b = spawn("home-b", move || {
        let tb = insert_and_transfer(&rb, &logb, 1..2)
            .pop()
            .expect("token b");
        tb_tx.send(tb).expect("send");
        released_rx.recv().expect("released");
        let before = logb.dropped_on(1);
        let n = rb.pump();
        pumped_tx.send(()).expect("send");
        (before, n, thread::current().id())
    });
    let tb = common::recv(&tb_rx, "token b");

    let rw = reg.clone();
    let results = join(spawn("releaser", move || {
        let ha = rw.claim(ta).expect("claim a");
        let hb = rw.claim(tb).expect("claim b");
        (rel(rw.release(ha)), rel(rw.release(hb)))
    }));
    assert_eq!(results, (Rel::Queued, Rel::Queued));
    released_tx.send(()).expect("send");
    common::recv(&pumped_rx, "home b pumped");
    assert_eq!(log.dropped_on(0), None, "b's pump dropped a's value");
    let (b_before, b_pumped, b) = join(home_b);
    assert_eq!(b_before, None);
    assert_eq!(b_pumped, 1);
    assert_eq!(log.dropped_on(1), Some(b));
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(0), Some(a));
}

#[test]
fn home_finalization_off_drops_on_the_releasing_thread() {
    let log = DropLog::new();
    let reg = Registry::builder().home_finalization(false).build();
    let tokens = insert_and_transfer(&reg, &log, 0..2);
    let r2 = reg.clone();
    let log2 = log.clone();
    let (results, drops_there, wid) = join(spawn("local-finalizer", move || {
        let rs: Vec<Rel> = tokens
            .into_iter()
            .map(|t| {
                let h = r2.claim(t).expect("claim");
                rel(r2.release(h))
            })
            .collect();
        (rs, log2.count(), thread::current().id())
    }));
    assert_eq!(results, vec![Rel::Finalized; 2]);
    assert_eq!(drops_there, 2, "dropped right away on the releasing thread");
    assert!(log.threads().iter().all(|t| *t == wid));
    assert_eq!(reg.pump(), 0, "nothing was queued");
}

#[test]
fn home_release_finalizes_immediately_even_with_finalization_on() {
    let log = DropLog::new();
    let reg = Registry::builder().home_finalization(true).build();
    let h = reg.insert(Tracked::new(&log, 0)).expect("insert");
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
    assert_eq!(reg.pump(), 0);
}

#[test]
fn racing_last_releases_finalize_exactly_once() {
    // Home and a worker release "at the same time" (lined up by a barrier);
    // exactly one of them is last, and the value is dropped exactly once,
    // on home.
    const N: u64 = 300;
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let (tok_tx, tok_rx) = mpsc::channel::<Transfer<Tracked>>();
    let (res_tx, res_rx) = mpsc::channel();
    let r2 = reg.clone();
    let b2 = std::sync::Arc::clone(&barrier);
    let worker = spawn("racer", move || {
        for (i, t) in tok_rx.iter().enumerate() {
            let r = if i % 2 == 0 {
                let h = r2.claim(t).expect("claim");
                b2.wait();
                rel(r2.release(h))
            } else {
                b2.wait();
                drop(t); // an unclaimed token released by its drop
                Rel::Held(0)
            };
            res_tx.send(r).expect("send");
        }
    });
    for i in 0..N {
        let h = reg.insert(Tracked::new(&log, i)).expect("insert");
        reg.retain(h).expect("retain");
        tok_tx
            .send(reg.transfer(h).expect("transfer"))
            .expect("send");
        barrier.wait();
        let mine = rel(reg.release(h));
        let theirs = common::recv(&res_rx, "racer");
        match mine {
            Rel::Finalized => {
                assert_eq!(theirs, Rel::Held(0), "round {i}: both were last");
            }
            Rel::Held(0) => assert!(
                matches!(theirs, Rel::Queued | Rel::Held(0)),
                "round {i}: {theirs:?}"
            ),
            other => panic!("round {i}: home's release gave {other:?}"),
        }
    }
    drop(tok_tx);
    join(worker);
    reg.pump();
    let per_id = log.per_id();
    assert_eq!(per_id.len() as u64, N, "a value was never finalized");
    assert!(per_id.values().all(|n| *n == 1), "a value finalized twice");
    assert!(log.threads().iter().all(|t| *t == home), "dropped off home");
    assert!(reg.is_empty());
}

#[test]
fn pumping_while_workers_release_loses_nothing() {
    const PER_WORKER: u64 = 300;
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    // All inserts first: an insert on home would drain the queue itself.
    let batches: Vec<_> = (0..2u64)
        .map(|w| insert_and_transfer(&reg, &log, w * PER_WORKER..(w + 1) * PER_WORKER))
        .collect();
    let mut workers = Vec::new();
    for (w, tokens) in batches.into_iter().enumerate() {
        let r2 = reg.clone();
        workers.push(spawn(&format!("releaser-{w}"), move || {
            for t in tokens {
                let h = r2.claim(t).expect("claim");
                assert_eq!(rel(r2.release(h)), Rel::Queued);
            }
        }));
    }
    let mut pumped = 0;
    while !workers.iter().all(|w| w.is_finished()) {
        pumped += reg.pump();
        thread::yield_now();
    }
    for w in workers {
        join(w);
    }
    pumped += reg.pump();
    assert_eq!(
        pumped as u64,
        2 * PER_WORKER,
        "pump() counts every finalization"
    );
    let per_id = log.per_id();
    assert_eq!(per_id.len() as u64, 2 * PER_WORKER);
    assert!(per_id.values().all(|n| *n == 1));
    assert!(log.threads().iter().all(|t| *t == home));
}

/// Queues one value for the calling (home) thread: inserted here, its only
/// reference released last by a worker.
fn queue_one_home(reg: &Registry<Tracked>, log: &Arc<DropLog>, id: u64) {
    let t = insert_and_transfer(reg, log, id..id + 1)
        .pop()
        .expect("one token");
    let r2 = reg.clone();
    let r = join(spawn("queues-home", move || {
        let h = r2.claim(t).expect("claim");
        rel(r2.release(h))
    }));
    assert_eq!(r, Rel::Queued);
}

#[test]
fn registry_calls_that_drain_the_home_queue_still_do_their_own_work() {
    // With a value queued for this thread, every call that drains takes the
    // general path: its own result must be the same as without the queue.
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let drained = |id: u64, call: &str| {
        assert_eq!(log.times_dropped(id), 1, "{call} did not drain value {id}");
    };
    queue_one_home(&reg, &log, 100);
    assert_eq!(reg.retain(h), Ok(2));
    drained(100, "retain");
    queue_one_home(&reg, &log, 101);
    assert_eq!(reg.get(h).map(|g| g.id).ok(), Some(1));
    drained(101, "get");
    queue_one_home(&reg, &log, 102);
    let p = reg.proxy(h).expect("proxy");
    drained(102, "proxy");
    assert_eq!(reg.count(h), Ok(3));
    drop(p);
    queue_one_home(&reg, &log, 103);
    assert_eq!(rel(reg.release(h)), Rel::Held(1));
    drained(103, "release");
    queue_one_home(&reg, &log, 104);
    assert_eq!(reg.pin(h), Ok(()));
    drained(104, "pin");
    queue_one_home(&reg, &log, 105);
    assert_eq!(reg.unpin(h), Ok(()));
    drained(105, "unpin");
    assert_eq!(reg.count(h), Ok(1));
    let t = reg.transfer(h).expect("transfer");
    queue_one_home(&reg, &log, 106);
    assert_eq!(reg.claim(t), Ok(h));
    drained(106, "claim");
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 7, "only the queued values were dropped");
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert!(reg.is_empty());
}
