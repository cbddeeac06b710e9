//! The `!Send` recipe (DESIGN §4/§5): a value that is neither `Send` nor
//! `Sync` (here an `Rc<RefCell<..>>`, standing in for a `JsValue` or an
//! interpreter object) is stored as `fragile::Fragile<V>`. Home-thread
//! finalization makes that sound: the value is only ever dropped on the
//! thread that created it, so `Fragile`'s wrong-thread `Drop` panic never
//! fires, even when a worker releases the last reference.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use fragile::Fragile;
use tether::Registry;

/// An interpreter-side object: single-threaded, `Rc`-based.
struct Interp {
    calls: u32,
    /// Records on which thread the `Rc`'s contents were dropped.
    _probe: Tracked,
}

type Value = Fragile<Rc<RefCell<Interp>>>;

fn make(log: &Arc<DropLog>, id: u64) -> Value {
    Fragile::new(Rc::new(RefCell::new(Interp {
        calls: 0,
        _probe: Tracked::new(log, id),
    })))
}

#[test]
fn a_worker_releases_last_and_the_rc_is_dropped_on_home_by_pump() {
    let log = DropLog::new();
    let reg: Registry<Value> = Registry::new();
    let home = thread::current().id();
    let h = reg.insert(make(&log, 1)).expect("insert");
    {
        let g = reg.get(h).expect("home get");
        g.get().borrow_mut().calls += 1; // home may touch the Rc
        assert_eq!(g.get().borrow().calls, 1);
    }
    let t = reg.transfer(h).expect("transfer");

    let r2 = reg.clone();
    let log2 = log.clone();
    let (valid_there, r, drops_there) = join(spawn("fragile-worker", move || {
        let h = r2.claim(t).expect("claim");
        // The worker may hold the wrapper but not touch the Rc.
        let valid = r2.get(h).expect("holder may get").is_valid();
        (valid, rel(r2.release(h)), log2.count())
    }));
    assert!(
        !valid_there,
        "Fragile claims to be valid on a foreign thread"
    );
    assert_eq!(
        r,
        Rel::Queued,
        "the last release on the worker must go home"
    );
    assert_eq!(drops_there, 0, "the Rc was dropped on the worker");

    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1, "the Rc's contents were dropped");
    assert_eq!(log.dropped_on(1), Some(home), "dropped on its home thread");
    assert_eq!(reg.snapshot().drop_panics, 0, "Fragile's Drop panicked");
}

#[test]
fn a_worker_exiting_with_a_fragile_value_sends_it_home() {
    let log = DropLog::new();
    let reg: Registry<Value> = Registry::new();
    let home = thread::current().id();
    let h = reg.insert(make(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    join(spawn("fragile-exiter", move || {
        r2.claim(t).expect("claim");
        // exits holding the only reference
    }));
    assert_eq!(log.count(), 0, "dropped on the exiting worker");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(1), Some(home));
    assert_eq!(reg.snapshot().drop_panics, 0);
}

#[test]
fn an_exiting_home_drains_its_fragile_values_on_itself() {
    let log = DropLog::new();
    let reg: Registry<Value> = Registry::new();
    let (t_tx, t_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let log2 = log.clone();
    let home = spawn("fragile-home", move || {
        let h = r2.insert(make(&log2, 1)).expect("insert");
        r2.get(h).expect("get").get().borrow_mut().calls += 1;
        t_tx.send(r2.transfer(h).expect("transfer")).expect("send");
        go_rx.recv().expect("go");
        thread::current().id()
        // exits with the value in its inbox: the exit must drain it here
    });
    let t = common::recv(&t_rx, "token");
    let h = reg.claim(t).expect("claim");
    assert!(!reg.get(h).expect("get").is_valid());
    assert_eq!(rel(reg.release(h)), Rel::Queued);
    assert_eq!(log.count(), 0, "dropped on the releasing thread");
    go_tx.send(()).expect("send");
    let hid = join(home);
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(hid));
    assert_eq!(reg.snapshot().drop_panics, 0);
}

#[test]
fn many_fragile_values_round_trip_without_a_wrong_thread_drop() {
    const N: u64 = 50;
    let log = DropLog::new();
    let reg: Registry<Value> = Registry::new();
    let home = thread::current().id();
    let tokens: Vec<_> = (0..N)
        .map(|i| {
            let h = reg.insert(make(&log, i)).expect("insert");
            reg.transfer(h).expect("transfer")
        })
        .collect();
    let r2 = reg.clone();
    let results = join(spawn("fragile-bulk", move || {
        tokens
            .into_iter()
            .map(|t| {
                let h = r2.claim(t).expect("claim");
                rel(r2.release(h))
            })
            .collect::<Vec<_>>()
    }));
    assert!(results.iter().all(|r| *r == Rel::Queued), "{results:?}");
    assert_eq!(reg.pump(), N as usize);
    assert_eq!(log.count(), N as usize);
    assert!(log.threads().iter().all(|t| *t == home));
    assert_eq!(reg.snapshot().drop_panics, 0);
}

/// Issue 16, item 4: the home keeps only raw ids (inside its runtime) and
/// lets its `Registry` value go; a worker's clone goes last. The registry's
/// teardown then dropped the home's live values on the worker ("destructor
/// of fragile object ran on wrong thread", the `Rc` never released). Values
/// whose home lives reach it: they are dropped there, at its next `pump()`
/// (of any registry) or at its exit — never elsewhere.
#[test]
fn the_last_registry_dropped_on_a_worker_leaves_the_values_to_their_living_home() {
    use std::sync::mpsc;
    type V = Fragile<Rc<RefCell<Vec<u8>>>>;
    let (to_worker, worker_rx) = mpsc::channel::<Registry<V>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let (let_go_tx, let_go_rx) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let reg = worker_rx.recv().unwrap();
        let_go_rx.recv().unwrap(); // the home has dropped its own
                                   // The last `Registry`: its teardown runs here, on a non-home thread.
        drop(reg);
        done_tx.send(()).unwrap();
    });
    let home = std::thread::spawn(move || {
        let a = Rc::new(RefCell::new(vec![1]));
        let b = Rc::new(RefCell::new(vec![2]));
        let reg: Registry<V> = Registry::new();
        reg.insert(Fragile::new(Rc::clone(&a))).expect("insert");
        let hb = reg.insert(Fragile::new(Rc::clone(&b))).expect("insert");
        reg.pin(hb).expect("pin"); // a pin nobody will undo
        to_worker.send(reg.clone()).unwrap();
        drop(reg); // the home keeps only raw ids
        let_go_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        assert_eq!(
            (Rc::strong_count(&a), Rc::strong_count(&b)),
            (2, 2),
            "not dropped yet"
        );
        // The home's next pump (of any registry) drops them here.
        let other: Registry<u8> = Registry::new();
        other.pump();
        (Rc::strong_count(&a), Rc::strong_count(&b))
    });
    worker
        .join()
        .expect("the worker must not drop a Fragile of another thread");
    let counts = home.join().expect("home");
    assert_eq!(counts, (1, 1), "both values were dropped on their home");
}

/// The same, with a home that never calls tether again: the values are
/// dropped at its exit, on it.
#[test]
fn values_left_to_a_living_home_are_dropped_at_its_exit() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    struct OnHome {
        home: std::thread::ThreadId,
        dropped_on_home: Arc<AtomicBool>,
        dropped_elsewhere: Arc<AtomicBool>,
    }
    impl Drop for OnHome {
        fn drop(&mut self) {
            let flag = if std::thread::current().id() == self.home {
                &self.dropped_on_home
            } else {
                &self.dropped_elsewhere
            };
            flag.store(true, Ordering::SeqCst);
        }
    }
    let on_home = Arc::new(AtomicBool::new(false));
    let elsewhere = Arc::new(AtomicBool::new(false));
    let (to_main, from_home) = mpsc::channel::<Registry<OnHome>>();
    let (go, wait) = mpsc::channel::<()>();
    let (on2, else2) = (Arc::clone(&on_home), Arc::clone(&elsewhere));
    let home = std::thread::spawn(move || {
        let reg = Registry::new();
        let me = std::thread::current().id();
        let _raw = reg
            .insert(OnHome {
                home: me,
                dropped_on_home: on2,
                dropped_elsewhere: else2,
            })
            .unwrap_or_else(|_| panic!("insert"));
        to_main.send(reg).unwrap(); // gives its only Registry away
        wait.recv().unwrap();
        // exits without another registry call
    });
    let reg = from_home.recv().unwrap();
    drop(reg); // the last Registry, dropped off the home
    assert!(
        !elsewhere.load(Ordering::SeqCst),
        "dropped on the wrong thread"
    );
    assert!(!on_home.load(Ordering::SeqCst), "not before the home runs");
    go.send(()).unwrap();
    home.join().unwrap();
    assert!(on_home.load(Ordering::SeqCst), "dropped at the home's exit");
    assert!(!elsewhere.load(Ordering::SeqCst));
}
