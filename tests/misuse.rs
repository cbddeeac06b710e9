//! Issue 6, part 1.4: the misuse policy. `Misuse::Error` (the default)
//! returns the `Err`; `Misuse::Panic` panics with a message naming the
//! operation, the handle, the thread and — with `capture_backtraces(true)` —
//! where the object was inserted, after putting the registry back in a
//! consistent state; `Misuse::Log` returns the `Err` too. Conditions a
//! correct program can meet (`Full`, `Overflow`, `Closed`) are not misuse and
//! never panic.
//!
//! The panic messages printed by the `Misuse::Panic` tests are expected.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{join, me, spawn};
// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;
use tether::{Error, Event, Handle, Misuse, Registry, Released, Transfer};

/// A stored value that counts its drops.
struct Val {
    id: u32,
    drops: Arc<AtomicUsize>,
}

impl Drop for Val {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn val(id: u32, drops: &Arc<AtomicUsize>) -> Val {
    Val {
        id,
        drops: Arc::clone(drops),
    }
}

fn panicking() -> Registry<Val> {
    Registry::builder().on_misuse(Misuse::Panic).build()
}

/// Runs `f`, which must panic, and returns the panic message.
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a misuse panic, the call returned"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "<non-string panic payload>".to_owned()),
    }
}

#[test]
fn misuse_error_is_the_default_and_returns_the_err() {
    let drops = Arc::default();
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(reg.release(h), Err(Error::Stale(h)), "double release");
    assert_eq!(reg.unpin(h), Err(Error::Stale(h)));
    let h = reg.insert(val(2, &drops)).expect("insert");
    assert_eq!(reg.unpin(h), Err(Error::NotPinned(h)));
    let r2 = reg.clone();
    join(spawn("stranger", move || {
        assert_eq!(r2.release(h), Err(Error::NotHeld(h)));
        assert_eq!(r2.get(h).err(), Some(Error::NotHeld(h)));
    }));
    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert_eq!(reg.claim_raw(raw), Ok(h));
    assert_eq!(reg.claim_raw(raw), Err(Error::TransferClaimed));
    assert_eq!(reg.count(h), Ok(1), "nothing changed");
}

#[test]
fn misuse_panic_names_the_operation_the_handle_and_the_thread() {
    let drops = Arc::default();
    let reg = panicking();
    let h = reg.insert(val(1, &drops)).expect("insert");
    let r2 = reg.clone();
    let (msg, thread) = join(spawn("misuser", move || {
        (panic_message(|| r2.release(h)), me())
    }));
    assert!(msg.contains("release"), "names the operation: {msg}");
    assert!(msg.contains(&h.to_string()), "names the handle {h}: {msg}");
    assert!(msg.contains("misuser"), "names the thread: {msg}");
    assert!(msg.contains(&format!("{thread:?}")), "thread id: {msg}");
    assert!(
        !msg.contains("inserted at"),
        "no backtrace unless captured: {msg}"
    );
}

#[test]
fn misuse_panic_with_captured_backtraces_says_where_the_object_was_inserted() {
    let drops = Arc::default();
    let reg = Registry::builder()
        .on_misuse(Misuse::Panic)
        .capture_backtraces(true)
        .build();
    let h = reg.insert(val(1, &drops)).expect("insert");
    let msg = panic_message(|| reg.unpin(h));
    assert!(msg.contains("unpin"), "{msg}");
    assert!(msg.contains(&h.to_string()), "{msg}");
    assert!(msg.contains("inserted at"), "the insert's backtrace: {msg}");
}

#[test]
fn every_kind_of_misuse_panics_under_misuse_panic_naming_its_operation() {
    let drops = Arc::default();
    let reg = panicking();
    let stale = reg.insert(val(1, &drops)).expect("insert");
    reg.release(stale).expect("release");
    let h = reg.insert(val(2, &drops)).expect("insert");
    let forged = Handle::from_raw(12_345).expect("handle-shaped");
    let other: Registry<Val> = Registry::new();
    let foreign = other.insert(val(3, &drops)).expect("insert");
    let foreign_t = other.transfer(foreign).expect("transfer");

    let cases: Vec<(&str, String, String)> = vec![
        (
            "retain",
            stale.to_string(),
            panic_message(|| reg.retain(stale)),
        ),
        ("get", "12345".into(), panic_message(|| reg.get(forged))),
        (
            "claim",
            foreign.to_string(),
            panic_message(|| reg.claim(foreign_t)),
        ),
        ("unpin", h.to_string(), panic_message(|| reg.unpin(h))),
        ("pin", stale.to_string(), panic_message(|| reg.pin(stale))),
    ];
    for (op, id, msg) in &cases {
        assert!(msg.contains(&format!("in {op}")), "names {op}: {msg}");
        assert!(msg.contains(id.as_str()), "names {id}: {msg}");
    }
    assert!(other.is_empty(), "the refused foreign transfer let go");

    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert_eq!(reg.claim_raw(raw), Ok(h));
    let msg = panic_message(|| reg.claim_raw(raw));
    assert!(
        msg.contains("claim_raw") && msg.contains("already claimed"),
        "{msg}"
    );
    let msg = panic_message(|| Transfer::from_raw(&reg, raw));
    assert!(msg.contains("from_raw"), "{msg}");

    let r2 = reg.clone();
    let msgs = join(spawn("stranger", move || {
        [
            panic_message(|| r2.release(h)),
            panic_message(|| r2.retain(h)),
            panic_message(|| r2.proxy(h)),
            panic_message(|| r2.transfer(h)),
        ]
    }));
    for (op, msg) in ["release", "retain", "proxy", "transfer"].iter().zip(&msgs) {
        assert!(msg.contains(&format!("in {op}")), "{msg}");
        assert!(msg.contains("stranger"), "{msg}");
        assert!(msg.contains("holds no reference"), "{msg}");
    }
    assert_eq!(reg.count(h), Ok(1));
}

#[test]
fn after_a_misuse_panic_the_registry_is_consistent_and_usable() {
    let drops = Arc::new(AtomicUsize::new(0));
    let reg = panicking();
    // `a`: held by this thread × 2 and pinned. `b`: held only by a worker, so
    // this (home) thread's unpin takes a temporary hold that must be given
    // back. `c`: held by this thread, in flight as a raw token.
    let a = reg.insert(val(1, &drops)).expect("insert a");
    reg.retain(a).expect("retain a");
    reg.pin(a).expect("pin a");
    let b = reg.insert(val(2, &drops)).expect("insert b");
    let tb = reg.transfer(b).expect("transfer b");
    let c = reg.insert(val(3, &drops)).expect("insert c");
    let (r2, (tx_go, rx_go)) = (reg.clone(), std::sync::mpsc::channel::<()>());
    let (tx_ready, rx_ready) = std::sync::mpsc::channel::<()>();
    let worker = spawn("holds-b", move || {
        let b = r2.claim(tb).expect("claim b");
        tx_ready.send(()).expect("ready");
        rx_go.recv().expect("go");
        assert_eq!(r2.get(b).expect("still mine").id, 2);
        r2.release(b)
    });
    rx_ready.recv().expect("ready");
    let before = reg.snapshot().objects;

    panic_message(|| reg.unpin(b)); // NotPinned, after a temporary hold
    panic_message(|| reg.release(b)); // NotHeld
    panic_message(|| reg.transfer(b)); // NotHeld
    let raw = reg.transfer(c).expect("transfer c").into_raw();
    assert_eq!(reg.claim_raw(raw), Ok(c));
    panic_message(|| reg.claim_raw(raw)); // TransferClaimed
    let stale = reg.insert(val(4, &drops)).expect("insert");
    reg.release(stale).expect("release");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    panic_message(|| reg.retain(stale)); // Stale
    panic_message(|| reg.unpin(stale)); // Stale

    assert_eq!(
        reg.snapshot().objects,
        before,
        "no count, pin or transfer moved"
    );
    assert_eq!(reg.holders(b), Ok(vec![(worker.thread().id(), 1)]));
    assert_eq!(reg.count(a), Ok(2));
    assert_eq!(reg.count(b), Ok(0));

    // Still usable from other calls.
    assert_eq!(reg.retain(a), Ok(3));
    assert_eq!(reg.release(a), Ok(Released::Held(2)));
    reg.unpin(a).expect("unpin a");
    tx_go.send(()).expect("go");
    assert_eq!(join(worker), Ok(Released::Queued));
    assert_eq!(reg.pump(), 1, "b finalized at home");
    assert_eq!(reg.release(a), Ok(Released::Held(1)));
    assert_eq!(reg.release(a), Ok(Released::Finalized));
    assert_eq!(reg.release(c), Ok(Released::Finalized));
    assert!(reg.is_empty());
    assert_eq!(drops.load(Ordering::SeqCst), 4, "each value dropped once");
}

#[test]
fn misuse_panic_delivers_the_misuse_event_before_panicking() {
    let seen: Arc<Mutex<Vec<(&'static str, Error)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let drops = Arc::default();
    let reg = Registry::builder()
        .on_misuse(Misuse::Panic)
        .on_event(move |e: &Event| {
            if let Event::Misuse {
                operation, error, ..
            } = e
            {
                sink.lock().push((*operation, *error));
            }
        })
        .build();
    let h = reg.insert(val(1, &drops)).expect("insert");
    panic_message(|| reg.unpin(h));
    assert_eq!(*seen.lock(), [("unpin", Error::NotPinned(h))]);
}

#[test]
fn misuse_log_returns_the_err_without_panicking() {
    let drops = Arc::default();
    let reg = Registry::builder().on_misuse(Misuse::Log).build();
    let h = reg.insert(val(1, &drops)).expect("insert");
    assert_eq!(reg.unpin(h), Err(Error::NotPinned(h)));
    assert_eq!(reg.release(h), Ok(Released::Finalized));
    assert_eq!(reg.release(h), Err(Error::Stale(h)));
    assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
    let forged = Handle::from_raw(12_345).expect("handle-shaped");
    assert_eq!(reg.retain(forged), Err(Error::Invalid(12_345)));
    assert_eq!(reg.claim_raw(12_345), Err(Error::Invalid(12_345)));
    assert!(reg.is_empty());
}

#[test]
fn full_overflow_and_closed_never_panic_under_misuse_panic() {
    let drops = Arc::new(AtomicUsize::new(0));
    let reg = Registry::builder()
        .on_misuse(Misuse::Panic)
        .capacity(1)
        .max_count(2)
        .build();
    let h = reg.insert(val(1, &drops)).expect("insert");

    // Full.
    let err = reg.insert(val(2, &drops)).expect_err("full");
    assert_eq!(err.error(), Error::Full);
    assert_eq!(err.into_value().id, 2, "handed back");
    assert_eq!(
        reg.insert_proxy(val(3, &drops)).expect_err("full").error(),
        Error::Full
    );

    // Overflow.
    let p = reg.proxy(h).expect("proxy"); // count 2
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    assert_eq!(reg.proxy(h).err(), Some(Error::Overflow(h)));
    assert_eq!(p.try_clone().err(), Some(Error::Overflow(h)));
    assert_eq!(reg.get(h).err(), Some(Error::Overflow(h)));
    let t = reg.transfer(h).expect("transfer"); // count 1
    reg.retain(h).expect("retain"); // count 2
    assert_eq!(reg.claim(t), Err(Error::Overflow(h)));
    let t = p.transfer(); // count 1
    reg.retain(h).expect("retain"); // count 2
    let t2 = reg.transfer(h).expect("transfer"); // count 1
    let proxy = reg.proxy(h).expect("proxy"); // count 2
    assert_eq!(t2.claim().err(), Some(Error::Overflow(h)));

    // Closed.
    let raw = reg.transfer(h).expect("transfer").into_raw();
    reg.close();
    assert_eq!(
        reg.insert(val(4, &drops)).expect_err("closed").error(),
        Error::Closed
    );
    assert_eq!(
        reg.insert_proxy(val(5, &drops))
            .expect_err("closed")
            .error(),
        Error::Closed
    );
    assert_eq!(reg.claim_raw(raw), Err(Error::Closed));
    assert_eq!(t.claim().err(), Some(Error::Closed));
    assert_eq!(
        reg.count(h),
        Ok(1),
        "every refused transfer gave its hold back"
    );
    drop(proxy);
    assert!(reg.is_empty(), "the last proxy was the last hold");
    assert_eq!(drops.load(Ordering::SeqCst), 5, "1 finalized, 4 refused");
}

#[test]
fn error_handle_is_the_handle_an_error_is_about_and_none_for_ids_that_are_not_handles() {
    let drops = Arc::default();
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    for e in [
        Error::Stale(h),
        Error::ForeignRegistry(h),
        Error::NotHeld(h),
        Error::NotPinned(h),
        Error::Overflow(h),
    ] {
        assert_eq!(e.handle(), Some(h), "{e:?}");
    }
    // A forged id that has the shape of a handle names it; one that cannot
    // be a handle (0, >= 2^53) names nothing.
    let forged = Handle::from_raw(12_345).expect("handle-shaped");
    assert_eq!(reg.retain(forged), Err(Error::Invalid(12_345)));
    assert_eq!(Error::Invalid(12_345).handle(), Some(forged));
    assert_eq!(Error::Invalid(0).handle(), None);
    assert_eq!(Error::Invalid(1 << 53).handle(), None);
    for e in [
        Error::Full,
        Error::Forked,
        Error::TransferClaimed,
        Error::Closed,
    ] {
        assert_eq!(e.handle(), None, "{e:?}");
    }
}

#[test]
fn an_insert_errors_source_is_the_registry_error() {
    let drops = Arc::default();
    let reg = Registry::builder().capacity(1).build();
    let _h = reg.insert(val(1, &drops)).expect("insert");
    let err = reg.insert(val(2, &drops)).expect_err("full");
    let source = std::error::Error::source(&err).expect("a source");
    assert_eq!(source.downcast_ref::<Error>(), Some(&Error::Full));
    assert_eq!(source.to_string(), Error::Full.to_string());
    assert!(err.to_string().contains(&Error::Full.to_string()), "{err}");
    assert_eq!(Error::from(err), Error::Full);
}

#[test]
fn a_raw_token_never_issued_is_invalid_and_one_already_claimed_is_transfer_claimed() {
    let drops = Arc::default();
    let reg = Registry::new();
    let h = reg.insert(val(1, &drops)).expect("insert");
    reg.retain(h).expect("retain");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    // Forged tokens of the right shape: the next serial this registry would
    // issue, and one far beyond it. Never issued: `Invalid`, not "claimed".
    for forged in [raw + 1, raw + 1000] {
        assert_eq!(reg.claim_raw(forged), Err(Error::Invalid(forged)));
        assert_eq!(
            Transfer::from_raw(&reg, forged).err(),
            Some(Error::Invalid(forged))
        );
    }
    assert_eq!(reg.claim_raw(raw), Ok(h));
    assert_eq!(reg.claim_raw(raw), Err(Error::TransferClaimed));
    assert_eq!(reg.count(h), Ok(2), "no refused token changed a count");
}

/// Issue 17: `#[track_caller]` through the public API: a `Misuse::Panic`
/// points at the caller's line, not into tether.
#[test]
fn a_misuse_panic_points_at_the_callers_line() {
    let reg: Registry<u8> = Registry::builder().on_misuse(Misuse::Panic).build();
    let h = reg.insert(1).expect("insert");
    reg.release(h).expect("release");
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    // The hook is process-wide: record only this thread's panics (other
    // tests of this binary panic on purpose in parallel).
    let here = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != here {
            return;
        }
        if let Some(l) = info.location() {
            s.lock().push(l.file().to_owned());
        }
    }));
    type Call<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let calls: [Call<'_>; 5] = [
        (
            "retain",
            Box::new(|| {
                let _ = reg.retain(h);
            }),
        ),
        (
            "release",
            Box::new(|| {
                let _ = reg.release(h);
            }),
        ),
        ("get", Box::new(|| drop(reg.get(h)))),
        ("proxy", Box::new(|| drop(reg.proxy(h)))),
        (
            "claim_raw",
            Box::new(|| {
                let _ = reg.claim_raw(1);
            }),
        ),
    ];
    for (name, call) in &calls {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
        assert!(r.is_err(), "{name}: Misuse::Panic must panic");
    }
    std::panic::set_hook(prev);
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), calls.len());
    for file in seen {
        assert!(
            file.ends_with("misuse.rs"),
            "a misuse panic located at {file}"
        );
    }
}
