//! DESIGN §11: tether holding the objects of a real garbage-collected JS
//! engine, QuickJS (through `rquickjs`), with the engine as the witness.
//!
//! Each JS object has a self-cycle (`this.self = this`), so only the cycle
//! collector (`Runtime::run_gc()`) frees it, a `WeakRef` (does the engine
//! still have it?) and a `FinalizationRegistry` entry (did the engine
//! collect it, and when?). The registry stores it as
//! `Fragile<Persistent<Object<'static>>>` (a `Persistent` is `!Send`).
//!
//! Drop order: a QuickJS `Runtime` dropped while any `Persistent` lives
//! aborts the process, so every test declares its [`Engine`] before its
//! registry (locals drop in reverse order, also while unwinding) and
//! empties or drops the registry before the engine goes.

mod common;

use std::collections::HashMap;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::{self, ThreadId};

use common::{join, me, recv, rel, spawn, DropLog, Rel, Tracked};
use fragile::Fragile;
use rquickjs::function::This;
use rquickjs::{Context, Ctx, Function, Object, Persistent, Runtime};
use tether::{Handle, Registry, Transfer};

// ---------------------------------------------------------------------------
// The engine.

/// The example's JS side (its class, `WeakRef`s and `FinalizationRegistry`):
/// one copy for both.
const SETUP: &str = include_str!("../examples/quickjs_setup.js");

type JsObj = Persistent<Object<'static>>;

/// A QuickJS runtime and context, on the test's thread. Field order is drop
/// order: the context, then the runtime.
struct Engine {
    ctx: Context,
    rt: Runtime,
}

impl Engine {
    fn new() -> Self {
        let rt = Runtime::new().expect("QuickJS runtime");
        let ctx = Context::full(&rt).expect("QuickJS context");
        let engine = Engine { ctx, rt };
        engine.with(|ctx| ctx.eval::<(), _>(SETUP));
        // QuickJS makes a few objects lazily on first use: the baseline is
        // taken after one object went through its whole life.
        let warm = engine.make(u64::from(u32::MAX));
        engine.call(&warm, "add", 1.0);
        drop(warm);
        assert_eq!(
            engine.gc(),
            [u64::from(u32::MAX)],
            "warm-up object collected"
        );
        engine.settle();
        engine
    }

    fn with<R>(&self, f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<R>) -> R {
        self.ctx.with(|ctx| match f(&ctx) {
            Ok(r) => r,
            Err(e) => panic!("QuickJS: {e} {:?}", ctx.catch()),
        })
    }

    fn global_fn<'js>(ctx: &Ctx<'js>, name: &str) -> rquickjs::Result<Function<'js>> {
        ctx.globals().get(name)
    }

    /// A new cyclic object, reachable only through the returned `Persistent`.
    fn make(&self, id: u64) -> JsObj {
        self.with(|ctx| {
            let obj: Object = Self::global_fn(ctx, "__make")?.call((id as f64,))?;
            Ok(Persistent::save(ctx, obj))
        })
    }

    fn call(&self, obj: &JsObj, method: &str, arg: f64) -> f64 {
        self.with(|ctx| {
            let obj = obj.clone().restore(ctx)?;
            let f: Function = obj.get(method)?;
            f.call((This(obj), arg))
        })
    }

    /// The engine's witness: the object's `WeakRef` still derefs.
    fn alive(&self, id: u64) -> bool {
        self.with(|ctx| Self::global_fn(ctx, "__alive")?.call((id as f64,)))
    }

    /// A full GC and the `FinalizationRegistry` callbacks it queued: the ids
    /// collected (each checked: its `WeakRef` no longer derefs).
    fn gc(&self) -> Vec<u64> {
        self.rt.run_gc();
        while self.rt.execute_pending_job().expect("a pending job threw") {}
        let ids: Vec<f64> = self.with(|ctx| Self::global_fn(ctx, "__takeCollected")?.call(()));
        let ids: Vec<u64> = ids.into_iter().map(|id| id as u64).collect();
        for &id in &ids {
            assert!(
                !self.alive(id),
                "object {id} reported collected, its WeakRef derefs"
            );
        }
        ids
    }

    /// JS objects in the runtime, after a GC.
    fn objects(&self) -> i64 {
        self.rt.run_gc();
        self.rt.memory_usage().obj_count
    }

    /// The end of a test: every object made must be collected (its
    /// `WeakRef` no longer derefs); the witnesses are dropped and the
    /// runtime's object count returned, to compare with its baseline.
    fn settle(&self) -> i64 {
        self.gc();
        let alive: Vec<f64> = self.with(|ctx| Self::global_fn(ctx, "__settle")?.call(()));
        assert_eq!(
            alive,
            [] as [f64; 0],
            "objects the engine still has at the end"
        );
        self.objects()
    }
}

/// What the registry stores. `Tracked` records where and how often the value
/// was dropped (the `Persistent` with it).
struct JsValue {
    id: u64,
    obj: Fragile<JsObj>,
    _probe: Tracked,
}

fn value(engine: &Engine, log: &Arc<DropLog>, id: u64) -> JsValue {
    JsValue {
        id,
        obj: Fragile::new(engine.make(id)),
        _probe: Tracked::new(log, id),
    }
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

// ---------------------------------------------------------------------------
// The bridge: workers call methods through main, which collects greedily.

enum ToMain {
    Call {
        from: usize,
        id: u64,
        handle: Handle,
        method: &'static str,
    },
    Wake,
    /// A worker stopped.
    Done,
}

struct Parcel {
    id: u64,
    transfer: Transfer<JsValue>,
    hops: u8,
}

/// A worker: claims each parcel, calls methods through main (an extra
/// reference around one of them), passes it on while it has hops left, then
/// drops it.
fn bridge_worker(
    index: usize,
    inbox: mpsc::Receiver<Option<Parcel>>,
    peers: Vec<Sender<Option<Parcel>>>,
    to_main: Sender<ToMain>,
    replies: mpsc::Receiver<()>,
) {
    let call = |id, handle, method| {
        to_main
            .send(ToMain::Call {
                from: index,
                id,
                handle,
                method,
            })
            .expect("main is gone");
        recv(&replies, "a reply from main");
    };
    while let Some(parcel) = recv(&inbox, "a parcel") {
        let proxy = parcel.transfer.claim().expect("claim");
        call(parcel.id, proxy.handle(), "getId");
        let extra = proxy.clone();
        call(parcel.id, extra.handle(), "add");
        drop(extra);
        if parcel.hops > 0 {
            let next = &peers[(index + 1) % peers.len()];
            let transfer = proxy.transfer();
            let (id, hops) = (parcel.id, parcel.hops - 1);
            next.send(Some(Parcel { id, transfer, hops }))
                .expect("peer");
        } else {
            call(parcel.id, proxy.handle(), "getId");
            drop(proxy); // the last reference: queued to main
        }
    }
    to_main.send(ToMain::Done).expect("main is gone");
}

#[test]
fn a_greedy_gc_never_collects_an_object_a_worker_holds() {
    const OBJECTS: u64 = 60;
    const WORKERS: usize = 3;
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let (to_main, inbox) = mpsc::channel();
    let wake = to_main.clone();
    reg.set_notify(move || {
        let _ = wake.send(ToMain::Wake);
    })
    .expect("set_notify");

    let (parcels, parcel_rxs): (Vec<Sender<Option<Parcel>>>, Vec<_>) =
        (0..WORKERS).map(|_| mpsc::channel()).unzip();
    let mut reply_txs = Vec::new();
    let mut workers = Vec::new();
    for (index, parcel_rx) in parcel_rxs.into_iter().enumerate() {
        let (reply_tx, replies) = mpsc::channel();
        reply_txs.push(reply_tx);
        let (peers, to_main) = (parcels.clone(), to_main.clone());
        workers.push(spawn(&format!("js-worker-{index}"), move || {
            bridge_worker(index, parcel_rx, peers, to_main, replies)
        }));
    }
    drop(to_main);

    let (mut next, mut served, mut wakeups, mut stopped) = (0, 0, 0, 0);
    let mut stopping = false;
    let mut collected = Vec::new();
    let mut failures = Vec::new();
    loop {
        // Hand out objects (two holders for odd ids); main keeps none.
        while next < OBJECTS && next - log.count() as u64 <= 16 {
            let proxy = reg
                .insert_proxy(value(&engine, &log, next))
                .expect("insert");
            let second = (next % 2 == 1).then(|| proxy.clone().transfer());
            let first = proxy.transfer();
            for (k, transfer) in std::iter::once(first).chain(second).enumerate() {
                let to = (next as usize + k) % WORKERS;
                let parcel = Parcel {
                    id: next,
                    transfer,
                    hops: 2,
                };
                parcels[to].send(Some(parcel)).expect("worker");
            }
            next += 1;
        }
        reg.pump();
        if log.count() as u64 == OBJECTS && !stopping {
            // Every object is gone: no worker holds anything. Stop them,
            // serving whatever they still ask until they are done.
            for tx in &parcels {
                tx.send(None).expect("worker");
            }
            stopping = true;
        }
        if stopped == WORKERS {
            break;
        }
        if reg.has_pending() {
            continue;
        }
        match recv(&inbox, "a request or a wake-up") {
            ToMain::Wake => wakeups += 1,
            ToMain::Done => stopped += 1,
            ToMain::Call {
                from,
                id,
                handle,
                method,
            } => {
                // The greedy GC: a full collection before every request.
                for id in engine.gc() {
                    if log.times_dropped(id) != 1 {
                        failures.push(format!("object {id} collected before its last release"));
                    }
                    collected.push(id);
                }
                match reg.get(handle) {
                    Ok(object) if object.id == id && engine.alive(id) => {
                        engine.call(object.obj.get(), method, 1.0);
                    }
                    Ok(object) => failures.push(format!(
                        "{handle}: object {} (expected {id}), alive: {}",
                        object.id,
                        engine.alive(id)
                    )),
                    Err(e) => failures.push(format!("{handle} held by worker {from}: {e}")),
                }
                served += 1;
                reply_txs[from].send(()).expect("worker");
            }
        }
    }
    workers.into_iter().for_each(join);
    reg.clear_notify();

    collected.extend(engine.gc());
    assert!(failures.is_empty(), "{failures:#?}");
    // A chain of three holders per transfer: two calls each, one more at
    // the end; odd ids went to two workers.
    let chains = OBJECTS + OBJECTS / 2;
    assert_eq!(served, chains * (3 * 2 + 1), "every request served");
    assert_eq!(
        sorted(collected),
        (0..OBJECTS).collect::<Vec<_>>(),
        "each collected once"
    );
    assert!(
        log.threads().iter().all(|&t| t == me()),
        "finalized on main"
    );
    assert!(reg.is_empty());
    drop(reg); // before the engine
    assert_eq!(
        engine.settle(),
        baseline,
        "the runtime is back at its baseline"
    );
    println!("{served} requests, {wakeups} wake-ups");
}

// ---------------------------------------------------------------------------
// The bug tether fixes, reproduced: one entry per object, deleted by the
// first release any worker sends.

/// Object 7 goes to workers A and B. A lets go; main collects; then B
/// (which still holds it) calls a method. Returns what that GC collected
/// and whether B's call found its object.
fn one_object_two_holders(naive: bool) -> (Vec<u64>, bool) {
    let engine = Engine::new();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let mut table: HashMap<u64, JsObj> = HashMap::new();
    let (handle, t_a, t_b) = if naive {
        table.insert(7, engine.make(7));
        (None, None, None)
    } else {
        let h = reg.insert(value(&engine, &log, 7)).expect("insert");
        reg.retain(h).expect("retain");
        let (a, b) = (
            reg.transfer(h).expect("to A"),
            reg.transfer(h).expect("to B"),
        );
        (Some(h), Some(a), Some(b))
    };

    // Worker B: claims its reference, then asks main to call a method on
    // object 7, and holds it until main has answered.
    let (request, requests) = mpsc::channel();
    let (answered, answer) = mpsc::channel::<()>();
    let r = reg.clone();
    let b = spawn("holder-b", move || {
        let h = t_b.map(|t| r.claim(t).expect("B claims"));
        request.send(h).expect("main");
        recv(&answer, "main's answer");
        // Exits: a reference it still holds is released (tether).
    });

    // Worker A: claims its reference and lets go of it.
    let r = reg.clone();
    let a_released = join(spawn("holder-a", move || match t_a {
        Some(t) => {
            let h = r.claim(t).expect("A claims");
            assert_eq!(rel(r.release(h)), Rel::Held(0), "B still holds it");
            false
        }
        None => true, // the naive design: "release 7" sent to main
    }));
    if a_released {
        table.remove(&7);
    }
    reg.pump();
    let collected = engine.gc(); // the greedy GC, between A's release and B's call

    let b_handle = recv(&requests, "B's request");
    engine.gc(); // and again before serving the request
    let found = match (naive, handle) {
        (true, _) => table
            .get(&7)
            .map(|obj| engine.call(obj, "add", 1.0))
            .is_some(),
        (false, Some(h)) => {
            assert_eq!(b_handle, Some(h));
            let object = reg.get(h).expect("B holds it");
            engine.call(object.obj.get(), "add", 1.0) == 1.0
        }
        (false, None) => unreachable!(),
    };
    answered.send(()).expect("B");
    join(b);
    // Not just a missing table entry: the engine's WeakRef agrees.
    assert_eq!(engine.alive(7), found);
    // B's exit released its reference (tether): queued home.
    reg.pump();
    assert!(reg.is_empty() && table.is_empty());
    drop((reg, table)); // before the engine
    engine.settle();
    (collected, found)
}

#[test]
fn the_naive_table_lets_the_greedy_gc_collect_an_object_a_worker_still_uses() {
    let (collected, found) = one_object_two_holders(true);
    assert_eq!(
        collected,
        [7],
        "the engine collected object 7 after A's release"
    );
    assert!(
        !found,
        "B's call found an object the naive table had deleted"
    );
}

#[test]
fn per_thread_counts_keep_the_object_for_the_second_holder() {
    let (collected, found) = one_object_two_holders(false);
    assert_eq!(collected, [] as [u64; 0], "collected while B holds it");
    assert!(found, "B's call must find object 7");
}

// ---------------------------------------------------------------------------
// Thread exit, transfers in flight, pins, the notifier, drop order.

thread_local! {
    static PARKED: std::cell::RefCell<Vec<tether::Proxy<JsValue>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[test]
fn a_worker_exiting_with_js_objects_releases_them_and_the_next_gc_collects_them() {
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let transfers: Vec<_> = (0..6)
        .map(|id| {
            let h = reg.insert(value(&engine, &log, id)).expect("insert");
            reg.transfer(h).expect("transfer")
        })
        .collect();
    let (held_tx, held_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let r = reg.clone();
    let worker = spawn("exits-holding-js", move || {
        for (i, t) in transfers.into_iter().enumerate() {
            if i % 2 == 0 {
                let h = r.claim(t).expect("claim");
                r.retain(h).expect("retain"); // two explicit references
            } else {
                let proxy = t.claim().expect("claim");
                PARKED.with(|parked| parked.borrow_mut().push(proxy));
            }
        }
        held_tx.send(()).expect("main");
        recv(&exit_rx, "the signal to exit");
        // Exits holding 6 objects: 3 by explicit counts, 3 by proxies
        // parked in a thread-local.
    });
    recv(&held_rx, "the worker holds them");
    for _ in 0..3 {
        assert_eq!(
            engine.gc(),
            [] as [u64; 0],
            "collected while the worker holds them"
        );
    }
    assert!((0..6).all(|id| engine.alive(id)));
    exit_tx.send(()).expect("worker");
    join(worker);
    // The exit queued them here; until main pumps they are still held.
    assert_eq!(
        engine.gc(),
        [] as [u64; 0],
        "collected before main dropped them"
    );
    assert_eq!(reg.pump(), 6, "the worker's exit released all six");
    assert_eq!(sorted(engine.gc()), (0..6).collect::<Vec<_>>());
    assert!(log.threads().iter().all(|&t| t == me()), "dropped on main");
    drop(reg);
    assert_eq!(engine.settle(), baseline);
}

#[test]
fn a_transfer_in_flight_across_a_gc_keeps_its_object() {
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let mut in_flight = Vec::new();
    for id in 0..3 {
        let h = reg.insert(value(&engine, &log, id)).expect("insert");
        in_flight.push((h, reg.transfer(h).expect("transfer")));
        assert_eq!(reg.count(h), Ok(0), "main holds no reference");
    }
    let (h0, t0) = in_flight.remove(0);
    let raw1 = in_flight.remove(0).1.into_raw();
    let (_, t2) = in_flight.remove(0);
    // Nothing but the transfers keeps them: GC, greedily.
    for _ in 0..5 {
        assert_eq!(engine.gc(), [] as [u64; 0], "collected while in flight");
    }
    assert!((0..3).all(|id| engine.alive(id)));
    assert_eq!(log.count(), 0);

    // Claimed as a proxy, claimed from the raw token, dropped unclaimed.
    let r = reg.clone();
    let (claimed, from_raw) = join(spawn("claims-late", move || {
        let p = t0.claim().expect("claim");
        let h1 = r.claim_raw(raw1).expect("claim raw");
        drop(t2); // an unclaimed transfer: its reference is released
        (p.handle(), rel(r.release(h1)))
        // p dropped: the last reference, queued home
    }));
    assert_eq!(claimed, h0);
    assert_eq!(from_raw, Rel::Queued);
    assert_eq!(
        engine.gc(),
        [] as [u64; 0],
        "collected before main dropped them"
    );
    assert_eq!(reg.pump(), 3);
    assert_eq!(sorted(engine.gc()), [0, 1, 2]);
    drop(reg);
    assert_eq!(engine.settle(), baseline);
}

#[test]
fn a_pinned_global_is_never_collected_until_unpinned() {
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    // globalThis, and a cyclic object standing for a class object.
    let global = engine.with(|ctx| Ok(Persistent::save(ctx, ctx.globals())));
    let g = reg
        .insert(JsValue {
            id: 100,
            obj: Fragile::new(global),
            _probe: Tracked::new(&log, 100),
        })
        .expect("insert globalThis");
    let k = reg.insert(value(&engine, &log, 1)).expect("insert");
    for h in [g, k] {
        reg.pin(h).expect("pin");
        assert_eq!(rel(reg.release(h)), Rel::Held(0), "the pin alone holds it");
    }
    // A worker with no reference reaches them because they are pinned, and
    // takes and drops references of its own.
    let r = reg.clone();
    join(spawn("uses-globals", move || {
        for h in [g, k] {
            assert!(r.get(h).is_ok(), "a pinned object is open to any thread");
            drop(r.proxy(h).expect("proxy of a pinned object"));
            r.retain(h).expect("retain");
            assert_eq!(rel(r.release(h)), Rel::Held(0), "still pinned");
        }
    }));
    for _ in 0..5 {
        assert_eq!(reg.pump(), 0);
        assert_eq!(engine.gc(), [] as [u64; 0], "a pinned object collected");
    }
    assert!(engine.alive(1));
    assert_eq!(log.count(), 0, "a pinned value was dropped");
    {
        let global = reg.get(g).expect("globalThis");
        let alive: bool = engine.with(|ctx| {
            let global = global.obj.get().clone().restore(ctx)?;
            global.get::<_, Function>("__alive")?.call((1.0,))
        });
        assert!(alive, "globalThis, reached through the registry, works");
    }

    reg.unpin(k).expect("unpin");
    assert_eq!(
        log.times_dropped(1),
        1,
        "unpinned with no reference: dropped"
    );
    assert_eq!(engine.gc(), [1], "and collected by the next GC");
    reg.unpin(g).expect("unpin globalThis");
    assert_eq!(log.times_dropped(100), 1);
    assert!(reg.is_empty());
    // The context still has its globalThis, of course.
    assert_eq!(engine.with(|ctx| ctx.eval::<i32, _>("1 + 1")), 2);
    drop(reg);
    assert_eq!(engine.settle(), baseline);
}

#[test]
fn a_weak_refinds_a_live_js_object_and_is_none_after_collection() {
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let h = reg.insert(value(&engine, &log, 7)).expect("insert");
    let t = reg.transfer(h).expect("transfer");

    // Worker A holds object 7 and hands out a weak reference to it.
    let (weak_tx, weak_rx) = mpsc::channel();
    let (let_go, a_waits) = mpsc::channel::<()>();
    let a = spawn("holder-a", move || {
        let p = t.claim().expect("claim");
        weak_tx.send(p.downgrade()).expect("main");
        recv(&a_waits, "the signal to let go");
        drop(p); // the last reference: queued to main
    });
    let weak: tether::Weak<JsValue> = recv(&weak_rx, "A's weak reference");
    assert_eq!(weak.handle(), h);
    assert_eq!(
        engine.gc(),
        [] as [u64; 0],
        "a weak reference keeps nothing, A does"
    );

    // Worker B re-finds it through the weak reference while A holds it,
    // and asks main to call a method on it.
    let (request, requests) = mpsc::channel();
    let (answered, answer) = mpsc::channel::<()>();
    let w = weak.clone();
    let b = spawn("refinds", move || {
        let p = w.upgrade().expect("re-found while A holds it");
        assert_eq!(p.id, 7);
        request.send(p.handle()).expect("main");
        recv(&answer, "main's answer");
        drop(p); // not the last: A still holds it
    });
    let handle = recv(&requests, "B's request");
    assert_eq!(
        engine.gc(),
        [] as [u64; 0],
        "collected while B and A hold it"
    );
    {
        let object = reg.get(handle).expect("B holds it");
        assert!(engine.alive(7));
        assert_eq!(engine.call(object.obj.get(), "add", 2.0), 2.0);
    }
    answered.send(()).expect("B");
    join(b);

    let_go.send(()).expect("A");
    join(a);
    // Queued to main, not dropped yet (the upgrade is tried on another
    // thread: main's own registry calls drain its queue): the engine still
    // has the object, but the weak reference no longer finds it.
    let w = weak.clone();
    let queued = join(spawn("upgrades-queued", move || w.upgrade().is_none()));
    assert!(queued, "upgraded an object queued for finalization");
    assert_eq!(log.count(), 0);
    assert!(engine.alive(7));
    assert_eq!(reg.pump(), 1);
    assert_eq!(engine.gc(), [7], "collected by the next GC");
    let w = weak.clone();
    let (none_there, err_there) = join(spawn("too-late", move || {
        (w.upgrade().is_none(), w.try_upgrade().err())
    }));
    assert!(none_there, "a worker re-found a collected object");
    assert_eq!(err_there, Some(tether::Error::Stale(h)));
    drop(weak);
    drop(reg);
    assert_eq!(engine.settle(), baseline);
}

#[test]
fn a_sleeping_main_is_woken_to_let_its_gc_collect() {
    let engine = Engine::new();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    let (wake, woken) = mpsc::channel::<()>();
    reg.set_notify(move || {
        let _ = wake.send(());
    })
    .expect("set_notify");
    let h = reg.insert(value(&engine, &log, 3)).expect("insert");
    let t = reg.transfer(h).expect("transfer");
    let r = reg.clone();
    let worker = spawn("releases-later", move || {
        thread::sleep(std::time::Duration::from_millis(20));
        let h = r.claim(t).expect("claim");
        assert_eq!(rel(r.release(h)), Rel::Queued);
    });
    recv(&woken, "the notifier"); // main sleeps until the release
    join(worker);
    assert_eq!(reg.pump(), 1);
    assert_eq!(engine.gc(), [3]);
    reg.clear_notify();
}

#[test]
fn dropping_the_registry_before_the_runtime_frees_what_it_still_holds() {
    let engine = Engine::new();
    let baseline = engine.objects();
    let log = DropLog::new();
    let reg: Registry<JsValue> = Registry::new();
    // Leaked: references never released, one pinned, one in an unclaimed
    // raw token.
    let a = reg.insert(value(&engine, &log, 1)).expect("insert");
    reg.retain(a).expect("retain");
    let b = reg.insert(value(&engine, &log, 2)).expect("insert");
    reg.pin(b).expect("pin");
    let c = reg.insert(value(&engine, &log, 3)).expect("insert");
    let _raw = reg.transfer(c).expect("transfer").into_raw();
    assert_eq!(engine.gc(), [] as [u64; 0]);
    let home: ThreadId = me();
    // The last clone goes first: it drops what it still holds, here.
    drop(reg);
    assert_eq!(log.count(), 3);
    assert!(log.threads().iter().all(|&t| t == home));
    assert_eq!(sorted(engine.gc()), [1, 2, 3]);
    assert_eq!(engine.settle(), baseline);
    // Now the runtime may go: no `Persistent` is left (else: abort).
    drop(engine);
}
