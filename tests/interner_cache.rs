//! The interner's per-thread cache (src/interner.rs, "The per-thread
//! cache"): hits must always name the key's current object, whatever the
//! collisions, releases, deaths and re-creations in between.

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
    let new = std::thread::spawn(move || {
        let i: Interner<String, &'static str> = interner.clone();
        let h = i.intern("k", || Ok("new")).unwrap(); // created on another thread
        let t = other.transfer(h).unwrap();
        (i, t)
    })
    .join()
    .unwrap();
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
