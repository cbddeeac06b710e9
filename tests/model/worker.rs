//! The stored values and the worker threads that run the steps.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

// Not std's: std is not instrumented under ThreadSanitizer (see tests/interner.rs).
use parking_lot::Mutex;

use tether::{Error, Handle, InternError, Proxy, Registry, Released, Transfer};

/// Identity recorded by drops on the coordinator thread.
pub const COORDINATOR: usize = usize::MAX;
/// Identity recorded when the thread-local was already gone.
pub const UNKNOWN: usize = usize::MAX - 1;

thread_local! {
    /// The model identity of the current thread (no destructor, so it stays
    /// readable from tether's thread-exit hook).
    static IDENT: Cell<usize> = const { Cell::new(COORDINATOR) };
}

/// Every drop of a [`Val`]: `(id, thread identity)`, in order.
pub type Log = Arc<Mutex<Vec<(u32, usize)>>>;

/// A stored value: records `(id, thread identity)` when dropped.
pub struct Val {
    pub id: u32,
    pub log: Log,
}

impl Drop for Val {
    fn drop(&mut self) {
        let who = IDENT.try_with(Cell::get).unwrap_or(UNKNOWN);
        self.log.lock().push((self.id, who));
    }
}

/// What a worker reports for one step (compared with the model's).
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Skipped,
    Inserted(Result<Handle, (Error, u32)>),
    /// `InsertMany`: each insert's result.
    InsertedMany(Vec<Result<Handle, (Error, u32)>>),
    Count(Result<u32, Error>),
    Released(Result<Released, Error>),
    /// `get`: the value's id and the thread's count while the guard lived.
    Got(Result<(u32, u32), Error>),
    /// A new proxy: the value's id through it and the thread's count after.
    Proxied(Result<(u32, u32), Error>),
    Unit(Result<(), Error>),
    Claimed(Result<Handle, Error>),
    /// `intern`: the result, and whether `init` ran.
    Interned(Result<Handle, InternError<u32>>, bool),
    Pumped(usize),
    /// `shutdown`: `Err` with the leak report's handles, sorted.
    Shutdown(Result<(), Vec<Handle>>),
    Exited,
    /// `Handle::from_raw(raw).map(to_raw)` of an `H::Raw` id that is not a
    /// handle (on the coordinator; no registry call follows).
    NoHandle(Option<u64>),
    /// Only ever expected: the registry's answer broke a rule of the model.
    Violation(String),
}

/// A worker's own state: its registry clone and the proxies it keeps, by
/// the model's proxy index (`Proxy` is `!Send`: it never leaves the thread).
pub struct Ctx {
    pub reg: Registry<Val>,
    pub proxies: HashMap<usize, Proxy<Val>>,
}

impl Ctx {
    /// Keeps `p` as proxy `id`; returns the value's id and the thread's count.
    pub fn keep(&mut self, id: usize, p: Proxy<Val>) -> (u32, u32) {
        let seen = (p.id, self.reg.count(p.handle()).unwrap_or(u32::MAX));
        self.proxies.insert(id, p);
        seen
    }
}

pub type Job = Box<dyn FnOnce(&mut Ctx) -> Reply + Send>;

/// A worker's answer: the outcome, plus whatever the step produced.
pub struct Reply {
    pub outcome: Outcome,
    /// New `Transfer` objects, for the coordinator to keep.
    pub transfers: Vec<Transfer<Val>>,
    pub raw: Option<u64>,
    /// `count()` of every handle passed along, after the step.
    pub counts: Vec<Result<u32, Error>>,
}

impl Reply {
    pub fn of(outcome: Outcome) -> Reply {
        Reply {
            outcome,
            transfers: Vec::new(),
            raw: None,
            counts: Vec::new(),
        }
    }
}

/// One worker thread, fed one job at a time.
pub struct Worker {
    tx: Option<mpsc::Sender<(Job, Vec<Handle>)>>,
    rx: mpsc::Receiver<Reply>,
    join: Option<JoinHandle<()>>,
    pub thread: ThreadId,
}

impl Worker {
    pub fn spawn(reg: &Registry<Val>, ident: usize) -> Worker {
        let (tx, job_rx) = mpsc::channel::<(Job, Vec<Handle>)>();
        let (reply_tx, rx) = mpsc::channel();
        let reg = reg.clone();
        let join = thread::spawn(move || {
            IDENT.with(|c| c.set(ident));
            let mut ctx = Ctx {
                reg,
                proxies: HashMap::new(),
            };
            while let Ok((job, handles)) = job_rx.recv() {
                let mut reply = job(&mut ctx);
                reply.counts = handles.iter().map(|&h| ctx.reg.count(h)).collect();
                if reply_tx.send(reply).is_err() {
                    break;
                }
            }
            // The proxies go first, in the model's order; then the registry
            // clone; tether's exit hook runs after, with the thread-locals.
            let mut proxies: Vec<_> = ctx.proxies.drain().collect();
            proxies.sort_unstable_by_key(|&(id, _)| id);
            drop(proxies);
        });
        let thread = join.thread().id();
        Worker {
            tx: Some(tx),
            rx,
            join: Some(join),
            thread,
        }
    }

    pub fn run(&self, handles: Vec<Handle>, job: Job) -> Reply {
        self.tx
            .as_ref()
            .unwrap()
            .send((job, handles))
            .expect("worker alive");
        self.rx.recv().expect("worker replied")
    }

    /// Ends the thread (its thread-exit hook runs) and waits for it.
    pub fn exit(&mut self) {
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
