//! Invariant 4: handles are never confused. Stale handles never resolve (even
//! after their slot is reused), forged ids are errors (never a panic), raw
//! ids fit in 53 bits, and another registry's handle is rejected.

mod common;

use std::collections::HashSet;

use common::{rel, DropLog, Rel, Tracked};
use tether::{Error, Handle, Registry, Transfer};

const LIMIT: u64 = 1 << 53;

/// Every fallible per-handle call must refuse `h` with `expected`.
fn assert_all_refuse(reg: &Registry<Tracked>, h: Handle, expected: Error) {
    assert_eq!(reg.retain(h), Err(expected), "retain({h})");
    assert_eq!(rel(reg.release(h)), Rel::Err(expected), "release({h})");
    assert_eq!(reg.get(h).err(), Some(expected), "get({h})");
    assert_eq!(reg.count(h), Err(expected), "count({h})");
    assert_eq!(reg.holders(h), Err(expected), "holders({h})");
    assert_eq!(reg.pin(h), Err(expected), "pin({h})");
    assert_eq!(reg.unpin(h), Err(expected), "unpin({h})");
    assert_eq!(reg.transfer(h).err(), Some(expected), "transfer({h})");
    assert_eq!(reg.proxy(h).err(), Some(expected), "proxy({h})");
}

/// A forged handle must be refused by every call with one of the errors
/// that describe a bad id, carrying the right payload — never `Ok`, never a
/// panic.
fn assert_forged_refused(reg: &Registry<Tracked>, h: Handle) {
    let raw = h.to_raw();
    let ok = |e: Error| match e {
        Error::Invalid(r) => r == raw,
        Error::Stale(x) | Error::ForeignRegistry(x) => x == h,
        _ => false,
    };
    let results = [
        reg.retain(h).err(),
        reg.release(h).err(),
        reg.get(h).err(),
        reg.count(h).err(),
        reg.holders(h).err(),
        reg.pin(h).err(),
        reg.unpin(h).err(),
        reg.transfer(h).err(),
        reg.proxy(h).err(),
    ];
    for (i, r) in results.iter().enumerate() {
        match r {
            Some(e) if ok(*e) => {}
            other => panic!("call #{i} with forged handle {raw:#x} gave {other:?}"),
        }
    }
}

#[test]
fn from_raw_rejects_zero_and_values_beyond_53_bits() {
    assert_eq!(Handle::from_raw(0), None);
    assert_eq!(Handle::from_raw(LIMIT), None);
    assert_eq!(Handle::from_raw(LIMIT + 1), None);
    assert_eq!(Handle::from_raw(u64::MAX), None);
    for raw in [1, 2, 0xdead_beef, LIMIT - 1] {
        let h = Handle::from_raw(raw).expect("in-range raw is a handle");
        assert_eq!(h.to_raw(), raw, "to_raw(from_raw(x)) == x");
        let shown = h.to_string();
        assert!(
            shown.contains(&raw.to_string()),
            "Display shows the raw id: {shown:?}"
        );
    }
}

#[test]
fn issued_raw_ids_are_nonzero_below_2_pow_53_and_survive_f64() {
    let log = DropLog::new();
    let reg = Registry::new();
    let mut seen = HashSet::new();
    for i in 0..300 {
        let h = reg.insert(Tracked::new(&log, i)).expect("insert");
        let raw = h.to_raw();
        assert!(raw != 0 && raw < LIMIT, "raw id {raw:#x} out of range");
        assert_eq!((raw as f64) as u64, raw, "raw id must survive an f64");
        assert_eq!(Handle::from_raw(raw), Some(h), "round trip");
        assert!(seen.insert(raw), "raw id issued twice while live");
        if i % 3 == 0 {
            assert_eq!(rel(reg.release(h)), Rel::Finalized);
        }
    }
}

#[test]
fn a_finalized_handle_is_stale_for_every_call() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(rel(reg.release(h)), Rel::Finalized);
    assert_all_refuse(&reg, h, Error::Stale(h));
    assert_eq!(log.count(), 1, "a stale call dropped something");
}

#[test]
fn stale_handles_never_resolve_after_slot_reuse() {
    let log = DropLog::new();
    let reg = Registry::new();
    let mut old: Vec<Handle> = Vec::new();
    let mut raws = HashSet::new();
    // One object at a time, so the same slot is reused over and over.
    for i in 0..2000u64 {
        let h = reg.insert(Tracked::new(&log, i)).expect("insert");
        assert!(raws.insert(h.to_raw()), "raw id {h} was issued twice");
        assert_eq!(reg.get(h).expect("fresh handle").id, i);
        assert_eq!(rel(reg.release(h)), Rel::Finalized);
        old.push(h);
    }
    // Now a live object sits in (one of) the recycled slot(s).
    let live = reg.insert(Tracked::new(&log, 9999)).expect("insert");
    for h in &old {
        assert_ne!(*h, live);
        assert_eq!(
            reg.get(*h).err(),
            Some(Error::Stale(*h)),
            "old {h} resolved"
        );
        assert_eq!(reg.retain(*h), Err(Error::Stale(*h)));
        assert_eq!(rel(reg.release(*h)), Rel::Err(Error::Stale(*h)));
    }
    assert_eq!(reg.count(live), Ok(1), "old handles touched the new object");
    assert_eq!(reg.get(live).expect("live").id, 9999);
    assert_eq!(log.count(), 2000);
    assert_eq!(rel(reg.release(live)), Rel::Finalized);
}

#[test]
fn stale_handles_never_resolve_with_many_slots_churning() {
    let log = DropLog::new();
    let reg = Registry::new();
    let mut live: Vec<(Handle, u64)> = Vec::new();
    let mut dead: Vec<Handle> = Vec::new();
    let mut next = 0u64;
    // A simple deterministic LCG decides insert vs release.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if live.len() < 8 || (x >> 33) % 2 == 0 {
            let h = reg.insert(Tracked::new(&log, next)).expect("insert");
            live.push((h, next));
            next += 1;
        } else {
            let i = ((x >> 40) as usize) % live.len();
            let (h, _) = live.swap_remove(i);
            assert_eq!(rel(reg.release(h)), Rel::Finalized);
            dead.push(h);
        }
    }
    for (h, id) in &live {
        assert_eq!(reg.get(*h).expect("live handle").id, *id, "{h} confused");
    }
    for h in &dead {
        assert_eq!(
            reg.get(*h).err(),
            Some(Error::Stale(*h)),
            "dead {h} resolved"
        );
    }
    assert_eq!(reg.len(), live.len());
}

#[test]
fn forged_ids_are_errors_never_panics() {
    let log = DropLog::new();
    let reg = Registry::new();
    let live: Vec<Handle> = (0..16)
        .map(|i| reg.insert(Tracked::new(&log, i)).expect("insert"))
        .collect();
    let live_raw: HashSet<u64> = live.iter().map(|h| h.to_raw()).collect();

    let mut forged: Vec<u64> = vec![1, 2, 3, 0xff, 0xffff, 0xffff_ffff, LIMIT - 1, LIMIT / 2];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..500 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        forged.push((x >> 11) % (LIMIT - 1) + 1);
    }
    // Every single-bit variation of a live handle: unused or tag bits must
    // not alias the live object.
    for h in &live {
        for bit in 0..53 {
            forged.push(h.to_raw() ^ (1 << bit));
        }
    }
    let mut checked = 0;
    for raw in forged {
        if raw == 0 || raw >= LIMIT || live_raw.contains(&raw) {
            continue;
        }
        let h = Handle::from_raw(raw).expect("in range");
        assert_forged_refused(&reg, h);
        checked += 1;
    }
    assert!(checked > 500);
    // The live objects are untouched.
    for (i, h) in live.iter().enumerate() {
        assert_eq!(reg.count(*h), Ok(1));
        assert_eq!(reg.get(*h).expect("live").id, i as u64);
    }
    assert_eq!(log.count(), 0);
}

#[test]
fn forged_ids_on_an_empty_registry_are_errors() {
    let reg: Registry<Tracked> = Registry::new();
    for raw in [1, 7, 1 << 20, 1 << 40, LIMIT - 1] {
        let h = Handle::from_raw(raw).expect("in range");
        assert_forged_refused(&reg, h);
    }
}

#[test]
fn forged_transfer_tokens_are_errors() {
    let log = DropLog::new();
    let reg = Registry::new();
    let h = reg.insert(Tracked::new(&log, 1)).expect("insert");
    for raw in [0, 1, 42, LIMIT - 1, LIMIT, u64::MAX, h.to_raw()] {
        assert!(reg.claim_raw(raw).is_err(), "claim_raw({raw:#x}) accepted");
        assert!(
            Transfer::from_raw(&reg, raw).is_err(),
            "Transfer::from_raw({raw:#x}) accepted"
        );
    }
    assert_eq!(reg.count(h), Ok(1));
    assert_eq!(log.count(), 0);
}

#[test]
fn a_handle_from_another_registry_is_rejected() {
    let log = DropLog::new();
    let a = Registry::new();
    let b = Registry::new();
    // Same insertion pattern in both, so index and generation likely match.
    let ha = a.insert(Tracked::new(&log, 1)).expect("insert a");
    let hb = b.insert(Tracked::new(&log, 2)).expect("insert b");
    assert_ne!(ha, hb, "handles of two registries must differ");

    assert_all_refuse(&b, ha, Error::ForeignRegistry(ha));
    assert_all_refuse(&a, hb, Error::ForeignRegistry(hb));
    assert_eq!(a.count(ha), Ok(1), "b's refusal touched a's object");
    assert_eq!(b.count(hb), Ok(1));
    assert_eq!(log.count(), 0);

    // A transfer of `a` cannot be claimed through `b`.
    let raw = a.transfer(ha).expect("transfer").into_raw();
    assert!(b.claim_raw(raw).is_err(), "b claimed a's token");
    assert_eq!(
        a.claim_raw(raw),
        Ok(ha),
        "a's token is still claimable on a"
    );
}

#[test]
fn foreign_detection_survives_registry_churn() {
    // Tags of dropped registries may be recycled, but two registries alive
    // at the same time must never share one (exact for up to 255 alive).
    let log = DropLog::new();
    let a = Registry::new();
    let ha = a.insert(Tracked::new(&log, 1)).expect("insert a");
    for _ in 0..600 {
        let tmp: Registry<Tracked> = Registry::new();
        drop(tmp);
    }
    let b = Registry::new();
    let hb = b.insert(Tracked::new(&log, 2)).expect("insert b");
    assert_eq!(b.get(ha).err(), Some(Error::ForeignRegistry(ha)));
    assert_eq!(a.get(hb).err(), Some(Error::ForeignRegistry(hb)));

    // Several registries alive at once: every cross use is rejected.
    let regs: Vec<Registry<Tracked>> = (0..20).map(|_| Registry::new()).collect();
    let hs: Vec<Handle> = regs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.insert(Tracked::new(&log, 100 + i as u64))
                .expect("insert")
        })
        .collect();
    for (i, r) in regs.iter().enumerate() {
        for (j, h) in hs.iter().enumerate() {
            if i == j {
                assert_eq!(r.count(*h), Ok(1));
            } else {
                assert_eq!(r.count(*h), Err(Error::ForeignRegistry(*h)), "{i} vs {j}");
            }
        }
    }
}

#[test]
fn a_slot_whose_generation_would_wrap_is_retired_not_reused() {
    // One object at a time reuses one slot; the generation field is finite
    // (2^21 values in this layout), so after enough reuses it would wrap and
    // re-issue an old id. The slot must be retired instead. This loop runs
    // just past one full generation cycle (about 2 M insert/release pairs).
    const CYCLE: u64 = 1 << 21;
    let reg: Registry<u8> = Registry::new();
    let first = reg.insert(0).expect("insert");
    assert_eq!(rel(reg.release(first)), Rel::Finalized);
    let early: Vec<Handle> = (0..64)
        .map(|_| {
            let h = reg.insert(1).expect("insert");
            assert_eq!(rel(reg.release(h)), Rel::Finalized);
            h
        })
        .collect();
    let early_set: HashSet<Handle> = early.iter().copied().chain([first]).collect();
    for i in 0..CYCLE + 16 {
        let h = reg.insert(1).expect("insert keeps working past a wrap");
        assert!(
            !early_set.contains(&h),
            "iteration {i}: an old id {h} was issued again (generation wrapped)"
        );
        assert_eq!(rel(reg.release(h)), Rel::Finalized, "iteration {i}");
    }
    for h in early_set {
        assert_eq!(
            reg.get(h).err(),
            Some(Error::Stale(h)),
            "{h} resolved again"
        );
    }
}

#[test]
fn a_stale_handle_never_resolves_while_another_thread_churns_its_slot() {
    // Capacity 1: every object the churner inserts reuses the very slot the
    // stale handle names (the first insert steals it from main's free-slot
    // cache), so each check races that slot's reuse.
    let log = DropLog::new();
    let reg = Registry::builder().capacity(1).build();
    let old = reg.insert(Tracked::new(&log, 0)).expect("insert");
    assert_eq!(rel(reg.release(old)), Rel::Finalized);

    const INDEX_MASK: u64 = (1 << 24) - 1;
    let r2 = reg.clone();
    let log2 = log.clone();
    let churner = common::spawn("slot-churner", move || {
        for i in 1..=3000 {
            let h = r2.insert(Tracked::new(&log2, i)).expect("insert");
            assert_eq!(
                h.to_raw() & INDEX_MASK,
                old.to_raw() & INDEX_MASK,
                "the churner must reuse the stale handle's slot"
            );
            assert_ne!(h, old, "the stale id was re-issued");
            assert_eq!(rel(r2.release(h)), Rel::Finalized);
        }
    });
    let mut checks = 0u64;
    while !churner.is_finished() || checks == 0 {
        assert_eq!(reg.get(old).err(), Some(Error::Stale(old)));
        assert_eq!(reg.retain(old), Err(Error::Stale(old)));
        assert_eq!(reg.count(old), Err(Error::Stale(old)));
        checks += 1;
        std::thread::yield_now();
    }
    common::join(churner);
    assert_eq!(log.count(), 3001);
}

/// Issue 15, item 4: one rule for ids nobody was issued. `Stale` means this
/// registry issued the id and its object is dead; `Invalid` means it never
/// issued it — whether the slot's page is allocated or not, whether the
/// slot was never used or was freed and not reused yet.
#[test]
fn a_never_issued_id_is_invalid_and_a_dead_one_stale_whatever_the_page() {
    const GEN_ONE: u64 = 1 << 24;
    let reg = Registry::new();
    let a = reg.insert(1u32).expect("insert");
    let b = reg.insert(2u32).expect("insert");
    let raw = a.to_raw();
    let id = |index: u64, gen: u64| {
        Handle::from_raw((raw & !((1 << 45) - 1)) | (gen * GEN_ONE) | index).expect("in range")
    };
    // Index 5: inside the first page (allocated), never used.
    // Index 1000: beyond every allocated page.
    for index in [5, 31, 1000] {
        for gen in [0, 1, 7] {
            let h = id(index, gen);
            assert_eq!(reg.get(h).err(), Some(Error::Invalid(h.to_raw())), "{h:?}");
            assert_eq!(
                reg.count(h).err(),
                Some(Error::Invalid(h.to_raw())),
                "{h:?}"
            );
            assert_eq!(rel(reg.release(h)), Rel::Err(Error::Invalid(h.to_raw())));
        }
    }
    // a dies: its id is Stale; its slot's next generation was never issued.
    assert_eq!(rel(reg.release(a)), Rel::Finalized);
    let next = id(raw & ((1 << 24) - 1), (raw >> 24 & ((1 << 21) - 1)) + 1);
    assert_eq!(reg.get(a).err(), Some(Error::Stale(a)));
    assert_eq!(reg.count(a).err(), Some(Error::Stale(a)));
    assert_eq!(rel(reg.release(a)), Rel::Err(Error::Stale(a)));
    assert_eq!(reg.get(next).err(), Some(Error::Invalid(next.to_raw())));
    assert_eq!(reg.count(next).err(), Some(Error::Invalid(next.to_raw())));
    // Once the slot is reused, the new id works and the old one stays Stale.
    let c = reg.insert(3u32).expect("insert");
    assert_eq!(
        c, next,
        "the freed slot is reused under the next generation"
    );
    assert_eq!(*reg.get(c).expect("live"), 3);
    assert_eq!(reg.get(a).err(), Some(Error::Stale(a)));
    assert_eq!(reg.count(b), Ok(1));
}

/// A registry with a capacity below its first page's size: ids past the
/// capacity name slots whose page is allocated (and whose entries are in
/// the calling thread's cached table). Their first reference is refused
/// with `Invalid` on the home thread and a stranger, on the fast path
/// (`retain`, `get`, `proxy`, `downgrade`) and the general one, and
/// nothing changes.
#[test]
fn ids_past_the_capacity_inside_an_allocated_page_are_invalid() {
    const GEN_ONE: u64 = 1 << 24;
    let reg = Registry::builder().capacity(3).build();
    let a = reg.insert(1u32).expect("insert");
    reg.pin(a).expect("pin");
    let raw = a.to_raw();
    let id = move |index: u64, gen: u64| {
        Handle::from_raw((raw & !((1 << 45) - 1)) | (gen * GEN_ONE) | index).expect("in range")
    };
    // `held`: the calling thread's count of `a`.
    let refused = move |reg: &Registry<u32>, held: u32| {
        for index in [3, 4, 31] {
            for gen in [0, 1, 2] {
                let h = id(index, gen);
                let invalid = Error::Invalid(h.to_raw());
                assert_eq!(reg.retain(h), Err(invalid), "{h:?}");
                assert_eq!(reg.get(h).err(), Some(invalid), "{h:?}");
                assert_eq!(reg.proxy(h).err(), Some(invalid), "{h:?}");
                assert_eq!(reg.downgrade(h).err(), Some(invalid), "{h:?}");
                assert_eq!(reg.count(h), Err(invalid), "{h:?}");
            }
        }
        // The object in range is untouched, and reachable (pinned).
        assert_eq!(reg.retain(a), Ok(held + 1));
        assert_eq!(reg.release(a), Ok(tether::Released::Held(held)));
    };
    refused(&reg, 1);
    let r2 = reg.clone();
    common::join(common::spawn("stranger", move || {
        // Twice: the second round finds its table's page allocated (by
        // the first round's retain of `a`), so its `retain`s go the fast way.
        refused(&r2, 0);
        refused(&r2, 0);
    }));
    assert_eq!(reg.len(), 1);
    assert_eq!(reg.count(a), Ok(1));
}

#[test]
fn a_stale_handle_is_stale_on_every_thread_once_its_slot_holds_a_new_object() {
    // Capacity 1: the second object reuses the first one's slot. Its only
    // reference is in flight, so neither the home thread (which may access
    // its own objects with count 0) nor a stranger holds it: both take the
    // general path, which must still tell the old handle from the new one.
    let log = DropLog::new();
    let reg = Registry::builder().capacity(1).build();
    let old = reg.insert(Tracked::new(&log, 1)).expect("insert");
    assert_eq!(rel(reg.release(old)), Rel::Finalized);
    let new = reg.insert(Tracked::new(&log, 2)).expect("insert");
    let token = reg.transfer(new).expect("transfer");
    assert_eq!(reg.count(new), Ok(0));
    let stale = Error::Stale(old);
    let on_home = (
        reg.get(old).map(|g| g.id).err(),
        reg.retain(old),
        reg.count(old),
        reg.holders(old).err(),
        reg.pin(old),
        reg.proxy(old).map(|p| p.id).err(),
    );
    let expected = (
        Some(stale),
        Err(stale),
        Err(stale),
        Some(stale),
        Err(stale),
        Some(stale),
    );
    assert_eq!(on_home, expected, "home thread");
    let r2 = reg.clone();
    let on_stranger = common::join(common::spawn("stranger", move || {
        (
            r2.get(old).map(|g| g.id).err(),
            r2.retain(old),
            r2.count(old),
            r2.holders(old).err(),
            r2.pin(old),
            r2.proxy(old).map(|p| p.id).err(),
        )
    }));
    assert_eq!(on_stranger, expected, "another thread");
    let snapshot = reg.snapshot();
    assert_eq!(
        snapshot.object(new).expect("live").pins,
        0,
        "pinned via old"
    );
    assert_eq!(log.count(), 1);
    drop(token); // the last reference: finalized here, on home
    assert_eq!(log.times_dropped(2), 1);
    assert!(reg.is_empty());
}

#[test]
fn a_slot_is_retired_exactly_when_its_generation_would_pass_the_limit() {
    // The fast twin of the 2^21-cycle test above, with a generation limit of
    // 3: the only slot serves generations 0, 1, 2 and 3, then is retired.
    // Nothing is reused after that, so a registry of capacity 1 is full.
    let log = DropLog::new();
    let reg = Registry::builder().capacity(1).generation_limit(3).build();
    let mut issued: Vec<Handle> = Vec::new();
    for i in 0..4u64 {
        assert_eq!(reg.snapshot().retired_slots, 0, "retired before object {i}");
        let h = reg.insert(Tracked::new(&log, i)).expect("insert");
        assert!(!issued.contains(&h), "{h} was issued twice");
        assert_eq!(rel(reg.release(h)), Rel::Finalized);
        issued.push(h);
    }
    assert_eq!(reg.snapshot().retired_slots, 1);
    match reg.insert(Tracked::new(&log, 99)) {
        Ok(h) => panic!("a retired slot was reused for {h}"),
        Err(e) => {
            assert_eq!(e.error(), Error::Full);
            assert_eq!(e.into_value().id, 99);
        }
    }
    for h in issued {
        assert_all_refuse(&reg, h, Error::Stale(h));
    }
    assert_eq!(log.count(), 5);
}
