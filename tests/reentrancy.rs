//! Invariants 12 and 13: re-entrancy is safe and nothing is blocked by a
//! stranger. A `Drop` of `T` may call the registry (release, insert) without
//! deadlock; no registry lock is held while user code runs (a `Drop`, a live
//! guard), so other threads' inserts and releases proceed.
//!
//! Every scenario runs under a watchdog: a deadlock fails the test with a
//! message instead of hanging it.

mod common;

use std::sync::{mpsc, Arc, Barrier};

use common::{join, rel, spawn, with_watchdog, DropLog, Rel, Tracked};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Handle, Registry};

/// What a [`Node`] does from inside its `Drop`.
enum OnDrop {
    Nothing,
    /// Read then release another handle of the same registry.
    Release(Registry<Node>, Handle, Arc<Mutex<Vec<Rel>>>),
    /// Insert a new value into the same registry.
    Insert(Registry<Node>, Arc<Mutex<Vec<Handle>>>),
    /// Rendezvous twice with another thread (to hold the drop open).
    Rendezvous(Arc<Barrier>),
    /// Rendezvous twice, then retain and release a handle (a registry call
    /// that drains the home queue when something is pending).
    RendezvousThenUse(Arc<Barrier>, Registry<Node>, Handle, Arc<Mutex<Vec<Rel>>>),
}

struct Node {
    id: u64,
    /// Records this node's drop in the test's `DropLog`.
    _drop_log: Tracked,
    on_drop: OnDrop,
}

impl Node {
    fn new(log: &Arc<DropLog>, id: u64, on_drop: OnDrop) -> Self {
        Self {
            id,
            _drop_log: Tracked::new(log, id),
            on_drop,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.on_drop, OnDrop::Nothing) {
            OnDrop::Nothing => {}
            OnDrop::Release(reg, h, sink) => {
                // Registry calls first; the sink is locked only afterwards,
                // since nested drops push to it too.
                let seen = reg.get(h).map(|g| g.id).err();
                let r = rel(reg.release(h));
                let mut sink = sink.lock();
                if let Some(e) = seen {
                    sink.push(Rel::Err(e));
                }
                sink.push(r);
            }
            OnDrop::Insert(reg, sink) => {
                let h = reg
                    .insert(Node::new(
                        &Arc::new(DropLog::default()),
                        self.id + 1000,
                        OnDrop::Nothing,
                    ))
                    .expect("insert from inside Drop");
                sink.lock().push(h);
            }
            OnDrop::Rendezvous(b) => {
                b.wait(); // "I am inside Drop"
                b.wait(); // "you may finish"
            }
            OnDrop::RendezvousThenUse(b, reg, h, sink) => {
                b.wait(); // "I am inside Drop"
                b.wait(); // "you did your part"
                let retained = reg.retain(h);
                let released = rel(reg.release(h));
                let mut sink = sink.lock();
                sink.push(retained.map_or_else(Rel::Err, Rel::Held));
                sink.push(released);
            }
        }
    }
}

fn sink<T>() -> Arc<Mutex<Vec<T>>> {
    Arc::new(Mutex::new(Vec::new()))
}

/// Inserts a child (value 1) and a parent (value 2) whose `Drop` releases
/// the child through the registry, recording the outcome in `results`.
fn parent_releasing_child(
    reg: &Registry<Node>,
    log: &Arc<DropLog>,
    results: &Arc<Mutex<Vec<Rel>>>,
) -> Handle {
    let child = reg
        .insert(Node::new(log, 1, OnDrop::Nothing))
        .expect("insert child");
    reg.insert(Node::new(
        log,
        2,
        OnDrop::Release(reg.clone(), child, Arc::clone(results)),
    ))
    .expect("insert parent")
}

fn take<T>(s: &Arc<Mutex<Vec<T>>>) -> Vec<T> {
    std::mem::take(&mut *s.lock())
}

#[test]
fn a_drop_that_releases_another_handle_does_not_deadlock() {
    with_watchdog("drop-releases", || {
        let log = DropLog::new();
        let reg: Registry<Node> = Registry::new();
        let results = sink();
        let parent = parent_releasing_child(&reg, &log, &results);
        assert_eq!(rel(reg.release(parent)), Rel::Finalized);
        assert_eq!(take(&results), vec![Rel::Finalized], "nested release");
        assert_eq!(log.times_dropped(1), 1);
        assert_eq!(log.times_dropped(2), 1);
        assert!(reg.is_empty());
    });
}

#[test]
fn a_chain_of_drops_each_releasing_the_next() {
    with_watchdog("drop-chain", || {
        const N: u64 = 100;
        let log = DropLog::new();
        let reg: Registry<Node> = Registry::new();
        let results = sink();
        let mut prev = reg
            .insert(Node::new(&log, 0, OnDrop::Nothing))
            .expect("insert");
        for i in 1..N {
            prev = reg
                .insert(Node::new(
                    &log,
                    i,
                    OnDrop::Release(reg.clone(), prev, Arc::clone(&results)),
                ))
                .expect("insert");
        }
        assert_eq!(reg.len(), N as usize);
        assert_eq!(rel(reg.release(prev)), Rel::Finalized);
        assert_eq!(log.count(), N as usize, "every link was finalized");
        let rs = take(&results);
        assert_eq!(rs.len(), (N - 1) as usize);
        assert!(rs.iter().all(|r| *r == Rel::Finalized), "{rs:?}");
        assert!(reg.is_empty());
    });
}

#[test]
fn a_drop_that_inserts_does_not_deadlock() {
    with_watchdog("drop-inserts", || {
        let log = DropLog::new();
        let reg: Registry<Node> = Registry::new();
        let inserted = sink();
        let h = reg
            .insert(Node::new(
                &log,
                1,
                OnDrop::Insert(reg.clone(), Arc::clone(&inserted)),
            ))
            .expect("insert");
        assert_eq!(rel(reg.release(h)), Rel::Finalized);
        assert_eq!(log.times_dropped(1), 1);
        let new = take(&inserted);
        assert_eq!(new.len(), 1);
        assert_ne!(new[0], h);
        assert_eq!(reg.len(), 1, "the value inserted from Drop is live");
        assert_eq!(reg.get(new[0]).expect("get").id, 1001);
        assert_eq!(reg.count(new[0]), Ok(1), "inserted by this (home) thread");
        assert_eq!(rel(reg.release(new[0])), Rel::Finalized);
    });
}

#[test]
fn a_drop_run_by_pump_may_release_other_handles() {
    with_watchdog("pump-reentrant", || {
        let log = DropLog::new();
        let reg: Registry<Node> = Registry::new();
        let results = sink();
        let parent = parent_releasing_child(&reg, &log, &results);
        let t = reg.transfer(parent).expect("transfer");
        let r2 = reg.clone();
        let r = join(spawn("releases-parent", move || {
            let h = r2.claim(t).expect("claim");
            rel(r2.release(h))
        }));
        assert_eq!(r, Rel::Queued);
        assert_eq!(log.count(), 0);
        assert!(reg.pump() >= 1);
        assert_eq!(
            take(&results),
            vec![Rel::Finalized],
            "nested release in pump"
        );
        assert_eq!(log.count(), 2);
        assert!(reg.is_empty());
    });
}

#[test]
fn a_live_guard_does_not_block_other_threads() {
    with_watchdog("guard-vs-others", || {
        let log = DropLog::new();
        let reg: Registry<Tracked> = Registry::new();
        let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
        reg.retain(h).expect("retain");
        let t = reg.transfer(h).expect("transfer");
        let guard = reg.get(h).expect("get");

        let (done_tx, done_rx) = mpsc::channel();
        let r2 = reg.clone();
        let log2 = log.clone();
        let worker = spawn("works-under-guard", move || {
            // All of this happens while home holds a live guard on `h`.
            let mine = r2.claim(t).expect("claim");
            assert_eq!(r2.get(mine).expect("concurrent get").id, 1);
            assert_eq!(r2.retain(mine), Ok(2));
            assert_eq!(rel(r2.release(mine)), Rel::Held(1));
            let other = r2.insert(Tracked::new(&log2, 2)).expect("insert");
            assert_eq!(rel(r2.release(other)), Rel::Finalized);
            assert_eq!(rel(r2.release(mine)), Rel::Held(0));
            let _ = r2.snapshot();
            done_tx.send(()).expect("send");
        });
        common::recv(&done_rx, "worker blocked by a live guard");
        assert_eq!(guard.id, 1);
        drop(guard);
        join(worker);
        assert_eq!(log.times_dropped(2), 1);
        assert_eq!(rel(reg.release(h)), Rel::Finalized);
    });
}

#[test]
fn a_running_drop_does_not_block_other_threads() {
    // Thread D finalizes a value whose Drop parks in the middle; meanwhile
    // thread O must be able to use the same registry. If a registry lock were
    // held across the user's Drop, O would block and the watchdog fires.
    let log = DropLog::new();
    let reg: Registry<Node> = Registry::new();
    let barrier = Arc::new(Barrier::new(2));

    let rd = reg.clone();
    let logd = log.clone();
    let bd = Arc::clone(&barrier);
    let (hd_tx, hd_rx) = mpsc::channel();
    let dropper = spawn("dropper", move || {
        let h = rd
            .insert(Node::new(&logd, 1, OnDrop::Rendezvous(bd)))
            .expect("insert");
        let other = rd
            .insert(Node::new(&logd, 2, OnDrop::Nothing))
            .expect("insert");
        rd.pin(other).expect("pin so any thread may use it");
        hd_tx.send(other).expect("send");
        rel(rd.release(h)) // runs the parked Drop on this (home) thread
    });
    let other = common::recv(&hd_rx, "dropper ready");

    let ro = reg.clone();
    let logo = log.clone();
    let bo = Arc::clone(&barrier);
    let (done_tx, done_rx) = mpsc::channel();
    let worker = spawn("not-blocked", move || {
        bo.wait(); // the dropper is now inside Node::drop
        let h = ro
            .insert(Node::new(&logo, 3, OnDrop::Nothing))
            .expect("insert");
        assert_eq!(ro.retain(h), Ok(2));
        assert_eq!(rel(ro.release(h)), Rel::Held(1));
        assert_eq!(rel(ro.release(h)), Rel::Finalized);
        assert_eq!(ro.get(other).expect("get pinned").id, 2);
        assert_eq!(ro.retain(other), Ok(1));
        assert_eq!(rel(ro.release(other)), Rel::Held(0));
        let _ = ro.len();
        let _ = ro.snapshot();
        done_tx.send(()).expect("send");
        bo.wait(); // let the Drop finish
    });
    common::recv(&done_rx, "registry blocked while a Drop of T ran");
    join(worker);
    assert_eq!(join(dropper), Rel::Finalized);
    assert_eq!(log.times_dropped(1), 1);
    assert_eq!(log.times_dropped(3), 1);
}

#[test]
fn a_value_queued_while_pump_runs_a_drop_is_run_and_counted_by_that_pump() {
    // While `pump` runs A's Drop, a worker queues B home; A's Drop then uses
    // the registry. That call must not start a second drain inside the
    // first: `pump` runs B itself, after A's Drop returns, and counts it.
    with_watchdog("pump-nested", || {
        let log = DropLog::new();
        let reg: Registry<Node> = Registry::new();
        let results = sink();
        let barrier = Arc::new(Barrier::new(2));
        let x = reg
            .insert(Node::new(&log, 0, OnDrop::Nothing))
            .expect("insert");
        let on_drop =
            OnDrop::RendezvousThenUse(Arc::clone(&barrier), reg.clone(), x, Arc::clone(&results));
        let a = reg.insert(Node::new(&log, 1, on_drop)).expect("insert");
        let b = reg
            .insert(Node::new(&log, 2, OnDrop::Nothing))
            .expect("insert");
        let (ta, tb) = (
            reg.transfer(a).expect("transfer"),
            reg.transfer(b).expect("transfer"),
        );
        let (r2, b2) = (reg.clone(), Arc::clone(&barrier));
        let (queued_tx, queued_rx) = mpsc::channel();
        let worker = spawn("queues-during-pump", move || {
            let (a, b) = (r2.claim(ta).expect("claim"), r2.claim(tb).expect("claim"));
            queued_tx.send(rel(r2.release(a))).expect("send");
            b2.wait(); // home is inside A's Drop
            let r = rel(r2.release(b));
            b2.wait();
            r
        });
        assert_eq!(common::recv(&queued_rx, "A queued"), Rel::Queued);
        assert_eq!(reg.pump(), 2, "B was run but not counted by this pump");
        assert_eq!(join(worker), Rel::Queued);
        assert_eq!(take(&results), vec![Rel::Held(2), Rel::Held(1)]);
        assert_eq!(log.times_dropped(1), 1);
        assert_eq!(log.times_dropped(2), 1);
        assert_eq!(rel(reg.release(x)), Rel::Finalized);
        assert!(reg.is_empty());
    });
}
