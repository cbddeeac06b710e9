//! The RAII layer: `Proxy<T>` is one reference of the current thread —
//! `Clone` is +1, `Drop` is -1, `Deref` reads the value. Proxies follow the
//! same access rule as `get`/`retain` (invariant 5), overflow is an error
//! (invariant 11), and `release()` never releases a proxy's reference.

mod common;

use std::thread;

use common::{join, rel, spawn, DropLog, Rel, Tracked};
use tether::{Error, Proxy, Registry};

#[test]
fn clone_and_drop_count_references() {
    let log = DropLog::new();
    let reg = Registry::new();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    assert_eq!(reg.count(h), Ok(1));
    let q = p.clone();
    assert_eq!(q.handle(), h);
    assert_eq!(reg.count(h), Ok(2), "clone is +1");
    let clones: Vec<Proxy<Tracked>> = (0..10).map(|_| p.clone()).collect();
    assert_eq!(reg.count(h), Ok(12));
    drop(clones);
    assert_eq!(reg.count(h), Ok(2), "drop is -1 each");
    drop(q);
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 0);
    drop(p);
    assert_eq!(log.count(), 1, "the last proxy on home finalizes now");
    assert_eq!(log.dropped_on(1), Some(thread::current().id()));
    assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
}

#[test]
fn deref_reads_the_value_and_registry_shares_the_table() {
    let log = DropLog::new();
    let reg = Registry::new();
    let p = reg
        .insert_proxy(Tracked::new(&log, 7))
        .expect("insert_proxy");
    assert_eq!(p.id, 7, "Deref<Target = T>");
    let x: &Tracked = &p;
    assert_eq!(x.id, 7);
    let r2 = p.registry();
    assert_eq!(r2.len(), 1);
    assert_eq!(r2.count(p.handle()), Ok(1), "same table, same thread count");
    let h2 = r2
        .insert(Tracked::new(&log, 8))
        .expect("insert via proxy's registry");
    assert_eq!(reg.get(h2).expect("visible in the original").id, 8);
}

#[test]
fn proxy_and_transfer_implement_debug() {
    let reg: Registry<u32> = Registry::new();
    let p = reg.insert_proxy(5).expect("insert_proxy");
    assert!(!format!("{p:?}").is_empty());
    let t = p.transfer();
    assert!(!format!("{t:?}").is_empty());
    drop(t);
    assert!(
        reg.is_empty(),
        "dropping the unclaimed transfer finalized it"
    );
}

#[test]
fn explicit_references_and_proxies_mix() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    let p = reg.proxy(h).expect("proxy of a held handle");
    assert_eq!(p.handle(), h);
    assert_eq!(reg.count(h), Ok(2));
    assert_eq!(rel(reg.release(h)), Rel::Held(1), "the proxy's ref remains");
    assert_eq!(log.count(), 0);
    assert_eq!(p.id, 1);
    drop(p);
    assert_eq!(log.count(), 1);
}

#[test]
fn release_refuses_to_release_a_proxys_reference() {
    let log = DropLog::new();
    let reg = Registry::new();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    for _ in 0..3 {
        assert_eq!(
            rel(reg.release(h)),
            Rel::Err(Error::NotHeld(h)),
            "release() must not steal a proxy's reference"
        );
    }
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 0);
    assert_eq!(p.id, 1, "the proxy is still valid");
    drop(p);
    assert_eq!(log.count(), 1);
}

#[test]
fn proxy_follows_the_access_rule() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");

    let r2 = reg.clone();
    let stranger = join(spawn("proxy-stranger", move || r2.proxy(h).err()));
    assert_eq!(
        stranger,
        Some(Error::NotHeld(h)),
        "a guessed handle gives no proxy"
    );

    reg.pin(h).expect("pin");
    let r3 = reg.clone();
    let pinned = join(spawn("proxy-pinned", move || {
        let p = r3.proxy(h).expect("a pinned object may be proxied");
        let c = r3.count(h);
        let release_attempt = rel(r3.release(h));
        (p.id, c, release_attempt)
    }));
    assert_eq!(pinned, (1, Ok(1), Rel::Err(Error::NotHeld(h))));
    reg.unpin(h).expect("unpin");
    assert_eq!(log.count(), 0);
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
}

#[test]
fn try_clone_past_max_count_is_overflow() {
    let log = DropLog::new();
    let reg = Registry::builder().max_count(3).build();
    let p = reg
        .insert_proxy(Tracked::new(&log, 1))
        .expect("insert_proxy");
    let h = p.handle();
    let a = p.try_clone().expect("2 of 3");
    let b = a.try_clone().expect("3 of 3");
    assert_eq!(b.try_clone().err(), Some(Error::Overflow(h)));
    assert_eq!(reg.count(h), Ok(3), "a failed try_clone changed the count");
    drop(b);
    let c = p.try_clone().expect("room again after a drop");
    drop((p, a, c));
    assert_eq!(log.count(), 1, "no phantom reference kept it alive");
}

#[test]
fn a_proxy_is_not_send() {
    // Compile-time check: if Proxy were Send, the two blanket impls below
    // would make `some_item` ambiguous and this file would not compile.
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    #[allow(dead_code)]
    struct Invalid;
    impl<T: ?Sized + Send> AmbiguousIfSend<Invalid> for T {}
    let _ = <Proxy<Tracked> as AmbiguousIfSend<_>>::some_item;
}
