//! The interner's per-thread cache (src/interner.rs, "The per-thread
//! cache"): hits must always name the key's current object, whatever the
//! collisions, releases, deaths and re-creations in between.

mod common;

use std::collections::HashMap;

use tether::{Interner, Registry};

#[test]
fn many_keys_colliding_in_the_cache_always_get_their_own_object() {
    let reg: Registry<u32> = Registry::new();
    let interner: Interner<u32, u32> = Interner::new(&reg);
    // Far more keys than cache slots: every slot is shared by many keys.
    let handles: HashMap<u32, _> = (0..1000u32)
        .map(|k| (k, interner.intern(&k, || Ok(k)).unwrap()))
        .collect();
    for round in 0..3 {
        for k in 0..1000u32 {
            let h = interner.intern(&k, || Ok(u32::MAX)).unwrap();
            assert_eq!(h, handles[&k], "round {round}, key {k}");
            assert_eq!(*reg.get(h).unwrap(), k);
        }
    }
    for (k, h) in &handles {
        assert_eq!(reg.count(*h).unwrap(), 4, "key {k}: 1 + 3 rounds");
    }
}

#[test]
fn a_cached_key_whose_object_died_and_was_recreated_gets_the_new_object() {
    let reg: Registry<&'static str> = Registry::new();
    let interner: Interner<String, &'static str> = Interner::new(&reg);
    let old = interner.intern("k", || Ok("old")).unwrap();
    assert_eq!(interner.intern("k", || Ok("unused")).unwrap(), old); // cached
    reg.release(old).unwrap();
    reg.release(old).unwrap(); // dead: the key is forgotten
    let other = reg.clone();
    let new = common::join(std::thread::spawn(move || {
        let i: Interner<String, &'static str> = interner.clone();
        let h = i.intern("k", || Ok("new")).unwrap(); // created on another thread
        let t = other.transfer(h).unwrap();
        (i, t)
    }));
    let (interner, t) = new;
    let new = reg.claim(t).unwrap();
    assert_ne!(new, old);
    // This thread's cache entry for "k" went with its last reference to
    // `old`; whatever it holds, it must be served the live object.
    let h = interner.intern("k", || Ok("unexpected")).unwrap();
    assert_eq!(h, new);
    assert_eq!(*reg.get(h).unwrap(), "new");
    assert_eq!(reg.count(h).unwrap(), 2);
}

#[test]
fn a_thread_that_released_its_reference_is_not_served_from_its_cache() {
    let reg: Registry<u8> = Registry::new();
    let interner: Interner<u8, u8> = Interner::new(&reg);
    let h = interner.intern(&1, || Ok(1)).unwrap();
    reg.pin(h).unwrap(); // keeps it alive without this thread
    reg.release(h).unwrap();
    assert_eq!(reg.count(h).unwrap(), 0);
    // Not held any more: the slow path hands out a fresh reference to the
    // same live object.
    assert_eq!(interner.intern(&1, || Ok(9)).unwrap(), h);
    assert_eq!(reg.count(h).unwrap(), 1);
    assert_eq!(*reg.get(h).unwrap(), 1);
}

/// A key whose `Eq` can run a callback: user code inside a cache lookup.
struct Reentrant(u32);

thread_local! {
    static ON_EQ: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

impl PartialEq for Reentrant {
    fn eq(&self, other: &Self) -> bool {
        if let Some(mut f) = ON_EQ.with(|c| c.borrow_mut().take()) {
            f();
        }
        self.0 == other.0
    }
}

impl Eq for Reentrant {}

impl std::hash::Hash for Reentrant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Clone for Reentrant {
    fn clone(&self) -> Self {
        Reentrant(self.0)
    }
}

#[test]
fn a_key_eq_that_fills_many_other_interners_cannot_evict_the_cache_it_runs_in() {
    let reg: Registry<u32> = Registry::new();
    let outer: Interner<Reentrant, u32> = Interner::new(&reg);
    let h = outer.intern(&Reentrant(1), || Ok(1)).unwrap(); // cached
    let mut others: Vec<Interner<u32, u32>> = (0..20).map(|_| Interner::new(&reg)).collect();
    let inner_handles = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let seen = std::rc::Rc::clone(&inner_handles);
    // Inside the outer lookup's key comparison: more interners than a thread
    // caches, so every idle cache is evicted, and the interners are dropped.
    ON_EQ.with(|c| {
        *c.borrow_mut() = Some(Box::new(move || {
            for (i, other) in others.iter().enumerate() {
                let k = u32::try_from(i).unwrap() + 100;
                seen.borrow_mut()
                    .push((k, other.intern(&k, || Ok(k)).unwrap()));
            }
            others.clear();
        }))
    });
    assert_eq!(outer.intern(&Reentrant(1), || Ok(99)).unwrap(), h);
    assert!(ON_EQ.with(|c| c.borrow().is_none()), "the callback ran");
    for (k, x) in inner_handles.borrow().iter() {
        assert_eq!(*reg.get(*x).unwrap(), *k);
    }
    // The outer cache survived and still serves the key.
    assert_eq!(outer.intern(&Reentrant(1), || Ok(99)).unwrap(), h);
    assert_eq!(reg.count(h).unwrap(), 3);
    assert_eq!(*reg.get(h).unwrap(), 1);
}

#[test]
fn a_thread_switching_between_many_interners_gets_each_keys_own_object() {
    let reg: Registry<(usize, u32)> = Registry::new();
    // More interners than a thread caches at once, used round-robin, with
    // interners dropped and new ones made in between.
    let mut interners: Vec<Interner<u32, (usize, u32)>> =
        (0..12).map(|_| Interner::new(&reg)).collect();
    let mut expected = HashMap::new();
    for round in 0..4 {
        for (i, interner) in interners.iter().enumerate() {
            for k in 0..5u32 {
                let h = interner.intern(&k, || Ok((i, k))).unwrap();
                assert_eq!(*expected.entry((round / 2, i, k)).or_insert(h), h);
                assert_eq!(*reg.get(h).unwrap(), (i, k), "round {round}");
            }
        }
        if round == 1 {
            // New interners (new serials) over the same registry; the old
            // objects stay held by this thread but nothing maps keys to them.
            interners = (0..12).map(|_| Interner::new(&reg)).collect();
        }
    }
    assert_eq!(expected.len(), 2 * 12 * 5);
    for h in expected.values() {
        assert_eq!(reg.count(*h).unwrap(), 2, "interned twice per interner");
    }
}

/// Runs its closure when dropped (here: when its thread-local is destroyed).
struct RunAtExit(Option<Box<dyn FnOnce()>>);

impl Drop for RunAtExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

thread_local! {
    static AT_EXIT: std::cell::RefCell<RunAtExit> =
        const { std::cell::RefCell::new(RunAtExit(None)) };
}

#[test]
fn interning_from_a_thread_local_destructor_after_the_caches_are_gone_is_served() {
    let reg: Registry<u32> = Registry::new();
    let interner: Interner<u32, u32> = Interner::new(&reg);
    let pinned = interner.intern(&7, || Ok(7)).unwrap();
    reg.pin(pinned).unwrap();
    reg.release(pinned).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (i, r) = (interner.clone(), reg.clone());
    common::join(std::thread::spawn(move || {
        // Registered before the interner's thread-locals, so destroyed
        // after them (thread-local destructors run in reverse order).
        AT_EXIT.with(|_| {});
        let h = i.intern(&7, || Ok(0)).unwrap(); // fills and heats the cache
        assert_eq!(i.intern(&7, || Ok(0)).unwrap(), h);
        AT_EXIT.with(|c| {
            c.borrow_mut().0 = Some(Box::new(move || {
                let _ = tx.send(i.intern(&7, || Ok(0)).map(|x| (x, r.get(x).map(|v| *v))));
            }))
        });
        // The thread exits holding two references.
    }));
    let got = rx.recv().unwrap();
    // The registry may already have let this thread go (then it cannot hold
    // anything new), but an answer naming anything else than the key's
    // object is wrong.
    match got {
        Ok((h, value)) => {
            assert_eq!(h, pinned);
            assert!(matches!(value, Ok(7) | Err(_)), "{value:?}");
        }
        Err(e) => assert!(matches!(e, tether::InternError::Registry(_)), "{e:?}"),
    }
    assert_eq!(interner.intern(&7, || Ok(0)).unwrap(), pinned);
    assert_eq!(*reg.get(pinned).unwrap(), 7);
}

#[test]
fn the_cache_a_thread_used_last_can_be_evicted_and_is_rebuilt() {
    let reg: Registry<usize> = Registry::new();
    // More interners than a thread caches at once (8).
    let interners: Vec<Interner<u32, usize>> = (0..9).map(|_| Interner::new(&reg)).collect();
    let first: Vec<_> = (0..8)
        .map(|i| interners[i].intern(&1, || Ok(i)).unwrap())
        .collect();
    // The oldest cache is the one used last...
    assert_eq!(interners[0].intern(&1, || Ok(99)).unwrap(), first[0]);
    // ...when a ninth interner evicts it.
    let ninth = interners[8].intern(&1, || Ok(8)).unwrap();
    for round in 0..2 {
        for (i, h) in first.iter().enumerate() {
            assert_eq!(
                interners[i].intern(&1, || Ok(99)).unwrap(),
                *h,
                "round {round}"
            );
            assert_eq!(*reg.get(*h).unwrap(), i);
        }
    }
    assert_eq!(*reg.get(ninth).unwrap(), 8);
    assert_eq!(reg.count(first[0]).unwrap(), 4);
}

/// A key counting the calls to its `Hash` and `Eq`.
#[derive(Clone)]
struct Counted(u32);

thread_local! {
    static HASHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    static EQS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl std::hash::Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HASHES.with(|c| c.set(c.get() + 1));
        self.0.hash(state);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        EQS.with(|c| c.set(c.get() + 1));
        self.0 == other.0
    }
}

impl Eq for Counted {}

#[test]
fn a_holders_intern_hashes_and_compares_its_key_once_from_the_cache() {
    let reg: Registry<u32> = Registry::new();
    let interner: Interner<Counted, u32> = Interner::new(&reg);
    let h = interner.intern(&Counted(1), || Ok(1)).unwrap();
    let calls = || (HASHES.with(|c| c.replace(0)), EQS.with(|c| c.replace(0)));
    calls();
    // Served by the thread's cache: one hash (the cache's), one comparison,
    // no lookup in the shared map (which would hash and compare again).
    for _ in 0..3 {
        assert_eq!(interner.intern(&Counted(1), || Ok(9)).unwrap(), h);
        assert_eq!(calls(), (1, 1));
    }
    // Not held any more: the shared map is consulted again.
    reg.pin(h).unwrap();
    for _ in 0..4 {
        reg.release(h).unwrap();
    }
    calls();
    assert_eq!(interner.intern(&Counted(1), || Ok(9)).unwrap(), h);
    let (hashes, _) = calls();
    assert!(
        hashes >= 2,
        "{hashes} hash calls: the map was not consulted"
    );
    assert_eq!(interner.intern(&Counted(1), || Ok(9)).unwrap(), h);
    assert_eq!(calls(), (1, 1), "cached again");
}

/// A key of type `K` made from `i`, counting hash calls like [`Counted`].
#[derive(Clone, PartialEq, Eq)]
struct Spread<K>(K);

impl<K: std::hash::Hash> std::hash::Hash for Spread<K> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        HASHES.with(|c| c.set(c.get() + 1));
        self.0.hash(state);
    }
}

/// Of `keys` interned by one thread, how many a second pass serves from the
/// thread's cache (one hash call: no map lookup).
fn cache_hits<K>(keys: Vec<K>) -> usize
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let reg: Registry<usize> = Registry::new();
    let interner: Interner<Spread<K>, usize> = Interner::new(&reg);
    let keys: Vec<Spread<K>> = keys.into_iter().map(Spread).collect();
    for (i, k) in keys.iter().enumerate() {
        interner.intern(k, || Ok(i)).unwrap();
    }
    keys.iter()
        .enumerate()
        .filter(|(i, k)| {
            HASHES.with(|c| c.set(0));
            let h = interner.intern(k, || Ok(usize::MAX)).unwrap();
            assert_eq!(*reg.get(h).unwrap(), *i);
            HASHES.with(|c| c.get()) == 1
        })
        .count()
}

#[test]
fn the_cache_spreads_keys_of_common_types_over_its_slots() {
    // 16 keys in 64 slots: a few may share a slot, most must not. A hash
    // that ignores the key puts them all in one slot (one hit).
    for (what, hits) in [
        ("u32", cache_hits((0..16u32).collect())),
        ("u64", cache_hits((0..16u64).map(|i| i << 40).collect())),
        ("usize", cache_hits((0..16usize).collect())),
        ("u8", cache_hits((0..16u8).collect())),
        (
            "String",
            cache_hits((0..16).map(|i| format!("key-{i}")).collect()),
        ),
        ("[u8]", cache_hits((0..16u8).map(|i| vec![i; 3]).collect())),
    ] {
        assert!(
            hits >= 8,
            "{what}: only {hits} of 16 keys served from the cache"
        );
    }
}

#[test]
fn a_thread_alternating_between_interners_is_served_by_each_cache() {
    let reg: Registry<u32> = Registry::new();
    let a: Interner<Counted, u32> = Interner::new(&reg);
    let b: Interner<Counted, u32> = Interner::new(&reg);
    let ha = a.intern(&Counted(1), || Ok(1)).unwrap();
    let hb = b.intern(&Counted(1), || Ok(2)).unwrap();
    let calls = || (HASHES.with(|c| c.replace(0)), EQS.with(|c| c.replace(0)));
    calls();
    for _ in 0..3 {
        assert_eq!(a.intern(&Counted(1), || Ok(9)).unwrap(), ha);
        assert_eq!(calls(), (1, 1), "a, from its cache");
        assert_eq!(b.intern(&Counted(1), || Ok(9)).unwrap(), hb);
        assert_eq!(calls(), (1, 1), "b, from its cache");
    }
    // Dropping another interner leaves this thread's caches of the others.
    let c: Interner<Counted, u32> = Interner::new(&reg);
    let hc = c.intern(&Counted(1), || Ok(3)).unwrap();
    drop(c);
    calls();
    assert_eq!(a.intern(&Counted(1), || Ok(9)).unwrap(), ha);
    assert_eq!(b.intern(&Counted(1), || Ok(9)).unwrap(), hb);
    assert_eq!(calls(), (2, 2), "both still cached");
    assert_eq!(*reg.get(hc).unwrap(), 3);
}
