//! Invariant 11: overflow is an error. Counts never wrap (`Err(Overflow)`,
//! count unchanged); a registry built with a capacity returns `Err(Full)`
//! instead of growing and hands the value back; capacity is reusable.

mod common;

use common::{rel, DropLog, Rel, Tracked};
use tether::{Error, InsertError, Registry};

#[test]
fn retain_past_max_count_is_overflow_and_changes_nothing() {
    let log = DropLog::new();
    let reg = Registry::builder().max_count(3).build();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(reg.retain(h), Ok(2));
    assert_eq!(reg.retain(h), Ok(3));
    for _ in 0..5 {
        assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
        assert_eq!(reg.count(h), Ok(3), "a failed retain changed the count");
    }
    // Releasing makes room again.
    assert_eq!(rel(reg.release(h)), Rel::Held(2));
    assert_eq!(reg.retain(h), Ok(3));
    // Exactly three releases finalize: no phantom reference was added.
    assert_eq!(rel(reg.release(h)), Rel::Held(2));
    assert_eq!(rel(reg.release(h)), Rel::Held(1));
    assert_eq!(log.count(), 0);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}

#[test]
fn max_count_is_per_thread() {
    let log = DropLog::new();
    let reg = Registry::builder().max_count(2).build();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(reg.retain(h), Ok(2));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(
        reg.retain(h),
        Ok(2),
        "transfer freed one slot of home's count"
    );
    let r2 = reg.clone();
    let (a, b, c) = common::join(common::spawn("other-thread-limit", move || {
        let a = r2.claim(t).map(|_| ());
        let b = r2.retain(h);
        let c = r2.retain(h);
        (a, b, c)
    }));
    assert_eq!(a, Ok(()));
    assert_eq!(b, Ok(2), "another thread has its own budget");
    assert_eq!(c, Err(Error::Overflow(h)));
    assert_eq!(reg.count(h), Ok(2));
}

#[test]
fn proxy_creation_past_max_count_is_overflow() {
    let log = DropLog::new();
    let reg = Registry::builder().max_count(2).build();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    let q = p.try_clone().expect("second reference fits");
    assert_eq!(p.try_clone().err(), Some(Error::Overflow(h)));
    assert_eq!(reg.proxy(h).err(), Some(Error::Overflow(h)));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    assert_eq!(reg.count(h), Ok(2));
    drop(q);
    drop(p);
    assert_eq!(log.count(), 1, "no phantom reference kept it alive");
}

#[test]
fn insert_beyond_capacity_is_full_and_hands_the_value_back() {
    let log = DropLog::new();
    let reg = Registry::builder().capacity(4).build();
    let hs: Vec<_> = (0..4)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("within capacity"))
        .collect();
    let err = match reg.insert(Tracked::new(&log, 42)) {
        Ok(h) => panic!("insert past capacity succeeded: {h}"),
        Err(e) => e,
    };
    assert_eq!(err.error(), Error::Full);
    assert_eq!(
        log.count(),
        0,
        "the rejected value was dropped, not returned"
    );
    let value = err.into_value();
    assert_eq!(value.id, 42, "into_value() returns the very value");
    assert_eq!(log.count(), 0);
    drop(value);
    assert_eq!(log.times_dropped(42), 1);

    assert_eq!(reg.len(), 4, "a failed insert changed len()");
    match reg.insert_proxy(Tracked::new(&log, 43)) {
        Ok(_) => panic!("insert_proxy past capacity succeeded"),
        Err(e) => {
            assert_eq!(e.error(), Error::Full);
            assert_eq!(e.into_value().id, 43);
        }
    }
    for h in hs {
        assert_eq!(rel(reg.release(h)), Rel::Finalized);
    }
}

#[test]
fn capacity_is_fully_reusable_after_releases() {
    let log = DropLog::new();
    let reg = Registry::builder().capacity(8).build();
    let mut next = 0;
    for round in 0..50 {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                next += 1;
                reg.insert(Tracked::new(&log, next))
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
            })
            .collect();
        assert_eq!(
            reg.insert(Tracked::new(&log, 0)).err().map(|e| e.error()),
            Some(Error::Full),
            "round {round}"
        );
        for h in hs {
            assert_eq!(rel(reg.release(h)), Rel::Finalized);
        }
        assert!(reg.is_empty());
    }
    assert_eq!(log.count(), 50 * 8 + 50, "every value dropped exactly once");
}

/// A type with no Debug, Display or Clone.
struct Opaque(#[allow(dead_code)] u8);

#[test]
fn insert_error_formats_without_t_debug_and_converts_into_error() {
    let reg = Registry::builder().capacity(1).build();
    let _h = reg.insert(Opaque(1)).expect("first insert");
    let err: InsertError<Opaque> = match reg.insert(Opaque(2)) {
        Ok(_) => panic!("second insert into capacity 1 succeeded"),
        Err(e) => e,
    };
    let debug = format!("{err:?}");
    let display = err.to_string();
    assert!(!debug.is_empty());
    assert!(!display.is_empty());
    let source = std::error::Error::source(&err).map(|s| s.downcast_ref::<Error>().copied());
    assert_eq!(source, Some(Some(Error::Full)), "the cause is the Error");
    let e: Error = err.into();
    assert_eq!(e, Error::Full);

    // `?` converts an InsertError into an Error.
    fn via_question_mark(reg: &Registry<Opaque>) -> Result<(), Error> {
        reg.insert(Opaque(3))?;
        Ok(())
    }
    assert_eq!(via_question_mark(&reg), Err(Error::Full));
}

#[test]
fn capacity_reports_the_configured_limit() {
    assert_eq!(Registry::<u8>::new().capacity(), 1 << 24, "default");
    assert_eq!(Registry::<u8>::builder().capacity(5).build().capacity(), 5);
    assert_eq!(
        Registry::<u8>::builder()
            .capacity(usize::MAX)
            .build()
            .capacity(),
        1 << 24,
        "clamped to the handle layout's 2^24 slots"
    );
}

#[test]
fn ids_beyond_the_capacity_are_invalid_even_inside_an_allocated_page() {
    // Pages hold 32, 64, 128, ... entries: with a capacity of 40, the
    // second slot page and this thread's second count page cover indices
    // 32..96, so indices 40..96 have memory behind them but were never
    // issued. They must be `Invalid`, like any id beyond the capacity, on
    // the fast path (the thread has a zero entry there) as on the slow one.
    let log = DropLog::new();
    let reg = Registry::builder().capacity(40).build();
    let live: Vec<_> = (0..40)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("insert"))
        .collect();
    const INDEX_MASK: u64 = (1 << 24) - 1;
    let last = live[39].to_raw();
    assert_eq!(last & INDEX_MASK, 39, "slots are issued in order here");
    for index in [40, 41, 63, 95] {
        // The tag and generation of a live handle, the index beyond.
        let raw = last & !INDEX_MASK | index;
        let h = tether::Handle::from_raw(raw).expect("in range");
        let invalid = Some(Error::Invalid(raw));
        assert_eq!(reg.retain(h).err(), invalid, "retain of index {index}");
        assert_eq!(reg.release(h).err(), invalid, "release of index {index}");
        assert_eq!(reg.get(h).err(), invalid, "get of index {index}");
        assert_eq!(reg.proxy(h).err(), invalid, "proxy of index {index}");
        assert_eq!(reg.count(h).err(), invalid, "count of index {index}");
    }
    // Nothing changed for the live objects.
    for h in &live {
        assert_eq!(reg.count(*h), Ok(1));
    }
    assert_eq!(reg.len(), 40);
    assert_eq!(log.count(), 0);
}

/// Issue 15, item 4: one limit for every way of taking a reference. With
/// `max_count(3)`, five clones gave a count of 8 while `retain`, `proxy`,
/// `get` and `try_clone` said `Overflow`. A clone past the limit now panics
/// (like `retain`'s `Overflow`, it changes nothing) and points at the
/// caller's line.
#[test]
fn proxy_clone_obeys_max_count_like_every_other_reference() {
    let log = DropLog::new();
    let reg = Registry::builder().max_count(3).build();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    let mut clones = Vec::new();
    let mut refused = 0;
    for _ in 0..5 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.clone())) {
            Ok(q) => clones.push(q),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    msg.contains("try_clone"),
                    "the panic says what to do: {msg}"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(clones.len(), 2, "three references in all: the limit");
    assert_eq!(refused, 3);
    assert_eq!(reg.count(h), Ok(3), "a refused clone changed nothing");
    assert_eq!(p.try_clone().err(), Some(Error::Overflow(h)));
    assert_eq!(reg.get(h).err(), Some(Error::Overflow(h)));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    drop(clones);
    assert_eq!(reg.count(h), Ok(1));
    drop(p);
    assert_eq!(log.count(), 1, "finalized once, nothing kept alive");
}

/// The panic of an over-limit clone names the caller's file, not tether's.
#[test]
fn an_over_limit_clone_panics_at_the_callers_line() {
    let reg = Registry::builder().max_count(1).build();
    let p = reg.insert_proxy(5u8).expect("insert_proxy");
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(String::new()));
    let s = seen.clone();
    // The hook is process-wide: record only this thread's panics.
    let here = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != here {
            return;
        }
        if let Some(l) = info.location() {
            *s.lock() = l.file().to_owned();
        }
    }));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.clone()));
    std::panic::set_hook(prev);
    assert!(r.is_err());
    assert!(
        seen.lock().ends_with("limits.rs"),
        "panicked at {:?}",
        seen.lock()
    );
}

/// Issue 15, item 4: `max_count(0)` was accepted, then an insert gave the
/// home a count of 1 and its own `get` was `Overflow`. It is defined as 1:
/// every thread can hold the one reference an insert or claim gives it.
#[test]
fn max_count_zero_is_taken_as_one() {
    let reg = Registry::builder().max_count(0).build();
    let h = reg.insert(1u32).expect("insert");
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    assert!(format!("{:?}", Registry::<u32>::builder().max_count(0)).contains("max_count: 1"));
    let t = reg.transfer(h).expect("transfer");
    let r = reg.clone();
    let n = common::join(common::spawn("claimer", move || {
        let h = r.claim(t).expect("claim");
        let n = r.count(h);
        r.release(h).expect("release");
        n
    }));
    assert_eq!(n, Ok(1));
    reg.pump();
    assert!(reg.is_empty());
}

/// A thread's count for one object is at most 2^21 - 1 (its entry packs the
/// count beside the object's generation): larger `max_count`s are clamped,
/// the count reaches the limit exactly (references and proxies together),
/// overflows cleanly, and every count taken is given back.
#[test]
fn max_count_is_clamped_to_what_an_entry_holds_and_reached_exactly() {
    const MAX: u32 = (1 << 21) - 1;
    assert!(format!("{:?}", Registry::<u32>::builder()).contains(&format!("max_count: {MAX}")));
    let b = Registry::<u32>::builder().max_count(u32::MAX);
    assert!(format!("{b:?}").contains(&format!("max_count: {MAX}")));
    let log = DropLog::new();
    let reg = Registry::builder().max_count(u32::MAX).build();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let p = reg.proxy(h).expect("proxy");
    let mut proxies = Vec::new();
    for n in 3..=MAX {
        if n % 1000 == 0 {
            proxies.push(p.try_clone().expect("clone below the limit"));
        } else {
            assert_eq!(reg.retain(h), Ok(n));
        }
    }
    assert_eq!(reg.count(h), Ok(MAX));
    assert_eq!(reg.retain(h), Err(Error::Overflow(h)));
    assert!(matches!(p.try_clone(), Err(Error::Overflow(_))));
    assert!(matches!(reg.get(h), Err(Error::Overflow(_))));
    assert_eq!(reg.count(h), Ok(MAX), "a refused count changed nothing");
    // One back: room for a guard again, and the generation kept beside the
    // counts still names the object.
    assert_eq!(rel(reg.release(h)), Rel::Held(MAX - 1));
    assert!(reg.get(h).is_ok());
    drop(proxies);
    drop(p);
    let proxies_made = MAX / 1000;
    let refs = MAX - 2 - proxies_made;
    assert_eq!(reg.count(h), Ok(refs));
    for left in (0..refs).rev() {
        let r = rel(reg.release(h));
        if left == 0 {
            assert_eq!(r, Rel::Finalized);
        } else {
            assert_eq!(r, Rel::Held(left));
        }
    }
    assert_eq!(log.count(), 1);
}
