//! One operation in a loop, for instruction counts under callgrind
//! (`scripts/callgrind.sh`): `ops <operation> <iterations>`.
//!
//! Not a timing benchmark: callgrind counts instructions, which do not
//! depend on the machine's load. The script runs each operation twice (N
//! and 2N iterations) and reports the difference per iteration, so set-up
//! cost cancels out.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;

use tether::{Handle, Registry, Transfer};

#[path = "common/floor.rs"]
#[allow(dead_code)]
mod floor;

/// One retain+release of a handle the calling thread holds (as the report's
/// workloads do it). Always inlined, as in the report: with more than one
/// caller LLVM kept it out of line, and the count took in a call.
#[inline(always)]
fn retain_release(reg: &Registry<[u64; 2]>, h: Handle) {
    black_box(reg.retain(black_box(h)).expect("retain"));
    black_box(reg.release(black_box(h)).expect("release"));
}

/// `n` objects inserted on this thread (their home), each handed over as
/// a transfer: what `queue_home` and `remote_release_pump` give a worker
/// to claim.
#[inline(always)]
fn inserted_transfers(reg: &Registry<[u64; 2]>, n: u64) -> Vec<Transfer<[u64; 2]>> {
    (0..n)
        .map(|i| {
            let x = reg.insert([i, i]).expect("insert");
            reg.transfer(x).expect("transfer")
        })
        .collect()
}

/// Row G6's timed part on the worker: the last release of each handle
/// (each queued home). `scripts/callgrind.sh` counts only inside this and
/// [`g6_pump`] for `remote_release_pump`.
#[inline(never)]
fn g6_release_all(reg: &Registry<[u64; 2]>, hs: &[Handle]) {
    for &h in hs {
        black_box(reg.release(black_box(h)).expect("release"));
    }
}

/// Row G6's timed part on the home: the pump that drops what came home.
#[inline(never)]
fn g6_pump(reg: &Registry<[u64; 2]>) -> usize {
    reg.pump()
}

/// `n` retain+release pairs spread in turn over `k` registries (one held
/// object each) on this thread: `n / k` rounds of one pair per registry.
fn alternate(k: usize, n: u64) {
    let regs: Vec<(Registry<[u64; 2]>, Handle)> = (0..k)
        .map(|i| {
            let reg = Registry::new();
            let h = reg.insert([i as u64, 0]).expect("insert");
            (reg, h)
        })
        .collect();
    for _ in 0..n / k as u64 {
        for (reg, h) in &regs {
            retain_release(reg, *h);
        }
    }
}

/// Runs `op` (on the registry, its held handle and the iteration count,
/// passed by value) in a function of its own, never inlined into `main`: each
/// operation's loop is compiled on its own (its own inlining budget and
/// registers), so adding or changing one operation does not move another's
/// count.
#[inline(never)]
fn isolated<R>(reg: &R, h: Handle, n: u64, op: impl FnOnce(&R, Handle, u64)) {
    op(reg, h, n)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(op), Some(n)) = (args.next(), args.next()) else {
        // `cargo bench` runs every bench target with `--bench`: nothing to do.
        return;
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("usage: ops <operation> <iterations>");
        std::process::exit(2);
    };
    let reg: Registry<[u64; 2]> = Registry::new();
    let h = reg.insert([1, 2]).expect("insert");
    match op.as_str() {
        // Held handle: the fast paths.
        "retain_release" => isolated(&reg, h, n, |reg, h, n| {
            for _ in 0..n {
                black_box(reg.retain(black_box(h)).expect("retain"));
                black_box(reg.release(black_box(h)).expect("release"));
            }
        }),
        "get" => isolated(&reg, h, n, |reg, h, n| {
            for _ in 0..n {
                // The value copied out, as the report's `get` and both
                // floors do (it was `&*g`, 1 instruction fewer, until
                // 2026-12-06).
                black_box(*reg.get(black_box(h)).expect("get"));
            }
        }),
        "proxy_clone_drop" => isolated(&reg, h, n, |reg, h, n| {
            let p = reg.proxy(h).expect("proxy");
            for _ in 0..n {
                black_box(black_box(&p).clone());
            }
        }),
        // The home thread's 0 -> 1 -> 0 (the object is kept alive by a
        // transfer in flight).
        "zero_one_zero" => isolated(&reg, h, n, |reg, h, n| {
            reg.retain(h).expect("retain");
            let t = reg.transfer(h).expect("transfer");
            reg.release(h).expect("release");
            for _ in 0..n {
                let g = reg.get(black_box(h)).expect("get");
                black_box(&*g);
            }
            drop(t);
        }),
        "insert_release" => isolated(&reg, h, n, |reg, _, n| {
            for i in 0..n {
                let x = reg.insert(black_box([i, i])).expect("insert");
                black_box(reg.release(x).expect("release"));
            }
        }),
        // Row G6: a worker's last release of objects homed here, and the
        // home's pump. The home inserts and transfers, the worker claims
        // (neither counted: callgrind.sh counts inside `g6_release_all`
        // and `g6_pump` only, as the report times only those).
        "remote_release_pump" => isolated(&reg, h, n, |reg, _, n| {
            let ts = inserted_transfers(reg, n);
            let r = reg.clone();
            std::thread::spawn(move || {
                let hs: Vec<Handle> = ts.into_iter().map(|t| r.claim(t).expect("claim")).collect();
                g6_release_all(&r, &hs);
            })
            .join()
            .expect("worker");
            assert_eq!(black_box(g6_pump(reg)) as u64, n);
        }),
        // A worker's last release of an object homed here (queued home),
        // and the home's pump; with `_notify`, a notifier is set.
        "queue_home" | "queue_home_notify" => isolated(&reg, h, n, |reg, _, n| {
            if op == "queue_home_notify" {
                reg.set_notify(|| {
                    black_box(());
                })
                .expect("set_notify");
            }
            let ts = inserted_transfers(reg, n);
            let r = reg.clone();
            std::thread::spawn(move || {
                for t in ts {
                    let x = r.claim(t).expect("claim");
                    black_box(r.release(x).expect("release"));
                }
            })
            .join()
            .expect("worker");
            black_box(reg.pump());
        }),
        // The DESIGN §7 lifecycle as the report's L row runs it: the home
        // inserts, transfers and sends each transfer over a crossbeam
        // channel; a worker receives, claims and releases each (queued
        // home); the home pumps. In that order, one phase after the other
        // (the report does it in batches), so nobody waits on an empty
        // channel and the count does not depend on the scheduler.
        "lifecycle" => isolated(&reg, h, n, |reg, _, n| {
            let (tx, rx) = crossbeam_channel::unbounded::<Transfer<[u64; 2]>>();
            for i in 0..n {
                let x = reg.insert(black_box([i, i])).expect("insert");
                tx.send(reg.transfer(x).expect("transfer")).expect("send");
            }
            drop(tx);
            let r = reg.clone();
            std::thread::spawn(move || {
                for t in rx.try_iter() {
                    let x = r.claim(t).expect("claim");
                    black_box(r.release(x).expect("release"));
                }
            })
            .join()
            .expect("worker");
            assert_eq!(black_box(reg.pump()) as u64, n);
        }),
        // Weak references (DESIGN §9): an upgrade (+ drop of its proxy) by
        // a thread that holds the object, by one that holds nothing (its
        // 0 -> 1 -> 0, the object kept alive by a transfer in flight), and
        // what they are measured against: a transfer claimed back
        // (`Proxy::transfer` + `Transfer::claim`), `proxy` on the same
        // 0 -> 1 -> 0 path, and std's `Weak::upgrade` + drop.
        "upgrade_held" => isolated(&reg, h, n, |reg, h, n| {
            let p = reg.proxy(h).expect("proxy");
            let w = p.downgrade();
            for _ in 0..n {
                black_box(black_box(&w).upgrade().expect("live"));
            }
        }),
        "upgrade_first" | "proxy_first" => isolated(&reg, h, n, |reg, h, n| {
            let w = reg.downgrade(h).expect("downgrade");
            let t = reg.transfer(h).expect("transfer");
            for _ in 0..n {
                if op == "upgrade_first" {
                    black_box(black_box(&w).upgrade().expect("live"));
                } else {
                    black_box(reg.proxy(black_box(h)).expect("home"));
                }
            }
            drop(t);
        }),
        "transfer_claim" => isolated(&reg, h, n, |reg, h, n| {
            let mut p = reg.proxy(h).expect("proxy");
            for _ in 0..n {
                p = black_box(p.transfer()).claim().expect("claim");
            }
            black_box(p);
        }),
        "std_weak_upgrade" => isolated(&reg, h, n, |_, _, n| {
            let a = Arc::new([1u64, 2]);
            let w = Arc::downgrade(&a);
            for _ in 0..n {
                black_box(black_box(&w).upgrade().expect("live"));
            }
        }),
        // Pairs alternated between registries on one thread (issue 18): per
        // pair, like `retain_release`, with the rounds' loop in all three.
        "alt1" => isolated(&reg, h, n, |_, _, n| alternate(1, n)),
        "alt2" => isolated(&reg, h, n, |_, _, n| alternate(2, n)),
        "alt4" => isolated(&reg, h, n, |_, _, n| alternate(4, n)),
        // A thread other than the home taking and dropping its first
        // reference of a pinned object (the report's G3 row).
        "pinned_first_last" => isolated(&reg, h, n, |reg, h, n| {
            reg.pin(h).expect("pin");
            let r = reg.clone();
            std::thread::spawn(move || {
                for _ in 0..n {
                    retain_release(&r, h);
                }
            })
            .join()
            .expect("worker");
        }),
        // `pinned_first_last` on two threads at once, contended (for
        // timing A/B builds by wall time; callgrind runs threads one at a
        // time, so its count is `pinned_first_last`'s).
        "pinned_first_last_2t" => isolated(&reg, h, n, |reg, h, n| {
            reg.pin(h).expect("pin");
            let ts: Vec<_> = (0..2)
                .map(|_| {
                    let r = reg.clone();
                    std::thread::spawn(move || {
                        for _ in 0..n {
                            retain_release(&r, h);
                        }
                    })
                })
                .collect();
            for t in ts {
                t.join().expect("worker");
            }
        }),
        // A +1 through an interner on a key this thread holds, and its -1
        // (the report's D2 row).
        "intern_release" => isolated(&reg, h, n, |reg, _, n| {
            let interner: tether::Interner<u64, [u64; 2]> = tether::Interner::new(reg);
            let _held = interner.intern(&42, || Ok([4, 2])).expect("intern");
            for _ in 0..n {
                let g = interner
                    .intern(black_box(&42), || Ok([0, 0]))
                    .expect("intern");
                black_box(reg.release(black_box(g)).expect("release"));
            }
        }),
        // The floors and baselines of the same rows (benches/common/floor.rs).
        "floor_retain_release" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::Floor::new(1);
            for _ in 0..n {
                black_box(f.retain(black_box(ids[0])).expect("retain"));
                black_box(f.release(black_box(ids[0])).expect("release"));
            }
        }),
        "design_floor_retain_release" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::DesignFloor::new(1);
            for _ in 0..n {
                black_box(f.retain(black_box(ids[0])).expect("retain"));
                black_box(f.release(black_box(ids[0])).expect("release"));
            }
        }),
        "design_floor_get" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::DesignFloor::new(1000);
            for _ in 0..n {
                black_box(*f.borrow(black_box(ids[0])).expect("get").value());
            }
        }),
        "floor_get" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::Floor::new(1000);
            for _ in 0..n {
                black_box(*f.borrow(black_box(ids[0])).expect("get").value());
            }
        }),
        "xfloor_get_i" => isolated(&reg, h, n, |_, _, n| {
            let i: usize = std::env::var("XI").unwrap().parse().unwrap();
            let (f, ids) = floor::Floor::new(1000);
            for _ in 0..n {
                black_box(*f.borrow(black_box(ids[i])).expect("get").value());
            }
        }),
        "floor_copy_get" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::Floor::new(1000);
            for _ in 0..n {
                black_box(f.get(black_box(ids[0])).expect("get"));
            }
        }),
        "floor_first_last" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::Floor::new(1);
            for _ in 0..n {
                f.first_and_last(black_box(ids[0].split())).expect("live");
            }
        }),
        "floor_first_last_calls" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::Floor::new(1);
            for _ in 0..n {
                black_box(f.first(black_box(ids[0])).expect("first"));
                black_box(f.last_ref(black_box(ids[0])).expect("last"));
            }
        }),
        "design_floor_first_last" => isolated(&reg, h, n, |_, _, n| {
            let (f, ids) = floor::DesignFloor::new(1);
            let f = &f;
            std::thread::scope(|s| {
                s.spawn(move || {
                    f.adopt();
                    for _ in 0..n {
                        black_box(f.first(black_box(ids[0])).expect("first"));
                        black_box(f.last_ref(black_box(ids[0])).expect("last"));
                    }
                });
            });
        }),
        "floor_proxy_clone_drop" => isolated(&reg, h, n, |_, _, n| {
            // TETHER_OPS_PAD=n allocates n small boxes first, to move the
            // floor's objects on the heap: its time depends on where they
            // land (2.41 ns at n = 0, 1.80 ns at n = 1 on the Xeon of
            // 2026-12-06; the instructions do not change).
            let pad: usize = std::env::var("TETHER_OPS_PAD")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let _pad: Vec<Box<[u8]>> = (0..pad).map(|_| vec![0u8; 8].into_boxed_slice()).collect();
            let p = floor::ProxyFloor::new();
            for _ in 0..n {
                black_box(black_box(&p).clone());
            }
        }),
        "rc_clone_drop" => isolated(&reg, h, n, |_, _, n| {
            let rc = Rc::new([1u64, 2]);
            for _ in 0..n {
                drop(black_box(Rc::clone(black_box(&rc))));
            }
        }),
        "arc_clone_drop" => isolated(&reg, h, n, |_, _, n| {
            let arc = Arc::new([1u64, 2]);
            for _ in 0..n {
                drop(black_box(Arc::clone(black_box(&arc))));
            }
        }),
        "empty" => isolated(&reg, h, n, |_, _, n| {
            for i in 0..n {
                black_box(i);
            }
        }),
        other => {
            eprintln!("unknown operation {other}");
            std::process::exit(2);
        }
    }
}
