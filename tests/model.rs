//! Model-based property test (issue 5, item 1).
//!
//! proptest generates scripts of operations that run one step at a time on 3
//! real worker threads, next to a reference model that keeps per-thread
//! counts in ordinary maps. A coordinator sends step `k` to the worker it
//! names and waits for the result, so execution is deterministic. After every
//! step the registry and the model must agree on the call's result (`Ok`
//! value or exact `Error`), the live objects (`len()`), the acting thread's
//! `count()` of every handle, every thread's count (`holders()`), pins,
//! in-flight transfers and pending queues (`snapshot()`), and the values
//! dropped during the step (exactly once, on the right thread).
//!
//! Queued finalizations: the model keeps each home thread's pending queue.
//! `pump()` and thread exit drain all of it; `insert`, `retain`, `get`,
//! `release`, `pin`, `unpin`, `claim` and a successful `claim_raw` drain a
//! batch of 32 first. `count`, `holders`, `transfer`, `Transfer::from_raw`,
//! dropping a `Transfer`, a failed `claim_raw`, and ids rejected by the range
//! checks (foreign tag, tag 0, index beyond the capacity) do not drain.
//!
//! Run more cases with `TETHER_PROPTEST_CASES=10000 cargo test --test model`.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, ThreadId};

use proptest::prelude::*;
use tether::{Error, Handle, Registry, Released, ThreadExit, Transfer};

/// Number of worker threads.
const WORKERS: usize = 3;
/// Registry capacity: small, so `Full` and slot reuse are reached.
const CAPACITY: usize = 6;
/// Values an ordinary call drains (`limits::DRAIN_BATCH`).
const DRAIN_BATCH: usize = 32;
/// Identity recorded by drops on the coordinator thread.
const COORDINATOR: usize = usize::MAX;
/// Identity recorded when the thread-local was already gone.
const UNKNOWN: usize = usize::MAX - 1;

// ----- stored values ----------------------------------------------------------

thread_local! {
    /// The model identity of the current thread (no destructor, so it stays
    /// readable from tether's thread-exit hook).
    static IDENT: Cell<usize> = const { Cell::new(COORDINATOR) };
}

type Log = Arc<Mutex<Vec<(u32, usize)>>>;

/// A stored value: records `(id, thread identity)` when dropped.
struct Val {
    id: u32,
    log: Log,
}

impl Drop for Val {
    fn drop(&mut self) {
        let who = IDENT.try_with(Cell::get).unwrap_or(UNKNOWN);
        self.log.lock().unwrap().push((self.id, who));
    }
}

// ----- scripts ----------------------------------------------------------------

/// A handle named by a script.
#[derive(Clone, Copy)]
enum H {
    /// The `i % n`-th most recently inserted object (live or not).
    Obj(usize),
    /// The `i % n`-th object the acting thread holds explicit references to.
    Mine(usize),
    /// A forged id (see [`Forge`]).
    Forged(Forge),
}

#[derive(Clone, Copy, Debug)]
enum Forge {
    /// Another registry's tag.
    WrongTag(u8),
    /// Tag 0: never issued.
    ZeroTag(u8),
    /// This registry's tag, a generation no slot has reached.
    FutureGen(u8),
    /// This registry's tag, an index beyond the capacity.
    BigIndex(u8),
}

/// A raw transfer token named by a script.
#[derive(Clone, Copy)]
enum Raw {
    /// The `i % n`-th token issued so far (replayed if already claimed).
    Issued(usize),
    /// The `i % n`-th unclaimed token (falls back to `Issued`).
    Live(usize),
    /// This registry's tag with serial `s` (issued or not).
    Serial(u16),
    /// Anything.
    Any(u64),
}

#[derive(Clone, Copy)]
enum Op {
    Insert,
    Retain(H),
    Release(H),
    /// `get`, read the value and `count` while the guard lives, drop it.
    Get(H),
    Pin(H),
    Unpin(H),
    /// `transfer`; with `raw`, also `into_raw`.
    Transfer {
        h: H,
        raw: bool,
    },
    /// `claim` of the `i % n`-th unclaimed `Transfer` object.
    Claim(usize),
    /// Drop of the `i % n`-th unclaimed `Transfer` object.
    DropTransfer(usize),
    ClaimRaw(Raw),
    /// `Transfer::from_raw`, then drop it.
    FromRawDrop(Raw),
    Pump,
    /// The worker thread ends; a fresh thread takes its place.
    Exit,
}

#[derive(Clone, Copy)]
struct Step {
    thread: usize,
    op: Op,
}

impl fmt::Debug for H {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H::Obj(i) => write!(f, "recent{i}"),
            H::Mine(i) => write!(f, "mine{i}"),
            H::Forged(x) => write!(f, "{x:?}"),
        }
    }
}

impl fmt::Debug for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Issued(i) => write!(f, "token{i}"),
            Raw::Live(i) => write!(f, "live_token{i}"),
            Raw::Serial(s) => write!(f, "serial{s}"),
            Raw::Any(x) => write!(f, "raw{x:#x}"),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Insert => write!(f, "insert"),
            Op::Retain(h) => write!(f, "retain({h:?})"),
            Op::Release(h) => write!(f, "release({h:?})"),
            Op::Get(h) => write!(f, "get({h:?})"),
            Op::Pin(h) => write!(f, "pin({h:?})"),
            Op::Unpin(h) => write!(f, "unpin({h:?})"),
            Op::Transfer { h, raw: false } => write!(f, "transfer({h:?})"),
            Op::Transfer { h, raw: true } => write!(f, "transfer({h:?}).into_raw()"),
            Op::Claim(i) => write!(f, "claim(transfer{i})"),
            Op::DropTransfer(i) => write!(f, "drop(transfer{i})"),
            Op::ClaimRaw(r) => write!(f, "claim_raw({r:?})"),
            Op::FromRawDrop(r) => write!(f, "drop(from_raw({r:?}))"),
            Op::Pump => write!(f, "pump"),
            Op::Exit => write!(f, "exit"),
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}: {:?}", self.thread, self.op)
    }
}

/// A whole case: registry settings and the steps.
#[derive(Clone, Debug)]
struct Script {
    home_finalization: bool,
    thread_exit_release: bool,
    steps: Vec<Step>,
}

fn handle_strategy() -> impl Strategy<Value = H> {
    prop_oneof![
        6 => (0usize..8).prop_map(H::Obj),
        8 => (0usize..4).prop_map(H::Mine),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::WrongTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::ZeroTag(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::FutureGen(i))),
        1 => any::<u8>().prop_map(|i| H::Forged(Forge::BigIndex(i))),
    ]
}

fn raw_strategy() -> impl Strategy<Value = Raw> {
    prop_oneof![
        3 => (0usize..8).prop_map(Raw::Issued),
        4 => (0usize..4).prop_map(Raw::Live),
        2 => (0u16..12).prop_map(Raw::Serial),
        1 => any::<u64>().prop_map(Raw::Any),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Insert),
        4 => handle_strategy().prop_map(Op::Retain),
        8 => handle_strategy().prop_map(Op::Release),
        3 => handle_strategy().prop_map(Op::Get),
        2 => handle_strategy().prop_map(Op::Pin),
        2 => handle_strategy().prop_map(Op::Unpin),
        8 => (handle_strategy(), any::<bool>()).prop_map(|(h, raw)| Op::Transfer { h, raw }),
        6 => (0usize..4).prop_map(Op::Claim),
        2 => (0usize..4).prop_map(Op::DropTransfer),
        4 => raw_strategy().prop_map(Op::ClaimRaw),
        2 => raw_strategy().prop_map(Op::FromRawDrop),
        2 => Just(Op::Pump),
        1 => Just(Op::Exit),
    ]
}

fn script_strategy() -> impl Strategy<Value = Script> {
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::collection::vec(
            (0..WORKERS, op_strategy()).prop_map(|(thread, op)| Step { thread, op }),
            1..60,
        ),
    )
        .prop_map(|(home_finalization, thread_exit_release, steps)| Script {
            home_finalization,
            thread_exit_release,
            steps,
        })
}

// ----- workers ----------------------------------------------------------------

/// What a worker reports for one step (compared with the model's [`Outcome`]).
#[derive(Debug, PartialEq)]
enum Outcome {
    Skipped,
    Inserted(Result<Handle, (Error, u32)>),
    Count(Result<u32, Error>),
    Released(Result<Released, Error>),
    /// `get`: the value's id and the thread's count while the guard lived.
    Got(Result<(u32, u32), Error>),
    Unit(Result<(), Error>),
    Claimed(Result<Handle, Error>),
    Pumped(usize),
    Exited,
}

type Job = Box<dyn FnOnce(&Registry<Val>) -> Reply + Send>;

/// A worker's answer: the outcome, plus whatever the step produced.
struct Reply {
    outcome: Outcome,
    transfer: Option<Transfer<Val>>,
    raw: Option<u64>,
    /// `count()` of every handle passed along, after the step.
    counts: Vec<Result<u32, Error>>,
}

impl Reply {
    fn of(outcome: Outcome) -> Reply {
        Reply {
            outcome,
            transfer: None,
            raw: None,
            counts: Vec::new(),
        }
    }
}

struct Worker {
    tx: Option<mpsc::Sender<(Job, Vec<Handle>)>>,
    rx: mpsc::Receiver<Reply>,
    join: Option<JoinHandle<()>>,
    thread: ThreadId,
}

impl Worker {
    fn spawn(reg: &Registry<Val>, ident: usize) -> Worker {
        let (tx, job_rx) = mpsc::channel::<(Job, Vec<Handle>)>();
        let (reply_tx, rx) = mpsc::channel();
        let reg = reg.clone();
        let join = thread::spawn(move || {
            IDENT.with(|c| c.set(ident));
            while let Ok((job, handles)) = job_rx.recv() {
                let mut reply = job(&reg);
                reply.counts = handles.iter().map(|&h| reg.count(h)).collect();
                if reply_tx.send(reply).is_err() {
                    break;
                }
            }
        });
        let thread = join.thread().id();
        Worker {
            tx: Some(tx),
            rx,
            join: Some(join),
            thread,
        }
    }

    fn run(&self, handles: Vec<Handle>, job: Job) -> Reply {
        self.tx
            .as_ref()
            .unwrap()
            .send((job, handles))
            .expect("worker alive");
        self.rx.recv().expect("worker replied")
    }

    /// Ends the thread (its thread-exit hook runs) and waits for it.
    fn exit(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            j.join().expect("worker panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

// ----- the model --------------------------------------------------------------

struct MObj {
    val: u32,
    handle: Handle,
    home: usize,
    /// Explicit references per thread identity (guards never outlive a step).
    counts: HashMap<usize, u32>,
    pins: u32,
    /// Unclaimed `Transfer` objects and raw tokens.
    transfers: u32,
    live: bool,
}

impl MObj {
    fn holds(&self) -> u32 {
        self.counts.values().sum::<u32>() + self.pins + self.transfers
    }
}

#[derive(Clone, Copy, PartialEq)]
enum TState {
    /// An unclaimed `Transfer<T>` (kept by the coordinator between steps).
    Object,
    Raw(u64),
    Gone,
}

struct MTransfer {
    obj: usize,
    state: TState,
}

struct Model {
    home_finalization: bool,
    exit_release: bool,
    objs: Vec<MObj>,
    /// Identity of the thread in each worker position.
    ident: [usize; WORKERS],
    alive: Vec<bool>,
    /// Values queued for each identity's home inbox, in order.
    pending: Vec<VecDeque<u32>>,
    transfers: Vec<MTransfer>,
    tokens: Vec<u64>,
    next_val: u32,
    /// Drops the current step must produce.
    drops: Vec<(u32, usize)>,
}

impl Model {
    fn live(&self) -> usize {
        self.objs.iter().filter(|o| o.live).count()
    }

    fn count(&self, o: usize, who: usize) -> u32 {
        self.objs[o].counts.get(&who).copied().unwrap_or(0)
    }

    fn drain(&mut self, who: usize, limit: usize) -> usize {
        let n = self.pending[who].len().min(limit);
        for _ in 0..n {
            let v = self.pending[who].pop_front().unwrap();
            self.drops.push((v, who));
        }
        n
    }

    /// The last hold of `o` went away on thread `who`.
    fn finalize(&mut self, o: usize, who: usize) -> Released {
        let obj = &mut self.objs[o];
        obj.live = false;
        let (home, val) = (obj.home, obj.val);
        if home == who || !self.home_finalization || !self.alive[home] {
            self.drops.push((val, who));
            Released::Finalized
        } else {
            self.pending[home].push_back(val);
            Released::Queued
        }
    }

    /// Drops one hold already subtracted; finalizes if it was the last.
    fn after_drop(&mut self, o: usize, who: usize) -> Released {
        if self.objs[o].holds() == 0 {
            self.finalize(o, who)
        } else {
            Released::Held(self.count(o, who))
        }
    }

    /// The access rule (invariant 5), for a live object.
    fn may_access(&self, o: usize, who: usize) -> bool {
        let obj = &self.objs[o];
        self.count(o, who) > 0 || obj.home == who || obj.pins > 0
    }

    /// Thread `who` exits.
    fn exit(&mut self, who: usize) {
        self.drain(who, usize::MAX);
        if self.exit_release {
            for o in 0..self.objs.len() {
                if self.objs[o].live && self.objs[o].counts.remove(&who).is_some() {
                    self.after_drop(o, who);
                }
            }
        }
        self.alive[who] = false;
    }
}

/// How a script's handle resolves.
#[derive(Clone, Copy)]
enum Target {
    Obj(usize),
    Forged(Handle),
}

// ----- the harness --------------------------------------------------------------

struct Harness {
    reg: Registry<Val>,
    log: Log,
    seen: usize,
    tag: u64,
    workers: Vec<Worker>,
    /// Thread id of each identity.
    thread_of: Vec<ThreadId>,
    /// Unclaimed transfers, by model index.
    held: HashMap<usize, Transfer<Val>>,
    m: Model,
}

impl Harness {
    fn new(script: &Script) -> Harness {
        let reg = Registry::builder()
            .capacity(CAPACITY)
            .home_finalization(script.home_finalization)
            .thread_exit(if script.thread_exit_release {
                ThreadExit::Release
            } else {
                ThreadExit::Leak
            })
            .build();
        let log: Log = Arc::default();
        // Learn the tag (for forged ids) with a probe the coordinator drops.
        let probe = reg
            .insert(Val {
                id: u32::MAX,
                log: Arc::clone(&log),
            })
            .unwrap();
        let tag = probe.to_raw() >> 45;
        assert_eq!(reg.release(probe), Ok(Released::Finalized));
        log.lock().unwrap().clear();
        let workers: Vec<Worker> = (0..WORKERS).map(|i| Worker::spawn(&reg, i)).collect();
        let thread_of = workers.iter().map(|w| w.thread).collect();
        Harness {
            reg,
            log,
            seen: 0,
            tag,
            workers,
            thread_of,
            held: HashMap::new(),
            m: Model {
                home_finalization: script.home_finalization,
                exit_release: script.thread_exit_release,
                objs: Vec::new(),
                ident: [0, 1, 2],
                alive: vec![true; WORKERS],
                pending: vec![VecDeque::new(); WORKERS],
                transfers: Vec::new(),
                tokens: Vec::new(),
                next_val: 0,
                drops: Vec::new(),
            },
        }
    }

    fn forged(&self, f: Forge) -> Handle {
        let raw = match f {
            Forge::WrongTag(i) => {
                let tag = self.tag % 255 + 1; // another valid tag
                (tag << 45) | u64::from(i % 8)
            }
            Forge::ZeroTag(i) => (1 << 24) | u64::from(i),
            Forge::FutureGen(i) => (self.tag << 45) | (1 << 44) | (u64::from(i) % CAPACITY as u64),
            Forge::BigIndex(i) => (self.tag << 45) | (CAPACITY as u64 + u64::from(i)),
        };
        Handle::from_raw(raw).unwrap()
    }

    fn target(&self, h: H, who: usize) -> Option<Target> {
        match h {
            H::Obj(_) if self.m.objs.is_empty() => None,
            H::Obj(i) => Some(Target::Obj(self.m.objs.len() - 1 - i % self.m.objs.len())),
            H::Mine(i) => {
                let mine: Vec<usize> = (0..self.m.objs.len())
                    .filter(|&o| self.m.count(o, who) > 0)
                    .collect();
                if mine.is_empty() {
                    return self.target(H::Obj(i), who); // fall back to a recent one
                }
                Some(Target::Obj(mine[i % mine.len()]))
            }
            H::Forged(f) => Some(Target::Forged(self.forged(f))),
        }
    }

    fn raw(&self, r: Raw) -> Option<u64> {
        match r {
            Raw::Live(i) => {
                let live: Vec<u64> = (self.m.transfers.iter())
                    .filter_map(|t| match t.state {
                        TState::Raw(token) => Some(token),
                        _ => None,
                    })
                    .collect();
                if live.is_empty() {
                    return self.raw(Raw::Issued(i));
                }
                Some(live[i % live.len()])
            }
            Raw::Issued(_) if self.m.tokens.is_empty() => None,
            Raw::Issued(i) => Some(self.m.tokens[i % self.m.tokens.len()]),
            Raw::Serial(s) => Some((self.tag << 45) | u64::from(s)),
            Raw::Any(x) => Some(x),
        }
    }

    /// Expected error of a forged handle, and whether the call drains first
    /// (it does once the id passed the registry's range checks).
    fn forged_error(&self, h: Handle, f: Forge) -> (Error, bool) {
        match f {
            Forge::WrongTag(_) => (Error::ForeignRegistry(h), false),
            Forge::ZeroTag(_) | Forge::BigIndex(_) => (Error::Invalid(h.to_raw()), false),
            Forge::FutureGen(_) => (Error::Invalid(h.to_raw()), true),
        }
    }

    fn handles(&self) -> Vec<Handle> {
        self.m.objs.iter().map(|o| o.handle).collect()
    }

    fn send(&self, pos: usize, job: Job) -> Reply {
        self.workers[pos].run(self.handles(), job)
    }

    /// Runs one step on the registry and on the model; returns (actual,
    /// expected) outcomes.
    fn step(&mut self, step: Step) -> (Outcome, Outcome, Vec<Result<u32, Error>>) {
        let pos = step.thread;
        let who = self.m.ident[pos];
        macro_rules! skip {
            () => {
                return (Outcome::Skipped, Outcome::Skipped, Vec::new())
            };
        }
        let (reply, expected) = match step.op {
            Op::Insert => {
                let id = self.m.next_val;
                self.m.next_val += 1;
                let log = Arc::clone(&self.log);
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        Reply::of(Outcome::Inserted(
                            reg.insert(Val { id, log })
                                .map_err(|e| (e.error(), e.into_value().id)),
                        ))
                    }),
                );
                self.m.drain(who, DRAIN_BATCH);
                let expected = if self.m.live() == CAPACITY {
                    self.m.drops.push((id, who)); // the handed-back value
                    Outcome::Inserted(Err((Error::Full, id)))
                } else {
                    match &reply.outcome {
                        Outcome::Inserted(Ok(h)) => {
                            self.m.objs.push(MObj {
                                val: id,
                                handle: *h,
                                home: who,
                                counts: HashMap::from([(who, 1)]),
                                pins: 0,
                                transfers: 0,
                                live: true,
                            });
                            Outcome::Inserted(Ok(*h))
                        }
                        _ => Outcome::Inserted(Ok(Handle::from_raw(1).unwrap())),
                    }
                };
                (reply, expected)
            }
            Op::Retain(h) | Op::Get(h) | Op::Pin(h) | Op::Unpin(h) | Op::Release(h) => {
                let Some(target) = self.target(h, who) else {
                    skip!()
                };
                let hh = match target {
                    Target::Obj(o) => self.m.objs[o].handle,
                    Target::Forged(f) => f,
                };
                let op = step.op;
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        Reply::of(match op {
                            Op::Retain(_) => Outcome::Count(reg.retain(hh)),
                            Op::Release(_) => Outcome::Released(reg.release(hh)),
                            Op::Get(_) => Outcome::Got(
                                reg.get(hh)
                                    .map(|g| (g.id, reg.count(hh).unwrap_or(u32::MAX))),
                            ),
                            Op::Pin(_) => Outcome::Unit(reg.pin(hh)),
                            _ => Outcome::Unit(reg.unpin(hh)),
                        })
                    }),
                );
                let err = match (target, h) {
                    (Target::Forged(_), H::Forged(f)) => {
                        let (e, drains) = self.forged_error(hh, f);
                        if drains {
                            self.m.drain(who, DRAIN_BATCH);
                        }
                        Some(e)
                    }
                    (Target::Obj(o), _) => {
                        self.m.drain(who, DRAIN_BATCH);
                        if !self.m.objs[o].live {
                            Some(Error::Stale(hh))
                        } else if match op {
                            // release needs an explicit reference; the others
                            // the access rule.
                            Op::Release(_) => self.m.count(o, who) == 0,
                            _ => !self.m.may_access(o, who),
                        } {
                            Some(Error::NotHeld(hh))
                        } else if matches!(op, Op::Unpin(_)) && self.m.objs[o].pins == 0 {
                            Some(Error::NotPinned(hh))
                        } else {
                            None
                        }
                    }
                    _ => unreachable!(),
                };
                let expected = match (op, err) {
                    (Op::Retain(_), Some(e)) => Outcome::Count(Err(e)),
                    (Op::Release(_), Some(e)) => Outcome::Released(Err(e)),
                    (Op::Get(_), Some(e)) => Outcome::Got(Err(e)),
                    (_, Some(e)) => Outcome::Unit(Err(e)),
                    (_, None) => {
                        let Target::Obj(o) = target else {
                            unreachable!()
                        };
                        match op {
                            Op::Retain(_) => {
                                let c = self.m.objs[o].counts.entry(who).or_insert(0);
                                *c += 1;
                                Outcome::Count(Ok(*c))
                            }
                            Op::Release(_) => {
                                let obj = &mut self.m.objs[o];
                                let c = obj.counts.get_mut(&who).unwrap();
                                *c -= 1;
                                if *c == 0 {
                                    obj.counts.remove(&who);
                                }
                                Outcome::Released(Ok(self.m.after_drop(o, who)))
                            }
                            Op::Get(_) => {
                                Outcome::Got(Ok((self.m.objs[o].val, self.m.count(o, who) + 1)))
                            }
                            Op::Pin(_) => {
                                self.m.objs[o].pins += 1;
                                Outcome::Unit(Ok(()))
                            }
                            _ => {
                                self.m.objs[o].pins -= 1;
                                if self.m.objs[o].holds() == 0 {
                                    self.m.finalize(o, who);
                                }
                                Outcome::Unit(Ok(()))
                            }
                        }
                    }
                };
                (reply, expected)
            }
            Op::Transfer { h, raw } => {
                let Some(target) = self.target(h, who) else {
                    skip!()
                };
                let hh = match target {
                    Target::Obj(o) => self.m.objs[o].handle,
                    Target::Forged(f) => f,
                };
                let mut reply = self.send(
                    pos,
                    Box::new(move |reg| match reg.transfer(hh) {
                        Ok(t) if raw => Reply {
                            raw: Some(t.into_raw()),
                            ..Reply::of(Outcome::Unit(Ok(())))
                        },
                        Ok(t) => Reply {
                            transfer: Some(t),
                            ..Reply::of(Outcome::Unit(Ok(())))
                        },
                        Err(e) => Reply::of(Outcome::Unit(Err(e))),
                    }),
                );
                // transfer() does not drain.
                let expected = match (target, h) {
                    (Target::Forged(_), H::Forged(f)) => {
                        Outcome::Unit(Err(self.forged_error(hh, f).0))
                    }
                    (Target::Obj(o), _) if !self.m.objs[o].live => {
                        Outcome::Unit(Err(Error::Stale(hh)))
                    }
                    (Target::Obj(o), _) if self.m.count(o, who) == 0 => {
                        Outcome::Unit(Err(Error::NotHeld(hh)))
                    }
                    (Target::Obj(o), _) => {
                        let obj = &mut self.m.objs[o];
                        let c = obj.counts.get_mut(&who).unwrap();
                        *c -= 1;
                        if *c == 0 {
                            obj.counts.remove(&who);
                        }
                        obj.transfers += 1;
                        let t = self.m.transfers.len();
                        let state = match (reply.transfer.take(), reply.raw) {
                            (Some(tr), _) => {
                                self.held.insert(t, tr);
                                TState::Object
                            }
                            (None, Some(token)) => {
                                self.m.tokens.push(token);
                                TState::Raw(token)
                            }
                            (None, None) => TState::Gone,
                        };
                        self.m.transfers.push(MTransfer { obj: o, state });
                        Outcome::Unit(Ok(()))
                    }
                    _ => unreachable!(),
                };
                (reply, expected)
            }
            Op::Claim(i) | Op::DropTransfer(i) => {
                let objects: Vec<usize> = (0..self.m.transfers.len())
                    .filter(|&t| self.m.transfers[t].state == TState::Object)
                    .collect();
                if objects.is_empty() {
                    skip!()
                }
                let t = objects[i % objects.len()];
                let tr = self.held.remove(&t).unwrap();
                let claim = matches!(step.op, Op::Claim(_));
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        if claim {
                            Reply::of(Outcome::Claimed(reg.claim(tr)))
                        } else {
                            drop(tr);
                            Reply::of(Outcome::Unit(Ok(())))
                        }
                    }),
                );
                self.m.transfers[t].state = TState::Gone;
                let o = self.m.transfers[t].obj;
                self.m.objs[o].transfers -= 1;
                let expected = if claim {
                    self.m.drain(who, DRAIN_BATCH);
                    *self.m.objs[o].counts.entry(who).or_insert(0) += 1;
                    Outcome::Claimed(Ok(self.m.objs[o].handle))
                } else {
                    // Dropping a transfer does not drain.
                    self.m.after_drop(o, who);
                    Outcome::Unit(Ok(()))
                };
                (reply, expected)
            }
            Op::ClaimRaw(r) | Op::FromRawDrop(r) => {
                let Some(token) = self.raw(r) else { skip!() };
                let claim = matches!(step.op, Op::ClaimRaw(_));
                let reply = self.send(
                    pos,
                    Box::new(move |reg| {
                        if claim {
                            Reply::of(Outcome::Claimed(reg.claim_raw(token)))
                        } else {
                            Reply::of(Outcome::Unit(Transfer::from_raw(reg, token).map(drop)))
                        }
                    }),
                );
                let found = self
                    .m
                    .transfers
                    .iter()
                    .position(|t| t.state == TState::Raw(token));
                let expected = match found {
                    Some(t) => {
                        self.m.transfers[t].state = TState::Gone;
                        let o = self.m.transfers[t].obj;
                        self.m.objs[o].transfers -= 1;
                        if claim {
                            self.m.drain(who, DRAIN_BATCH);
                            *self.m.objs[o].counts.entry(who).or_insert(0) += 1;
                            Outcome::Claimed(Ok(self.m.objs[o].handle))
                        } else {
                            self.m.after_drop(o, who);
                            Outcome::Unit(Ok(()))
                        }
                    }
                    None => {
                        let e = if self.m.tokens.contains(&token) {
                            Error::TransferClaimed
                        } else {
                            Error::Invalid(token)
                        };
                        if claim {
                            Outcome::Claimed(Err(e))
                        } else {
                            Outcome::Unit(Err(e))
                        }
                    }
                };
                (reply, expected)
            }
            Op::Pump => {
                let reply = self.send(pos, Box::new(|reg| Reply::of(Outcome::Pumped(reg.pump()))));
                let n = self.m.drain(who, usize::MAX);
                (reply, Outcome::Pumped(n))
            }
            Op::Exit => {
                self.workers[pos].exit();
                self.m.exit(who);
                let fresh = self.m.alive.len();
                self.m.alive.push(true);
                self.m.pending.push(VecDeque::new());
                self.m.ident[pos] = fresh;
                self.workers[pos] = Worker::spawn(&self.reg, fresh);
                self.thread_of.push(self.workers[pos].thread);
                (Reply::of(Outcome::Exited), Outcome::Exited)
            }
        };
        (reply.outcome, expected, reply.counts)
    }

    /// Everything the registry and the model must agree on after a step.
    fn check(&mut self, pos: Option<usize>, counts: &[Result<u32, Error>]) -> Result<(), String> {
        // Drops of this step: exactly the expected ones, on the right thread.
        let mut got: Vec<(u32, usize)> = self.log.lock().unwrap()[self.seen..].to_vec();
        self.seen += got.len();
        let mut want = std::mem::take(&mut self.m.drops);
        got.sort_unstable();
        want.sort_unstable();
        if got != want {
            return Err(format!(
                "drops (value, thread): registry {got:?}, model {want:?}"
            ));
        }
        let all = self.log.lock().unwrap();
        let mut once = HashSet::new();
        if let Some((v, _)) = all.iter().find(|(v, _)| !once.insert(*v)) {
            return Err(format!("value {v} dropped twice: {all:?}"));
        }
        drop(all);
        if self.reg.len() != self.m.live() {
            return Err(format!(
                "len(): registry {}, model {}",
                self.reg.len(),
                self.m.live()
            ));
        }
        // The acting thread's own counts.
        if let Some(pos) = pos {
            let who = self.m.ident[pos];
            for (o, got) in counts.iter().enumerate() {
                let obj = &self.m.objs[o];
                let want = if obj.live {
                    Ok(self.m.count(o, who))
                } else {
                    Err(Error::Stale(obj.handle))
                };
                if *got != want {
                    return Err(format!(
                        "t{pos}: count(obj{o}): registry {got:?}, model {want:?}"
                    ));
                }
            }
        }
        // Every thread's counts, pins, transfers.
        let snap = self.reg.snapshot();
        for (o, obj) in self.m.objs.iter().enumerate() {
            let got = self.reg.holders(obj.handle).map(|mut v| {
                v.sort_unstable_by_key(|&(t, n)| (format!("{t:?}"), n));
                v
            });
            let want = if obj.live {
                let mut v: Vec<(ThreadId, u32)> = obj
                    .counts
                    .iter()
                    .map(|(&who, &n)| (self.thread_of[who], n))
                    .collect();
                v.sort_unstable_by_key(|&(t, n)| (format!("{t:?}"), n));
                Ok(v)
            } else {
                Err(Error::Stale(obj.handle))
            };
            if got != want {
                return Err(format!("holders(obj{o}): registry {got:?}, model {want:?}"));
            }
            let got = snap.object(obj.handle).map(|s| (s.pins, s.transfers));
            let want = obj.live.then_some((obj.pins, obj.transfers));
            if got != want {
                return Err(format!(
                    "snapshot (pins, transfers) of obj{o}: registry {got:?}, model {want:?}"
                ));
            }
        }
        for (who, pending) in self.m.pending.iter().enumerate() {
            if !self.m.alive[who] {
                continue;
            }
            let got = snap
                .threads
                .iter()
                .find(|t| t.thread == self.thread_of[who])
                .map_or(0, |t| t.pending);
            if got != pending.len() {
                return Err(format!(
                    "pending queue of thread {who}: registry {got}, model {}",
                    pending.len()
                ));
            }
        }
        Ok(())
    }
}

fn run(script: &Script) -> Result<(), String> {
    let mut hx = Harness::new(script);
    for (k, &step) in script.steps.iter().enumerate() {
        let (got, want, counts) = hx.step(step);
        if got != want {
            return Err(format!(
                "step {k} ({step:?}): registry returned {got:?}, model expected {want:?}"
            ));
        }
        let pos = (!matches!(got, Outcome::Skipped | Outcome::Exited)).then_some(step.thread);
        hx.check(pos, &counts)
            .map_err(|e| format!("after step {k} ({step:?}): {e}"))?;
    }
    // Every worker exits; then the leftovers (pins, unclaimed transfers and
    // tokens, leaked references) go with the registry.
    for pos in 0..WORKERS {
        hx.workers[pos].exit();
        let who = hx.m.ident[pos];
        hx.m.exit(who);
        hx.check(None, &[])
            .map_err(|e| format!("after the final exit of t{pos}: {e}"))?;
    }
    let inserted = hx.m.next_val;
    let log = Arc::clone(&hx.log);
    drop(hx);
    let mut ids: Vec<u32> = log.lock().unwrap().iter().map(|&(v, _)| v).collect();
    ids.sort_unstable();
    if ids != (0..inserted).collect::<Vec<_>>() {
        return Err(format!(
            "after dropping the registry: values dropped {ids:?}, want each of 0..{inserted} once"
        ));
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("TETHER_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The registry and the reference model agree after every step.
    #[test]
    fn registry_matches_model(script in script_strategy()) {
        if let Err(e) = run(&script) {
            prop_assert!(false, "{}", e);
        }
    }
}
