//! Issue 6, part 1.5: two-phase shutdown. `close()` refuses new objects and
//! claims (`Error::Closed`) while holders keep working and releasing — a
//! refused claim gives its transfer's reference back. `shutdown(timeout)`
//! closes, pumps the calling home thread's queue while holders let go, and
//! returns `Ok` once nothing is live, or — instead of hanging — the leak
//! report of whatever is still held at the timeout, without freeing it.
//!
//! No test asserts a duration: shutdown timeouts are either generous
//! (expected to succeed) or short (expected to report), and only the
//! outcome is checked.

mod common;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use common::{join, me, recv, spawn, WATCHDOG};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Error, Interner, Registry, Released, Transfer};

/// A timeout meant to expire: a holder is stuck on purpose.
const SHORT: Duration = Duration::from_millis(30);

/// Which values were dropped, and on which thread.
#[derive(Default)]
struct Drops(Mutex<Vec<(u32, ThreadId)>>);

impl Drops {
    fn all(&self) -> Vec<(u32, ThreadId)> {
        self.0.lock().clone()
    }

    fn count(&self) -> usize {
        self.all().len()
    }
}

struct Val {
    id: u32,
    drops: Arc<Drops>,
}

impl Drop for Val {
    fn drop(&mut self) {
        let me = thread::current().id();
        self.drops.0.lock().push((self.id, me));
    }
}

fn val(id: u32, drops: &Arc<Drops>) -> Val {
    Val {
        id,
        drops: Arc::clone(drops),
    }
}

/// Waits (yielding, bounded by the watchdog) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: never happened");
        thread::yield_now();
    }
}

/// A worker that claims `t`, reports ready, and holds the object until told
/// to release it; returns what its release did.
struct Holder {
    thread: JoinHandle<Result<Released, Error>>,
    go: mpsc::Sender<()>,
}

fn stuck_holder(name: Option<&str>, reg: &Registry<Val>, t: Transfer<Val>) -> (Holder, ThreadId) {
    let (tx_ready, rx_ready) = mpsc::channel();
    let (go, rx_go) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let body = move || {
        let h = r2.claim(t).expect("claim");
        tx_ready.send(me()).expect("ready");
        recv(&rx_go, "go");
        // Still fully usable after a failed shutdown.
        assert_eq!(r2.retain(h), Ok(2));
        assert_eq!(r2.release(h), Ok(Released::Held(1)));
        let id = r2.get(h).expect("get after the failed shutdown").id;
        assert_eq!(id, 1);
        r2.release(h)
    };
    let thread = match name {
        Some(n) => spawn(n, body),
        None => thread::spawn(body),
    };
    let id = recv(&rx_ready, "holder ready");
    (Holder { thread, go }, id)
}

#[test]
fn close_refuses_new_objects_and_claims_with_closed() {
    let drops = Arc::default();
    let reg = Registry::new();
    assert!(!reg.is_closed());
    let h = reg.insert(val(1, &drops)).expect("insert");
    for _ in 0..3 {
        reg.retain(h).expect("retain");
    }
    let t1 = reg.transfer(h).expect("transfer");
    let t2 = reg.transfer(h).expect("transfer");
    let raw = reg.transfer(h).expect("transfer").into_raw();

    reg.close();
    assert!(reg.is_closed());
    reg.close(); // idempotent
    assert!(reg.clone().is_closed(), "every clone sees it");

    let err = reg.insert(val(2, &drops)).expect_err("insert after close");
    assert_eq!(err.error(), Error::Closed);
    assert_eq!(err.into_value().id, 2, "the value is handed back");
    let err = reg.insert_proxy(val(3, &drops)).expect_err("insert_proxy");
    assert_eq!(err.error(), Error::Closed);
    drop(err);
    assert_eq!(reg.claim(t1), Err(Error::Closed));
    assert_eq!(reg.claim_raw(raw), Err(Error::Closed));
    assert_eq!(t2.claim().err(), Some(Error::Closed));
    assert_eq!(reg.len(), 1);
    assert_eq!(
        reg.snapshot().object(h).map(|o| o.transfers),
        Some(0),
        "every refused transfer released its reference"
    );
    assert_eq!(reg.holders(h), Ok(vec![(me(), 1)]));
}

#[test]
fn a_claim_refused_by_close_finalizes_the_object_if_it_was_the_last_reference() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();

    // Claimed on the home thread: finalized here, at once.
    let a = reg.insert(val(1, &drops)).expect("insert");
    let ta = reg.transfer(a).expect("transfer");
    // Raw token: finalized too, and the token is used up.
    let b = reg.insert(val(2, &drops)).expect("insert");
    let raw_b = reg.transfer(b).expect("transfer").into_raw();
    // Claimed on a worker: the worker's drop of the transfer queues it home.
    let c = reg.insert(val(3, &drops)).expect("insert");
    let tc = reg.transfer(c).expect("transfer");

    reg.close();
    assert_eq!(reg.claim(ta), Err(Error::Closed));
    assert_eq!(drops.all(), [(1, me())]);
    assert_eq!(reg.get(a).err(), Some(Error::Stale(a)));

    assert_eq!(reg.claim_raw(raw_b), Err(Error::Closed));
    assert_eq!(drops.count(), 2);
    assert_eq!(reg.claim_raw(raw_b), Err(Error::TransferClaimed));

    let r2 = reg.clone();
    let refused = join(spawn("refused-claimer", move || r2.claim(tc)));
    assert_eq!(refused, Err(Error::Closed));
    assert_eq!(drops.count(), 2, "queued to its home thread");
    assert!(reg.is_empty());
    assert_eq!(reg.pump(), 1);
    assert_eq!(drops.all()[2], (3, me()), "finalized on the home thread");
}

#[test]
fn holders_keep_working_and_releasing_after_close() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let a = reg.insert(val(1, &drops)).expect("insert a");
    let b = reg.insert(val(2, &drops)).expect("insert b");
    let tb = reg.transfer(b).expect("transfer b");
    let (tx_ready, rx_ready) = mpsc::channel();
    let (tx_go, rx_go) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("holder-after-close", move || {
        let b = r2.claim(tb).expect("claim before close");
        tx_ready.send(()).expect("ready");
        recv(&rx_go, "go");
        assert!(r2.is_closed());
        assert_eq!(r2.get(b).expect("get").id, 2);
        assert_eq!(r2.retain(b), Ok(2));
        let p = r2.proxy(b).expect("proxy");
        let q = p.clone();
        assert_eq!(q.id, 2);
        drop((p, q));
        assert_eq!(r2.release(b), Ok(Released::Held(1)));
        r2.release(b)
    });
    recv(&rx_ready, "worker ready");
    reg.close();

    assert_eq!(reg.get(a).expect("get").id, 1);
    assert_eq!(reg.retain(a), Ok(2));
    assert_eq!(reg.release(a), Ok(Released::Held(1)));
    let p = reg.proxy(a).expect("proxy");
    assert_eq!(p.clone().id, 1);
    reg.pin(a).expect("pin");
    reg.unpin(a).expect("unpin");
    drop(reg.transfer(a).expect("transfer")); // an unclaimed transfer lets go
    assert_eq!(reg.count(a), Ok(1), "the proxy");
    drop(p);
    assert_eq!(drops.all(), [(1, me())], "the last proxy finalized it here");

    tx_go.send(()).expect("go");
    assert_eq!(join(worker), Ok(Released::Queued));
    assert_eq!(reg.pump(), 1, "pump works after close");
    assert_eq!(drops.all()[1], (2, me()));
    assert!(reg.is_empty());
}

#[test]
fn shutdown_is_ok_at_once_when_nothing_is_held_and_closes_the_registry() {
    let drops = Arc::default();
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    reg.release(h).expect("release");
    assert!(reg.shutdown(Duration::ZERO).is_ok());
    assert!(reg.is_closed());
    assert_eq!(
        reg.insert(val(2, &drops)).expect_err("closed").error(),
        Error::Closed
    );
    assert!(reg.shutdown(Duration::ZERO).is_ok(), "and again");
}

#[test]
fn shutdown_pumps_finalizations_already_queued_to_the_calling_home_thread() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    let released = join(spawn("releases-first", move || {
        let h = r2.claim(t).expect("claim");
        r2.release(h)
    }));
    assert_eq!(released, Ok(Released::Queued));
    assert_eq!(drops.count(), 0, "waiting in the home queue");
    assert!(reg.shutdown(WATCHDOG).is_ok());
    assert_eq!(
        drops.all(),
        [(1, me())],
        "shutdown ran it, on the home thread"
    );
    assert_eq!(reg.snapshot().pending(), 0);
}

/// Three workers each hold one object and let go only once shutdown has
/// begun; returns their join handles after all have claimed.
fn workers_releasing_during_shutdown(
    reg: &Registry<Val>,
    drops: &Arc<Drops>,
) -> Vec<JoinHandle<Result<Released, Error>>> {
    let mut workers = Vec::new();
    for id in 1..=3 {
        let h = reg.insert(val(id, drops)).expect("insert");
        let t = reg.transfer(h).expect("transfer");
        let r2 = reg.clone();
        let (tx_ready, rx_ready) = mpsc::channel();
        workers.push(spawn("lets-go-during-shutdown", move || {
            let h = r2.claim(t).expect("claim");
            tx_ready.send(()).expect("ready");
            // Let go only once shutdown has begun (it closes first).
            wait_until("shutdown began", || r2.is_closed());
            r2.release(h)
        }));
        recv(&rx_ready, "worker ready");
    }
    workers
}

#[test]
fn shutdown_waits_for_workers_that_release_during_the_wait_and_they_finalize_at_home() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let workers = workers_releasing_during_shutdown(&reg, &drops);
    assert!(
        reg.shutdown(WATCHDOG).is_ok(),
        "every holder let go before the timeout"
    );
    for w in workers {
        assert_eq!(join(w), Ok(Released::Queued), "sent to the home thread");
    }
    // Finalized by shutdown's pumping — or, while the bug documented in
    // `shutdown_is_ok_only_after_finalizing_what_workers_released_during_the_wait`
    // stands, possibly not yet: pump once more before looking.
    reg.pump();
    let mut dropped = drops.all();
    dropped.sort_unstable_by_key(|(id, _)| *id);
    assert_eq!(
        dropped,
        [(1, me()), (2, me()), (3, me())],
        "finalized on the home thread"
    );
}

#[test]
fn shutdown_is_ok_only_after_finalizing_what_workers_released_during_the_wait() {
    for _ in 0..20 {
        let drops = Arc::new(Drops::default());
        let reg = Registry::new();
        let workers = workers_releasing_during_shutdown(&reg, &drops);
        assert!(reg.shutdown(WATCHDOG).is_ok());
        let mut dropped = drops.all();
        dropped.sort_unstable_by_key(|(id, _)| *id);
        assert_eq!(
            dropped,
            [(1, me()), (2, me()), (3, me())],
            "Ok means finalized, here on the home thread, not merely queued"
        );
        for w in workers {
            assert_eq!(join(w), Ok(Released::Queued));
        }
    }
}

#[test]
fn shutdown_with_a_stuck_holder_returns_a_leak_report_naming_the_object_and_holder() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let (holder, w) = stuck_holder(Some("stuck-holder"), &reg, t);

    let report = reg.shutdown(SHORT).expect_err("the holder does not let go");
    assert_eq!(report.objects.len(), 1, "{report}");
    let o = &report.objects[0];
    assert_eq!(o.handle, h);
    assert_eq!(o.home, Some(me()));
    assert_eq!((o.pins, o.transfers), (0, 0));
    assert_eq!(o.holders.len(), 1, "{report}");
    let holder_entry = &o.holders[0];
    assert_eq!(holder_entry.thread, w);
    assert_eq!(holder_entry.name.as_deref(), Some("stuck-holder"));
    assert_eq!(holder_entry.count, 1);
    assert!(!holder_entry.exited);
    let text = report.to_string();
    assert!(text.contains(&h.to_string()), "{text}");
    assert!(text.contains("stuck-holder"), "{text}");
    assert!(text.contains("still held"), "{text}");

    // Nothing was freed under the holder.
    assert_eq!(drops.count(), 0);
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.holders(h), Ok(vec![(w, 1)]));

    // The holder keeps using it, then lets go; a second shutdown succeeds.
    holder.go.send(()).expect("go");
    assert_eq!(join(holder.thread), Ok(Released::Queued));
    assert!(reg.shutdown(WATCHDOG).is_ok());
    assert_eq!(drops.all(), [(1, me())]);
}

#[test]
fn shutdown_reports_an_unnamed_stuck_holder_by_its_thread_id() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let (holder, w) = stuck_holder(None, &reg, t);

    let report = reg.shutdown(Duration::ZERO).expect_err("held");
    let holders = &report.objects[0].holders;
    assert_eq!(holders.len(), 1);
    assert_eq!((holders[0].thread, holders[0].name.as_deref()), (w, None));
    assert!(report.to_string().contains(&format!("{w:?}")), "{report}");

    holder.go.send(()).expect("go");
    assert_eq!(join(holder.thread), Ok(Released::Queued));
    assert!(reg.shutdown(WATCHDOG).is_ok());
    assert_eq!(drops.count(), 1);
}

#[test]
fn shutdown_reports_pins_and_unclaimed_raw_tokens_until_they_are_let_go() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let pinned = reg.insert(val(1, &drops)).expect("insert");
    reg.pin(pinned).expect("pin");
    reg.release(pinned).expect("release: the pin keeps it");
    let in_flight = reg.insert(val(2, &drops)).expect("insert");
    let raw = reg.transfer(in_flight).expect("transfer").into_raw();

    let report = reg.shutdown(SHORT).expect_err("pins and tokens hold");
    let find = |h| {
        report
            .objects
            .iter()
            .find(|o| o.handle == h)
            .expect("listed")
    };
    assert_eq!((find(pinned).pins, find(pinned).transfers), (1, 0));
    assert_eq!((find(in_flight).pins, find(in_flight).transfers), (0, 1));
    assert!(find(in_flight).holders.is_empty());
    assert_eq!(drops.count(), 0);

    reg.unpin(pinned).expect("unpin after close");
    drop(Transfer::from_raw(&reg, raw).expect("take the token back"));
    assert!(reg.shutdown(WATCHDOG).is_ok());
    assert_eq!(drops.count(), 2);
}

/// An interner key whose `Drop` can be made to block once: it parks a
/// releasing thread inside finalization, after the object stopped being
/// live but before its value reached the home thread's queue.
#[derive(Clone)]
struct GateKey {
    id: u32,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    entered: Mutex<Option<mpsc::Sender<()>>>,
    open: Mutex<Option<Receiver<()>>>,
}

impl PartialEq for GateKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for GateKey {}

impl Hash for GateKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl Drop for GateKey {
    fn drop(&mut self) {
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            if let Some(tx) = self.gate.entered.lock().take() {
                let _ = tx.send(());
            }
            let rx = self.gate.open.lock().take();
            if let Some(rx) = rx {
                let _ = rx.recv_timeout(WATCHDOG);
            }
        }
    }
}

#[test]
fn shutdown_does_not_report_ok_while_a_final_release_is_still_on_its_way_home() {
    let drops = Arc::new(Drops::default());
    let reg = Registry::new();
    let interned: Interner<GateKey, Val> = Interner::new(&reg);
    let (tx_entered, rx_entered) = mpsc::channel();
    let (tx_open, rx_open) = mpsc::channel::<()>();
    let gate = Arc::new(Gate {
        armed: AtomicBool::new(false),
        entered: Mutex::new(Some(tx_entered)),
        open: Mutex::new(Some(rx_open)),
    });
    let key = GateKey {
        id: 1,
        gate: Arc::clone(&gate),
    };
    let h = interned
        .intern(&key, || Ok(val(1, &drops)))
        .expect("intern");
    let t = reg.transfer(h).expect("transfer");
    let (tx_go, rx_go) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("slow-final-release", move || {
        let h = r2.claim(t).expect("claim");
        recv(&rx_go, "go");
        // Finalization forgets the key; the key's drop parks us there, after
        // the object stopped being live, before the value is sent home.
        r2.release(h)
    });
    gate.armed.store(true, Ordering::SeqCst);
    tx_go.send(()).expect("go");
    recv(&rx_entered, "the worker is inside its final release");

    let result = reg.shutdown(Duration::from_millis(200));
    let dropped_when_shutdown_returned = drops.count();
    tx_open.send(()).expect("open");
    assert_eq!(join(worker), Ok(Released::Queued));
    reg.pump();
    assert_eq!(drops.count(), 1);
    drop(key);
    assert!(
        result.is_err() || dropped_when_shutdown_returned == 1,
        "shutdown returned Ok, but the value had not been finalized \
         (it was still on its way to this home thread's queue)"
    );
}

/// Issue 16, item 6: `insert` checked `closed`, then took a slot and ran
/// `Drop`s before counting itself, and `close()` did not wait for inserts in
/// that window: in 79-108 of 300 runs of two workers inserting while main
/// called `shutdown(1 s)`, an insert completed after `Ok(())` (and `len()`
/// was above 0 right after). `Ok` must mean nothing live and nothing new:
/// no object may be live the moment `shutdown` returns `Ok`.
#[test]
fn no_insert_completes_after_shutdown_says_ok() {
    use std::sync::atomic::AtomicUsize;
    const RUNS: usize = 300;
    let mut late = 0;
    let mut live_after_ok = 0;
    for run in 0..RUNS {
        let reg: Registry<u64> = Registry::new();
        let said_ok = Arc::new(AtomicBool::new(false));
        let after_ok = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let (r, said_ok, after_ok) = (reg.clone(), said_ok.clone(), after_ok.clone());
                spawn("inserter", move || loop {
                    match r.insert(w) {
                        Ok(h) => {
                            // Returned after `Ok`: it was still under way.
                            if said_ok.load(Ordering::SeqCst) {
                                after_ok.fetch_add(1, Ordering::SeqCst);
                            }
                            r.release(h).expect("release");
                        }
                        Err(e) => {
                            assert_eq!(e.error(), Error::Closed);
                            return;
                        }
                    }
                })
            })
            .collect();
        for _ in 0..(run % 13) * 50 {
            std::hint::spin_loop();
        }
        let result = reg.shutdown(Duration::from_secs(5));
        said_ok.store(result.is_ok(), Ordering::SeqCst);
        // Read at once, from the slots (not the counters).
        let live = reg.snapshot().objects.len();
        for w in workers {
            join(w);
        }
        if let Err(report) = result {
            panic!("run {run}: shutdown timed out:\n{report}");
        }
        late += after_ok.load(Ordering::SeqCst);
        live_after_ok += usize::from(live != 0);
        assert!(reg.is_empty());
    }
    assert_eq!(
        (late, live_after_ok),
        (0, 0),
        "inserts returned after Ok; runs with a live object right after Ok"
    );
}

/// What `shutdown` returned: `Err((pending, homes with pending values))`.
type Seen = Arc<Mutex<Vec<Result<(), (usize, usize)>>>>;

/// A value whose `Drop` calls `shutdown` (with more values queued behind
/// it). Records what `shutdown` returned.
struct ShutsDown {
    reg: Arc<Mutex<Option<Registry<ShutsDown>>>>,
    seen: Seen,
}

impl Drop for ShutsDown {
    fn drop(&mut self) {
        let reg = self.reg.lock().clone();
        if let Some(reg) = reg {
            let r = reg
                .shutdown(Duration::from_millis(200))
                .map_err(|report| (report.pending, report.pending_at.len()));
            self.seen.lock().push(r);
        }
    }
}

/// Issue 16, item 8: inside a value's `Drop` run by `pump()`, a nested
/// `pump()` returns 0 (the drain guard) and `shutdown()` returned `Ok(())`
/// while the home's own inbox still held a value released to it. It must
/// say what is still queued, and where — and at once, since waiting could
/// not help.
#[test]
fn shutdown_inside_a_drained_drop_reports_the_values_still_queued() {
    let slot = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reg: Registry<ShutsDown> = Registry::new();
    *slot.lock() = Some(reg.clone());
    let a = reg
        .insert(ShutsDown {
            reg: Arc::clone(&slot),
            seen: Arc::clone(&seen),
        })
        .unwrap_or_else(|_| panic!("insert"));
    let b = reg
        .insert(ShutsDown {
            reg: Arc::new(Mutex::new(None)),
            seen: Arc::clone(&seen),
        })
        .unwrap_or_else(|_| panic!("insert"));
    let (ta, tb) = (
        reg.transfer(a).expect("transfer"),
        reg.transfer(b).expect("transfer"),
    );
    let r2 = reg.clone();
    join(spawn("releases-both", move || {
        for t in [ta, tb] {
            let h = r2.claim(t).expect("claim");
            assert_eq!(r2.release(h), Ok(Released::Queued));
        }
    }));
    let started = Instant::now();
    assert_eq!(reg.pump(), 2, "the outer pump drops both");
    slot.lock().take();
    let seen = seen.lock().clone();
    assert_eq!(seen, [Err((1, 1))], "1 value still queued, at 1 home");
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "it returned at once instead of waiting for its timeout"
    );
    assert_eq!(
        reg.shutdown(Duration::from_secs(1))
            .err()
            .map(|r| r.pending),
        None
    );
}

/// Issue 16, item 8: from a thread that is not the values' home, two
/// concurrent `shutdown`s both returned `Ok(())` while 100 values sat
/// unfinalized in the home's inbox. They wait for the home to drop them and,
/// at the timeout, report them with their home thread.
#[test]
fn shutdown_from_another_thread_waits_for_the_homes_queue_and_reports_it() {
    let drops = Arc::new(Drops::default());
    let reg: Registry<Val> = Registry::new();
    let ts: Vec<_> = (0..100)
        .map(|i| {
            let h = reg
                .insert(val(i, &drops))
                .unwrap_or_else(|_| panic!("insert"));
            reg.transfer(h).expect("transfer")
        })
        .collect();
    let r2 = reg.clone();
    join(spawn("releases-all", move || {
        for t in ts {
            let h = r2.claim(t).expect("claim");
            assert_eq!(r2.release(h), Ok(Released::Queued));
        }
    }));
    let home = me();
    let shutters: Vec<_> = (0..2)
        .map(|_| {
            let r = reg.clone();
            spawn("not-home", move || r.shutdown(Duration::from_millis(100)))
        })
        .collect();
    for s in shutters {
        let report = join(s).expect_err("values still queued at their home: not Ok");
        assert_eq!(report.pending, 100);
        assert_eq!(report.pending_at.len(), 1);
        assert_eq!(report.pending_at[0].thread, home);
        assert!(report.objects.is_empty(), "nothing is held, only queued");
        assert!(format!("{report}").contains("100 queued for"), "{report}");
    }
    assert_eq!(reg.pump(), 100, "dropped at home");
    assert!(reg.shutdown(Duration::from_secs(1)).is_ok());
}
