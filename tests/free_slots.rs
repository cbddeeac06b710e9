//! Free slots live in per-thread caches (issue 4): a thread reuses the
//! slots it freed without the global lock. None of that may show through:
//! a full registry is really full wherever its free slots sit, slots cached
//! by an exited thread are reused, no two objects ever share a slot, and
//! `len()` is exact once the other threads are done.

mod common;

use std::collections::HashSet;
use std::sync::mpsc;

use common::{join, recv, spawn};
use tether::{Error, Registry, Released};

/// Inserts until `Full`; returns the handles.
fn fill(reg: &Registry<u64>, first: u64) -> Vec<tether::Handle> {
    let mut hs = Vec::new();
    loop {
        match reg.insert(first + hs.len() as u64) {
            Ok(h) => hs.push(h),
            Err(e) => {
                assert_eq!(e.error(), Error::Full);
                return hs;
            }
        }
    }
}

#[test]
fn a_full_registry_is_really_full_while_another_thread_caches_its_free_slots() {
    let reg: Registry<u64> = Registry::builder().capacity(100).build();
    let (freed_tx, freed_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let worker = {
        let reg = reg.clone();
        spawn("worker", move || {
            let hs = fill(&reg, 0);
            assert_eq!(hs.len(), 100);
            for h in hs {
                assert_eq!(reg.release(h), Ok(Released::Finalized));
            }
            // The worker stays alive: some of its freed slots are in its
            // own cache, the rest in the global list.
            freed_tx.send(()).expect("main waits");
            recv(&done_rx, "main's go-ahead");
        })
    };
    recv(&freed_rx, "the worker's releases");
    assert_eq!(reg.len(), 0);
    let hs = fill(&reg, 1000);
    assert_eq!(hs.len(), 100, "every free slot is found, cached or not");
    assert_eq!(reg.len(), 100);
    let indices: HashSet<u64> = hs.iter().map(|h| h.to_raw() & 0xFF_FFFF).collect();
    assert_eq!(indices.len(), 100, "no two live objects share a slot");
    for (i, &h) in hs.iter().enumerate() {
        assert_eq!(*reg.get(h).expect("live"), 1000 + i as u64);
    }
    let e = reg.insert(7).expect_err("full");
    assert_eq!((e.error(), e.into_value()), (Error::Full, 7));
    for h in hs {
        assert_eq!(reg.release(h), Ok(Released::Finalized));
    }
    done_tx.send(()).expect("worker waits");
    join(worker);
    assert!(reg.is_empty());
}

#[test]
fn slots_cached_by_an_exited_thread_are_reused() {
    let reg: Registry<u64> = Registry::builder().capacity(40).build();
    for round in 0..5u64 {
        let r = reg.clone();
        join(spawn("filler", move || {
            let hs = fill(&r, round * 100);
            assert_eq!(hs.len(), 40, "round {round}: all 40 slots free again");
            for h in hs {
                r.release(h).expect("release");
            }
        }));
    }
    assert_eq!(fill(&reg, 0).len(), 40);
}

#[test]
fn len_is_exact_once_other_threads_are_done() {
    let reg: Registry<u64> = Registry::new();
    let mut workers = Vec::new();
    for t in 0..4u64 {
        let reg = reg.clone();
        workers.push(spawn("worker", move || {
            // 1000 inserted, 600 released here (on their home thread), 400
            // handed to main.
            let hs: Vec<_> = (0..1000)
                .map(|i| reg.insert(t * 1000 + i).expect("insert"))
                .collect();
            let mut gifts = Vec::new();
            for (i, h) in hs.into_iter().enumerate() {
                if i % 5 < 3 {
                    reg.release(h).expect("release");
                } else {
                    gifts.push(reg.transfer(h).expect("transfer"));
                }
            }
            gifts
        }));
    }
    let gifts: Vec<_> = workers.into_iter().flat_map(join).collect();
    // The workers have exited; their tables are gone, their counts stay.
    assert_eq!(reg.len(), 1600);
    let hs: Vec<_> = gifts
        .into_iter()
        .map(|t| reg.claim(t).expect("claim"))
        .collect();
    assert_eq!(reg.len(), 1600);
    for (i, h) in hs.into_iter().enumerate() {
        // Their homes have exited: finalized here.
        assert_eq!(reg.release(h), Ok(Released::Finalized));
        assert_eq!(reg.len(), 1599 - i);
    }
    assert!(reg.is_empty());
}

#[test]
fn two_threads_inserting_and_releasing_never_share_a_slot() {
    let reg: Registry<u64> = Registry::builder().capacity(64).build();
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let reg = reg.clone();
            spawn("churner", move || {
                for round in 0..2000u64 {
                    let v = t << 32 | round;
                    // Up to 40 each: together past the capacity, so the
                    // threads also steal from each other's caches.
                    let hs: Vec<_> = (0..40)
                        .map(|i| v + (i << 16))
                        .filter_map(|x| reg.insert(x).ok().map(|h| (h, x)))
                        .collect();
                    for &(h, x) in &hs {
                        assert_eq!(*reg.get(h).expect("own object"), x);
                    }
                    for (h, _) in hs {
                        reg.release(h).expect("release");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        join(w);
    }
    assert!(reg.is_empty());
    assert_eq!(fill(&reg, 0).len(), 64, "no slot lost");
}
