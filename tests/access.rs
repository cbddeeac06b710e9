//! Invariant 5: access requires a reference. A thread holding nothing cannot
//! `get`/`retain`/`proxy`/`pin` a guessed handle; the home thread can; anyone
//! can on a pinned object; a live guard counts as a reference.

mod common;

use std::sync::mpsc;
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Handle, Registry};

/// What a thread that holds nothing sees when it tries a guessed handle.
fn stranger_attempts(reg: &Registry<Tracked>, h: Handle) -> Vec<(&'static str, Option<Error>)> {
    vec![
        ("get", reg.get(h).err()),
        ("retain", reg.retain(h).err()),
        ("proxy", reg.proxy(h).err()),
        ("pin", reg.pin(h).err()),
        ("unpin", reg.unpin(h).err()),
        ("transfer", reg.transfer(h).err()),
        ("release", reg.release(h).err()),
    ]
}

#[test]
fn a_thread_holding_nothing_cannot_use_a_guessed_handle() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");

    let r2 = reg.clone();
    let (attempts, count) = join(spawn("guesser", move || {
        (stranger_attempts(&r2, h), r2.count(h))
    }));
    for (what, err) in attempts {
        assert_eq!(err, Some(Error::NotHeld(h)), "{what} by a stranger");
    }
    assert_eq!(count, Ok(0), "count() needs no access and reports 0");
    assert_eq!(reg.count(h), Ok(1), "the stranger changed home's count");
    assert_eq!(log.count(), 0);
    let holders = common::nonzero(reg.holders(h).expect("holders"));
    assert_eq!(holders, vec![(thread::current().id(), 1)]);
}

#[test]
fn the_home_thread_may_access_its_object_with_count_zero() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer home's only reference");
    assert_eq!(reg.count(h), Ok(0));

    let (claimed_tx, claimed_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let worker = spawn("only-holder", move || {
        r2.claim(t).expect("claim");
        claimed_tx.send(()).expect("send");
        done_rx.recv().expect("done");
        rel(r2.release(h))
    });
    common::recv(&claimed_rx, "claim");

    // Home holds nothing now, but it owns the object.
    assert_eq!(reg.get(h).expect("home may get").id, 1);
    assert_eq!(reg.retain(h), Ok(1), "home may retain with count 0");
    {
        let p = reg.proxy(h).expect("home may proxy");
        assert_eq!(p.id, 1);
        assert_eq!(reg.count(h), Ok(2));
    }
    reg.pin(h).expect("home may pin");
    reg.unpin(h).expect("home may unpin");
    assert_eq!(rel(reg.release(h)), Rel::Held(0), "worker still holds");

    done_tx.send(()).expect("send");
    assert_eq!(join(worker), Rel::Queued);
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
}

#[test]
fn anyone_may_access_a_pinned_object() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.pin(h).expect("pin");

    let r2 = reg.clone();
    let results = join(spawn("pinned-reader", move || {
        let id = r2.get(h).expect("get a pinned object").id;
        let retained = r2.retain(h);
        let released = rel(r2.release(h));
        let proxied = r2.proxy(h).map(|p| p.id);
        (id, retained, released, proxied, r2.count(h))
    }));
    let (id, retained, released, proxied, count) = results;
    assert_eq!(id, 1);
    assert_eq!(retained, Ok(1));
    assert_eq!(released, Rel::Held(0), "pinned and home-held: still alive");
    assert_eq!(proxied, Ok(1));
    assert_eq!(count, Ok(0), "the proxy was dropped on the worker");

    reg.unpin(h).expect("unpin");
    // Unpinned again: a stranger is refused once more.
    let r3 = reg.clone();
    let err = join(spawn("after-unpin", move || r3.get(h).err()));
    assert_eq!(err, Some(Error::NotHeld(h)));
    assert_eq!(log.count(), 0);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

#[test]
fn an_object_pinned_twice_stays_open_to_strangers_until_its_last_unpin() {
    let reg = Registry::new();
    let h = reg.insert(7u32).expect("insert");
    reg.pin(h).expect("pin");
    reg.pin(h).expect("pin again");
    let stranger_gets = |reg: &Registry<u32>| {
        let r = reg.clone();
        join(spawn("stranger", move || r.get(h).map(|g| *g)))
    };
    reg.unpin(h).expect("first unpin");
    assert_eq!(reg.snapshot().object(h).expect("live").pins, 1);
    assert_eq!(stranger_gets(&reg), Ok(7), "one pin is left");
    reg.unpin(h).expect("second unpin");
    assert_eq!(reg.snapshot().object(h).expect("live").pins, 0);
    assert_eq!(
        stranger_gets(&reg),
        Err(Error::NotHeld(h)),
        "no pin is left"
    );
    assert_eq!(reg.unpin(h), Err(Error::NotPinned(h)));
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

#[test]
fn a_thread_that_let_go_loses_access() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");

    let r2 = reg.clone();
    let attempts = join(spawn("let-go", move || {
        r2.claim(t).expect("claim");
        assert_eq!(r2.get(h).expect("holder may get").id, 1);
        assert_eq!(rel(r2.release(h)), Rel::Held(0));
        stranger_attempts(&r2, h)
    }));
    for (what, err) in attempts {
        assert_eq!(err, Some(Error::NotHeld(h)), "{what} after letting go");
    }
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 0);
}

#[test]
fn a_live_guard_keeps_the_object_alive_after_its_thread_releases() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");

    let (tx, rx) = mpsc::channel();
    let r2 = reg.clone();
    let log2 = log.clone();
    let worker = spawn("guard-holder", move || {
        r2.claim(t).expect("claim");
        let g = r2.get(h).expect("get");
        assert_eq!(r2.count(h), Ok(2), "explicit ref + live guard");
        let r = rel(r2.release(h));
        assert!(matches!(r, Rel::Held(_)), "the guard holds it: {r:?}");
        assert_eq!(log2.count(), 0, "finalized under a live guard");
        assert_eq!(g.id, 1, "the guard still reads the value");
        // The guard is not an explicit reference.
        assert_eq!(rel(r2.release(h)), Rel::Err(Error::NotHeld(h)));
        tx.send(log2.count()).expect("send");
        drop(g);
        // Last reference gone on a non-home thread whose home is alive: the
        // value goes home, it is not dropped here.
        log2.count()
    });
    let while_guarded = common::recv(&rx, "guard held");
    let after_guard = join(worker);
    assert_eq!(while_guarded, 0);
    assert_eq!(after_guard, 0, "dropped on the worker, not on home");
    assert_eq!(reg.pump(), 1, "dropping the guard queued the value home");
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(home));
}

#[test]
fn a_guard_is_not_send() {
    // Compile-time check: if Guard were Send, the two blanket impls below
    // would make `some_item` ambiguous and this file would not compile.
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
    let _ = <tether::Guard<'static, Tracked> as AmbiguousIfSend<_>>::some_item;
}

/// Issue 15, item 3: the access rule is decided about the object a hold
/// lands on. With capacity 1, main inserts X (main is its home), hands its
/// only reference to a worker and probes X's *successor* id (same index,
/// next generation) while the worker releases X and inserts Y — its own
/// object, never given to main — into the reused slot. Checking "is main
/// X's home?" and then adding the hold let main's `get`/`retain`/`proxy`
/// land on Y (measured: 3 hits in 18 K-343 K rounds). Every probe must be
/// refused. Runs for `TETHER_RACE_MS` (default 1500) milliseconds; the loom
/// model `loom-tests/tests/access.rs` covers the interleaving exhaustively.
#[test]
fn a_successor_id_gives_no_access_while_its_slot_is_reused() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let ms = std::env::var("TETHER_RACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500u64);
    let reg: Registry<u64> = Registry::builder().capacity(1).build();
    let done = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<Option<tether::Transfer<u64>>>();
    let (r, d) = (reg.clone(), done.clone());
    let worker = spawn("reuser", move || {
        let mut round = 0;
        while let Some(t) = common::recv(&rx, "next transfer") {
            round += 1;
            let x = r.claim(t).expect("claim X");
            r.release(x).expect("release X"); // queued to main, slot free
            let y = r.insert(u64::MAX).expect("insert Y into the freed slot");
            // Let main probe while Y lives.
            for _ in 0..50 {
                std::hint::spin_loop();
            }
            r.release(y).expect("release Y");
            d.store(round, Ordering::Release);
        }
    });
    let deadline = Instant::now() + Duration::from_millis(ms);
    let (mut rounds, mut probes, mut hits) = (0u64, 0u64, Vec::new());
    while Instant::now() < deadline {
        rounds += 1;
        let x = reg.insert(rounds).expect("insert X");
        let succ = Handle::from_raw(x.to_raw() + (1 << 24)).expect("successor id");
        tx.send(Some(reg.transfer(x).expect("transfer"))).unwrap();
        while done.load(Ordering::Acquire) != rounds {
            probes += 1;
            if let Ok(g) = reg.get(succ) {
                hits.push(("get", *g));
            }
            if reg.retain(succ).is_ok() {
                hits.push(("retain", 0));
                reg.release(succ).expect("give the stolen reference back");
            }
            if let Ok(p) = reg.proxy(succ) {
                hits.push(("proxy", *p));
            }
        }
    }
    tx.send(None).unwrap();
    join(worker);
    reg.pump();
    assert!(
        hits.is_empty(),
        "{} probes of a successor id got access in {rounds} rounds ({probes} probes): {hits:?}",
        hits.len()
    );
    assert!(reg.is_empty(), "{} objects left", reg.len());
    eprintln!("{rounds} rounds, {probes} probes, no access");
}
