//! # `bridge`: a main thread and four workers sharing thread-bound objects
//!
//! This is the situation tether exists for: a runtime bridge (a JS main thread
//! and a Python worker, an interpreter and a thread pool) where objects live
//! on one thread and *proxies* to them travel to other threads.
//!
//! * The **main thread** owns thread-bound objects: each is an
//!   `Rc<RefCell<Counter>>` (not `Send`, like an interpreter object), stored in
//!   the registry as [`fragile::Fragile`], so it can only be touched, and only
//!   be dropped, on main. Main runs an event loop: it creates objects, hands
//!   each one to one or two workers as a [`Transfer`] (and then holds **no**
//!   reference to it itself), serves the workers' requests, and calls
//!   [`Registry::pump`] on every single iteration: the "greedy GC" that made
//!   PyScript free proxies a worker was still using.
//! * **Four workers** claim the transfers, some as RAII [`Proxy`]s, some as raw
//!   handles, some from raw `u64` tokens as an FFI layer would. They call
//!   methods on the objects by sending a request (handle + operation) back to
//!   main, which resolves the handle with [`Registry::get`] (main is the
//!   objects' home thread, so it may, even with a count of zero) and mutates
//!   the counter through the `Fragile`. Workers retain and release extra
//!   references, hold objects for a while, pass them on to each other (worker
//!   to worker transfers), and finally drop them.
//!
//! What it checks, and exits with status 1 if any check failed:
//!
//! * no request for a handle a worker holds ever fails: no `Err(Stale)`,
//!   however greedily main pumps (no premature release);
//! * every object is finalized exactly once, and on main (the last release
//!   happens on a worker; the value is queued to main and dropped there);
//! * at the end no object is live (`reg.len() == 0`), nothing is pending, every
//!   created object was finalized, and no `Drop` panicked.
//!
//! ```text
//! cargo run --release --example bridge            # 10 000 objects
//! cargo run --release --example bridge -- 100000  # a bigger run
//! cargo run --release --example bridge -- 2000 --report=100   # print the leak report after 100 objects
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::OnceLock;
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use fragile::Fragile;
use tether::{Error, Handle, Proxy, Registry, Released, Transfer};

/// Objects main creates over the run (the first CLI argument overrides it).
const OBJECTS: u64 = 10_000;
/// Worker threads.
const WORKERS: usize = 4;
/// At most this many objects are alive at once (main stops creating).
const WINDOW: u64 = 256;
/// How many times an object is passed on from worker to worker.
const HOPS: u8 = 3;
/// A worker keeps at most this many objects before it passes one on.
const HOLD: usize = 8;
/// Give up (and fail) if the run takes longer than this.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Counters. Relaxed is enough: they are read after the threads are joined.

static CREATED: AtomicU64 = AtomicU64::new(0);
static TRANSFERS_FROM_MAIN: AtomicU64 = AtomicU64::new(0);
static TRANSFERS_BETWEEN_WORKERS: AtomicU64 = AtomicU64::new(0);
static RAW_TOKENS: AtomicU64 = AtomicU64::new(0);
static CLAIMS: AtomicU64 = AtomicU64::new(0);
static RETAINS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static PUMP_CALLS: AtomicU64 = AtomicU64::new(0);
static PUMPED: AtomicU64 = AtomicU64::new(0);
static FINALIZED_ON_MAIN: AtomicU64 = AtomicU64::new(0);
static FINALIZED_ELSEWHERE: AtomicU64 = AtomicU64::new(0);
static COUNTERS_FREED: AtomicU64 = AtomicU64::new(0);
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

/// `Some(value)`, or records a violation and `None`.
fn check<T>(result: Result<T, Error>, what: impl std::fmt::Display) -> Option<T> {
    result.map_err(|e| violation(format!("{what}: {e}"))).ok()
}

// ---------------------------------------------------------------------------
// The objects.

/// The thread-bound part: lives in an `Rc<RefCell<_>>`, so it is neither
/// `Send` nor `Sync`.
#[derive(Default)]
struct Counter {
    value: u64,
    calls: u64,
}

impl Drop for Counter {
    fn drop(&mut self) {
        COUNTERS_FREED.fetch_add(1, Relaxed);
    }
}

/// What the registry stores: `Send + Sync` thanks to `Fragile`, which lets
/// only the creating thread (main) reach, or drop, the `Rc`.
struct Object {
    id: u64,
    counter: Fragile<Rc<RefCell<Counter>>>,
}

impl Drop for Object {
    fn drop(&mut self) {
        // Runs before the `Fragile` field is dropped, so this is recorded
        // even if the finalization happened on the wrong thread (where the
        // `Fragile` would then panic).
        if on_main() {
            FINALIZED_ON_MAIN.fetch_add(1, Relaxed);
        } else {
            FINALIZED_ELSEWHERE.fetch_add(1, Relaxed);
            violation(format!("object {} finalized off the main thread", self.id));
        }
    }
}

// ---------------------------------------------------------------------------
// Messages.

/// One reference in flight: typed, or as the raw `u64` an FFI layer would
/// carry (a JS number, a Python int).
enum Token {
    Typed(Transfer<Object>),
    Raw(u64),
}

struct Parcel {
    id: u64,
    token: Token,
    hops: u8,
}

enum ToWorker {
    Parcel(Parcel),
    Shutdown,
}

enum Op {
    Add(u64),
    Read,
}

/// "Call method `op` on the object behind `handle`", sent to main.
struct Request {
    from: usize,
    id: u64,
    handle: Handle,
    op: Op,
}

type Reply = Result<u64, Error>;

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
// Main thread: create, serve, pump.

/// Command line: `bridge [OBJECTS] [--report[=N]]`.
struct Args {
    objects: u64,
    /// Print the leak report once this many objects have been created.
    report_at: Option<u64>,
}

fn parse_args() -> Option<Args> {
    let mut args = Args {
        objects: OBJECTS,
        report_at: None,
    };
    let mut report = None;
    for arg in std::env::args().skip(1) {
        if arg == "--report" {
            report = Some(None);
        } else if let Some(n) = arg.strip_prefix("--report=") {
            report = Some(Some(n.parse().ok()?));
        } else {
            args.objects = arg.parse().ok()?;
        }
    }
    args.report_at = report.map(|at: Option<u64>| at.unwrap_or(args.objects / 2));
    Some(args)
}

fn main() -> ExitCode {
    let Some(Args { objects, report_at }) = parse_args() else {
        eprintln!(
            "usage: bridge [OBJECTS] [--report[=N]]   (default {OBJECTS} objects; \
             --report prints the leak report after N objects are created, default half)"
        );
        return ExitCode::from(2);
    };
    let start = Instant::now();
    MAIN_THREAD.set(thread::current().id()).unwrap();

    // Ages are recorded only when a report was asked for (a clock read per insert).
    let reg: Registry<Object> = Registry::builder().track_ages(report_at.is_some()).build();
    let (request_tx, request_rx) = mpsc::channel::<Request>();
    let (inboxes, inbox_rxs): (Vec<Sender<ToWorker>>, Vec<_>) =
        (0..WORKERS).map(|_| mpsc::channel()).unzip();
    let mut reply_txs = Vec::new();
    let mut workers = Vec::new();
    for (index, inbox) in inbox_rxs.into_iter().enumerate() {
        let (reply_tx, replies) = mpsc::channel();
        reply_txs.push(reply_tx);
        let (reg, peers, requests) = (reg.clone(), inboxes.clone(), request_tx.clone());
        let spawned = thread::Builder::new()
            .name(format!("worker-{index}"))
            // The worker is built on its own thread: the proxies it will hold
            // are `!Send`.
            .spawn(move || {
                Worker {
                    index,
                    reg,
                    inbox,
                    peers,
                    requests,
                    replies,
                    held: VecDeque::new(),
                    rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1)),
                }
                .run()
            })
            .expect("spawn a worker thread");
        workers.push(spawned);
    }
    drop(request_tx);
    let worker_threads: Vec<ThreadId> = workers.iter().map(|w| w.thread().id()).collect();

    // The event loop.
    let finalized = || FINALIZED_ON_MAIN.load(Relaxed) + FINALIZED_ELSEWHERE.load(Relaxed);
    let mut next_id = 0;
    loop {
        let mut busy = false;
        // Create a few objects while under the window.
        for _ in 0..16 {
            if next_id == objects || next_id - finalized() >= WINDOW {
                break;
            }
            create_and_hand_out(&reg, next_id, &inboxes);
            next_id += 1;
            busy = true;
            if report_at == Some(next_id) {
                // Who holds what, right now, while the workers run.
                println!(
                    "leak report after {next_id} objects created:\n{}",
                    reg.leak_report()
                );
            }
        }
        // Serve every request that is waiting.
        while let Ok(request) = request_rx.try_recv() {
            serve(&reg, request, &reply_txs, &worker_threads);
            busy = true;
        }
        // Greedy GC: finalize whatever the workers let go of, every time.
        PUMPED.fetch_add(reg.pump() as u64, Relaxed);
        PUMP_CALLS.fetch_add(1, Relaxed);

        if next_id == objects && finalized() >= objects {
            break;
        }
        if start.elapsed() > DEADLINE {
            violation(format!(
                "gave up after {DEADLINE:?}: {} of {objects} objects finalized, {} live",
                finalized(),
                reg.len()
            ));
            break;
        }
        if !busy {
            if workers.iter().any(|w| w.is_finished()) {
                violation("a worker thread stopped early");
                break;
            }
            thread::yield_now();
        }
    }

    // Every object is gone, so no worker holds anything: stop them. (After a
    // failure, hanging up also wakes a worker that still waits for a reply.)
    drop(request_rx);
    drop(reply_txs);
    for inbox in &inboxes {
        let _ = inbox.send(ToWorker::Shutdown);
    }
    for worker in workers {
        if worker.join().is_err() {
            violation("a worker thread panicked");
        }
    }
    PUMPED.fetch_add(reg.pump() as u64, Relaxed);

    report(&reg, objects, start)
}

/// Checks the end state, prints the table, and turns the verdict into the
/// exit status.
fn report(reg: &Registry<Object>, objects: u64, start: Instant) -> ExitCode {
    let snapshot = reg.snapshot();
    let live = reg.len() as u64;
    let created = CREATED.load(Relaxed);
    let on_main = FINALIZED_ON_MAIN.load(Relaxed);
    let elsewhere = FINALIZED_ELSEWHERE.load(Relaxed);
    if live != 0 || snapshot.pending() != 0 {
        violation(format!(
            "{live} objects still live, {} pending at the end",
            snapshot.pending()
        ));
    }
    if on_main + elsewhere != created || COUNTERS_FREED.load(Relaxed) != created {
        violation(format!(
            "{created} created but {} finalized and {} counters freed",
            on_main + elsewhere,
            COUNTERS_FREED.load(Relaxed)
        ));
    }
    if snapshot.drop_panics != 0 {
        violation(format!("{} drops panicked", snapshot.drop_panics));
    }
    let elapsed = start.elapsed();

    let rows: [(&str, String); 15] = [
        ("objects created", created.to_string()),
        (
            "transfers main -> worker",
            TRANSFERS_FROM_MAIN.load(Relaxed).to_string(),
        ),
        (
            "transfers worker -> worker",
            TRANSFERS_BETWEEN_WORKERS.load(Relaxed).to_string(),
        ),
        (
            "  of which as raw u64 tokens",
            RAW_TOKENS.load(Relaxed).to_string(),
        ),
        ("claims", CLAIMS.load(Relaxed).to_string()),
        (
            "extra retains by workers",
            RETAINS.load(Relaxed).to_string(),
        ),
        (
            "requests served by main",
            REQUESTS.load(Relaxed).to_string(),
        ),
        (
            "pump() calls (greedy GC)",
            PUMP_CALLS.load(Relaxed).to_string(),
        ),
        ("finalized on main", on_main.to_string()),
        ("  of which by pump()", PUMPED.load(Relaxed).to_string()),
        ("finalized on other threads", elsewhere.to_string()),
        ("objects still live", live.to_string()),
        ("drop panics", snapshot.drop_panics.to_string()),
        ("invariant violations", VIOLATIONS.load(Relaxed).to_string()),
        ("wall time", format!("{:.2} s", elapsed.as_secs_f64())),
    ];
    println!("tether bridge: 1 main thread, {WORKERS} workers, {objects} objects");
    for (name, value) in rows {
        println!("  {name:<30} {value:>12}");
    }
    if VIOLATIONS.load(Relaxed) == 0 {
        println!("ok: no premature release, no leak, every finalization on main");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: invariants were broken (see stderr)");
        ExitCode::FAILURE
    }
}

/// Inserts object `id` on main and hands it to one or two workers. Afterwards
/// main holds no reference to it: it stays alive only because workers do.
fn create_and_hand_out(reg: &Registry<Object>, id: u64, inboxes: &[Sender<ToWorker>]) {
    let object = Object {
        id,
        counter: Fragile::new(Rc::new(RefCell::new(Counter::default()))),
    };
    let fan_out = 1 + (id % 2) as usize;
    let mut transfers = Vec::with_capacity(fan_out);
    if id % 4 < 2 {
        // The explicit layer: a raw handle, one count per `retain`.
        let handle = match reg.insert(object) {
            Ok(handle) => handle,
            Err(e) => return violation(format!("insert: {e}")),
        };
        for _ in 1..fan_out {
            check(reg.retain(handle), "main retains its new object");
        }
        for _ in 0..fan_out {
            transfers.extend(check(reg.transfer(handle), "main transfers"));
        }
        // Main's own count is now zero; as the home thread it can still
        // serve requests for the object.
        match reg.count(handle) {
            Ok(0) => {}
            other => violation(format!(
                "main's count of {handle} after handing it out: {other:?}"
            )),
        }
    } else {
        // The RAII layer: a proxy, cloned once per extra recipient.
        let proxy = match reg.insert_proxy(object) {
            Ok(proxy) => proxy,
            Err(e) => return violation(format!("insert_proxy: {e}")),
        };
        for _ in 1..fan_out {
            transfers.push(proxy.clone().transfer());
        }
        transfers.push(proxy.transfer());
    }
    CREATED.fetch_add(1, Relaxed);
    for (k, transfer) in transfers.into_iter().enumerate() {
        let token = if id % 3 == 0 {
            RAW_TOKENS.fetch_add(1, Relaxed);
            Token::Raw(transfer.into_raw())
        } else {
            Token::Typed(transfer)
        };
        TRANSFERS_FROM_MAIN.fetch_add(1, Relaxed);
        let to = (id as usize + k) % WORKERS;
        let parcel = Parcel {
            id,
            token,
            hops: HOPS,
        };
        if inboxes[to].send(ToWorker::Parcel(parcel)).is_err() {
            violation(format!("worker {to} is gone"));
        }
    }
}

/// Main serves a worker's request: resolve the handle (main is home, so it
/// may, although it holds no reference) and mutate the `Rc<RefCell<_>>`.
fn serve(
    reg: &Registry<Object>,
    request: Request,
    reply_txs: &[Sender<Reply>],
    worker_threads: &[ThreadId],
) {
    let reply = reg.get(request.handle).map(|object| {
        if object.id != request.id {
            violation(format!(
                "{} resolved to object {}, expected {}",
                request.handle, object.id, request.id
            ));
        }
        let mut counter = object.counter.get().borrow_mut();
        counter.calls += 1;
        if let Op::Add(n) = request.op {
            counter.value += n;
        }
        counter.value
    });
    let served = REQUESTS.fetch_add(1, Relaxed);
    // Now and then, check the registry agrees that the requester holds it.
    if reply.is_ok() && served % 64 == 0 {
        let requester = worker_threads[request.from];
        match reg.holders(request.handle) {
            Ok(holders) if holders.iter().any(|&(t, n)| t == requester && n > 0) => {}
            Ok(holders) => violation(format!(
                "holders({}) = {holders:?} omit worker {}",
                request.handle, request.from
            )),
            Err(e) => violation(format!("holders({}): {e}", request.handle)),
        }
    }
    let _ = reply_txs[request.from].send(reply);
}

// ---------------------------------------------------------------------------
// Workers: claim, call, retain, hold, pass on, drop.

/// One reference a worker holds.
enum Ref {
    Proxy(Proxy<Object>),
    Raw(Handle),
}

impl Ref {
    fn handle(&self) -> Handle {
        match self {
            Ref::Proxy(proxy) => proxy.handle(),
            Ref::Raw(handle) => *handle,
        }
    }
}

struct Item {
    id: u64,
    held: Ref,
    hops: u8,
}

struct Worker {
    index: usize,
    reg: Registry<Object>,
    inbox: Receiver<ToWorker>,
    peers: Vec<Sender<ToWorker>>,
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    held: VecDeque<Item>,
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

    /// A reference arrives: claim it, look at the object, call a method on
    /// it through main, take and give back an extra reference, keep it.
    fn arrive(&mut self, parcel: Parcel) {
        let claimed = match parcel.token {
            Token::Raw(raw) => self.reg.claim_raw(raw).map(Ref::Raw),
            Token::Typed(transfer) if self.rng.below(2) == 0 => transfer.claim().map(Ref::Proxy),
            Token::Typed(transfer) => self.reg.claim(transfer).map(Ref::Raw),
        };
        let Some(held) = check(claimed, format!("claim object {}", parcel.id)) else {
            return;
        };
        CLAIMS.fetch_add(1, Relaxed);
        let handle = held.handle();

        // The worker may look at the object itself (just not inside the
        // `Fragile`): it holds a reference.
        if let Some(object) = check(self.reg.get(handle), format!("worker get {handle}")) {
            if object.id != parcel.id {
                violation(format!(
                    "{handle} is object {}, not {}",
                    object.id, parcel.id
                ));
            }
        }

        match &held {
            Ref::Proxy(proxy) => {
                let extra = proxy.clone();
                self.call(extra.handle(), parcel.id, Op::Add(1));
                drop(extra);
            }
            Ref::Raw(handle) => {
                let handle = *handle;
                if let Some(n) = check(self.reg.retain(handle), format!("retain {handle}")) {
                    if n < 2 {
                        violation(format!("count {n} after retaining {handle}"));
                    }
                }
                self.call(handle, parcel.id, Op::Add(1));
                match self.reg.release(handle) {
                    Ok(Released::Held(n)) if n >= 1 => {}
                    other => violation(format!("release of an extra ref of {handle}: {other:?}")),
                }
            }
        }
        RETAINS.fetch_add(1, Relaxed);
        self.held.push_back(Item {
            id: parcel.id,
            held,
            hops: parcel.hops,
        });
    }

    /// The oldest object has sat here while main pumped: it must still be
    /// alive. Pass it on to another worker, or drop it.
    fn finish_oldest(&mut self) {
        let Some(item) = self.held.pop_front() else {
            return;
        };
        self.call(item.held.handle(), item.id, Op::Read);
        if item.hops == 0 {
            match item.held {
                Ref::Proxy(proxy) => drop(proxy),
                Ref::Raw(handle) => match self.reg.release(handle) {
                    Ok(Released::Held(_) | Released::Queued) => {}
                    Ok(Released::Finalized) => {
                        violation(format!("{handle} finalized on a worker, main is alive"));
                    }
                    Err(e) => violation(format!("release {handle}: {e}")),
                },
            }
            return;
        }
        // Sometimes share with a second worker too (that copy stops there).
        if item.hops == HOPS && self.rng.below(4) == 0 {
            let second = match &item.held {
                Ref::Proxy(proxy) => Some(proxy.clone().transfer()),
                Ref::Raw(handle) => check(self.reg.retain(*handle), "retain to share")
                    .and_then(|_| check(self.reg.transfer(*handle), "transfer to share")),
            };
            if let Some(transfer) = second {
                self.send_to_peer(item.id, transfer, 0);
            }
        }
        let transfer = match item.held {
            Ref::Proxy(proxy) => Some(proxy.transfer()),
            Ref::Raw(handle) => check(self.reg.transfer(handle), "transfer to pass on"),
        };
        if let Some(transfer) = transfer {
            self.send_to_peer(item.id, transfer, item.hops - 1);
        }
    }

    fn send_to_peer(&mut self, id: u64, transfer: Transfer<Object>, hops: u8) {
        let to = (self.index + 1 + self.rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
        let token = if self.rng.below(3) == 0 {
            RAW_TOKENS.fetch_add(1, Relaxed);
            Token::Raw(transfer.into_raw())
        } else {
            Token::Typed(transfer)
        };
        TRANSFERS_BETWEEN_WORKERS.fetch_add(1, Relaxed);
        if self.peers[to]
            .send(ToWorker::Parcel(Parcel { id, token, hops }))
            .is_err()
        {
            violation(format!("worker {to} is gone"));
        }
    }

    /// Calls `op` on object `id` through main and waits for the answer. The
    /// worker holds a reference, so this must never fail.
    fn call(&self, handle: Handle, id: u64, op: Op) {
        let request = Request {
            from: self.index,
            id,
            handle,
            op,
        };
        if self.requests.send(request).is_err() {
            return violation("main hung up");
        }
        match self.replies.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => violation(format!(
                "request for {handle} (object {id}), which this worker holds, failed: {e}"
            )),
            Err(_) => violation("main hung up"),
        }
    }
}
