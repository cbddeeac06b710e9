//! Helpers for tether's loom models (see `tests/models.rs`).
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release`.
//! Without `--cfg loom` this crate is empty.
#![cfg(loom)]

use std::cell::Cell;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

loom::thread_local! {
    /// Set on the model thread that is the home thread.
    static IS_HOME: Cell<bool> = Cell::new(false);
}

/// Finalization record shared by a model's threads.
///
/// Every drop is counted first, without touching thread-locals: values are
/// also dropped during a thread's thread-local teardown (its exit hook),
/// where thread-locals are gone. Where the drop ran is then classified as
/// home / elsewhere / during teardown (thread unknown).
#[derive(Clone)]
pub struct Drops {
    total: Arc<AtomicUsize>,
    at_home: Arc<AtomicUsize>,
    in_teardown: Arc<AtomicUsize>,
}

impl Default for Drops {
    fn default() -> Self {
        Self::new()
    }
}

impl Drops {
    /// A new, zeroed record.
    pub fn new() -> Self {
        Drops {
            total: Arc::new(AtomicUsize::new(0)),
            at_home: Arc::new(AtomicUsize::new(0)),
            in_teardown: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Marks the calling model thread as the home thread.
    pub fn set_home(&self) {
        IS_HOME.with(|h| h.set(true));
    }

    /// Drops so far, in total.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Drops so far known to have run on the home thread (outside teardown).
    pub fn at_home(&self) -> usize {
        self.at_home.load(Ordering::SeqCst)
    }

    /// Drops so far that ran in some thread's thread-local teardown.
    pub fn in_teardown(&self) -> usize {
        self.in_teardown.load(Ordering::SeqCst)
    }

    /// Yields to the model's other threads until `n` values were dropped.
    /// loom's `join` returns before the joined thread's thread-local
    /// destructors (its exit hook) have run, where std's waits for them; a
    /// value that never comes (stranded) makes loom fail the model when the
    /// spin exceeds its branch limit.
    pub fn wait_for(&self, n: usize) {
        while self.total() < n {
            loom::thread::yield_now();
        }
    }

    /// A value that records its drop here.
    pub fn value(&self, id: u32) -> Tracked {
        Tracked {
            id,
            drops: self.clone(),
        }
    }
}

/// A stored value that records where it was dropped.
pub struct Tracked {
    /// Distinguishes values in reuse models.
    pub id: u32,
    drops: Drops,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.total.fetch_add(1, Ordering::SeqCst);
        match IS_HOME.try_with(Cell::get) {
            Ok(true) => {
                self.drops.at_home.fetch_add(1, Ordering::SeqCst);
            }
            Ok(false) => {}
            Err(_) => {
                self.drops.in_teardown.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// A stored value whose `Drop` releases another handle of the same registry
/// (re-entrancy, invariant 12).
pub struct Node {
    /// Records this node's own drop.
    pub tracked: Tracked,
    /// Released when this node is dropped.
    pub on_drop: Option<(tether::Registry<Node>, tether::Handle)>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((reg, h)) = self.on_drop.take() {
            reg.release(h).expect("the node's thread holds its child");
        }
    }
}

/// The handle of an insert that succeeded, or `None` after checking that
/// it failed with `Full` and handed value `id` back.
pub fn inserted_or_full(
    r: Result<tether::Handle, tether::InsertError<Tracked>>,
    id: u32,
) -> Option<tether::Handle> {
    match r {
        Ok(h) => Some(h),
        Err(e) => {
            assert_eq!(e.error(), tether::Error::Full);
            assert_eq!(e.into_value().id, id, "the value is handed back");
            None
        }
    }
}

/// Runs `f` under loom like `loom::model`, with room for longer executions.
///
/// loom's default limit of 1000 branches per execution counts every atomic
/// access; the models' threads run a whole insert, transfer, release and
/// thread exit, so they need more. The limit still catches a spin that never
/// ends (a stranded value waited for), just later. `LOOM_MAX_BRANCHES`
/// overrides it.
///
/// Counts the executions it explores: a failure says how many passed before
/// it (see [`model_with_branches`]).
pub fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    model_with_branches(10_000, f);
}

std::thread_local! {
    /// Executions started by the model running on this OS thread (loom runs
    /// a model's threads as coroutines on the test's own thread), or `None`
    /// outside a model. A std thread-local: the harness runs tests in
    /// parallel, and this must not be part of the model.
    static STARTED: Cell<Option<u64>> = const { Cell::new(None) };
    /// The execution whose failure was last reported.
    static REPORTED: Cell<u64> = const { Cell::new(0) };
}

/// [`model`] with a branch limit of `max_branches` per execution (unless
/// `LOOM_MAX_BRANCHES` is set).
///
/// A failing execution ends loom's search, so the executions started before
/// it all passed. On the first panic inside a model (an assertion, or loom's
/// own report of a deadlock, a data race or the branch limit) this prints
/// `loom-tests: execution N failed, after P passing` to stderr, before the
/// panic message: `P == 0` means the first execution loom explores already
/// fails. (A panic caught inside the model would print it too; no model
/// catches one.) A passing model prints how many executions it explored (shown
/// with `--nocapture`). `mutants.sh` reads both.
pub fn model_with_branches<F: Fn() + Sync + Send + 'static>(max_branches: usize, f: F) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Once per execution: loom panics again while unwinding a
            // failure.
            if let Some(n) = STARTED.with(Cell::get) {
                if REPORTED.with(|r| r.replace(n)) != n {
                    eprintln!("loom-tests: execution {n} failed, after {} passing", n - 1);
                }
            }
            previous(info);
        }));
    });
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = max_branches;
    }
    STARTED.with(|s| s.set(Some(0)));
    builder.check(move || {
        STARTED.with(|s| s.set(s.get().map(|n| n + 1)));
        f();
    });
    if let Some(n) = STARTED.with(|s| s.take()) {
        eprintln!("loom-tests: {n} executions, all passed");
    }
}
