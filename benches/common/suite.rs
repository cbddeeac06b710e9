//! The timed workloads of issue 4, rows G1..G6 and G8 (and issue 6, row D), each next to its
//! baselines. Both the criterion benches (`benches/tether.rs`) and the
//! report (`benches/report.rs`) run exactly these closures.
//!
//! A workload is built once (its registry, slab or `Arc` set up) and then
//! called with an iteration count; it returns the wall time of that many
//! operations. With several threads, every thread does that many
//! operations at once and the time is the slowest thread's, so the figure
//! is always "time per operation per thread".
//!
//! Access rules are kept as a real program must: a thread touches only
//! objects it holds (it claimed a `Transfer` of its own) or, for G3, a
//! pinned object; each thread releases what it claimed when it is done.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use rustc_hash::FxHashMap;
use tether::{Handle, Interner, Registry, Transfer};

use super::floor::{DesignFloor, Floor, Id, ProxyFloor};
use super::threads::{on_threads, time, timed};

/// The stored value: 16 bytes, as in G7.
pub type V = [u64; 2];

/// A built workload: `run(iters)` is the wall time of `iters` operations
/// (per thread).
pub type Run = Box<dyn FnMut(u64) -> Duration>;

/// One measured line.
pub struct Case {
    /// Names the case within its group for the report's targets; a
    /// baseline shared by two groups has the same key in both. Read by
    /// the report, not by criterion.
    #[allow(dead_code)]
    pub key: &'static str,
    /// Label in criterion and in the report.
    pub name: &'static str,
    /// Builds the workload.
    pub make: fn() -> Run,
}

/// One row of the table: a criterion group.
pub struct Group {
    /// "G1" .. "G8", as in the issue.
    pub id: &'static str,
    /// What the row measures.
    pub title: &'static str,
    /// Each baseline before the tether case it is compared with.
    pub cases: Vec<Case>,
}

/// Live objects in the G4 structures (the key read is one of them).
const G4_LIVE: usize = 1000;
/// G6 objects (or messages) per batch between the two threads.
const G6_BATCH: u64 = 1024;
/// G8: handles touched in turn, spread evenly over all live objects.
const G8_WORKING_SET: usize = 1000;

fn val(i: u64) -> V {
    [i, !i]
}

fn case(key: &'static str, name: &'static str, make: fn() -> Run) -> Case {
    Case { key, name, make }
}

/// Every timed group, in table order (G7 counts bytes: see `footprint`).
pub fn groups() -> Vec<Group> {
    vec![
        Group {
            id: "G1",
            title: "clone+drop of a held reference, own thread",
            cases: vec![
                case("g1.rc", "Rc clone+drop", g1_rc),
                case("g1.arc", "Arc clone+drop", g1_arc),
                case(
                    "g1.floor",
                    "floor: checked per-thread count, +1 -1",
                    g1_floor,
                ),
                case(
                    "g1.dfloor",
                    "floor + DESIGN's per-call work (which registry, drain flag, count limit)",
                    g1_design_floor,
                ),
                case("g1.raw", "tether retain+release", g1_raw),
                case(
                    "g1.proxyfloor",
                    "floor: Rc + the thread's own count, clone+drop",
                    g1_proxy_floor,
                ),
                case("g1.proxy", "tether Proxy clone+drop", g1_proxy),
            ],
        },
        Group {
            id: "G2",
            title: "2 threads against 1, each thread retain+release (or Proxy clone+drop) on its own references; control: a thread-local floor",
            cases: vec![
                case("arc.2t", "Arc clone+drop, 2 threads, one Arc", || {
                    arc_shared(2)
                }),
                case(
                    "g2.floor.1t",
                    "floor: thread-local count + generation, 1 thread",
                    || local_floor(1),
                ),
                case(
                    "g2.floor.2t",
                    "floor: thread-local count + generation, 2 threads",
                    || local_floor(2),
                ),
                case("g2.raw.1t", "tether retain+release, 1 thread", || {
                    same_object(1)
                }),
                case(
                    "g2.raw.2s",
                    "tether retain+release, 2 threads, same object",
                    || same_object(2),
                ),
                case(
                    "g2.raw.2d",
                    "tether retain+release, 2 threads, own objects",
                    || own_objects(2),
                ),
                case("g2.proxy.1t", "tether Proxy clone+drop, 1 thread", || {
                    proxies(&[0])
                }),
                case(
                    "g2.proxy.2s",
                    "tether Proxy clone+drop, 2 threads, same object",
                    || proxies(&[0, 0]),
                ),
                case(
                    "g2.proxy.2d",
                    "tether Proxy clone+drop, 2 threads, own objects",
                    || proxies(&[0, 1]),
                ),
            ],
        },
        Group {
            id: "G3",
            title: "a thread's 0->1 and 1->0 transitions (first retain, last release)",
            cases: vec![
                case("arc.1t", "Arc clone+drop, 1 thread", || arc_shared(1)),
                case("arc.2t", "Arc clone+drop, 2 threads, one Arc", || {
                    arc_shared(2)
                }),
                case(
                    "g3.floor.1t",
                    "floor: own count + 2 RMWs (checked), 1 thread",
                    || g3_floor(1),
                ),
                case(
                    "g3.floor.2t",
                    "floor: own count + 2 RMWs (checked), 2 threads",
                    || g3_floor(2),
                ),
                case(
                    "g3.floor2.1t",
                    "floor as two calls (first, last), each result kept, 1 thread",
                    g3_floor_calls,
                ),
                case(
                    "g3.dfloor.1t",
                    "floor + DESIGN's first-reference work (registry, drain flag, access rule), 1 thread",
                    || g3_design_floor(1),
                ),
                case(
                    "g3.dfloor.2t",
                    "floor + DESIGN's first-reference work, 2 threads",
                    || g3_design_floor(2),
                ),
                case("g3.tether.1t", "tether 0->1->0, 1 thread", || {
                    transitions(1)
                }),
                case("g3.tether.2t", "tether 0->1->0, 2 threads", || {
                    transitions(2)
                }),
            ],
        },
        Group {
            id: "G4",
            title: "get of a held handle (1000 live objects)",
            cases: vec![
                case("g4.slab.1t", "slab::Slab::get, 1 thread", g4_slab),
                case(
                    "g4.floor.1t",
                    "floor: checked per-thread count, get",
                    g4_floor,
                ),
                case(
                    "g4.dfloor.1t",
                    "floor + DESIGN's per-call work (which registry, drain flag, count limit), get",
                    g4_design_floor,
                ),
                case(
                    "g4.copyfloor.1t",
                    "floor: copy-out get, count kept in a register",
                    g4_copy_floor,
                ),
                case("g4.rwlock.1t", "RwLock<Slab> read+get, 1 thread", g4_rwlock),
                case(
                    "g4.sharded.1t",
                    "sharded_slab::Slab::get, 1 thread",
                    g4_sharded,
                ),
                case(
                    "g4.hash.1t",
                    "HashMap<u64,T> get (SipHash), 1 thread",
                    g4_hash_std,
                ),
                case(
                    "g4.fxhash.1t",
                    "HashMap<u64,T> get (FxHash), 1 thread",
                    g4_hash_fx,
                ),
                case("g4.tether.1t", "tether get, 1 thread", g4_tether),
                case("g4.slab.2d", "slab get, 2 threads, disjoint", || {
                    g4_slab_par(&[0, 1])
                }),
                case(
                    "g4.rwlock.2d",
                    "RwLock<Slab> get, 2 threads, disjoint",
                    || g4_rwlock_par(&[0, 1]),
                ),
                case(
                    "g4.sharded.2d",
                    "sharded-slab get, 2 threads, disjoint",
                    || g4_sharded_par(&[0, 1]),
                ),
                case("g4.tether.2d", "tether get, 2 threads, disjoint", || {
                    g4_tether_par(&[0, 1])
                }),
                case("g4.slab.2s", "slab get, 2 threads, same key", || {
                    g4_slab_par(&[0, 0])
                }),
                case(
                    "g4.rwlock.2s",
                    "RwLock<Slab> get, 2 threads, same key",
                    || g4_rwlock_par(&[0, 0]),
                ),
                case(
                    "g4.sharded.2s",
                    "sharded-slab get, 2 threads, same key",
                    || g4_sharded_par(&[0, 0]),
                ),
                case("g4.tether.2s", "tether get, 2 threads, same object", || {
                    g4_tether_par(&[0, 0])
                }),
            ],
        },
        Group {
            id: "G5",
            title: "insert + final release (no home queue)",
            cases: vec![
                case("g5.mutex.1t", "Mutex<Slab> insert+remove, 1 thread", || {
                    g5_mutex(1)
                }),
                case(
                    "g5.sharded.1t",
                    "sharded-slab insert+remove, 1 thread",
                    || g5_sharded(1),
                ),
                case("g5.tether.1t", "tether insert+release, 1 thread", || {
                    g5_tether(1, true)
                }),
                case(
                    "g5.nohome.1t",
                    "tether insert+release, home finalization off",
                    || g5_tether(1, false),
                ),
                case(
                    "g5.mutex.2t",
                    "Mutex<Slab> insert+remove, 2 threads",
                    || g5_mutex(2),
                ),
                case(
                    "g5.sharded.2t",
                    "sharded-slab insert+remove, 2 threads",
                    || g5_sharded(2),
                ),
                case("g5.tether.2t", "tether insert+release, 2 threads", || {
                    g5_tether(2, true)
                }),
            ],
        },
        Group {
            id: "L",
            title: "the DESIGN §7 lifecycle: insert, transfer, claim on another thread, release there, finalize at home",
            cases: vec![
                case(
                    "l.mutex",
                    "Mutex<Slab> insert, crossbeam send, recv + remove",
                    lifecycle_mutex,
                ),
                case(
                    "l.floor",
                    "floor: Mutex<Slab> insert, send there, send home, recv + remove at home",
                    lifecycle_floor,
                ),
                case(
                    "l.tether",
                    "tether insert+transfer, send, claim+release, pump",
                    lifecycle_tether,
                ),
            ],
        },
        Group {
            id: "G6",
            title: "remote final release (worker releases, home pumps)",
            cases: vec![
                case("g6.crossbeam", "crossbeam-channel send+recv", g6_crossbeam),
                case(
                    "g6.floor",
                    "floor: last hold's RMW, value sent home over crossbeam, dropped there",
                    g6_floor,
                ),
                case(
                    "g6.dfloor",
                    "floor + the home's pending flag (DESIGN §5, §8): an RMW per send",
                    g6_design_floor,
                ),
                case("g6.tether", "tether worker release + home pump", g6_tether),
                case(
                    "g6.tether.notify",
                    "the same with a notifier set (DESIGN §8)",
                    g6_tether_notify,
                ),
            ],
        },
        Group {
            id: "M",
            title: "retain+release pairs spread in turn over 1, 2 or 4 registries on one thread",
            cases: vec![
                case("m.1", "1 registry", || alternate(1)),
                case("m.2", "2 registries alternated", || alternate(2)),
                case("m.4", "4 registries in turn", || alternate(4)),
            ],
        },
        Group {
            id: "W",
            title: "weak references (DESIGN §9): upgrade + drop of the proxy, against std's Weak and a claim",
            cases: vec![
                case("w.std", "std Weak::upgrade + drop (Arc alive)", w_std),
                case("w.held", "tether Weak::upgrade + drop, thread holds it", || {
                    w_upgrade(true)
                }),
                case(
                    "w.first",
                    "tether Weak::upgrade + drop, thread holds nothing (0->1->0)",
                    || w_upgrade(false),
                ),
                case("w.claim", "tether Proxy::transfer + Transfer::claim", w_claim),
            ],
        },
        Group {
            id: "D",
            title: "issue 6: an event hook; intern of a held key vs get",
            cases: vec![
                case("d1.plain", "retain+release, no hook", g1_raw),
                case(
                    "d1.hook",
                    "retain+release, hook installed (no event here)",
                    d1_hook,
                ),
                case("d1.zplain", "0->1->0, no hook", || d1_transitions(false)),
                case(
                    "d1.zhook",
                    "0->1->0, hook receiving its 2 events",
                    || d1_transitions(true),
                ),
                case("d2.getfloor", "floor: get of a held id (+1, -1)", g4_floor),
                case(
                    "d2.floor",
                    "floor: key lookup (FxHashMap) + retain+release of its id",
                    d2_floor,
                ),
                case("d2.get", "get of a held handle (+1, -1)", d2_get),
                case(
                    "d2.intern",
                    "intern of a held key + its release (+1, -1)",
                    d2_intern,
                ),
            ],
        },
        Group {
            id: "G8",
            title: "G1 retain+release across 1000 handles spread over N live objects",
            cases: vec![
                case("g8.arc.1k", "Arc clone+drop, 1K live", || g8_arc(1_000)),
                case("g8.arc.100k", "Arc clone+drop, 100K live", || {
                    g8_arc(100_000)
                }),
                case("g8.arc.1m", "Arc clone+drop, 1M live", || g8_arc(1_000_000)),
                case("g8.tether.1k", "tether retain+release, 1K live", || {
                    g8_tether(1_000)
                }),
                case("g8.tether.100k", "tether retain+release, 100K live", || {
                    g8_tether(100_000)
                }),
                case("g8.tether.1m", "tether retain+release, 1M live", || {
                    g8_tether(1_000_000)
                }),
            ],
        },
    ]
}

// ----- shared tether helpers ------------------------------------------------

/// One retain+release of a handle the calling thread holds.
#[inline(always)]
fn retain_release(reg: &Registry<V>, h: Handle) {
    black_box(reg.retain(black_box(h)).expect("retain"));
    black_box(reg.release(black_box(h)).expect("release"));
}

/// A transfer of one more reference of `h`, which the calling thread holds.
fn give(reg: &Registry<V>, h: Handle) -> Transfer<V> {
    reg.retain(h).expect("retain");
    reg.transfer(h).expect("transfer")
}

// ----- G1 ---------------------------------------------------------------------

fn g1_rc() -> Run {
    let rc = Rc::new(val(1));
    Box::new(move |n| time(n, || drop(black_box(Rc::clone(black_box(&rc))))))
}

fn g1_proxy_floor() -> Run {
    let p = ProxyFloor::new();
    assert_eq!(p.value()[0], 1);
    Box::new(move |n| time(n, || drop(black_box(black_box(&p).clone()))))
}

fn g1_arc() -> Run {
    let arc = Arc::new(val(1));
    Box::new(move |n| time(n, || drop(black_box(Arc::clone(black_box(&arc))))))
}

fn g1_floor() -> Run {
    let (floor, ids) = Floor::new(1);
    let id = ids[0];
    Box::new(move |n| {
        time(n, || {
            black_box(floor.retain(black_box(id)).expect("retain"));
            black_box(floor.release(black_box(id)).expect("release"));
        })
    })
}

/// The G1 floor with what DESIGN asks of every call (see `DesignFloor`).
fn g1_design_floor() -> Run {
    let (floor, ids) = DesignFloor::new(1);
    let id = ids[0];
    // It checks what it claims to: another registry's handle and a stale
    // one are refused, and nothing changed.
    for other in DesignFloor::others(id) {
        assert!(floor.retain(other).is_none() && floor.release(other).is_none());
    }
    assert_eq!(floor.retain(id), Some(2));
    assert_eq!(floor.release(id), Some(1));
    Box::new(move |n| {
        time(n, || {
            black_box(floor.retain(black_box(id)).expect("retain"));
            black_box(floor.release(black_box(id)).expect("release"));
        })
    })
}

/// `threads` threads each take and drop their first reference to one
/// shared object at the floor (see `Floor::first_and_last`).
fn g3_floor(threads: usize) -> Run {
    let (floor, ids) = Floor::new(1);
    let id = ids[0];
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            floor.adopt();
            timed(start, n, || {
                floor.first_and_last(black_box(id.split())).expect("live");
            })
        })
    })
}

/// G3's floor called the way tether's row calls `retain` and `release`:
/// two calls, each id and each result through `black_box` (a reference
/// row: what the one-call floor leaves out of the harness).
fn g3_floor_calls() -> Run {
    let (floor, ids) = Floor::new(1);
    let id = ids[0];
    Box::new(move |n| {
        on_threads(vec![()], |(), start| {
            floor.adopt();
            timed(start, n, || {
                black_box(floor.first(black_box(id)).expect("first"));
                black_box(floor.last_ref(black_box(id)).expect("last"));
            })
        })
    })
}

/// `threads` threads each take and drop their first reference to one
/// shared pinned object with DESIGN's work at the floor (see
/// `DesignFloor::first`), called as tether's row calls `retain` and
/// `release`.
fn g3_design_floor(threads: usize) -> Run {
    let (floor, ids) = DesignFloor::new(1);
    let id = ids[0];
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            floor.adopt();
            // It refuses what it claims to: another registry's handle and
            // a stale one; a held handle is not a first reference.
            for other in DesignFloor::others(id) {
                assert!(floor.first(other).is_none());
            }
            assert_eq!(floor.first(id), Some(1));
            assert!(floor.first(id).is_none());
            assert_eq!(floor.last_ref(id), Some(0));
            timed(start, n, || {
                black_box(floor.first(black_box(id)).expect("first"));
                black_box(floor.last_ref(black_box(id)).expect("last"));
            })
        })
    })
}

fn g1_raw() -> Run {
    let reg = Registry::new();
    let h = reg.insert(val(1)).expect("insert");
    Box::new(move |n| time(n, || retain_release(&reg, h)))
}

fn g1_proxy() -> Run {
    let reg = Registry::new();
    let p = reg.insert_proxy(val(1)).expect("insert");
    drop(reg); // the proxy keeps the registry alive
    Box::new(move |n| time(n, || drop(black_box(black_box(&p).clone()))))
}

// ----- W (weak references, DESIGN §9) ----------------------------------------------

fn w_std() -> Run {
    let arc = Arc::new(val(1));
    let weak = Arc::downgrade(&arc);
    Box::new(move |n| {
        let _alive = &arc;
        time(n, || drop(black_box(black_box(&weak).upgrade())))
    })
}

/// `held`: the timing thread holds the object (a proxy); otherwise it holds
/// nothing and the object is kept alive by a transfer in flight, so each
/// upgrade is the thread's first reference and its drop the last.
fn w_upgrade(held: bool) -> Run {
    let reg = Registry::new();
    let p = reg.insert_proxy(val(1)).expect("insert");
    let weak = p.downgrade();
    let keep = if held { Ok(p) } else { Err(p.transfer()) };
    Box::new(move |n| {
        let _alive = &keep;
        time(n, || drop(black_box(black_box(&weak).upgrade())))
    })
}

fn w_claim() -> Run {
    let reg = Registry::new();
    let mut p = Some(reg.insert_proxy(val(1)).expect("insert"));
    Box::new(move |n| {
        time(n, || {
            let t = black_box(p.take().expect("proxy").transfer());
            p = Some(t.claim().expect("claim"));
        })
    })
}

// ----- D (issue 6) ----------------------------------------------------------------

fn d1_hook() -> Run {
    let reg = Registry::builder()
        .on_event(|e| {
            black_box(e);
        })
        .build();
    let h = reg.insert(val(1)).expect("insert");
    Box::new(move |n| time(n, || retain_release(&reg, h)))
}

fn d2_get() -> Run {
    let reg = Registry::new();
    let h = reg.insert(val(1)).expect("insert");
    // As G4: the value read through the guard, the guard dropped.
    Box::new(move |n| time(n, || black_box(*reg.get(black_box(h)).expect("get"))))
}

fn d2_intern() -> Run {
    let reg: Registry<V> = Registry::new();
    let interner: Interner<u64, V> = Interner::new(&reg);
    // The interner's own reference keeps the object alive; this thread
    // holds one too, so each intern below is a +1 of a held key.
    let _held = interner.intern(&42, || Ok(val(1))).expect("intern");
    // As `get`: the +1 and the -1 both timed.
    Box::new(move |n| {
        time(n, || {
            let g = interner
                .intern(black_box(&42), || Ok(val(2)))
                .expect("intern");
            black_box(reg.release(black_box(g)).expect("release"));
        })
    })
}

/// The floor of D2: what interning a key the thread already holds must do
/// at least — find the key's id (one lookup in an `FxHashMap`, the
/// cheapest general hash map; here not even behind a thread-local) — and
/// then the retain+release floor's +1 and -1 of that id. Against the get
/// floor it shows what the key lookup alone costs any design.
fn d2_floor() -> Run {
    let (floor, ids) = Floor::new(1);
    let mut keys: FxHashMap<u64, Id> = FxHashMap::default();
    keys.insert(42, ids[0]);
    Box::new(move |n| {
        time(n, || {
            let id = *keys.get(black_box(&42)).expect("interned");
            black_box(floor.retain(id).expect("retain"));
            black_box(floor.release(black_box(id)).expect("release"));
        })
    })
}

/// The home thread's 0->1->0 on an object a transfer keeps alive (as the
/// `zero_one_zero` op): each iteration emits `FirstReference` and
/// `LastReference`, which a hook, if set, receives.
fn d1_transitions(hook: bool) -> Run {
    let builder = Registry::builder();
    let reg = if hook {
        builder
            .on_event(|e| {
                black_box(e);
            })
            .build()
    } else {
        builder.build()
    };
    let h = reg.insert(val(1)).expect("insert");
    let t = give(&reg, h);
    reg.release(h).expect("release");
    Box::new(move |n| {
        let _keep = &t;
        time(n, || black_box(*reg.get(black_box(h)).expect("get")))
    })
}

// ----- G2, G3 -------------------------------------------------------------------

/// The control of the 2-thread rows: each of `threads` threads runs the
/// G1 floor (its own count table, its own state word: nothing shared)
/// started and timed exactly as tether's rows.
fn local_floor(threads: usize) -> Run {
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            let (floor, ids) = Floor::new(1);
            let id = ids[0];
            timed(start, n, || {
                black_box(floor.retain(black_box(id)).expect("retain"));
                black_box(floor.release(black_box(id)).expect("release"));
            })
        })
    })
}

/// `threads` threads, each holding its own object (claimed from the home),
/// retain+release it.
fn own_objects(threads: usize) -> Run {
    let reg = Registry::new();
    let hs: Vec<Handle> = (0..threads)
        .map(|i| reg.insert(val(i as u64)).expect("insert"))
        .collect();
    Box::new(move |n| {
        let gifts = hs.iter().map(|&h| give(&reg, h)).collect();
        on_threads(gifts, |t, start| {
            let h = reg.claim(t).expect("claim");
            let d = timed(start, n, || retain_release(&reg, h));
            reg.release(h).expect("release");
            d
        })
    })
}

/// One thread per element of `objects`, each with a proxy of object
/// `objects[i]` (claimed from the home), clone+drop it.
fn proxies(objects: &'static [usize]) -> Run {
    let reg = Registry::new();
    let hs: Vec<Handle> = (0..2)
        .map(|i| reg.insert(val(i as u64)).expect("insert"))
        .collect();
    Box::new(move |n| {
        let gifts = objects.iter().map(|&i| give(&reg, hs[i])).collect();
        on_threads(gifts, |t, start| {
            let p = t.claim().expect("claim");
            timed(start, n, || drop(black_box(black_box(&p).clone())))
        })
    })
}

// ----- M ---------------------------------------------------------------------

/// Retain+release pairs spread in turn over `k` registries (one held
/// object each) on one thread; per pair. The same loop for every `k`.
fn alternate(k: usize) -> Run {
    let regs: Vec<(Registry<V>, Handle)> = (0..k)
        .map(|i| {
            let reg = Registry::new();
            let h = reg.insert(val(i as u64)).expect("insert");
            (reg, h)
        })
        .collect();
    Box::new(move |n| {
        let rounds = n.div_ceil(k as u64);
        let t = Instant::now();
        for _ in 0..rounds {
            for (reg, h) in &regs {
                retain_release(reg, *h);
            }
        }
        let took = t.elapsed();
        // Per pair: scale to `n`.
        took.mul_f64(n as f64 / (rounds * k as u64) as f64)
    })
}

/// `threads` threads clone+drop one shared `Arc`.
fn arc_shared(threads: usize) -> Run {
    let arc = Arc::new(val(1));
    Box::new(move |n| {
        let mine = (0..threads).map(|_| Arc::clone(&arc)).collect();
        on_threads(mine, |a: Arc<V>, start| {
            timed(start, n, || drop(black_box(Arc::clone(black_box(&a)))))
        })
    })
}

/// `threads` threads, each with its own claimed reference to one object,
/// retain+release it. The home thread keeps a reference too.
fn same_object(threads: usize) -> Run {
    let reg = Registry::new();
    let h = reg.insert(val(1)).expect("insert");
    Box::new(move |n| {
        let gifts = (0..threads).map(|_| give(&reg, h)).collect();
        on_threads(gifts, |t, start| {
            let h = reg.claim(t).expect("claim");
            let d = timed(start, n, || retain_release(&reg, h));
            reg.release(h).expect("release");
            d
        })
    })
}

/// `threads` threads that hold nothing take and drop a first reference of
/// a pinned object the home thread also holds: every retain is the thread's
/// 0->1 transition and every release its 1->0.
fn transitions(threads: usize) -> Run {
    let reg = Registry::new();
    let h = reg.insert(val(1)).expect("insert");
    reg.pin(h).expect("pin");
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            timed(start, n, || retain_release(&reg, h))
        })
    })
}

// ----- G4 ---------------------------------------------------------------------

fn slab_of(n: usize) -> slab::Slab<V> {
    let mut s = slab::Slab::new();
    for i in 0..n {
        s.insert(val(i as u64));
    }
    s
}

fn sharded_of(n: usize) -> (sharded_slab::Slab<V>, Vec<usize>) {
    let s = sharded_slab::Slab::new();
    let keys = (0..n)
        .map(|i| s.insert(val(i as u64)).expect("sharded-slab insert"))
        .collect();
    (s, keys)
}

fn tether_of(n: usize) -> (Registry<V>, Vec<Handle>) {
    let reg = Registry::new();
    let hs = (0..n)
        .map(|i| reg.insert(val(i as u64)).expect("insert"))
        .collect();
    (reg, hs)
}

fn g4_floor() -> Run {
    let (floor, ids) = Floor::new(G4_LIVE);
    let id = ids[0];
    Box::new(move |n| {
        time(n, || {
            black_box(*floor.borrow(black_box(id)).expect("get").value())
        })
    })
}

fn g4_design_floor() -> Run {
    let (floor, ids) = DesignFloor::new(G4_LIVE);
    let id = ids[0];
    for other in DesignFloor::others(id) {
        assert!(floor.borrow(other).is_none());
    }
    Box::new(move |n| {
        time(n, || {
            black_box(*floor.borrow(black_box(id)).expect("get").value())
        })
    })
}

fn g4_copy_floor() -> Run {
    let (floor, ids) = Floor::new(G4_LIVE);
    let id = ids[0];
    Box::new(move |n| time(n, || floor.get(black_box(id)).expect("get")))
}

fn g4_slab() -> Run {
    let s = slab_of(G4_LIVE);
    Box::new(move |n| time(n, || black_box(*s.get(black_box(0)).expect("get"))))
}

fn g4_rwlock() -> Run {
    let s = RwLock::new(slab_of(G4_LIVE));
    Box::new(move |n| {
        time(n, || {
            let s = s.read().expect("lock");
            black_box(*s.get(black_box(0)).expect("get"))
        })
    })
}

fn g4_sharded() -> Run {
    let (s, keys) = sharded_of(G4_LIVE);
    Box::new(move |n| time(n, || black_box(*s.get(black_box(keys[0])).expect("get"))))
}

fn g4_hash_std() -> Run {
    let m: HashMap<u64, V> = (0..G4_LIVE as u64).map(|i| (i, val(i))).collect();
    Box::new(move |n| time(n, || black_box(*m.get(&black_box(0)).expect("get"))))
}

fn g4_hash_fx() -> Run {
    let m: FxHashMap<u64, V> = (0..G4_LIVE as u64).map(|i| (i, val(i))).collect();
    Box::new(move |n| time(n, || black_box(*m.get(&black_box(0)).expect("get"))))
}

fn g4_tether() -> Run {
    let (reg, hs) = tether_of(G4_LIVE);
    Box::new(move |n| time(n, || black_box(*reg.get(black_box(hs[0])).expect("get"))))
}

fn g4_slab_par(keys: &'static [usize]) -> Run {
    let s = slab_of(G4_LIVE);
    Box::new(move |n| {
        on_threads(keys.to_vec(), |k, start| {
            timed(start, n, || black_box(*s.get(black_box(k)).expect("get")))
        })
    })
}

fn g4_rwlock_par(keys: &'static [usize]) -> Run {
    let s = RwLock::new(slab_of(G4_LIVE));
    Box::new(move |n| {
        on_threads(keys.to_vec(), |k, start| {
            timed(start, n, || {
                let s = s.read().expect("lock");
                black_box(*s.get(black_box(k)).expect("get"))
            })
        })
    })
}

fn g4_sharded_par(keys: &'static [usize]) -> Run {
    let (s, all) = sharded_of(G4_LIVE);
    Box::new(move |n| {
        on_threads(keys.iter().map(|&i| all[i]).collect(), |k, start| {
            timed(start, n, || black_box(*s.get(black_box(k)).expect("get")))
        })
    })
}

/// Each thread claims its own reference to object `keys[i]` and `get`s it.
fn g4_tether_par(keys: &'static [usize]) -> Run {
    let (reg, hs) = tether_of(G4_LIVE);
    Box::new(move |n| {
        let gifts = keys.iter().map(|&i| give(&reg, hs[i])).collect();
        on_threads(gifts, |t, start| {
            let h = reg.claim(t).expect("claim");
            let d = timed(start, n, || black_box(*reg.get(black_box(h)).expect("get")));
            reg.release(h).expect("release");
            d
        })
    })
}

// ----- G5 ---------------------------------------------------------------------

fn g5_mutex(threads: usize) -> Run {
    let s = Mutex::new(slab::Slab::<V>::new());
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            timed(start, n, || {
                let k = s.lock().expect("lock").insert(black_box(val(1)));
                black_box(s.lock().expect("lock").remove(k));
            })
        })
    })
}

fn g5_sharded(threads: usize) -> Run {
    let s = sharded_slab::Slab::<V>::new();
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            timed(start, n, || {
                let k = s.insert(black_box(val(1))).expect("sharded-slab insert");
                black_box(s.remove(k));
            })
        })
    })
}

/// Each thread inserts (it is the object's home) and releases its only
/// reference: finalized on the spot, no queue involved. `home`: the
/// registry's home finalization (it changes nothing on this path but is
/// measured both ways).
fn g5_tether(threads: usize, home: bool) -> Run {
    let reg = Registry::<V>::builder().home_finalization(home).build();
    Box::new(move |n| {
        on_threads(vec![(); threads], |(), start| {
            timed(start, n, || {
                let h = reg.insert(black_box(val(1))).expect("insert");
                black_box(reg.release(h).expect("release"));
            })
        })
    })
}

// ----- L: the lifecycle ---------------------------------------------------------

/// Objects per batch of the lifecycle rows.
const L_BATCH: u64 = 256;

/// The lifecycle with `Mutex<Slab>` and a crossbeam channel: the home
/// inserts and sends each key (timed), the worker receives and removes it
/// (timed), dropping the value there. The figure is the sum of both spans.
fn lifecycle_mutex() -> Run {
    lifecycle_slab(false)
}

/// The floor of the lifecycle with home finalization: the cheapest correct
/// code that hands each object to another thread and drops it back on its
/// home thread. As [`lifecycle_mutex`], but the worker reads the value
/// under the lock and sends the key home, and the home receives every key
/// and removes its value, dropping it there (timed too). `l.mutex` leaves
/// out that trip home, which no home finalization can.
fn lifecycle_floor() -> Run {
    lifecycle_slab(true)
}

/// [`lifecycle_mutex`], and with `trip_home` [`lifecycle_floor`].
fn lifecycle_slab(trip_home: bool) -> Run {
    let slab = Arc::new(Mutex::new(slab::Slab::<V>::new()));
    let (tx, rx) = unbounded::<usize>();
    let (home_tx, home_rx) = unbounded::<usize>();
    let worker = {
        let slab = Arc::clone(&slab);
        Worker::spawn(move |b: u64| {
            let t = Instant::now();
            for _ in 0..b {
                let k = rx.recv().expect("recv");
                if trip_home {
                    black_box(slab.lock().expect("lock")[k][0]);
                    home_tx.send(k).expect("send home");
                } else {
                    black_box(slab.lock().expect("lock").remove(k));
                }
            }
            t.elapsed()
        })
    };
    Box::new(move |n| {
        in_batches(n, L_BATCH, |b| {
            let mut total = Duration::ZERO;
            let t = Instant::now();
            for i in 0..b {
                let k = slab.lock().expect("lock").insert(black_box(val(i)));
                tx.send(k).expect("send");
            }
            total += t.elapsed();
            total += worker.run(b);
            if trip_home {
                let t = Instant::now();
                let mut dropped = 0;
                for k in home_rx.try_iter() {
                    black_box(slab.lock().expect("lock").remove(k));
                    dropped += 1;
                }
                total += t.elapsed();
                assert_eq!(dropped, b, "every value must come home");
            }
            total
        })
    })
}

/// The lifecycle with tether: the home inserts, transfers and sends each
/// transfer (timed); the worker receives, claims and releases it, its last
/// reference, which sends the value home (timed); the home pumps, dropping
/// the values (timed). The figure is the sum of the three spans.
fn lifecycle_tether() -> Run {
    let reg = Registry::<V>::new();
    let (tx, rx) = unbounded::<Transfer<V>>();
    let worker = {
        let reg = reg.clone();
        Worker::spawn(move |b: u64| {
            let t = Instant::now();
            for _ in 0..b {
                let h = reg.claim(rx.recv().expect("recv")).expect("claim");
                black_box(reg.release(h).expect("release"));
            }
            t.elapsed()
        })
    };
    Box::new(move |n| {
        in_batches(n, L_BATCH, |b| {
            let mut total = Duration::ZERO;
            let t = Instant::now();
            for i in 0..b {
                let h = reg.insert(black_box(val(i))).expect("insert");
                tx.send(reg.transfer(h).expect("transfer")).expect("send");
            }
            total += t.elapsed();
            total += worker.run(b);
            let t = Instant::now();
            let dropped = black_box(reg.pump());
            total += t.elapsed();
            assert_eq!(dropped as u64, b, "every value must come home");
            total
        })
    })
}

// ----- G6 ---------------------------------------------------------------------

/// `n` operations in batches of at most `size`: the sum of the spans
/// `batch(b)` times for each batch of `b`.
fn in_batches(n: u64, size: u64, mut batch: impl FnMut(u64) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let b = left.min(size);
        left -= b;
        total += batch(b);
    }
    total
}

/// A helper thread that lives as long as the workload: `job` runs once per
/// message and its timed span comes back.
struct Worker<J: Send + 'static> {
    jobs: Option<Sender<J>>,
    spans: Receiver<Duration>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static> Worker<J> {
    fn spawn(mut job: impl FnMut(J) -> Duration + Send + 'static) -> Self {
        let (jobs, jobs_rx) = unbounded::<J>();
        let (spans_tx, spans) = unbounded();
        let thread = std::thread::spawn(move || {
            for j in jobs_rx {
                spans_tx.send(job(j)).expect("report span");
            }
        });
        Worker {
            jobs: Some(jobs),
            spans,
            thread: Some(thread),
        }
    }

    /// Runs `j` on the worker and waits for its timed span.
    fn run(&self, j: J) -> Duration {
        self.jobs
            .as_ref()
            .expect("worker")
            .send(j)
            .expect("send job");
        self.spans.recv().expect("worker died")
    }
}

impl<J: Send + 'static> Drop for Worker<J> {
    fn drop(&mut self) {
        self.jobs = None; // ends the worker's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Batches of `G6_BATCH`: the home inserts and transfers (untimed), the
/// worker claims (untimed) then releases every object, its last reference
/// (timed: each value is sent home), then the home pumps (timed: each value
/// is received and dropped). The figure is the sum of both spans.
fn g6_tether() -> Run {
    g6_tether_with(false)
}

/// G6 with a notifier set on the home: each batch's first release takes
/// the idle -> pending edge and calls it (a counter here); the others see
/// the edge closed (one relaxed load, no read-modify-write).
fn g6_tether_notify() -> Run {
    g6_tether_with(true)
}

fn g6_tether_with(notify: bool) -> Run {
    let reg = Registry::<V>::new();
    if notify {
        let woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        reg.set_notify(move || {
            woken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .expect("set_notify");
    }
    let worker = {
        let reg = reg.clone();
        Worker::spawn(move |batch: Vec<Transfer<V>>| {
            let mut hs = Vec::with_capacity(batch.len());
            for t in batch {
                hs.push(reg.claim(t).expect("claim"));
            }
            let t = Instant::now();
            for &h in &hs {
                black_box(reg.release(black_box(h)).expect("release"));
            }
            t.elapsed()
        })
    };
    Box::new(move |n| {
        in_batches(n, G6_BATCH, |b| {
            let mut total = Duration::ZERO;
            let mut batch = Vec::with_capacity(b as usize);
            for i in 0..b {
                let h = reg.insert(val(i)).expect("insert");
                batch.push(reg.transfer(h).expect("transfer"));
            }
            total += worker.run(batch);
            let t = Instant::now();
            let dropped = black_box(reg.pump());
            total += t.elapsed();
            assert_eq!(
                dropped as u64, b,
                "every release must have been queued home"
            );
            total
        })
    })
}

/// The same batches over a crossbeam unbounded channel: the worker sends
/// every value (timed), then the main thread receives them all (timed).
fn g6_crossbeam() -> Run {
    let (tx, rx) = unbounded::<V>();
    let worker = Worker::spawn(move |b: u64| {
        let t = Instant::now();
        for i in 0..b {
            tx.send(black_box(val(i))).expect("send");
        }
        t.elapsed()
    });
    Box::new(move |n| {
        in_batches(n, G6_BATCH, |b| {
            let mut total = Duration::ZERO;
            total += worker.run(b);
            let t = Instant::now();
            for _ in 0..b {
                black_box(rx.recv().expect("recv"));
            }
            total += t.elapsed();
            total
        })
    })
}

/// One object of the G6 floor: its holds and its value, in a slot the home
/// thread reuses.
struct FloorObject {
    holds: AtomicU32,
    value: UnsafeCell<MaybeUninit<V>>,
}

/// The slots of the G6 floor, one per object of a batch.
struct FloorObjects(Box<[FloorObject]>);

// SAFETY: a slot's value is written by the home while the slot is free
// (nobody else can reach it: its index is not sent yet), then read once by
// the thread whose decrement took `holds` to 0 (AcqRel: after the home's
// write, which the worker job's channel and the home's release store
// order before it); the home reuses the slot only after that value came
// back over the channel (which orders the read before the reuse).
unsafe impl Sync for FloorObjects {}

/// The floor of G6: the cheapest correct code that lets a worker give up
/// the last hold of an object homed elsewhere and has its value dropped on
/// the home thread. The home fills preallocated slots (untimed, as tether's
/// insert+transfer); the worker's last hold goes with one read-modify-write
/// on a count the home wrote, and its value travels home over a crossbeam
/// channel with its index (timed); the home receives each, drops the value
/// and keeps the index for reuse (timed). What it leaves out that tether
/// does: handles and their checks, the worker's per-thread count, slot
/// generations, the free-slot lists, the pending flag and the events.
fn g6_floor() -> Run {
    g6_floor_with(false)
}

/// G6's floor plus what DESIGN asks of a value sent home: a flag the home
/// reads in one relaxed load to know that its inbox has work (§5's
/// opportunistic drain, §8's `has_pending`), set after each send, cleared
/// before each drain. Set and cleared by read-modify-writes (`swap`), so a
/// drain either sees a value or its sender's flag survives the drain (no
/// lost wake-up: a plain store could be ordered before the send's own
/// writes become visible to the drain). One more RMW per value: a
/// reference row, never a target's baseline.
fn g6_design_floor() -> Run {
    g6_floor_with(true)
}

fn g6_floor_with(flag: bool) -> Run {
    let pending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slots = Arc::new(FloorObjects(
        (0..G6_BATCH)
            .map(|_| FloorObject {
                holds: AtomicU32::new(0),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect(),
    ));
    let (tx, rx) = unbounded::<(u32, V)>();
    let worker = {
        let slots = Arc::clone(&slots);
        let sent = Arc::clone(&pending);
        Worker::spawn(move |batch: Vec<u32>| {
            let t = Instant::now();
            for &i in &batch {
                let slot = &slots.0[i as usize];
                if slot.holds.fetch_sub(1, AtomicOrdering::AcqRel) == 1 {
                    // SAFETY: our decrement took `holds` to 0: the value is
                    // initialised (the home wrote it before its release
                    // store of 1) and nobody else reads it (see
                    // `FloorObjects`).
                    let v = unsafe { (*slot.value.get()).assume_init_read() };
                    tx.send((black_box(i), v)).expect("send home");
                    if flag {
                        sent.swap(true, AtomicOrdering::AcqRel);
                    }
                }
            }
            t.elapsed()
        })
    };
    let mut free: Vec<u32> = (0..G6_BATCH as u32).rev().collect();
    Box::new(move |n| {
        in_batches(n, G6_BATCH, |b| {
            let mut total = Duration::ZERO;
            let mut batch = Vec::with_capacity(b as usize);
            for i in 0..b {
                let k = free.pop().expect("a free slot per object of a batch");
                let slot = &slots.0[k as usize];
                // SAFETY: slot `k` is free (its last value came home), so
                // only this thread reaches it until its index is sent.
                unsafe { (*slot.value.get()).write(val(i)) };
                slot.holds.store(1, AtomicOrdering::Release);
                batch.push(k);
            }
            total += worker.run(batch);
            let t = Instant::now();
            let mut dropped = 0;
            if flag {
                assert!(black_box(pending.swap(false, AtomicOrdering::AcqRel)));
            }
            for (k, v) in rx.try_iter() {
                black_box(v);
                free.push(k);
                dropped += 1;
            }
            total += t.elapsed();
            assert_eq!(dropped, b, "every value must come home");
            total
        })
    })
}

// ----- G8 ---------------------------------------------------------------------

/// Indices of `G8_WORKING_SET` objects spread evenly over `live`.
fn spread(live: usize) -> impl Iterator<Item = usize> {
    (0..G8_WORKING_SET).map(move |i| i * live / G8_WORKING_SET)
}

fn g8_arc(live: usize) -> Run {
    let all: Vec<Arc<V>> = (0..live as u64).map(|i| Arc::new(val(i))).collect();
    let ws: Vec<Arc<V>> = spread(live).map(|i| Arc::clone(&all[i])).collect();
    Box::new(move |n| {
        let _keep = &all;
        let mut i = 0;
        time(n, || {
            drop(black_box(Arc::clone(&ws[i])));
            i = if i + 1 == ws.len() { 0 } else { i + 1 };
        })
    })
}

fn g8_tether(live: usize) -> Run {
    let (reg, all) = tether_of(live);
    let ws: Vec<Handle> = spread(live).map(|i| all[i]).collect();
    Box::new(move |n| {
        let mut i = 0;
        time(n, || {
            retain_release(&reg, ws[i]);
            i = if i + 1 == ws.len() { 0 } else { i + 1 };
        })
    })
}
