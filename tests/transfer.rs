//! Invariant 6: transfers are race-free. The object stays alive between
//! `transfer()` and `claim()` even if the sender lets go of everything; an
//! unclaimed `Transfer` releases its reference when dropped; a token can be
//! claimed only once.

mod common;

use std::sync::mpsc;
use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Registry, Transfer};

const LIMIT: u64 = 1 << 53;

#[test]
fn transfer_and_claim_types_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Transfer<Tracked>>();
}

#[test]
fn object_survives_until_claimed_even_if_sender_releases_everything() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(t.handle(), h);
    assert_eq!(reg.count(h), Ok(1), "transfer moved one reference out");
    assert_eq!(
        reg.snapshot().object(h).expect("live").transfers,
        1,
        "the token is counted"
    );

    // The sender lets go of everything it holds.
    assert_eq!(
        rel(reg.release(h)),
        Rel::Held(0),
        "the token keeps it alive"
    );
    assert_eq!(rel(reg.release(h)), Rel::Err(Error::NotHeld(h)));
    assert_eq!(log.count(), 0, "finalized with a transfer outstanding");
    assert_eq!(reg.len(), 1);

    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let r2 = reg.clone();
    let log2 = log.clone();
    let worker = spawn("claimer", move || {
        let t: Transfer<Tracked> = rx.recv().expect("token");
        let h2 = r2.claim(t).expect("claim");
        assert_eq!(h2, h);
        assert_eq!(r2.count(h), Ok(1), "claim gives the receiver +1");
        assert_eq!(r2.get(h).expect("claimed object is usable").id, 1);
        go_rx.recv().expect("go");
        let r = rel(r2.release(h));
        (r, log2.count())
    });
    tx.send(t).expect("send token");
    go_tx.send(()).expect("go");
    let (r, drops_on_worker) = join(worker);
    assert_eq!(r, Rel::Queued);
    assert_eq!(drops_on_worker, 0);
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(home));
}

#[test]
fn dropping_an_unclaimed_transfer_on_home_finalizes_now() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer the only reference");
    assert_eq!(reg.count(h), Ok(0));
    assert_eq!(log.count(), 0);
    drop(t);
    assert_eq!(
        log.count(),
        1,
        "an unclaimed transfer released its reference"
    );
    assert_eq!(reg.len(), 0);
    assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
}

#[test]
fn dropping_an_unclaimed_transfer_that_is_not_the_last_ref_keeps_the_object() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    reg.retain(h).expect("retain");
    let t = reg.transfer(h).expect("transfer");
    drop(t);
    assert_eq!(log.count(), 0);
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(reg.snapshot().object(h).expect("live").transfers, 0);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

#[test]
fn dropping_an_unclaimed_transfer_on_another_thread_sends_it_home() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let log2 = log.clone();
    let dropped_there = join(spawn("token-dropper", move || {
        drop(t);
        log2.count()
    }));
    assert_eq!(dropped_there, 0, "dropped on the token's thread, not home");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
}

#[test]
fn a_raw_token_is_counted_and_can_be_claimed_only_once() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert!(raw != 0 && raw < LIMIT, "raw token {raw:#x} out of range");
    assert_eq!((raw as f64) as u64, raw, "a raw token survives an f64");
    assert_eq!(reg.count(h), Ok(0));
    assert_eq!(log.count(), 0, "the registry still counts the raw token");
    assert_eq!(reg.len(), 1);

    let r2 = reg.clone();
    let (first, second, from_raw) = join(spawn("raw-claimer", move || {
        let first = r2.claim_raw(raw);
        let second = r2.claim_raw(raw);
        let from_raw = Transfer::from_raw(&r2, raw).err();
        let _ = rel(r2.release(h));
        (first, second, from_raw)
    }));
    assert_eq!(first, Ok(h));
    assert_eq!(second, Err(Error::TransferClaimed));
    assert_eq!(from_raw, Some(Error::TransferClaimed));
    // Exactly one reference came out of the token: the worker's release was
    // the last one.
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
}

#[test]
fn claim_raw_of_a_never_issued_token_is_invalid() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    for raw in [0, 1, 2, 42, 0xffff, LIMIT - 1, LIMIT, u64::MAX] {
        assert_eq!(reg.claim_raw(raw), Err(Error::Invalid(raw)), "raw {raw:#x}");
    }
    // Issue one token, then forge its neighbours.
    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert_eq!(
        reg.claim_raw(raw + 1),
        Err(Error::Invalid(raw + 1)),
        "the next token, not issued yet, is not \"already claimed\""
    );
    for forged in [raw + 1, raw ^ (1 << 40), raw ^ (1 << 20)] {
        if forged != 0 && forged < LIMIT && forged != raw {
            assert!(reg.claim_raw(forged).is_err(), "forged {forged:#x} claimed");
        }
    }
    assert_eq!(reg.claim_raw(raw), Ok(h), "the real token still works");
    assert_eq!(reg.count(h), Ok(1));
}

#[test]
fn transfer_from_raw_then_drop_releases() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let raw = reg.transfer(h).expect("transfer").into_raw();
    assert_eq!(log.count(), 0);
    let t = Transfer::from_raw(&reg, raw).expect("take the raw token back");
    assert_eq!(t.handle(), h);
    assert_eq!(log.count(), 0);
    drop(t);
    assert_eq!(log.count(), 1, "dropping the rebuilt token released it");
    assert!(reg.claim_raw(raw).is_err(), "a consumed token was claimed");
    assert!(
        Transfer::from_raw(&reg, raw).is_err(),
        "rebuilt a consumed token"
    );
}

#[test]
fn transfer_requires_an_explicit_reference() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    // Home has count 0 now: nothing left to move into a token.
    assert_eq!(reg.transfer(h).err(), Some(Error::NotHeld(h)));
    assert_eq!(reg.claim(t), Ok(h), "claim on the same thread works too");
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_eq!(log.count(), 1);
}

#[test]
fn proxy_transfer_and_claim_across_threads() {
    let log = DropLog::new();
    let reg = Registry::new();
    let home = thread::current().id();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    let t = p.transfer();
    assert_eq!(
        reg.count(h),
        Ok(0),
        "the proxy's reference went into the token"
    );
    assert_eq!(log.count(), 0);

    let r2 = reg.clone();
    let log2 = log.clone();
    let (id, count_with_proxy, count_after, drops_there) =
        join(spawn("proxy-claimer", move || {
            let p2 = t.claim().expect("claim");
            assert_eq!(p2.handle(), h);
            let id = p2.id;
            let c = r2.count(h);
            drop(p2);
            (id, c, r2.count(h), log2.count())
        }));
    assert_eq!(id, 1);
    assert_eq!(count_with_proxy, Ok(1));
    // After the last proxy dropped on the worker, the object is queued home
    // (not live any more), so count() may be Ok(0) or Err(Stale).
    assert!(
        matches!(count_after, Ok(0) | Err(Error::Stale(_))),
        "{count_after:?}"
    );
    assert_eq!(drops_there, 0, "the value was dropped on the worker");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.dropped_on(1), Some(home));
}

#[test]
fn many_transfers_in_flight_are_each_counted() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    for _ in 0..9 {
        reg.retain(h).expect("retain");
    }
    let tokens: Vec<Transfer<Tracked>> = (0..10)
        .map(|_| reg.transfer(h).expect("transfer"))
        .collect();
    assert_eq!(reg.count(h), Ok(0));
    assert_eq!(reg.snapshot().object(h).expect("live").transfers, 10);
    let r2 = reg.clone();
    let (tx, rx) = mpsc::channel();
    let worker = spawn("many-claimer", move || {
        let mut last = Rel::Err(Error::Full);
        for (i, t) in rx.iter().enumerate() {
            let t: Transfer<Tracked> = t;
            r2.claim(t).expect("claim");
            last = rel(r2.release(h));
            if i < 9 {
                assert!(matches!(last, Rel::Held(0)), "token {i}: {last:?}");
            }
        }
        last
    });
    for t in tokens {
        tx.send(t).expect("send");
    }
    drop(tx);
    assert_eq!(join(worker), Rel::Queued, "the tenth release was the last");
    assert_eq!(reg.pump(), 1);
    assert_eq!(log.count(), 1);
}

#[test]
fn a_raw_token_is_invalid_in_a_registry_that_did_not_issue_it() {
    // Both registries have issued tokens, so the serial part of one's token
    // is a serial the other has used too: only the registry tag tells them
    // apart, and a token this registry never issued is `Invalid`, not
    // "already claimed".
    let log = DropLog::new();
    let a = Registry::new();
    let b = Registry::new();
    let ha = a.insert(Tracked::new(&log, 1)).expect("insert");
    let hb = b.insert(Tracked::new(&log, 2)).expect("insert");
    let raw_a = a.transfer(ha).expect("transfer").into_raw();
    let raw_b = b.transfer(hb).expect("transfer").into_raw();
    assert_ne!(raw_a, raw_b);
    assert_eq!(b.claim_raw(raw_a), Err(Error::Invalid(raw_a)));
    assert_eq!(a.claim_raw(raw_b), Err(Error::Invalid(raw_b)));
    // Past 2^53, whatever the low bits say.
    for beyond in [raw_a | LIMIT, raw_b | LIMIT, raw_a + LIMIT * 3] {
        assert_eq!(a.claim_raw(beyond), Err(Error::Invalid(beyond)));
        assert_eq!(
            Transfer::from_raw(&a, beyond).err(),
            Some(Error::Invalid(beyond))
        );
    }
    // The real tokens were not consumed by those attempts.
    assert_eq!(a.claim_raw(raw_a), Ok(ha));
    assert_eq!(b.claim_raw(raw_b), Ok(hb));
    assert_eq!(rel(a.release(ha)), Rel::Finalized);
    assert_eq!(rel(b.release(hb)), Rel::Finalized);
    assert_eq!(log.count(), 2);
}

#[test]
fn claiming_on_a_thread_that_already_holds_adds_one_reference() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(reg.retain(h), Ok(2));
    let t = reg.transfer(h).expect("transfer");
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(reg.claim(t), Ok(h));
    assert_eq!(reg.count(h), Ok(2), "explicit claim by a holder");
    let p = reg.transfer(h).expect("transfer").claim().expect("claim");
    assert_eq!(reg.count(h), Ok(2), "proxy claim by a holder");
    drop(p);
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(
        rel(reg.release(h)),
        Rel::Finalized,
        "no reference lost or made up"
    );
    assert_eq!(log.count(), 1);
}

#[test]
fn many_raw_tokens_in_flight_are_distinct_and_each_claims_its_own_object() {
    const N: u64 = 300;
    let log = DropLog::new();
    let reg = Registry::new();
    let hs: Vec<_> = (0..N)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("insert"))
        .collect();
    let raws: Vec<u64> = hs
        .iter()
        .map(|h| reg.transfer(*h).expect("transfer").into_raw())
        .collect();
    let distinct: std::collections::HashSet<u64> = raws.iter().copied().collect();
    assert_eq!(distinct.len(), raws.len(), "a raw token was issued twice");
    assert!(raws.iter().all(|r| *r != 0 && *r < LIMIT));
    let r2 = reg.clone();
    let claimed = join(spawn("raw-claimer", move || {
        raws.iter()
            .map(|raw| {
                let h = r2.claim_raw(*raw);
                let id = h.map(|h| r2.get(h).map(|g| g.id));
                (id, r2.claim_raw(*raw).err())
            })
            .collect::<Vec<_>>()
    }));
    for (i, (id, again)) in claimed.into_iter().enumerate() {
        assert_eq!(id, Ok(Ok(i as u64)), "token {i} claimed the wrong object");
        assert_eq!(again, Some(Error::TransferClaimed), "token {i}");
    }
    // The claimer exited holding them all: released, queued home.
    assert_eq!(reg.pump(), N as usize);
    assert_eq!(log.count(), N as usize);
}
