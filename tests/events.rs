//! Issue 6, part 1: lifecycle events. `Builder::on_event` receives one
//! `Event` per insert, per thread's 0→1 and 1→0 transition, transfer, claim,
//! pin, unpin, queueing to a home thread, finalization (on the thread it ran
//! on), thread exit and misuse — each with its handle and thread — and the
//! leak report when the last `Registry` goes while objects are held. The
//! fast path emits nothing; a panicking hook is caught and counted; a hook
//! may call back into the registry.
//!
//! Every test records into an `Arc<Mutex<Vec<Event>>>` and asserts the exact
//! sequence. Threads are sequenced with channels and joins (a thread's exit
//! hook runs before `join` returns), never with sleeps.
//!
//! The panic messages printed by the panicking-hook and panicking-drop tests
//! are expected.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, ThreadId};

use common::{join, me, recv, spawn};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::{Mutex, MutexGuard};
use tether::{Builder, Error, Event, Handle, Registry, Released, ThreadExit, Transfer};

/// A stored value; its `Drop` may panic on purpose.
struct Val {
    id: u32,
    panic_on_drop: bool,
}

impl Val {
    fn new(id: u32) -> Self {
        Val {
            id,
            panic_on_drop: false,
        }
    }

    fn panicking(id: u32) -> Self {
        Val {
            id,
            panic_on_drop: true,
        }
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        if self.panic_on_drop && !thread::panicking() {
            panic!("intentional panic in Drop of Val #{} (test)", self.id);
        }
    }
}

/// A comparable form of [`Event`] (which is not `PartialEq`: it can carry a
/// leak report with backtraces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ev {
    Inserted(Handle, ThreadId),
    First(Handle, ThreadId),
    Last(Handle, ThreadId),
    Transferred(Handle, ThreadId),
    Claimed(Handle, ThreadId),
    Pinned(Handle, ThreadId),
    Unpinned(Handle, ThreadId),
    QueuedHome(Handle, ThreadId),
    Finalized(Handle, ThreadId, bool),
    ThreadExited(ThreadId, usize, usize),
    Misuse(&'static str, Error, ThreadId),
    /// The handles in the report, and the thread that dropped the registry.
    Leaked(Vec<Handle>, ThreadId),
    Other(&'static str),
}

fn ev(e: &Event) -> Ev {
    match e {
        Event::Inserted { handle, thread } => Ev::Inserted(*handle, *thread),
        Event::FirstReference { handle, thread } => Ev::First(*handle, *thread),
        Event::LastReference { handle, thread } => Ev::Last(*handle, *thread),
        Event::Transferred { handle, thread } => Ev::Transferred(*handle, *thread),
        Event::Claimed { handle, thread } => Ev::Claimed(*handle, *thread),
        Event::Pinned { handle, thread } => Ev::Pinned(*handle, *thread),
        Event::Unpinned { handle, thread } => Ev::Unpinned(*handle, *thread),
        Event::QueuedHome { handle, thread } => Ev::QueuedHome(*handle, *thread),
        Event::Finalized {
            handle,
            thread,
            panicked,
        } => Ev::Finalized(*handle, *thread, *panicked),
        Event::ThreadExited {
            thread,
            released,
            kept,
        } => Ev::ThreadExited(*thread, *released, *kept),
        Event::Misuse {
            operation,
            error,
            thread,
        } => Ev::Misuse(operation, *error, *thread),
        Event::Leaked { report, thread } => {
            Ev::Leaked(report.objects.iter().map(|o| o.handle).collect(), *thread)
        }
        other => Ev::Other(other.name()),
    }
}

/// The recording hook: every event, in delivery order.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.0.lock()
    }

    fn hook(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let log = Arc::clone(&self.0);
        move |e: &Event| log.lock().push(e.clone())
    }

    /// Everything recorded since the last `take`, as comparable events.
    fn take(&self) -> Vec<Ev> {
        self.lock().drain(..).map(|e| ev(&e)).collect()
    }

    /// The `Leaked` events among everything recorded since the last `take`.
    fn take_leaked(&self) -> Vec<Ev> {
        let all = self.take();
        all.into_iter()
            .filter(|e| matches!(e, Ev::Leaked(..)))
            .collect()
    }

    /// The raw events recorded since the last `take`.
    fn take_raw(&self) -> Vec<Event> {
        self.lock().drain(..).collect()
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

fn recording(builder: Builder<Val>) -> (Registry<Val>, Recorder) {
    let rec = Recorder::default();
    let reg = builder.on_event(rec.hook()).build();
    (reg, rec)
}

#[test]
fn insert_emits_inserted_then_first_reference_and_release_emits_last_then_finalized() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    assert_eq!(rec.take(), [Ev::Inserted(h, me()), Ev::First(h, me())]);
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(
        rec.take(),
        [Ev::Last(h, me()), Ev::Finalized(h, me(), false)]
    );
}

#[test]
fn insert_proxy_emits_inserted_then_first_reference_and_the_last_proxy_drop_emits_last() {
    let (reg, rec) = recording(Registry::builder());
    let p = reg.insert_proxy(Val::new(1)).expect("insert_proxy");
    let h = p.handle();
    assert_eq!(rec.take(), [Ev::Inserted(h, me()), Ev::First(h, me())]);
    let q = p.clone();
    drop(p);
    assert_eq!(
        rec.take(),
        [],
        "clone and a non-last drop are the fast path"
    );
    drop(q);
    assert_eq!(
        rec.take(),
        [Ev::Last(h, me()), Ev::Finalized(h, me(), false)]
    );
}

#[test]
fn retain_release_get_and_proxy_of_a_held_handle_emit_nothing() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    rec.clear();
    for _ in 0..3 {
        assert_eq!(reg.retain(h), Ok(2));
        assert_eq!(reg.get(h).expect("get").id, 1);
        let p = reg.proxy(h).expect("proxy");
        let q = p.clone();
        drop((p, q));
        assert_eq!(reg.release(h), Ok(Released::Held(1)));
    }
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(
        rec.take(),
        [],
        "a thread that already holds a handle emits nothing"
    );
}

#[test]
fn a_workers_first_retain_of_a_pinned_object_is_its_first_reference() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    reg.pin(h).expect("pin");
    assert_eq!(
        rec.take(),
        [
            Ev::Inserted(h, me()),
            Ev::First(h, me()),
            Ev::Pinned(h, me())
        ]
    );
    let (r2, rec2) = (reg.clone(), rec.clone());
    let (w, during) = join(spawn("pinned-reader", move || {
        assert_eq!(r2.retain(h), Ok(1));
        assert_eq!(r2.retain(h), Ok(2), "second retain: fast path");
        assert_eq!(r2.release(h), Ok(Released::Held(1)));
        assert_eq!(r2.release(h), Ok(Released::Held(0)), "the pin keeps it");
        // Again, now with the thread's table cached: `retain`'s own path
        // for a first reference (`retain_first`) tells the hook too.
        assert_eq!(r2.retain(h), Ok(1));
        assert_eq!(r2.release(h), Ok(Released::Held(0)));
        // A guard is a reference of its thread too.
        let g = r2.get(h).expect("get of a pinned object");
        drop(g);
        (me(), rec2.take())
    }));
    assert_eq!(
        during,
        [
            Ev::First(h, w),
            Ev::Last(h, w),
            Ev::First(h, w),
            Ev::Last(h, w),
            Ev::First(h, w),
            Ev::Last(h, w)
        ]
    );
    assert_eq!(rec.take(), [Ev::ThreadExited(w, 0, 0)]);
}

#[test]
fn transfer_claim_and_remote_final_release_queue_home_and_finalize_on_the_home_thread() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    rec.clear();
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(
        rec.take(),
        [Ev::Transferred(h, me()), Ev::Last(h, me())],
        "transferring the last reference is the sender's last reference"
    );

    let (r2, rec2) = (reg.clone(), rec.clone());
    let (w, claimed, released, outcome) = join(spawn("claimer", move || {
        assert_eq!(r2.claim(t), Ok(h));
        let claimed = rec2.take();
        let outcome = r2.release(h);
        (me(), claimed, rec2.take(), outcome)
    }));
    assert_eq!(claimed, [Ev::Claimed(h, w), Ev::First(h, w)]);
    assert_eq!(outcome, Ok(Released::Queued));
    assert_eq!(released, [Ev::Last(h, w), Ev::QueuedHome(h, w)]);
    assert_eq!(rec.take(), [Ev::ThreadExited(w, 0, 0)]);

    assert_eq!(reg.pump(), 1);
    assert_eq!(
        rec.take(),
        [Ev::Finalized(h, me(), false)],
        "finalized on the home thread, and the event says so"
    );
}

#[test]
fn proxy_transfer_and_transfer_claim_emit_the_same_events() {
    let (reg, rec) = recording(Registry::builder());
    let p = reg.insert_proxy(Val::new(1)).expect("insert_proxy");
    let h = p.handle();
    rec.clear();
    let t = p.transfer();
    assert_eq!(rec.take(), [Ev::Transferred(h, me()), Ev::Last(h, me())]);
    let rec2 = rec.clone();
    let (w, claimed, dropped) = join(spawn("proxy-claimer", move || {
        let p = t.claim().expect("Transfer::claim");
        let claimed = rec2.take();
        drop(p);
        (me(), claimed, rec2.take())
    }));
    assert_eq!(claimed, [Ev::Claimed(h, w), Ev::First(h, w)]);
    assert_eq!(dropped, [Ev::Last(h, w), Ev::QueuedHome(h, w)]);
    rec.clear();
    assert_eq!(reg.pump(), 1);
    assert_eq!(rec.take(), [Ev::Finalized(h, me(), false)]);
}

#[test]
fn a_claim_by_a_thread_that_already_holds_the_object_is_claimed_without_first_reference() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    reg.retain(h).expect("retain");
    rec.clear();
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(
        rec.take(),
        [Ev::Transferred(h, me())],
        "the sender keeps a reference: no last reference"
    );
    assert_eq!(reg.claim(t), Ok(h));
    assert_eq!(rec.take(), [Ev::Claimed(h, me())]);
    assert_eq!(reg.count(h), Ok(2));

    // Through a raw token, too.
    let raw = reg.transfer(h).expect("transfer").into_raw();
    rec.clear();
    assert_eq!(reg.claim_raw(raw), Ok(h));
    assert_eq!(rec.take(), [Ev::Claimed(h, me())]);
}

#[test]
fn pin_and_unpin_emit_pinned_and_unpinned_and_the_last_unpin_finalizes() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    rec.clear();
    reg.pin(h).expect("pin");
    reg.pin(h).expect("pin again");
    reg.unpin(h).expect("unpin");
    assert_eq!(
        rec.take(),
        [
            Ev::Pinned(h, me()),
            Ev::Pinned(h, me()),
            Ev::Unpinned(h, me())
        ]
    );
    assert_eq!(reg.release(h), Ok(Released::Held(0)));
    assert_eq!(rec.take(), [Ev::Last(h, me())], "the pin keeps it alive");
    reg.unpin(h).expect("last unpin");
    assert_eq!(
        rec.take(),
        [Ev::Unpinned(h, me()), Ev::Finalized(h, me(), false)]
    );
}

#[test]
fn a_panicking_drop_is_reported_as_finalized_with_panicked_true() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::panicking(1)).expect("insert");
    rec.clear();
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(
        rec.take(),
        [Ev::Last(h, me()), Ev::Finalized(h, me(), true)]
    );

    // Also when the home thread runs it from its queue.
    let h = reg.insert(Val::panicking(2)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r2 = reg.clone();
    let outcome = join(spawn("releases-a-bomb", move || {
        let h = r2.claim(t).expect("claim");
        r2.release(h)
    }));
    assert_eq!(outcome, Ok(Released::Queued));
    rec.clear();
    assert_eq!(reg.pump(), 1);
    assert_eq!(rec.take(), [Ev::Finalized(h, me(), true)]);
    assert_eq!(reg.snapshot().drop_panics, 2);
}

#[test]
fn without_home_finalization_the_releasing_thread_finalizes_and_nothing_is_queued() {
    let (reg, rec) = recording(Registry::builder().home_finalization(false));
    let h = reg.insert(Val::new(1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    rec.clear();
    let (r2, rec2) = (reg.clone(), rec.clone());
    let (w, events) = join(spawn("finalizer", move || {
        let h = r2.claim(t).expect("claim");
        rec2.clear();
        assert_eq!(r2.release(h), Ok(Released::Finalized));
        (me(), rec2.take())
    }));
    assert_eq!(events, [Ev::Last(h, w), Ev::Finalized(h, w, false)]);
}

#[test]
fn thread_exit_with_the_release_policy_reports_what_it_released() {
    let (reg, rec) = recording(Registry::builder());
    let a = reg.insert(Val::new(1)).expect("insert a");
    let b = reg.insert(Val::new(2)).expect("insert b");
    reg.retain(a).expect("retain a"); // home keeps one reference to `a`
    let (ta, tb) = (
        reg.transfer(a).expect("transfer a"),
        reg.transfer(b).expect("transfer b"),
    );
    rec.clear();
    let r2 = reg.clone();
    let w = join(spawn("exits-holding", move || {
        r2.claim(ta).expect("claim a");
        r2.claim(tb).expect("claim b");
        r2.retain(a).expect("retain a");
        me()
        // exits holding a × 2 and b × 1
    }));
    let events = rec.take();
    assert_eq!(
        events[..4],
        [
            Ev::Claimed(a, w),
            Ev::First(a, w),
            Ev::Claimed(b, w),
            Ev::First(b, w)
        ]
    );
    let exit = &events[4..];
    assert_eq!(
        exit.last(),
        Some(&Ev::ThreadExited(w, 2, 0)),
        "two objects released, none kept: {events:?}"
    );
    let exit: HashSet<_> = exit[..exit.len() - 1].iter().cloned().collect();
    assert_eq!(
        exit,
        HashSet::from([Ev::Last(a, w), Ev::Last(b, w), Ev::QueuedHome(b, w)]),
        "a is still held by its home; b went home to be finalized"
    );
    let pos = |e: &Ev| events.iter().position(|x| x == e);
    assert!(pos(&Ev::Last(b, w)) < pos(&Ev::QueuedHome(b, w)));

    assert_eq!(reg.pump(), 1);
    assert_eq!(rec.take(), [Ev::Finalized(b, me(), false)]);
    assert_eq!(reg.count(a), Ok(1));
}

#[test]
fn thread_exit_with_the_leak_policy_reports_what_it_kept() {
    let (reg, rec) = recording(Registry::builder().thread_exit(ThreadExit::Leak));
    let a = reg.insert(Val::new(1)).expect("insert a");
    let b = reg.insert(Val::new(2)).expect("insert b");
    let (ta, tb) = (
        reg.transfer(a).expect("transfer a"),
        reg.transfer(b).expect("transfer b"),
    );
    rec.clear();
    let r2 = reg.clone();
    let (w, claimed) = join(spawn("exits-leaking", move || {
        r2.claim(ta).expect("claim a");
        r2.claim(tb).expect("claim b");
        (me(), r2.len())
    }));
    assert_eq!(claimed, 2);
    let events = rec.take();
    let exit: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Ev::Last(..) | Ev::QueuedHome(..) | Ev::ThreadExited(..)))
        .cloned()
        .collect();
    assert_eq!(
        exit,
        [Ev::ThreadExited(w, 0, 2)],
        "kept, not released: no last reference, nothing queued"
    );
    assert_eq!(reg.holders(a), Ok(vec![(w, 1)]));
}

#[test]
fn a_home_thread_exit_finalizes_its_queue_on_itself_before_reporting() {
    let (reg, rec) = recording(Registry::builder());
    let (tx_t, rx_t) = mpsc::channel::<Transfer<Val>>();
    let (tx_go, rx_go) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let home = spawn("short-lived-home", move || {
        let h = r2.insert(Val::new(1)).expect("insert");
        tx_t.send(r2.transfer(h).expect("transfer")).expect("send");
        recv(&rx_go, "go"); // exits without pumping
        me()
    });
    let t = recv(&rx_t, "transfer");
    let h = t.handle();
    assert_eq!(reg.claim(t), Ok(h));
    assert_eq!(reg.release(h), Ok(Released::Queued));
    rec.clear();
    tx_go.send(()).expect("go");
    let home = join(home);
    assert_eq!(
        rec.take(),
        [Ev::Finalized(h, home, false), Ev::ThreadExited(home, 0, 0)]
    );
}

/// Runs `f`, which must fail with `expected`, and checks that exactly one
/// `Misuse` event naming `operation`, the error and the calling thread was
/// delivered.
fn assert_misuse<R: std::fmt::Debug>(
    rec: &Recorder,
    operation: &'static str,
    expected: Error,
    f: impl FnOnce() -> Result<R, Error>,
) {
    rec.clear();
    let got = f();
    assert_eq!(got.as_ref().err(), Some(&expected), "{operation}: {got:?}");
    assert_eq!(
        rec.take(),
        [Ev::Misuse(operation, expected, me())],
        "{operation} must emit one Misuse event"
    );
}

#[test]
fn every_misuse_emits_a_misuse_event_naming_the_operation_error_and_thread() {
    let (reg, rec) = recording(Registry::builder());

    // Stale: a finalized object's handle.
    let stale = reg.insert(Val::new(1)).expect("insert");
    reg.release(stale).expect("release");
    let s = Error::Stale(stale);
    assert_misuse(&rec, "retain", s, || reg.retain(stale));
    assert_misuse(&rec, "release", s, || reg.release(stale));
    assert_misuse(&rec, "get", s, || reg.get(stale).map(|_| ()));
    assert_misuse(&rec, "proxy", s, || reg.proxy(stale).map(|_| ()));
    assert_misuse(&rec, "count", s, || reg.count(stale));
    assert_misuse(&rec, "holders", s, || reg.holders(stale));
    assert_misuse(&rec, "pin", s, || reg.pin(stale));
    assert_misuse(&rec, "unpin", s, || reg.unpin(stale));
    assert_misuse(&rec, "transfer", s, || reg.transfer(stale).map(|_| ()));

    // Forged: ids this registry never issued.
    let forged = Handle::from_raw(12_345).expect("a handle-shaped id");
    let inv = Error::Invalid(12_345);
    assert_misuse(&rec, "retain", inv, || reg.retain(forged));
    assert_misuse(&rec, "get", inv, || reg.get(forged).map(|_| ()));
    assert_misuse(&rec, "claim_raw", inv, || reg.claim_raw(12_345));
    assert_misuse(&rec, "from_raw", inv, || {
        Transfer::from_raw(&reg, 12_345).map(|_| ())
    });

    // Foreign: a handle and a transfer of another registry.
    let other: Registry<Val> = Registry::new();
    let foreign = other.insert(Val::new(2)).expect("insert");
    let f = Error::ForeignRegistry(foreign);
    assert_misuse(&rec, "get", f, || reg.get(foreign).map(|_| ()));
    assert_misuse(&rec, "release", f, || reg.release(foreign));
    let ft = other.transfer(foreign).expect("transfer");
    assert_misuse(&rec, "claim", f, || reg.claim(ft));
    assert!(
        other.is_empty(),
        "the refused transfer released its reference"
    );

    // NotPinned.
    let h = reg.insert(Val::new(3)).expect("insert");
    assert_misuse(&rec, "unpin", Error::NotPinned(h), || reg.unpin(h));

    // NotHeld: a thread with only a proxy has no explicit reference to release.
    let p = reg.proxy(h).expect("proxy");
    reg.release(h).expect("release the explicit reference");
    assert_misuse(&rec, "release", Error::NotHeld(h), || reg.release(h));
    assert_misuse(&rec, "transfer", Error::NotHeld(h), || {
        reg.transfer(h).map(|_| ())
    });

    // NotHeld: a thread that holds nothing.
    let (r2, rec2) = (reg.clone(), rec.clone());
    join(spawn("stranger", move || {
        let nh = Error::NotHeld(h);
        assert_misuse(&rec2, "retain", nh, || r2.retain(h));
        assert_misuse(&rec2, "release", nh, || r2.release(h));
        assert_misuse(&rec2, "get", nh, || r2.get(h).map(|_| ()));
        assert_misuse(&rec2, "proxy", nh, || r2.proxy(h).map(|_| ()));
        assert_misuse(&rec2, "pin", nh, || r2.pin(h));
        assert_misuse(&rec2, "transfer", nh, || r2.transfer(h).map(|_| ()));
    }));

    // TransferClaimed: a raw token claimed twice, or taken back after a claim.
    let q = reg.proxy(h).expect("proxy");
    reg.retain(h).expect("retain");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert_eq!(reg.claim_raw(raw), Ok(h));
    assert_misuse(&rec, "claim_raw", Error::TransferClaimed, || {
        reg.claim_raw(raw)
    });
    assert_misuse(&rec, "from_raw", Error::TransferClaimed, || {
        Transfer::from_raw(&reg, raw).map(|_| ())
    });
    drop((p, q));
    assert_eq!(reg.count(h), Ok(1), "no misuse changed a count");
}

#[test]
fn full_overflow_and_closed_are_not_misuse_and_emit_no_misuse_event() {
    let (reg, rec) = recording(Registry::builder().capacity(1).max_count(2));
    let h = reg.insert(Val::new(1)).expect("insert");
    rec.clear();

    let full = reg.insert(Val::new(2)).expect_err("full");
    assert_eq!(full.error(), Error::Full);
    assert_eq!(reg.retain(h), Ok(2));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    assert_eq!(reg.proxy(h).err(), Some(Error::Overflow(h)));
    let t = reg.transfer(h).expect("transfer"); // count 1
    reg.retain(h).expect("retain"); // count 2: a claim would overflow
    assert_eq!(reg.claim(t), Err(Error::Overflow(h)));

    let t = reg.transfer(h).expect("transfer");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    reg.close();
    assert_eq!(
        reg.insert(Val::new(3)).expect_err("closed").error(),
        Error::Closed
    );
    assert_eq!(reg.claim(t), Err(Error::Closed));
    assert_eq!(reg.claim_raw(raw), Err(Error::Closed));

    let misuse: Vec<_> = rec
        .take()
        .into_iter()
        .filter(|e| matches!(e, Ev::Misuse(..)))
        .collect();
    assert_eq!(misuse, [], "Full, Overflow and Closed are not caller bugs");
}

#[test]
fn leaked_is_delivered_once_when_the_last_registry_clone_goes_with_objects_held() {
    let (reg, rec) = recording(Registry::builder());
    let a = reg.insert(Val::new(1)).expect("insert");
    let b = reg.insert(Val::new(2)).expect("insert");
    reg.pin(b).expect("pin");
    let clone = reg.clone();
    rec.clear();
    drop(reg);
    assert_eq!(rec.take(), [], "a clone remains: nothing is leaked yet");
    let dropper = join(spawn("last-dropper", move || {
        drop(clone);
        me()
    }));
    let leaked = rec.take_leaked();
    assert_eq!(
        leaked,
        [Ev::Leaked(vec![a, b], dropper)],
        "exactly one report, from the thread that dropped the last clone"
    );
}

#[test]
fn leaked_is_not_delivered_when_nothing_is_held() {
    let (reg, rec) = recording(Registry::builder());
    let h = reg.insert(Val::new(1)).expect("insert");
    reg.release(h).expect("release");
    let clone = reg.clone();
    drop(reg);
    drop(clone);
    let leaked = rec.take_leaked();
    assert_eq!(leaked, []);
}

#[test]
fn a_last_drop_with_nothing_held_does_not_use_up_the_leak_report() {
    // An interner keeps the registry's storage alive past its last
    // `Registry`: objects made afterwards are still reported when the
    // `Registry` it lends out is dropped holding them.
    let (reg, rec) = recording(Registry::builder());
    let names: tether::Interner<u32, Val> = tether::Interner::new(&reg);
    drop(reg); // nothing held: no report
    let h = names.intern(&1, || Ok(Val::new(1))).expect("intern");
    let lent = names.registry();
    assert_eq!(lent.len(), 1);
    drop(lent);
    let leaked = rec.take_leaked();
    assert_eq!(leaked, [Ev::Leaked(vec![h], me())]);
}

#[test]
fn leaked_is_not_delivered_again_when_a_proxy_lends_out_a_registry_afterwards() {
    let (reg, rec) = recording(Registry::builder());
    let p = reg.insert_proxy(Val::new(1)).expect("insert_proxy");
    rec.clear();
    drop(reg);
    let leaked = |rec: &Recorder| rec.take_leaked().len();
    assert_eq!(leaked(&rec), 1, "the last clone went with an object held");
    for _ in 0..3 {
        let borrowed = p.registry(); // e.g. inside a callback that has only the proxy
        assert_eq!(borrowed.len(), 1);
    }
    assert_eq!(leaked(&rec), 0, "the same leak, reported again and again");
}

#[test]
fn the_leaked_event_carries_the_full_report() {
    let (reg, rec) = recording(Registry::builder().track_ages(true));
    let h = reg.insert(Val::new(1)).expect("insert");
    reg.pin(h).expect("pin");
    rec.clear();
    drop(reg);
    let events = rec.take_raw();
    let [Event::Leaked { report, thread }] = &events[..] else {
        panic!("expected one Leaked event, got {events:?}");
    };
    assert_eq!(*thread, me());
    assert_eq!(report.objects.len(), 1);
    let o = &report.objects[0];
    assert_eq!((o.handle, o.pins, o.home), (h, 1, Some(me())));
    assert!(o.age.is_some());
    assert!(report.to_string().contains(&h.to_string()));
}

#[test]
fn a_panicking_hook_is_caught_counted_and_leaves_the_registry_consistent() {
    let reg: Registry<Val> = Registry::builder()
        .on_event(|e: &Event| panic!("intentional panic in the event hook on {} (test)", e))
        .build();
    let h = reg.insert(Val::new(1)).expect("insert despite the hook");
    assert_eq!(reg.hook_panics(), 2, "Inserted and FirstReference");
    assert_eq!(reg.retain(h), Ok(2), "fast path: no event, no panic");
    assert_eq!(reg.hook_panics(), 2);
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(reg.hook_panics(), 3, "Transferred");
    let r2 = reg.clone();
    let outcome = join(spawn("claims-under-a-bad-hook", move || {
        let h = r2.claim(t).expect("claim"); // Claimed, FirstReference
        assert_eq!(r2.count(h), Ok(1));
        r2.release(h) // LastReference
    }));
    assert_eq!(outcome, Ok(Released::Held(0)), "the home still holds one");
    let after_worker = reg.hook_panics();
    assert_eq!(after_worker, 7, "+ Claimed, First, Last, ThreadExited");
    assert_eq!(reg.holders(h), Ok(vec![(me(), 1)]));
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(reg.hook_panics(), after_worker + 2, "Last, Finalized");
    assert!(reg.is_empty());
    assert_eq!(
        reg.snapshot().drop_panics,
        0,
        "hook panics are not drop panics"
    );
    let h = reg.insert(Val::new(2)).expect("still usable");
    assert_eq!(reg.get(h).expect("get").id, 2);
}

/// A registry the hook can reach without owning it forever: the test takes
/// it back out at the end to break the cycle hook → registry → hook.
type Slot = Arc<Mutex<Option<Registry<Val>>>>;

#[test]
fn a_hook_that_calls_back_into_the_registry_does_not_deadlock() {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let slot: Slot = Arc::default();
        let rec = Recorder::default();
        let victim: Arc<Mutex<Option<Handle>>> = Arc::default();
        let (slot2, record, victim2) = (Arc::clone(&slot), rec.hook(), Arc::clone(&victim));
        let reg = Registry::builder()
            .on_event(move |e: &Event| {
                record(e);
                let reg = slot2.lock().clone();
                let Some(reg) = reg else { return };
                // Diagnostics from inside the hook, on every event.
                let _ = reg.len();
                let _ = reg.snapshot().to_string();
                let _ = reg.leak_report().to_string();
                // Releasing another handle from inside the hook.
                if let Event::Pinned { .. } = e {
                    let v = victim2.lock().take();
                    if let Some(v) = v {
                        assert_eq!(reg.release(v), Ok(Released::Finalized));
                    }
                }
            })
            .build();
        *slot.lock() = Some(reg.clone());

        let a = reg.insert(Val::new(1)).expect("insert a");
        let b = reg.insert(Val::new(2)).expect("insert b");
        *victim.lock() = Some(b);
        reg.pin(a).expect("pin: its hook releases b");
        let names: Vec<_> = rec.take_raw().iter().map(Event::name).collect();
        assert!(
            names.ends_with(&["pinned", "last_reference", "finalized"]),
            "b's events are delivered from inside the Pinned hook: {names:?}"
        );
        assert_eq!(reg.get(b).err(), Some(Error::Stale(b)), "b was released");

        // Worker events (claim, queue home) and the home's pump, all calling back.
        let t = reg.transfer(a).expect("transfer");
        let r2 = reg.clone();
        join(spawn("hooked-worker", move || {
            let a = r2.claim(t).expect("claim");
            r2.release(a).expect("release")
        }));
        reg.unpin(a).expect("unpin"); // last hold: finalized here
        assert_eq!(reg.pump(), 0);
        assert!(reg.is_empty());
        drop(slot.lock().take());
        tx.send(()).expect("done");
    });
    recv(&rx, "a re-entrant hook");
}

#[test]
fn interning_emits_first_reference_for_each_new_holder() {
    let (reg, rec) = recording(Registry::builder());
    let names: tether::Interner<String, Val> = tether::Interner::new(&reg);
    let h = names.intern("k", || Ok(Val::new(1))).expect("intern");
    assert_eq!(rec.take(), [Ev::Inserted(h, me()), Ev::First(h, me())]);
    assert_eq!(names.intern("k", || Ok(Val::new(2))), Ok(h));
    assert_eq!(rec.take(), [], "a holder's intern is the fast path");
    let (names2, rec2) = (names.clone(), rec.clone());
    let (w, events) = join(spawn("interner", move || {
        let got = names2.intern("k", || Ok(Val::new(3))).expect("intern");
        assert_eq!(got, h);
        (me(), rec2.take())
    }));
    assert_eq!(events, [Ev::First(h, w)]);
}

/// `Event`'s `Display`: one line, `name handle on thread`, plus the details
/// of the kind (a panicking drop, what a thread exit released and kept, the
/// misused operation and its error, how many objects a leak report holds).
#[test]
fn display_is_one_line_naming_the_kind_handle_thread_and_details() {
    let (reg, rec) = recording(Registry::builder());
    let line = |e: &Event| {
        let s = e.to_string();
        assert!(!s.contains('\n'), "one line: {s:?}");
        s
    };
    let on = |t: ThreadId| format!(" on {t:?}");

    let h = reg.insert(Val::panicking(1)).expect("insert");
    rec.clear();
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    let events = rec.take_raw();
    assert_eq!(
        events.iter().map(line).collect::<Vec<_>>(),
        [
            format!("last_reference {h}{}", on(me())),
            format!("finalized {h}{} (drop panicked)", on(me())),
        ]
    );

    let err = reg.release(h).expect_err("stale");
    let events = rec.take_raw();
    assert_eq!(
        events.iter().map(line).collect::<Vec<_>>(),
        [format!("misuse {h}{}: release: {err}", on(me()))]
    );

    let a = reg.insert(Val::new(2)).expect("insert");
    let t = reg.transfer(a).expect("transfer");
    let r2 = reg.clone();
    rec.clear();
    let w = join(spawn("exits-holding-one", move || {
        r2.claim(t).expect("claim");
        me()
    }));
    let exit = rec
        .take_raw()
        .into_iter()
        .find(|e| e.name() == "thread_exited")
        .expect("a thread_exited event");
    assert_eq!(
        line(&exit),
        format!("thread_exited{}: released 1, kept 0", on(w))
    );
    assert_eq!(reg.pump(), 1);

    let b = reg.insert(Val::new(3)).expect("insert");
    let c = reg.insert(Val::new(4)).expect("insert");
    rec.clear();
    drop(reg);
    let events = rec.take_raw();
    let [leaked] = &events[..] else {
        panic!("expected one Leaked event, got {events:?}");
    };
    assert_eq!(
        line(leaked),
        format!("leaked{}: 2 object(s) still held", on(me()))
    );
    let _ = (b, c);
}

/// A caller that waits for another's `init` gets its reference as a
/// transfer minted by the creator: one `Transferred` on the creator's
/// thread, one `Claimed` (and its `FirstReference`) on the waiter's.
#[test]
fn an_intern_waiter_receives_a_transfer_from_the_creator() {
    let (reg, rec) = recording(Registry::builder());
    let names: tether::Interner<u32, Val> = tether::Interner::new(&reg);
    // The waiter must arrive while `init` runs; `init` gives it a growing
    // head start, so a slow machine only costs attempts.
    for attempt in 0..8u32 {
        rec.clear();
        let (to_waiter, go) = std::sync::mpsc::channel::<()>();
        let names2 = names.clone();
        let waiter = spawn("waiter", move || {
            recv(&go, "the creator's init");
            let h = names2.intern(&attempt, || Ok(Val::new(0))).expect("intern");
            (me(), h)
        });
        let h = names
            .intern(&attempt, || {
                to_waiter.send(()).expect("waiter");
                thread::sleep(std::time::Duration::from_millis(20 << attempt));
                Ok(Val::new(attempt))
            })
            .expect("intern");
        let (w, got) = join(waiter);
        assert_eq!(got, h);
        let events = rec.take();
        if !events.contains(&Ev::Claimed(h, w)) {
            continue; // the waiter came after init: it took the Ready path
        }
        let count = |e: &Ev| events.iter().filter(|x| *x == e).count();
        assert_eq!(count(&Ev::Transferred(h, me())), 1, "{events:?}");
        assert_eq!(count(&Ev::Claimed(h, w)), 1, "{events:?}");
        assert_eq!(count(&Ev::First(h, w)), 1, "{events:?}");
        assert_eq!(reg.count(h), Ok(1));
        return;
    }
    panic!("no waiter arrived while init ran, in 8 attempts");
}
