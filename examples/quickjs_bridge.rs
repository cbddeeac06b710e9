//! # `quickjs_bridge`: tether holding the objects of a real JS engine
//!
//! The bug tether exists for, shown on a real garbage collector. PyScript's
//! worker bridge (coincident) kept one table entry per JS object handed to a
//! worker and deleted it on the first "release" any worker sent; the main
//! thread's garbage collector then freed objects a worker was still using
//! (the *premature GC*). Here the engine is QuickJS (through `rquickjs`), its
//! collector runs as greedily as it can, and the engine itself is the
//! witness.
//!
//! * The **main thread** owns a QuickJS runtime. It creates JS objects of a
//!   class with methods (`getId`, `add`, `read`) and a **self-cycle**
//!   (`this.self = this`): QuickJS frees an acyclic object at its last
//!   decref, so the cycle makes every collection depend on the cycle
//!   collector, `Runtime::run_gc()`. Each object is kept from the collector
//!   by a `Persistent<Object<'static>>`, which is `!Send`, so the registry
//!   stores it as `fragile::Fragile<Persistent<_>>`. Main hands each object
//!   to one or two workers as [`Transfer`]s and then holds **no** reference
//!   of its own.
//! * **Workers** claim the transfers (as RAII [`Proxy`]s, raw handles or
//!   raw `u64` tokens), call methods by sending a request (handle + method)
//!   to main, take and give back extra references, pass objects on to each
//!   other, and finally drop them. Each worker also keeps a cache of
//!   [`Weak`](tether::Weak)s to the objects it passed on, and now and then
//!   re-finds one: a `Weak` that still upgrades gives the worker a new
//!   reference, and a request through it must find the object alive in the
//!   engine; `None` means every holder let go.
//! * Main runs a **full `run_gc()` before every request it serves** (the
//!   greedy GC) and otherwise sleeps in a blocking receive on its request
//!   channel. Finalizations queued by workers wake it through the notifier
//!   of DESIGN §8 ([`Registry::set_notify`] posts a `Wake` message to that
//!   same channel), so main also pumps the objects released while it
//!   sleeps.
//!
//! The witnesses come from the engine: every object has a JS `WeakRef` that
//! must still `deref()` when a request for it is served (after the GC), and a
//! `FinalizationRegistry` whose callbacks (run by `execute_pending_job()`)
//! must report every object, each only after tether finalized it, i.e.
//! after its last release. At the end the runtime's object count
//! (`memory_usage().obj_count`) must be back at its baseline.
//!
//! `--naive` runs the same workload over the design before per-thread counts:
//! a `HashMap<u64, Persistent<_>>` on main, one entry per object, deleted by
//! the first release any worker sends. It reports the requests that found
//! their object collected (the `WeakRef` no longer derefs after the GC: the
//! engine really collected it) and exits 1: the bug, reproduced.
//!
//! ## Drop order: the registry before the runtime
//!
//! Dropping a QuickJS `Runtime` while any `Persistent` of it is alive aborts
//! the process (`JS_FreeRuntime: Assertion 'list_empty(&rt->gc_obj_list)'`).
//! The registry owns `Persistent`s, so it must be emptied and dropped
//! (every clone, proxy and transfer: the workers' are gone with the workers;
//! a `Weak` keeps nothing alive) before the `Context` and the `Runtime`. A leaked object is therefore not silent: if
//! the registry still held one when the runtime went, the process would
//! abort. The example checks for leaks first, reports them, drops the
//! registry (its last clone drops what it still holds, here, on main) and
//! only then the engine.
//!
//! It prints a table and exits 1 if any check failed.
//!
//! ```text
//! cargo run --release --example quickjs_bridge             # 1 000 objects, tether
//! cargo run --release --example quickjs_bridge -- --naive  # the same over the naive table: exits 1
//! cargo run --release --example quickjs_bridge -- 10000    # a bigger run
//! ```

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use fragile::Fragile;
use rquickjs::function::This;
use rquickjs::{Context, Ctx, Function, Object, Persistent, Runtime};
use tether::{Handle, Proxy, Registry, Released, Transfer};

/// Objects main creates over the run (the first CLI argument overrides it).
const OBJECTS: u64 = 1_000;
/// Worker threads.
const WORKERS: usize = 4;
/// At most this many objects are alive at once (main stops creating).
const WINDOW: u64 = 64;
/// How many times an object is passed on from worker to worker.
const HOPS: u8 = 3;
/// A worker keeps at most this many objects before it passes one on.
const HOLD: usize = 6;
/// A worker remembers at most this many objects it passed on (as `Weak`s).
const REMEMBER: usize = 8;
/// Give up (and fail) if the run takes longer than this...
const DEADLINE: Duration = Duration::from_secs(60);
/// ...or if main hears nothing for this long while the workload is not
/// over (workers send requests every few microseconds while they hold
/// anything: a silence this long means the run is stuck).
const STALL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Counters. Relaxed is enough: they are read after the threads are joined.

static CREATED: AtomicU64 = AtomicU64::new(0);
static TRANSFERS_FROM_MAIN: AtomicU64 = AtomicU64::new(0);
static TRANSFERS_BETWEEN_WORKERS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static FAILED_REQUESTS: AtomicU64 = AtomicU64::new(0);
static GCS: AtomicU64 = AtomicU64::new(0);
static WAKEUPS: AtomicU64 = AtomicU64::new(0);
static RELEASE_MESSAGES: AtomicU64 = AtomicU64::new(0);
static FINALIZED: AtomicU64 = AtomicU64::new(0);
static COLLECTED: AtomicU64 = AtomicU64::new(0);
static PREMATURE: AtomicU64 = AtomicU64::new(0);
static WEAK_REFOUND: AtomicU64 = AtomicU64::new(0);
static WEAK_GONE: AtomicU64 = AtomicU64::new(0);
/// References workers hold or have in flight: the harness's own count, to
/// know when the workload is over (no worker holds anything).
static OUTSTANDING: AtomicU64 = AtomicU64::new(0);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

static MAIN_THREAD: OnceLock<ThreadId> = OnceLock::new();

fn on_main() -> bool {
    MAIN_THREAD.get() == Some(&thread::current().id())
}

/// Records a broken invariant (the first few are printed).
fn violation(what: impl std::fmt::Display) {
    if VIOLATIONS.fetch_add(1, Relaxed) < 10 {
        eprintln!(
            "INVARIANT BROKEN on {}: {what}",
            thread::current().name().unwrap_or("?")
        );
    }
}

// ---------------------------------------------------------------------------
// The engine: a QuickJS runtime and context, on main only.

/// The JS side (`examples/quickjs_setup.js`, shared with `tests/quickjs.rs`).
/// `__weak` maps an object's id to a `WeakRef` and `__registry` is a
/// `FinalizationRegistry` that records each collected id in `__collected`:
/// the engine's own witnesses.
const SETUP: &str = include_str!("quickjs_setup.js");

type JsObj = Persistent<Object<'static>>;

/// The runtime and its context. Field order is drop order: the context,
/// then the runtime.
struct Engine {
    ctx: Context,
    rt: Runtime,
}

/// A JS exception or an `rquickjs` error, as text.
fn js_error(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    if e.is_exception() {
        format!("JS exception: {:?}", ctx.catch())
    } else {
        e.to_string()
    }
}

impl Engine {
    fn new() -> Result<Self, String> {
        let rt = Runtime::new().map_err(|e| e.to_string())?;
        let ctx = Context::full(&rt).map_err(|e| e.to_string())?;
        let engine = Engine { ctx, rt };
        engine.with(|ctx| ctx.eval::<(), _>(SETUP))?;
        Ok(engine)
    }

    fn with<R>(
        &self,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> rquickjs::Result<R>,
    ) -> Result<R, String> {
        self.ctx.with(|ctx| f(&ctx).map_err(|e| js_error(&ctx, e)))
    }

    /// A new object (with its `WeakRef` and registration), kept alive by the
    /// returned `Persistent` alone.
    fn make(&self, id: u64) -> Result<JsObj, String> {
        self.with(|ctx| {
            let make: Function = ctx.globals().get("__make")?;
            let obj: Object = make.call((id as f64,))?;
            Ok(Persistent::save(ctx, obj))
        })
    }

    /// Calls `method` on the object.
    fn call(&self, obj: &JsObj, method: Method) -> Result<f64, String> {
        self.with(|ctx| {
            let obj = obj.clone().restore(ctx)?;
            let f: Function = obj.get(method.name())?;
            match method {
                Method::Add(n) => f.call((This(obj), f64::from(n))),
                Method::GetId | Method::Read => f.call((This(obj),)),
            }
        })
    }

    /// Whether the object's `WeakRef` still derefs: the engine has not
    /// collected it.
    fn alive(&self, id: u64) -> Result<bool, String> {
        self.with(|ctx| {
            ctx.globals()
                .get::<_, Function>("__alive")?
                .call((id as f64,))
        })
    }

    /// A full cycle collection, then the `FinalizationRegistry` callbacks it
    /// queued; returns the ids they reported.
    fn collect(&self) -> Result<Vec<u64>, String> {
        self.rt.run_gc();
        GCS.fetch_add(1, Relaxed);
        loop {
            match self.rt.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(format!("a pending job threw: {e}")),
            }
        }
        let ids: Vec<f64> = self.with(|ctx| {
            ctx.globals()
                .get::<_, Function>("__takeCollected")?
                .call(())
        })?;
        Ok(ids.into_iter().map(|id| id as u64).collect())
    }

    /// Drops the object's `WeakRef`.
    fn forget(&self, id: u64) -> Result<(), String> {
        self.with(|ctx| {
            ctx.globals()
                .get::<_, Function>("__forget")?
                .call((id as f64,))
        })
    }

    /// The end of the run: the ids whose `WeakRef` still derefs (objects
    /// the engine still has); then drops every `WeakRef`.
    fn settle(&self) -> Result<Vec<u64>, String> {
        let alive: Vec<f64> =
            self.with(|ctx| ctx.globals().get::<_, Function>("__settle")?.call(()))?;
        Ok(alive.into_iter().map(|id| id as u64).collect())
    }

    /// JS objects alive in the runtime (after a GC).
    fn objects(&self) -> i64 {
        self.rt.run_gc();
        self.rt.memory_usage().obj_count
    }

    /// Two objects through their whole life, every call the run makes on
    /// the way (`forget` of one, `settle` with the other's `WeakRef` still
    /// in the map): QuickJS creates a few objects lazily on first use
    /// (shapes, the job machinery, iterators), so the baseline is taken
    /// after this.
    fn warm_up(&self) -> Result<(), String> {
        let ids = [u64::from(u32::MAX), u64::from(u32::MAX) - 1];
        let mut held = true;
        for id in ids {
            let obj = self.make(id)?;
            for method in [Method::GetId, Method::Add(1), Method::Read] {
                self.call(&obj, method)?;
            }
            held &= self.alive(id)?;
        }
        let mut collected = self.collect()?;
        collected.sort_unstable();
        let gone = !self.alive(ids[0])? && !self.alive(ids[1])?;
        self.forget(ids[0])?;
        let alive = self.settle()?;
        if !held || collected != [ids[1], ids[0]] || !gone || !alive.is_empty() {
            return Err(format!(
                "warm-up objects not collected: {collected:?}, {alive:?}"
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The ledger: each object's life as main sees it.

const UNBORN: u8 = 0;
/// Created; held by the registry (tether) or the table (naive).
const LIVE: u8 = 1;
/// tether finalized it (or the naive table deleted it): the `Persistent`
/// was dropped, the engine may collect it.
const RELEASED: u8 = 2;
/// The engine's `FinalizationRegistry` reported it collected.
const COLLECTED_STATE: u8 = 3;

struct Ledger {
    states: Vec<AtomicU8>,
    released: AtomicU64,
}

impl Ledger {
    fn new(objects: u64) -> Arc<Self> {
        Arc::new(Ledger {
            states: (0..objects).map(|_| AtomicU8::new(UNBORN)).collect(),
            released: AtomicU64::new(0),
        })
    }

    fn get(&self, id: u64) -> u8 {
        self.states
            .get(id as usize)
            .map_or(UNBORN, |s| s.load(Relaxed))
    }

    fn set(&self, id: u64, state: u8) {
        if let Some(s) = self.states.get(id as usize) {
            s.store(state, Relaxed);
        }
    }

    /// Live → released: its `Persistent` was dropped.
    fn release(&self, id: u64) {
        if self.get(id) == LIVE {
            self.set(id, RELEASED);
            self.released.fetch_add(1, Relaxed);
        }
    }

    fn released(&self) -> u64 {
        self.released.load(Relaxed)
    }
}

/// What the registry stores: `Send + Sync` thanks to `Fragile`, which lets
/// only main reach, or drop, the `Persistent`.
struct JsObject {
    id: u64,
    obj: Fragile<JsObj>,
    ledger: Arc<Ledger>,
}

impl Drop for JsObject {
    fn drop(&mut self) {
        // Runs before the `Fragile` field is dropped: recorded even if this
        // ran on the wrong thread (where the `Fragile` then panics).
        if on_main() {
            FINALIZED.fetch_add(1, Relaxed);
            self.ledger.release(self.id);
        } else {
            violation(format!("object {} finalized off the main thread", self.id));
        }
    }
}

// ---------------------------------------------------------------------------
// Messages.

/// One reference in flight. `Naive` is the naive design's: the parcel's
/// bare id, which carries no reference and which nothing counts.
enum Link {
    Typed(Transfer<JsObject>),
    Raw(u64),
    Naive,
}

struct Parcel {
    id: u64,
    link: Link,
    hops: u8,
}

enum ToWorker {
    Parcel(Parcel),
    Shutdown,
}

#[derive(Clone, Copy)]
enum Method {
    GetId,
    Add(u32),
    Read,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::GetId => "getId",
            Method::Add(_) => "add",
            Method::Read => "read",
        }
    }
}

/// "Call `method` on the object behind `handle`" (tether), or on object `id`
/// (naive: `handle` is `None`).
struct Request {
    from: usize,
    id: u64,
    handle: Option<Handle>,
    method: Method,
}

enum ToMain {
    Call(Request),
    /// Naive only: a worker let go of object `id`.
    Release(u64),
    /// tether's notifier: values were queued for main while it slept.
    Wake,
}

type Reply = Result<f64, String>;

/// A tiny deterministic PRNG (xorshift64), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ---------------------------------------------------------------------------
// Main.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tether,
    Naive,
}

fn parse_args() -> Option<(Mode, u64)> {
    let (mut mode, mut objects) = (Mode::Tether, OBJECTS);
    for arg in std::env::args().skip(1) {
        if arg == "--naive" {
            mode = Mode::Naive;
        } else {
            objects = arg
                .parse()
                .ok()
                .filter(|&n| n > 0 && n < u64::from(u32::MAX))?;
        }
    }
    Some((mode, objects))
}

fn main() -> ExitCode {
    let Some((mode, objects)) = parse_args() else {
        eprintln!("usage: quickjs_bridge [OBJECTS] [--naive]   (default {OBJECTS} objects)");
        return ExitCode::from(2);
    };
    MAIN_THREAD.set(thread::current().id()).expect("set once");
    let engine = match Engine::new().and_then(|e| e.warm_up().map(|()| e)) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot start QuickJS: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let baseline = engine.objects();
    let end_objects = run(&engine, mode, objects);
    // The engine goes last: `run` dropped the registry (and the naive
    // table) with every `Persistent` they held.
    drop(engine);
    report(mode, objects, baseline, end_objects, start)
}

/// The home's side of the two designs.
enum Home {
    /// tether: the registry holds the objects; main holds no reference.
    Tether(Registry<JsObject>),
    /// The naive table: one entry per object, deleted by the first release
    /// any worker sends.
    Naive(HashMap<u64, JsObj>),
}

/// Runs the workload; returns the runtime's object count at the end (after
/// the registry or table is gone and a last GC).
fn run(engine: &Engine, mode: Mode, objects: u64) -> i64 {
    let start = Instant::now();
    let ledger = Ledger::new(objects);
    let reg: Registry<JsObject> = Registry::new();
    let (to_main, requests) = mpsc::channel::<ToMain>();
    if mode == Mode::Tether {
        let wake = to_main.clone();
        reg.set_notify(move || {
            let _ = wake.send(ToMain::Wake);
        })
        .expect("set_notify on main");
    }
    let (inboxes, inbox_rxs): (Vec<Sender<ToWorker>>, Vec<_>) =
        (0..WORKERS).map(|_| mpsc::channel()).unzip();
    let mut reply_txs = Vec::new();
    let mut workers = Vec::new();
    for (index, inbox) in inbox_rxs.into_iter().enumerate() {
        let (reply_tx, replies) = mpsc::channel();
        reply_txs.push(reply_tx);
        let (reg, peers, to_main) = (reg.clone(), inboxes.clone(), to_main.clone());
        let spawned = thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                Worker {
                    index,
                    reg,
                    inbox,
                    peers,
                    to_main,
                    replies,
                    held: VecDeque::new(),
                    passed: VecDeque::new(),
                    rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1)),
                }
                .run()
            })
            .expect("spawn a worker thread");
        workers.push(spawned);
    }
    drop(to_main);

    let mut home = match mode {
        Mode::Tether => Home::Tether(reg),
        Mode::Naive => {
            drop(reg);
            Home::Naive(HashMap::new())
        }
    };
    let mut next_id = 0;
    loop {
        if let Home::Tether(reg) = &home {
            reg.pump();
        }
        // Create objects while under the window (after the pump: what it
        // released makes room).
        while next_id < objects && next_id - ledger.released() < WINDOW {
            create(engine, &mut home, &ledger, next_id, &inboxes);
            next_id += 1;
        }
        let released_count = ledger.released();
        let done = next_id == objects
            && OUTSTANDING.load(Relaxed) == 0
            && match &home {
                Home::Tether(_) => released_count == next_id,
                Home::Naive(table) => table.is_empty(),
            };
        if done {
            break;
        }
        if let Home::Tether(reg) = &home {
            if reg.has_pending() {
                continue; // never sleep with work queued
            }
        }
        let stuck = |why: &str| {
            violation(format!(
                "gave up ({why}): {released_count} of {next_id} objects released, \
                 {} references outstanding",
                OUTSTANDING.load(Relaxed)
            ));
        };
        let Some(left) = DEADLINE.checked_sub(start.elapsed()) else {
            stuck(&format!("the run took {DEADLINE:?}"));
            break;
        };
        // Sleep until a request, a naive release or tether's wake-up.
        match requests.recv_timeout(left.min(STALL)) {
            Ok(message) => handle(engine, &mut home, &ledger, message, &reply_txs),
            Err(RecvTimeoutError::Timeout) => {
                stuck(&format!("nothing arrived for {STALL:?}"));
                break;
            }
            Err(RecvTimeoutError::Disconnected) => {
                violation("every worker hung up early");
                break;
            }
        }
    }

    // No worker holds anything: stop them. (After a failure, hanging up
    // also wakes a worker that still waits for a reply.)
    drop(reply_txs);
    for inbox in &inboxes {
        let _ = inbox.send(ToWorker::Shutdown);
    }
    for worker in workers {
        if worker.join().is_err() {
            violation("a worker thread panicked");
        }
    }
    // Late messages: naive releases, wake-ups.
    while let Ok(message) = requests.try_recv() {
        handle(engine, &mut home, &ledger, message, &[]);
    }

    // Leaks: what is still held. Checked, then dropped (the registry before
    // the runtime, see the module docs).
    match home {
        Home::Tether(reg) => {
            reg.clear_notify();
            if let Err(report) = reg.shutdown(Duration::from_secs(2)) {
                violation(format!("leaked: {report}"));
            }
            let snapshot = reg.snapshot();
            if snapshot.drop_panics != 0 {
                violation(format!("{} drops panicked", snapshot.drop_panics));
            }
            // The last clone: anything still held is dropped here, on main.
            drop(reg);
        }
        Home::Naive(table) => {
            if !table.is_empty() {
                violation(format!("{} table entries left", table.len()));
            }
            drop(table);
            (0..objects).for_each(|id| ledger.release(id));
        }
    }
    // The engine's last word: everything is collected, reported once, and
    // the runtime is back at its baseline.
    collect(engine, &ledger, mode == Mode::Tether);
    for id in 0..objects {
        if ledger.get(id) != COLLECTED_STATE {
            violation(format!("object {id} was never collected (leak)"));
        }
    }
    match engine.settle() {
        Ok(alive) if alive.is_empty() => {}
        other => violation(format!(
            "objects the engine still has at the end: {other:?}"
        )),
    }
    engine.objects()
}

/// Serves one message on main.
fn handle(
    engine: &Engine,
    home: &mut Home,
    ledger: &Ledger,
    message: ToMain,
    reply_txs: &[Sender<Reply>],
) {
    match message {
        ToMain::Wake => {
            WAKEUPS.fetch_add(1, Relaxed);
        }
        ToMain::Release(id) => {
            RELEASE_MESSAGES.fetch_add(1, Relaxed);
            if let Home::Naive(table) = home {
                // The naive design: the first release deletes the entry,
                // whoever else still uses the object.
                if table.remove(&id).is_some() {
                    ledger.release(id);
                }
            }
        }
        ToMain::Call(request) => {
            // The greedy GC: a full collection before every request.
            collect(engine, ledger, matches!(home, Home::Tether(_)));
            let reply = serve(engine, home, ledger, &request);
            REQUESTS.fetch_add(1, Relaxed);
            if let Some(tx) = reply_txs.get(request.from) {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Runs the GC and checks what the engine reports collected: only objects
/// whose `Persistent` was dropped (released), each once, its `WeakRef`
/// cleared.
///
/// With `forget`, the `WeakRef` of each object found collected is dropped
/// once checked: the GC before each request then stays as cheap as the
/// live objects make it (tether: a request for a collected object would
/// fail at `reg.get` with `Stale` first). The naive run keeps them: the
/// requests that still come for collected objects are checked against
/// them.
fn collect(engine: &Engine, ledger: &Ledger, forget: bool) {
    let ids = match engine.collect() {
        Ok(ids) => ids,
        Err(e) => return violation(format!("GC: {e}")),
    };
    for id in ids {
        match ledger.get(id) {
            RELEASED => {
                ledger.set(id, COLLECTED_STATE);
                COLLECTED.fetch_add(1, Relaxed);
            }
            LIVE => {
                PREMATURE.fetch_add(1, Relaxed);
                violation(format!(
                    "the engine collected object {id} while it was held"
                ));
            }
            state => violation(format!("object {id} reported collected in state {state}")),
        }
        match engine.alive(id) {
            Ok(false) => {}
            other => violation(format!(
                "object {id} collected but its WeakRef derefs: {other:?}"
            )),
        }
        if forget {
            if let Err(e) = engine.forget(id) {
                violation(e);
            }
        }
    }
}

/// Main serves a worker's request: resolve the object, check the engine
/// still has it, call the method. Every failure is a violation (in the
/// naive design, the expected one).
fn serve(engine: &Engine, home: &Home, ledger: &Ledger, request: &Request) -> Reply {
    let id = request.id;
    let result = resolve_and_call(engine, home, ledger, request);
    match &result {
        Ok(v) if matches!(request.method, Method::GetId) && *v != id as f64 => {
            violation(format!("object {id}'s getId() returned {v}"));
        }
        Ok(_) => {}
        Err(e) => {
            FAILED_REQUESTS.fetch_add(1, Relaxed);
            violation(format!(
                "request {}() on object {id} from worker {}: {e}",
                request.method.name(),
                request.from
            ));
        }
    }
    result
}

fn resolve_and_call(engine: &Engine, home: &Home, ledger: &Ledger, request: &Request) -> Reply {
    let id = request.id;
    match (home, request.handle) {
        (Home::Tether(reg), Some(handle)) => {
            // Main is the objects' home: it may resolve a handle only
            // workers hold.
            let object = reg.get(handle).map_err(|e| format!("{handle}: {e}"))?;
            if object.id != id {
                return Err(format!("{handle} is object {}", object.id));
            }
            witness(engine, ledger, id)?;
            engine.call(object.obj.get(), request.method)
        }
        (Home::Naive(table), None) => match table.get(&id) {
            Some(obj) => {
                witness(engine, ledger, id)?;
                engine.call(obj, request.method)
            }
            // The entry is gone although this worker still uses the
            // object. Did the engine really collect it?
            None => match engine.alive(id)? {
                false => {
                    PREMATURE.fetch_add(1, Relaxed);
                    Err("collected by the engine (its WeakRef derefs to undefined) \
                         while this worker still uses it"
                        .to_owned())
                }
                true => Err("its table entry is gone (not collected yet)".to_owned()),
            },
        },
        _ => Err("a request of the other design".to_owned()),
    }
}

/// The engine's witness for a held object: its `WeakRef` still derefs.
fn witness(engine: &Engine, ledger: &Ledger, id: u64) -> Result<(), String> {
    match engine.alive(id) {
        Ok(true) if ledger.get(id) == LIVE => Ok(()),
        Ok(alive) => {
            PREMATURE.fetch_add(1, Relaxed);
            Err(format!(
                "object {id} is held but collected (WeakRef derefs: {alive}, state {})",
                ledger.get(id)
            ))
        }
        Err(e) => Err(e),
    }
}

/// Creates object `id` and hands it to one or two workers; main keeps no
/// reference to it.
fn create(
    engine: &Engine,
    home: &mut Home,
    ledger: &Arc<Ledger>,
    id: u64,
    inboxes: &[Sender<ToWorker>],
) {
    let obj = match engine.make(id) {
        Ok(obj) => obj,
        Err(e) => return violation(format!("make object {id}: {e}")),
    };
    ledger.set(id, LIVE);
    CREATED.fetch_add(1, Relaxed);
    let fan_out = 1 + (id % 2) as usize;
    let links: Vec<Link> = match home {
        Home::Naive(table) => {
            table.insert(id, obj);
            (0..fan_out).map(|_| Link::Naive).collect()
        }
        Home::Tether(reg) => {
            let object = JsObject {
                id,
                obj: Fragile::new(obj),
                ledger: Arc::clone(ledger),
            };
            let mut transfers = Vec::with_capacity(fan_out);
            if id % 2 == 0 {
                // The explicit layer: one count per retain, then each moved
                // into a transfer.
                let Ok(handle) = reg.insert(object) else {
                    return violation(format!("insert object {id}"));
                };
                for _ in 1..fan_out {
                    if let Err(e) = reg.retain(handle) {
                        violation(format!("retain {handle}: {e}"));
                    }
                }
                for _ in 0..fan_out {
                    match reg.transfer(handle) {
                        Ok(t) => transfers.push(t),
                        Err(e) => violation(format!("transfer {handle}: {e}")),
                    }
                }
                if reg.count(handle) != Ok(0) {
                    violation(format!("main still counts {handle} after handing it out"));
                }
            } else {
                // The RAII layer: a proxy, cloned once per extra recipient.
                let Ok(proxy) = reg.insert_proxy(object) else {
                    return violation(format!("insert_proxy object {id}"));
                };
                for _ in 1..fan_out {
                    transfers.push(proxy.clone().transfer());
                }
                transfers.push(proxy.transfer());
            }
            transfers
                .into_iter()
                .map(|t| {
                    if id % 3 == 0 {
                        Link::Raw(t.into_raw())
                    } else {
                        Link::Typed(t)
                    }
                })
                .collect()
        }
    };
    for (k, link) in links.into_iter().enumerate() {
        OUTSTANDING.fetch_add(1, Relaxed);
        TRANSFERS_FROM_MAIN.fetch_add(1, Relaxed);
        let to = (id as usize + k) % WORKERS;
        let parcel = Parcel {
            id,
            link,
            hops: HOPS,
        };
        if inboxes[to].send(ToWorker::Parcel(parcel)).is_err() {
            violation(format!("worker {to} is gone"));
        }
    }
}

/// Prints the table and turns the verdict into the exit status.
fn report(mode: Mode, objects: u64, baseline: i64, end_objects: i64, start: Instant) -> ExitCode {
    let created = CREATED.load(Relaxed);
    let collected = COLLECTED.load(Relaxed);
    if end_objects != baseline {
        violation(format!(
            "the runtime holds {end_objects} JS objects at the end, {baseline} at the start"
        ));
    }
    let leaks = created.saturating_sub(collected);
    let design = match mode {
        Mode::Tether => "tether (per-thread counts)",
        Mode::Naive => "naive (one entry per object, deleted by the first release)",
    };
    let n = |c: &AtomicU64| c.load(Relaxed).to_string();
    let rows: Vec<(&str, String)> = vec![
        ("objects created", created.to_string()),
        ("transfers main -> worker", n(&TRANSFERS_FROM_MAIN)),
        ("transfers worker -> worker", n(&TRANSFERS_BETWEEN_WORKERS)),
        ("requests served by main", n(&REQUESTS)),
        ("  of which failed", n(&FAILED_REQUESTS)),
        ("full GCs (run_gc)", n(&GCS)),
        ("wake-ups by the notifier", n(&WAKEUPS)),
        ("release messages (naive)", n(&RELEASE_MESSAGES)),
        ("finalized by tether on main", n(&FINALIZED)),
        ("collected (FinalizationRegistry)", collected.to_string()),
        ("Weak re-found alive by a worker", n(&WEAK_REFOUND)),
        ("Weak gone (upgrade: None)", n(&WEAK_GONE)),
        ("premature collections", n(&PREMATURE)),
        ("leaks", leaks.to_string()),
        (
            "JS objects: baseline -> end",
            format!("{baseline} -> {end_objects}"),
        ),
        ("invariant violations", n(&VIOLATIONS)),
        (
            "wall time",
            format!("{:.2} s", start.elapsed().as_secs_f64()),
        ),
    ];
    println!(
        "quickjs bridge: 1 main thread (QuickJS), {WORKERS} workers, {objects} objects, {design}"
    );
    for (name, value) in rows {
        println!("  {name:<34} {value:>14}");
    }
    if VIOLATIONS.load(Relaxed) == 0 {
        println!(
            "ok: no premature collection, no leak, every object collected after its last release"
        );
        ExitCode::SUCCESS
    } else if mode == Mode::Naive {
        println!(
            "FAILED: {} requests found their object collected by the engine (the premature GC)",
            PREMATURE.load(Relaxed)
        );
        ExitCode::FAILURE
    } else {
        println!("FAILED: invariants were broken (see stderr)");
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------------------
// Workers: claim, call, retain, hold, pass on, re-find, drop.

/// One reference a worker holds. `Naive` holds nothing: the id alone.
enum Held {
    Proxy(Proxy<JsObject>),
    Raw(Handle),
    Naive,
}

struct Item {
    id: u64,
    held: Held,
    hops: u8,
}

struct Worker {
    index: usize,
    reg: Registry<JsObject>,
    inbox: Receiver<ToWorker>,
    peers: Vec<Sender<ToWorker>>,
    to_main: Sender<ToMain>,
    replies: Receiver<Reply>,
    held: VecDeque<Item>,
    /// The worker's proxy cache: objects it passed on, as `Weak`s (tether
    /// only; the naive design has nothing to upgrade).
    passed: VecDeque<(u64, tether::Weak<JsObject>)>,
    rng: Rng,
}

impl Worker {
    fn run(mut self) {
        loop {
            let message = if self.held.is_empty() {
                match self.inbox.recv() {
                    Ok(message) => message,
                    Err(_) => break,
                }
            } else {
                match self.inbox.try_recv() {
                    Ok(message) => message,
                    // Nothing new: move the oldest object along.
                    Err(TryRecvError::Empty) => {
                        self.finish_oldest();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            };
            match message {
                ToWorker::Parcel(parcel) => self.arrive(parcel),
                ToWorker::Shutdown => break,
            }
            while self.held.len() > HOLD {
                self.finish_oldest();
            }
        }
        if !self.held.is_empty() {
            violation(format!(
                "shut down still holding {} objects",
                self.held.len()
            ));
        }
    }

    fn handle_of(held: &Held) -> Option<Handle> {
        match held {
            Held::Proxy(proxy) => Some(proxy.handle()),
            Held::Raw(handle) => Some(*handle),
            Held::Naive => None,
        }
    }

    /// A reference arrives: claim it, call methods on the object through
    /// main, take and give back an extra reference around one call, keep it.
    fn arrive(&mut self, parcel: Parcel) {
        let id = parcel.id;
        let claimed = match parcel.link {
            Link::Typed(t) if self.rng.below(2) == 0 => t.claim().map(Held::Proxy),
            Link::Typed(t) => self.reg.claim(t).map(Held::Raw),
            Link::Raw(raw) => self.reg.claim_raw(raw).map(Held::Raw),
            Link::Naive => Ok(Held::Naive),
        };
        let held = match claimed {
            Ok(held) => held,
            Err(e) => {
                OUTSTANDING.fetch_sub(1, Relaxed);
                return violation(format!("claim object {id}: {e}"));
            }
        };
        self.call(Self::handle_of(&held), id, Method::GetId);
        match &held {
            Held::Proxy(proxy) => {
                let extra = proxy.clone();
                self.call(Some(extra.handle()), id, Method::Add(1));
                drop(extra);
            }
            Held::Raw(handle) => {
                let handle = *handle;
                if let Err(e) = self.reg.retain(handle) {
                    violation(format!("retain {handle}: {e}"));
                }
                self.call(Some(handle), id, Method::Add(1));
                match self.reg.release(handle) {
                    Ok(Released::Held(n)) if n >= 1 => {}
                    other => violation(format!("release of an extra ref of {handle}: {other:?}")),
                }
            }
            Held::Naive => {
                // The same extra reference in the naive design: nothing
                // counts it, and letting go of it sends the release that
                // deletes the entry while this worker still holds the id.
                self.call(None, id, Method::Add(1));
                self.send_main(ToMain::Release(id));
            }
        }
        self.held.push_back(Item {
            id,
            held,
            hops: parcel.hops,
        });
    }

    /// The oldest object has sat here while main collected greedily: it
    /// must still be alive. Pass it on to another worker, or drop it.
    fn finish_oldest(&mut self) {
        let Some(item) = self.held.pop_front() else {
            return;
        };
        self.call(Self::handle_of(&item.held), item.id, Method::Read);
        if item.hops == 0 {
            OUTSTANDING.fetch_sub(1, Relaxed);
            match item.held {
                Held::Proxy(proxy) => drop(proxy),
                Held::Raw(handle) => match self.reg.release(handle) {
                    Ok(Released::Held(_) | Released::Queued) => {}
                    Ok(Released::Finalized) => {
                        violation(format!("{handle} finalized on a worker, main is alive"));
                    }
                    Err(e) => violation(format!("release {handle}: {e}")),
                },
                Held::Naive => self.send_main(ToMain::Release(item.id)),
            }
            return;
        }
        // Sometimes share with a second worker too (that copy stops there).
        if item.hops == HOPS && self.rng.below(4) == 0 {
            let second = match &item.held {
                Held::Proxy(proxy) => Some(Link::Typed(proxy.clone().transfer())),
                Held::Raw(handle) => match self
                    .reg
                    .retain(*handle)
                    .and_then(|_| self.reg.transfer(*handle))
                {
                    Ok(t) => Some(Link::Typed(t)),
                    Err(e) => {
                        violation(format!("share {handle}: {e}"));
                        None
                    }
                },
                Held::Naive => Some(Link::Naive),
            };
            if let Some(link) = second {
                OUTSTANDING.fetch_add(1, Relaxed);
                self.send_to_peer(item.id, link, 0);
            }
        }
        // Pass it on, remembering it weakly.
        let link = match item.held {
            Held::Proxy(proxy) => {
                self.remember(item.id, proxy.downgrade());
                Some(Link::Typed(proxy.transfer()))
            }
            Held::Raw(handle) => {
                match self.reg.downgrade(handle) {
                    Ok(weak) => self.remember(item.id, weak),
                    Err(e) => violation(format!("downgrade {handle}: {e}")),
                }
                match self.reg.transfer(handle) {
                    Ok(t) if self.rng.below(3) == 0 => Some(Link::Raw(t.into_raw())),
                    Ok(t) => Some(Link::Typed(t)),
                    Err(e) => {
                        violation(format!("transfer {handle}: {e}"));
                        None
                    }
                }
            }
            Held::Naive => Some(Link::Naive),
        };
        match link {
            Some(link) => self.send_to_peer(item.id, link, item.hops - 1),
            None => {
                OUTSTANDING.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Caches a `Weak` to an object this worker passes on; when the cache
    /// is full, re-finds the one passed on longest ago and forgets it.
    fn remember(&mut self, id: u64, weak: tether::Weak<JsObject>) {
        self.passed.push_back((id, weak));
        if self.passed.len() > REMEMBER {
            if let Some((id, weak)) = self.passed.pop_front() {
                self.refind(id, &weak);
            }
        }
    }

    /// If the `Weak` upgrades, this worker holds the object again, and main
    /// must find it alive in the engine; `None` means every holder let go
    /// (it is finalized or queued to main, and never handed out again).
    fn refind(&mut self, id: u64, weak: &tether::Weak<JsObject>) {
        match weak.upgrade() {
            Some(proxy) => {
                WEAK_REFOUND.fetch_add(1, Relaxed);
                if proxy.id != id {
                    violation(format!(
                        "a Weak of object {id} upgraded to object {}",
                        proxy.id
                    ));
                }
                self.call(Some(proxy.handle()), id, Method::GetId);
                // Dropping it may be the last release: queued to main.
            }
            None => {
                WEAK_GONE.fetch_add(1, Relaxed);
            }
        }
    }

    fn send_to_peer(&mut self, id: u64, link: Link, hops: u8) {
        let to = (self.index + 1 + self.rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
        TRANSFERS_BETWEEN_WORKERS.fetch_add(1, Relaxed);
        if self.peers[to]
            .send(ToWorker::Parcel(Parcel { id, link, hops }))
            .is_err()
        {
            violation(format!("worker {to} is gone"));
        }
    }

    fn send_main(&self, message: ToMain) {
        if self.to_main.send(message).is_err() {
            violation("main hung up");
        }
    }

    /// Calls `method` on object `id` through main and waits for the answer.
    /// Main records what went wrong; here a failure is only counted.
    fn call(&self, handle: Option<Handle>, id: u64, method: Method) {
        let request = Request {
            from: self.index,
            id,
            handle,
            method,
        };
        self.send_main(ToMain::Call(request));
        if self.replies.recv().is_err() {
            violation("main hung up");
        }
    }
}
