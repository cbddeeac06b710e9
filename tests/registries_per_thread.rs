//! Several registries used in turn on one thread (issue 18). A thread's
//! table cache holds one table per registry tag (direct-mapped: the 255
//! tags are distinct among the registries alive, beyond that registries
//! share a tag and evict each other); these tests attack its edges: more
//! registries than tags, registries dropped while cached (in every slot, in
//! every order), threads exiting with several cached
//! (and values whose `Drop` uses another registry meanwhile), and new
//! registries created after others were dropped — which may get a dropped
//! one's tag and addresses, and must never find its stale cache entry. Run
//! them under AddressSanitizer too: a stale table pointer used is a
//! use-after-free there.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use tether::{Error, Handle, Registry, Released};

/// A value that counts its drops.
struct Counted {
    id: u64,
    drops: Arc<AtomicUsize>,
}

impl Counted {
    fn new(id: u64, drops: &Arc<AtomicUsize>) -> Self {
        Counted {
            id,
            drops: Arc::clone(drops),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// `k` registries with one object each, held once by the calling thread.
fn registries(k: usize, drops: &Arc<AtomicUsize>) -> Vec<(Registry<Counted>, Handle)> {
    (0..k)
        .map(|i| {
            let reg = Registry::new();
            let h = reg.insert(Counted::new(i as u64, drops)).expect("insert");
            (reg, h)
        })
        .collect()
}

/// One round of use of `reg`'s object `h` (holding one reference before
/// and after), checking what each call reports.
fn use_once(reg: &Registry<Counted>, h: Handle, id: u64) {
    assert_eq!(reg.retain(h), Ok(2));
    assert_eq!(reg.get(h).expect("get").id, id);
    let p = reg.proxy(h).expect("proxy");
    assert_eq!(reg.count(h), Ok(3));
    drop(p);
    assert_eq!(reg.release(h), Ok(Released::Held(1)));
}

#[test]
fn more_registries_than_the_cache_holds_alternate_correctly() {
    let drops = Arc::new(AtomicUsize::new(0));
    for k in [1, 2, 3, 4, 5, 6, 9] {
        let regs = registries(k, &drops);
        for round in 0..40 {
            // In turn, backwards, and with strides that revisit ways in
            // every order.
            let stride = [1, k - 1, 2, 3][round % 4].max(1);
            for step in 0..k {
                let i = (step * stride + round) % k;
                let (reg, h) = &regs[i];
                use_once(reg, *h, i as u64);
                // A neighbour's handle is foreign here, whatever is cached.
                let (_, other) = regs[(i + 1) % k];
                if k > 1 {
                    assert_eq!(reg.retain(other), Err(Error::ForeignRegistry(other)));
                }
            }
        }
        for (reg, h) in &regs {
            assert_eq!(reg.count(*h), Ok(1));
            assert_eq!(reg.release(*h), Ok(Released::Finalized));
            assert_eq!(reg.len(), 0);
        }
    }
    assert_eq!(drops.load(Ordering::SeqCst), 1 + 2 + 3 + 4 + 5 + 6 + 9);
}

#[test]
fn more_registries_than_tags_alternate_correctly() {
    // 300 alive: at least 45 tags are shared by two registries (more while
    // other tests run), whose tables evict each other from the tag's cache
    // slot at every switch. Each must still find its own table and object.
    let drops = Arc::new(AtomicUsize::new(0));
    let regs = registries(300, &drops);
    for round in 0..3 {
        for step in 0..regs.len() {
            // Forwards, backwards, and odd strides (coprime to 300).
            let i = match round {
                0 => step,
                1 => regs.len() - 1 - step,
                _ => (step * 7 + 11) % regs.len(),
            };
            let (reg, h) = &regs[i];
            use_once(reg, *h, i as u64);
        }
    }
    for (reg, h) in &regs {
        assert_eq!(reg.count(*h), Ok(1));
        assert_eq!(reg.release(*h), Ok(Released::Finalized));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 300);
}

#[test]
fn registries_dropped_while_cached_in_any_way() {
    let drops = Arc::new(AtomicUsize::new(0));
    let mut made = 0;
    for round in 0..60 {
        let mut regs = registries(5, &drops);
        made += 5;
        for (i, (reg, h)) in regs.iter().enumerate() {
            use_once(reg, *h, i as u64);
        }
        // Drop a different one each round (objects still held:
        // the registry finalizes them as it goes).
        let gone = regs.remove(round % 5);
        drop(gone);
        // Registries created now may reuse the dropped one's tag, its
        // memory and its table's address.
        let mut fresh = registries(2, &drops);
        made += 2;
        for (i, (reg, h)) in fresh.iter().enumerate() {
            use_once(reg, *h, i as u64);
            use_once(reg, *h, i as u64);
        }
        regs.append(&mut fresh);
        for (i, (reg, h)) in regs.iter().enumerate().rev() {
            let id = reg.get(*h).expect("get").id;
            use_once(reg, *h, id);
            assert_eq!(reg.count(*h), Ok(1), "registry {i} of round {round}");
        }
        // Drop the rest in an order that varies with the round.
        if round % 2 == 0 {
            regs.reverse();
        }
        for (reg, h) in regs {
            if round % 3 == 0 {
                assert_eq!(reg.release(h), Ok(Released::Finalized));
            }
            drop(reg);
        }
        assert_eq!(drops.load(Ordering::SeqCst), made);
    }
}

#[test]
fn a_new_registry_never_finds_a_dropped_ones_table() {
    // The dropped registry's table held a count of 5 for its object; the
    // new one's thread holds exactly what it took.
    for _ in 0..200 {
        let old: Registry<u64> = Registry::new();
        let h = old.insert(1).expect("insert");
        for _ in 0..4 {
            old.retain(h).expect("retain");
        }
        drop(old);
        let new: Registry<u64> = Registry::new();
        let g = new.insert(2).expect("insert");
        assert_eq!(new.count(g), Ok(1));
        assert_eq!(*new.get(g).expect("get"), 2);
        // Even a handle equal to the old one (same tag, slot, generation)
        // resolves to the new registry's object and this thread's new count.
        if g == h {
            assert_eq!(new.retain(h), Ok(2));
            new.release(h).expect("release");
        }
        assert_eq!(new.release(g), Ok(Released::Finalized));
    }
}

#[test]
fn threads_exit_with_several_registries_cached() {
    let drops = Arc::new(AtomicUsize::new(0));
    let regs = registries(6, &drops);
    for round in 0..20 {
        // Each worker claims a reference to every object, uses them in turn
        // (so four are cached), keeps some proxies and explicit references,
        // inserts objects of its own and exits holding all of it.
        let gifts: Vec<_> = regs
            .iter()
            .map(|(reg, h)| {
                reg.retain(*h).expect("retain");
                reg.transfer(*h).expect("transfer")
            })
            .collect();
        let mine = regs.clone();
        let drops2 = Arc::clone(&drops);
        let proxies_kept = thread::spawn(move || {
            let mut kept = Vec::new();
            for ((reg, h), t) in mine.iter().zip(gifts) {
                assert_eq!(reg.claim(t), Ok(*h));
                reg.retain(*h).expect("retain");
                kept.push(reg.proxy(*h).expect("proxy"));
                reg.insert(Counted::new(99, &drops2)).expect("insert");
            }
            for (i, (reg, h)) in mine.iter().enumerate().skip(round % 3) {
                assert_eq!(reg.count(*h), Ok(3), "registry {i}");
            }
            // Proxies of the first registries are dropped; the others stay
            // in a thread-local, dropped after the exit hooks.
            thread_local! {
                static KEEP: std::cell::RefCell<Vec<tether::Proxy<Counted>>> =
                    const { std::cell::RefCell::new(Vec::new()) };
            }
            let late = kept.split_off(round % 4);
            KEEP.with(|k| k.borrow_mut().extend(late));
            drop(kept);
        })
        .join();
        proxies_kept.expect("worker");
        for (i, (reg, h)) in regs.iter().enumerate() {
            assert_eq!(reg.count(*h), Ok(1), "registry {i} after round {round}");
            use_once(reg, *h, i as u64);
            // The worker's own objects died with it.
            assert_eq!(reg.len(), 1);
        }
    }
    assert_eq!(drops.load(Ordering::SeqCst), 6 * 20);
    for (reg, h) in &regs {
        assert_eq!(reg.release(*h), Ok(Released::Finalized));
    }
    assert_eq!(drops.load(Ordering::SeqCst), 6 * 21);
}

/// A value whose `Drop` uses another registry: run while the exiting thread
/// finalizes, between one registry's exit hook (which forgets that
/// registry's cached table) and another's.
struct Toucher {
    reg: Registry<u64>,
    h: Handle,
}

impl Drop for Toucher {
    fn drop(&mut self) {
        // During thread exit this may find the registry's table still
        // cached, or already detached (`ThreadExited`): never a stale one.
        if self.reg.retain(self.h).is_ok() {
            self.reg.release(self.h).expect("release");
        }
        let _ = self.reg.get(self.h).map(|g| assert_eq!(*g, 7));
    }
}

#[test]
fn values_dropped_at_thread_exit_use_other_cached_registries() {
    for round in 0..20 {
        let plain: Vec<Registry<u64>> = (0..3).map(|_| Registry::new()).collect();
        let touching: Vec<Registry<Toucher>> = (0..3).map(|_| Registry::new()).collect();
        let (p, t) = (plain.clone(), touching.clone());
        thread::spawn(move || {
            let hs: Vec<Handle> = p.iter().map(|r| r.insert(7).expect("insert")).collect();
            for (i, reg) in t.iter().enumerate() {
                let j = (i + round) % p.len();
                let toucher = Toucher {
                    reg: p[j].clone(),
                    h: hs[j],
                };
                reg.insert(toucher).expect("insert");
            }
            // Interleave so the ways hold a mix of both kinds.
            for (i, reg) in p.iter().enumerate() {
                assert_eq!(reg.retain(hs[i]), Ok(2));
            }
        })
        .join()
        .expect("worker");
        for reg in &touching {
            assert_eq!(reg.len(), 0);
        }
        for reg in &plain {
            assert_eq!(reg.len(), 0);
        }
    }
}
