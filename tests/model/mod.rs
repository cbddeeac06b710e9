//! The model-based check of a whole registry, shared by the proptest
//! (`tests/model.rs`) and the fuzz target (`fuzz/fuzz_targets/model.rs`).
//!
//! A [`Script`] runs one step at a time on 3 real worker threads, next to a
//! reference model that keeps per-thread counts in ordinary maps. A
//! coordinator sends step `k` to the worker it names and waits for the
//! result, so execution is deterministic. After every step the registry and
//! the model must agree on the call's result (`Ok` value or exact `Error`),
//! the live objects (`len()`), the acting thread's `count()` of every handle,
//! every thread's count (`holders()`), pins, in-flight transfers and pending
//! queues (`snapshot()`), and the values dropped during the step (exactly
//! once, on the right thread). At the end every worker exits, the registry
//! is dropped, and every value must have been dropped exactly once.
//!
//! Handles: a successful `insert` must return this registry's tag, a free
//! slot below the capacity and that slot's current generation (the number
//! of objects it held before), so no handle is ever issued twice. An id that
//! names no object of the model is `ForeignRegistry` (another tag),
//! `Invalid` (tag 0, index beyond the capacity, or a generation the slot has
//! not reached) or `Stale` (a free slot, or a generation already passed).
//! An arbitrary raw id is a `Handle` iff it is neither 0 nor `>= 2^53`.
//!
//! Queued finalizations: the model keeps each home thread's pending queue.
//! `pump()` and thread exit drain all of it; `insert`, `retain`, `get`,
//! `release`, `pin`, `unpin`, `claim` and a successful `claim_raw` drain a
//! batch of 32 first. `count`, `holders`, `transfer`, `Transfer::from_raw`,
//! dropping a `Transfer`, a failed `claim_raw`, and ids rejected by the range
//! checks (foreign tag, tag 0, index beyond the capacity) do not drain.

mod harness;
mod reference;
mod script;
mod worker;

pub use harness::run;
pub use script::{Forge, Op, Raw, Script, Step, H};

/// Number of worker threads.
pub const WORKERS: usize = 3;
/// Registry capacity: small, so `Full` and slot reuse are reached.
const CAPACITY: usize = 6;
/// Values an ordinary call drains (`limits::DRAIN_BATCH`).
const DRAIN_BATCH: usize = 32;
