//! The model-based check of a whole registry, shared by the proptest
//! (`tests/model.rs`) and the fuzz target (`fuzz/fuzz_targets/model.rs`).
//!
//! A [`Script`] runs one step at a time on 3 real worker threads, next to a
//! reference model that keeps per-thread counts (explicit references and
//! proxies apart) in ordinary maps. A coordinator sends step `k` to the
//! worker it names and waits for the result, so execution is deterministic.
//! After every step the registry and the model must agree on the call's
//! result (`Ok` value or exact `Error`), the live objects (`len()`), the
//! acting thread's `count()` of every handle, every thread's count
//! (`holders()`), pins, in-flight transfers, home threads, pending queues
//! and retired slots (`snapshot()`), `is_closed()`, the interner's keys
//! (`lookup`, `len`), the values dropped during the step (exactly once, on
//! the right thread) and the events the `on_event` hook saw during it (as a
//! multiset: kind, object, thread, and the misuse's operation and error or
//! the exit's counts). At the end every worker exits (dropping its proxies
//! first), the last `Registry` is dropped (the leak report must name exactly
//! the live objects), then the unclaimed transfers and the table, and every
//! value must have been dropped exactly once.
//!
//! Limits: each script picks a capacity (small, so `Full` and slot reuse are
//! reached; or [`BIG_CAPACITY`], so one home can have more values queued than
//! a drain batch takes), a `max_count` (small, so `Overflow` is reached on
//! `retain`, `get`, `proxy`, `try_clone`, claims and interning) and a
//! generation limit (small, so slots retire and `Full` comes sooner).
//!
//! Handles: a successful `insert` must return this registry's tag, a free
//! slot below the capacity that is not retired, and that slot's current
//! generation, so no handle is ever issued twice. An id that names no object
//! of the model is `ForeignRegistry` (another tag), `Invalid` (tag 0, index
//! beyond the capacity, or a generation the slot has not reached) or `Stale`
//! (a free or retired slot, or a generation already passed). An arbitrary
//! raw id is a `Handle` iff it is neither 0 nor `>= 2^53`.
//!
//! Queued finalizations: the model keeps each home thread's pending queue.
//! A thread's exit releases its references in slot-index order (the order
//! their values queue home in). `pump()`, `shutdown` and thread exit drain
//! all of it; every call into the registry by `insert`, `insert_proxy`,
//! `retain`, `get`, `proxy`, `release`, `pin`, `unpin`, `claim`,
//! `Transfer::claim`, a successful `claim_raw` and
//! `intern` drains a batch of [`DRAIN_BATCH`] first (`intern_proxy` makes
//! three such calls; an `intern` whose `init` fails, or refused by a closed
//! registry before its `init`, none). `count`, `holders`, `transfer`,
//! `Transfer::from_raw`, dropping a `Transfer` or a proxy, `try_clone`, a
//! failed `claim_raw`, a claim refused by a closed registry, and ids rejected
//! by the range checks (foreign tag, tag 0, index beyond the capacity) do
//! not drain.

mod check;
mod harness;
mod raii;
mod reference;
mod script;
mod worker;

pub use check::run;
pub use script::{Forge, Op, Raw, Script, Step, H};

/// Number of worker threads.
pub const WORKERS: usize = 3;
/// The large capacity: more than a drain batch of objects can be in flight
/// to one home at once (the home's own inserts drain its queue).
pub const BIG_CAPACITY: usize = 40;
/// Interner keys are `0..KEYS`.
pub const KEYS: u8 = 3;
/// Values an ordinary call drains (`limits::DRAIN_BATCH`).
const DRAIN_BATCH: usize = 32;
/// Slots in the registry's first page (`limits::PAGE_BASE`): a bigger
/// capacity has slot pages that exist only once a fresh slot there was used.
const FIRST_PAGE: usize = 32;

// The big capacity must let a home have more values queued than one batch.
const _: () = assert!(BIG_CAPACITY > DRAIN_BATCH + 1);
