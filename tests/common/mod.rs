//! Helpers shared by the integration tests.
//!
//! Each test binary uses a different subset of these helpers, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

use tether::{Error, Released};

/// How long a watchdog waits before declaring a deadlock. This is never a
/// performance assertion: it only turns a hang (a bug) into a failure with a
/// message instead of a test run that never ends.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// Records every drop of a [`Tracked`] value: which value, on which thread.
#[derive(Debug, Default)]
pub struct DropLog {
    drops: AtomicUsize,
    /// A `parking_lot` mutex, not std's: drops record from several threads
    /// at once, and std is not instrumented under ThreadSanitizer (a
    /// contended std mutex's acquire is invisible to it).
    events: parking_lot::Mutex<Vec<(u64, ThreadId)>>,
}

impl DropLog {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn record(&self, id: u64) {
        let me = thread::current().id();
        self.events.lock().push((id, me));
        self.drops.fetch_add(1, Ordering::SeqCst);
    }

    /// Total number of drops recorded.
    pub fn count(&self) -> usize {
        self.drops.load(Ordering::SeqCst)
    }

    /// How many times the value with this id was dropped.
    pub fn times_dropped(&self, id: u64) -> usize {
        self.events.lock().iter().filter(|(i, _)| *i == id).count()
    }

    /// The thread on which the value with this id was (first) dropped.
    pub fn dropped_on(&self, id: u64) -> Option<ThreadId> {
        self.events
            .lock()
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| *t)
    }

    /// Every thread a drop ran on, in order.
    pub fn threads(&self) -> Vec<ThreadId> {
        self.events.lock().iter().map(|(_, t)| *t).collect()
    }

    /// Number of drops per value id.
    pub fn per_id(&self) -> HashMap<u64, usize> {
        let mut m = HashMap::new();
        for (id, _) in self.events.lock().iter() {
            *m.entry(*id).or_insert(0) += 1;
        }
        m
    }
}

/// A value whose `Drop` is recorded in a [`DropLog`]. Deliberately not
/// `Debug`, so the tests also prove the registry never needs `T: Debug`.
pub struct Tracked {
    pub id: u64,
    log: Arc<DropLog>,
    panic_on_drop: bool,
}

impl Tracked {
    pub fn new(log: &Arc<DropLog>, id: u64) -> Self {
        Self {
            id,
            log: Arc::clone(log),
            panic_on_drop: false,
        }
    }

    /// A value whose `Drop` records itself and then panics.
    pub fn panicking(log: &Arc<DropLog>, id: u64) -> Self {
        Self {
            id,
            log: Arc::clone(log),
            panic_on_drop: true,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.log.record(self.id);
        if self.panic_on_drop && !thread::panicking() {
            panic!("intentional panic in Drop of Tracked #{} (test)", self.id);
        }
    }
}

/// A comparable view of `Result<Released, Error>` (the tests do not rely on
/// `Released` implementing `PartialEq`/`Debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Held(u32),
    Finalized,
    Queued,
    Err(Error),
}

pub fn rel(r: Result<Released, Error>) -> Rel {
    match r {
        Err(e) => Rel::Err(e),
        Ok(r) => {
            if let Released::Held(n) = r {
                Rel::Held(n)
            } else if matches!(r, Released::Finalized) {
                Rel::Finalized
            } else if matches!(r, Released::Queued) {
                Rel::Queued
            } else {
                unreachable!("unknown Released variant")
            }
        }
    }
}

/// `true` if the result is `Released::Held(_)`, whatever the count.
pub fn is_held(r: Rel) -> bool {
    matches!(r, Rel::Held(_))
}

/// The calling thread's id.
pub fn me() -> ThreadId {
    thread::current().id()
}

/// Spawns a named thread.
pub fn spawn<F, R>(name: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("failed to spawn a test thread")
}

/// Joins a thread, re-raising its panic (with its original message) if it
/// panicked; a thread still running after [`WATCHDOG`] fails the test
/// (a deadlock) instead of hanging it.
pub fn join<R>(h: JoinHandle<R>) -> R {
    let deadline = std::time::Instant::now() + WATCHDOG;
    // Short naps first: most threads are done within microseconds, and a
    // test joining thousands of them should not pay a millisecond each.
    let mut nap = Duration::from_micros(10);
    while !h.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "thread {:?} still running after {WATCHDOG:?}: deadlock or blocked thread",
            h.thread().name().unwrap_or("unnamed")
        );
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    }
    match h.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Receives a message, failing the test (instead of hanging) if none arrives
/// within [`WATCHDOG`].
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WATCHDOG) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: nothing received after {WATCHDOG:?} — deadlock or blocked thread")
        }
        Err(RecvTimeoutError::Disconnected) => {
            panic!("{what}: the sending thread is gone (did it panic?)")
        }
    }
}

/// Runs `f` on a fresh named thread and returns its result; a deadlock in `f`
/// fails the test after [`WATCHDOG`] instead of hanging it, and a panic in
/// `f` is re-raised here.
pub fn with_watchdog<F, R>(what: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let h = spawn(what, move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => join(h),
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish after {WATCHDOG:?} — deadlock or blocked thread")
        }
    }
}

/// Count that `thread` holds according to a `holders()` list (0 if absent).
pub fn count_of(holders: &[(ThreadId, u32)], thread: ThreadId) -> u32 {
    holders
        .iter()
        .filter(|(t, _)| *t == thread)
        .map(|(_, n)| *n)
        .sum()
}

/// A `holders()` list without zero entries, sorted by thread id's Debug form
/// (the registry may or may not list threads whose count dropped to 0).
pub fn nonzero(holders: Vec<(ThreadId, u32)>) -> Vec<(ThreadId, u32)> {
    let mut v: Vec<_> = holders.into_iter().filter(|(_, n)| *n > 0).collect();
    v.sort_by_key(|(t, _)| format!("{t:?}"));
    v
}
