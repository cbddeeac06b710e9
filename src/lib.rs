//! A cross-thread handle registry with explicit, per-thread reference counts.
//!
//! Runtime bridges — a JS main thread and a Python worker, a V8 isolate and a
//! thread pool, a game loop and its job threads — pass *proxies* between
//! threads: small integer ids standing for objects that live on the other
//! side. A garbage collector on one side cannot see references held on the
//! other, so objects are freed while a worker still uses them, or kept
//! forever because nobody knows who still holds them. tether maps handles to
//! objects, counts every thread's references **separately**, and finalizes an
//! object only when every thread has let go — on the thread where it must be
//! finalized.
//!
//! # Quick start
//!
//! ```
//! use tether::{Registry, Released};
//!
//! let reg: Registry<String> = Registry::new();
//!
//! // Explicit layer: raw handles, for FFI and runtime bridges.
//! let h = reg.insert("a JS object".to_owned())?;  // this thread is its home, count 1
//! let t = reg.transfer(h)?;                        // move our reference in flight
//!
//! let worker = {
//!     let reg = reg.clone();
//!     std::thread::spawn(move || {
//!         let h = reg.claim(t).unwrap();           // the worker's own count: 1
//!         assert_eq!(reg.get(h).unwrap().as_str(), "a JS object");
//!         reg.release(h).unwrap()                  // its last reference
//!     })
//! };
//! // Released on a worker: the value is sent to its home thread...
//! assert_eq!(worker.join().unwrap(), Released::Queued);
//! // ...and dropped here, at the home thread's next call or pump().
//! assert_eq!(reg.pump(), 1);
//! assert!(reg.is_empty());
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! The RAII layer wraps one reference of the current thread in a [`Proxy`]:
//!
//! ```
//! use tether::Registry;
//!
//! let reg = Registry::new();
//! let p = reg.insert_proxy(vec![1, 2, 3]).unwrap(); // +1 for this thread
//! let q = p.clone();                                // +1, a plain increment
//! assert_eq!(q.len(), 3);                           // Deref<Target = Vec<i32>>
//! let t = q.transfer();                             // q's reference goes in flight
//! std::thread::spawn(move || {
//!     let r = t.claim().unwrap();                   // a proxy on the worker
//!     assert_eq!(r[0], 1);
//! })                                                // dropped there: -1
//! .join()
//! .unwrap();
//! drop(p);                                          // the last one: finalized here
//! assert!(reg.is_empty());
//! ```
//!
//! # The rules
//!
//! * **Counts are per thread.** A thread can only release references it holds;
//!   `release` by a thread that holds nothing is [`Error::NotHeld`] and
//!   changes nothing, so one thread's bug can never free an object another
//!   thread uses.
//! * **Access requires a reference.** `get`, `retain`, `proxy` and `pin`
//!   succeed only for a thread that holds the object, for its home thread
//!   (the one that inserted it), or on a pinned object. Everyone else gets a
//!   first reference only by claiming a [`Transfer`] or upgrading a [`Weak`]
//!   (both made by a thread with access): a guessed id gives no access. A [`Guard`] counts as a reference while it lives.
//! * **No premature release, no leak.** An object is finalized exactly once,
//!   when no thread holds it, it has no pin and no transfer is in flight.
//! * **Home finalization.** The value's `Drop` runs on its home thread: at
//!   once if the last release happens there; otherwise the value is sent
//!   (point to point, never blocking the sender) to the home thread's inbox
//!   and dropped at its next call that takes or gives up a reference
//!   (`insert`, `retain`, `release`, `get`, `proxy`, `pin`, `unpin`,
//!   `claim`, `claim_raw`; a bounded batch) or at [`Registry::pump`] (all of
//!   it). Diagnostics (`count`, `holders`, `len`, `snapshot`) and handing a
//!   reference away (`transfer`, dropping a `Transfer`) do not drain. If the home
//!   thread has exited, the releasing thread drops it. Turn this off with
//!   [`Builder::home_finalization`].
//! * **Handles are never confused.** A finalized object's handle never
//!   resolves again, even after its slot is reused: slots carry a generation,
//!   and a slot whose generation would wrap is retired. Forged ids are
//!   errors, never a panic. One rule: [`Error::Stale`] for an id this
//!   registry issued whose object is dead, [`Error::Invalid`] for an id it
//!   never issued (whatever memory is behind it), [`Error::ForeignRegistry`]
//!   for an id of another live registry (exact while at most 255 registries
//!   are alive: tags are allocated among them). A raw transfer token is
//!   not a counter: a neighbour of a live token claims nothing.
//! * **Thread exit is a release** ([`ThreadExit::Release`], the default), or
//!   kept and reported ([`ThreadExit::Leak`]). A home thread's exit first
//!   finalizes its pending queue. Exit releases the thread's explicit
//!   references; its proxies and guards release themselves when dropped —
//!   including from thread-local destructors that run after tether's, which
//!   may still dereference them. (A proxy leaked with `mem::forget` stays
//!   counted and shows in the [`Snapshot`] as held by an exited thread.)
//! * **Bad input is an error, never a panic**: stale, forged and foreign
//!   handles, double release, overflow ([`Error::Overflow`]), a full registry
//!   ([`Error::Full`], with the value handed back by [`InsertError`]), use in
//!   a child after `fork()` ([`Error::Forked`]).
//! * **Panics lose nothing.** A panicking `Drop` of a stored value is caught;
//!   the registry stays consistent and [`Snapshot::drop_panics`] counts it.
//! * **No lock is held while user code runs**, so a `Drop` of a stored value
//!   may call back into the registry, and a live guard blocks nobody.
//!
//! # Event loops
//!
//! A home thread that sleeps in its event loop is woken when work arrives:
//! [`Registry::set_notify`] sets a callback run on the releasing thread at
//! most once per idle → pending edge (no wake-up lost: pump, check
//! [`Registry::has_pending`], sleep), and [`Registry::pending`] is a future
//! for any executor. `examples/event_loop.rs` shows both.
//!
//! ```
//! use std::sync::mpsc;
//! use tether::Registry;
//!
//! let reg: Registry<u64> = Registry::new();
//! let (wake, events) = mpsc::channel::<()>();     // the home's event loop
//! reg.set_notify(move || { let _ = wake.send(()); })?;
//! let t = reg.transfer(reg.insert(1)?)?;
//! let worker = reg.clone();
//! std::thread::spawn(move || { let h = worker.claim(t).unwrap(); worker.release(h).unwrap(); });
//! let mut finalized = 0;
//! while finalized < 1 {
//!     finalized += reg.pump();
//!     if finalized < 1 && !reg.has_pending() {
//!         events.recv().unwrap();                 // sleeps until notified
//!     }
//! }
//! assert!(reg.is_empty());
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! # Weak references
//!
//! A [`Weak`] finds its object again while it lives, without keeping it
//! alive — what a bridge's proxy cache needs (one proxy per remote object
//! while it lives, a fresh request to its home once it is gone). A thread
//! with access makes one ([`Proxy::downgrade`], [`Registry::downgrade`]);
//! [`Weak::upgrade`] works on any thread and gives a new reference of that
//! thread while the object is live, `None` once its last reference is gone
//! (even while the value still waits in its home's inbox). Never a
//! resurrection, never the object a reused slot holds now. Weak references
//! count nothing and are not listed by [`Registry::snapshot`] or
//! [`Registry::leak_report`].
//!
//! ```
//! use tether::Registry;
//!
//! let reg = Registry::new();
//! let p = reg.insert_proxy(String::from("cached"))?;
//! let w = p.downgrade();
//! let on_worker = std::thread::spawn(move || w.upgrade().map(|q| q.len()));
//! assert_eq!(on_worker.join().unwrap(), Some(6)); // alive: the home holds it
//! let w = p.downgrade();
//! drop(p);                                        // the last reference
//! assert!(w.upgrade().is_none());
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! # Cycles
//!
//! As with `Arc`, a reference cycle through the registry is never freed: a
//! value that holds a [`Transfer`] or a [`Proxy`] of its own object (or of
//! an object that holds one of it) keeps itself alive, and with it every
//! value it owns, for the life of the registry. Nothing inside can detect
//! it; [`Registry::shutdown`] and [`Registry::leak_report`] show such an
//! object as held with no holder thread ("kept by pins/transfers") or held
//! by a proxy's thread. Break cycles the way you would with `Arc`: have the
//! inner direction keep a [`Weak`] (or a plain [`Handle`], which owns
//! nothing, re-acquired through a thread with access when needed).
//!
//! ```
//! use std::sync::Mutex;
//! use std::time::Duration;
//! use tether::{Registry, Transfer};
//!
//! struct Node {
//!     next: Mutex<Option<Transfer<Node>>>,
//! }
//! let reg = Registry::new();
//! let h = reg.insert(Node { next: Mutex::new(None) })?;
//! let t = reg.transfer(h)?;                    // the home's only reference...
//! *reg.get(h)?.next.lock().unwrap() = Some(t); // ...now inside the object: a cycle
//! let report = reg.shutdown(Duration::from_millis(10)).unwrap_err();
//! assert_eq!(report.objects[0].handle, h);
//! assert_eq!(report.objects[0].transfers, 1);  // kept by its own transfer
//! assert!(report.objects[0].holders.is_empty());
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! # Values that are not `Send`
//!
//! A `JsValue` or an `Rc`-based interpreter object is stored wrapped in
//! [`fragile::Fragile`](https://docs.rs/fragile), which is `Send + Sync` but
//! may only be accessed — and must be dropped — on the thread that created
//! it. Home-thread finalization is exactly what makes that sound: workers
//! pass the handle around, ask the home thread to act on the object, and the
//! value is finally dropped at home.
//!
//! ```
//! use fragile::Fragile;
//! use std::{cell::RefCell, rc::Rc};
//! use tether::{Registry, Released};
//!
//! let reg: Registry<Fragile<Rc<RefCell<Vec<u8>>>>> = Registry::new();
//! let h = reg.insert(Fragile::new(Rc::new(RefCell::new(vec![1]))))?;
//! reg.get(h)?.get().borrow_mut().push(2); // only the home thread may touch it
//!
//! let t = reg.transfer(h)?;
//! let reg2 = reg.clone();
//! let released = std::thread::spawn(move || {
//!     let h = reg2.claim(t).unwrap();      // the worker holds the handle...
//!     reg2.release(h).unwrap()             // ...and lets go of it last
//! })
//! .join()
//! .unwrap();
//! assert_eq!(released, Released::Queued); // not dropped on the worker
//! assert_eq!(reg.pump(), 1);              // dropped here, on its home thread
//! assert_eq!(reg.snapshot().drop_panics, 0);
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! # Diagnostics: who holds this, and since where?
//!
//! * [`Registry::leak_report`] lists every live object with its home thread,
//!   each holder thread (by name) and its count, pins, transfers in flight,
//!   age ([`Builder::track_ages`]) and the backtraces of its insert and of
//!   each holder's first reference ([`Builder::capture_backtraces`]).
//! * [`Builder::on_event`] sees an [`Event`] for every insert, each thread's
//!   first and last reference, transfer, claim, pin, unpin, queueing to a
//!   home thread, finalization, thread exit, misuse, and — when the last
//!   `Registry` is dropped with objects still held — the leak report. The
//!   `tracing` feature emits the same events to `tracing`. Events come from
//!   slow paths only: with no hook, the hot paths are unchanged.
//! * [`Builder::on_misuse`] turns caller bugs (stale, forged and foreign
//!   handles, release by a thread that holds nothing, ...) into panics for
//!   test suites ([`Misuse::Panic`]) or log lines ([`Misuse::Log`]).
//! * [`Registry::close`] and [`Registry::shutdown`] shut a bridge down in two
//!   phases without hanging: no new objects or claims, holders finish, and
//!   whatever is still held at the timeout comes back as a [`LeakReport`].
//! * The `serde` feature serializes [`Snapshot`] and [`LeakReport`].
//!
//! ```
//! use std::time::Duration;
//! use tether::Registry;
//!
//! let reg = Registry::builder().track_ages(true).build();
//! let h = reg.insert("socket")?;
//! let t = reg.transfer(h)?;
//! std::thread::Builder::new()
//!     .name("worker".into())
//!     .spawn(move || std::mem::forget(t.claim().unwrap())) // a bug: a proxy leaked
//!     .unwrap()
//!     .join()
//!     .unwrap();
//! let report = reg.shutdown(Duration::from_millis(10)).unwrap_err();
//! assert_eq!(report.objects[0].handle, h);
//! println!("{report}"); // handle, home, age, and the holder: worker × 1 (exited)
//! # Ok::<(), tether::Error>(())
//! ```
//!
//! # Interning
//!
//! [`Interner`] gives "the object for key K" without check-then-create
//! races: the first caller runs `init`, concurrent callers wait for it and
//! each get their own reference to the same object, a failing `init` is
//! reported to all of them without poisoning the key, and a key is forgotten
//! when its object is finalized. A thread interning a key whose object it
//! already holds is served by its own cache, with no lock: as fast as a
//! [`Registry::get`].
//!
//! # Compared with
//!
//! | tool | what it does not do |
//! |---|---|
//! | `Arc<T>` | one shared count: cannot tell which thread holds what, cannot refuse a release by a thread that holds nothing, drops on whichever thread lets go last, has no integer id for FFI |
//! | `slotmap`, `sharded-slab` | generational ids, but no reference counts: removal is explicit, so "who still uses this?" is the caller's problem |
//! | `fragile`, `send_wrapper` | make a value thread-bound, but panic or leak if the last owner is on another thread; no ids, no counts |
//! | PyO3's deferred decref pool | defers decrefs to the GIL holder, but with one global pool and no per-thread accounting |
//! | Neon's `Root` | keeps a JS object alive from Rust, but one owner, no counts per thread, leaks if dropped off the JS thread |
//!
//! # Safety and Correctness
//!
//! The unsafe code is confined to: the paged arrays (`page.rs` — pointers to
//! pages that never move), the slot value cell (`slot.rs` — written only by
//! the inserting thread before publication, moved out only by the thread
//! that dropped the last hold), per-thread table pointers (owned by the
//! registry until the owning thread exits and its last late proxy or guard
//! is gone — `inner/exit.rs`, `Inner::late_hold_gone`), proxies' pointers
//! into those, a slot's pointer to its home inbox (`inbox.rs` — one *lent*
//! count of `Inbox::lent`, which owns a strong count of the inbox's `Arc`
//! while it is non-zero; counts move in batches and are given back once),
//! each thread's pointer to the interner cache it used last
//! (`interner/cache.rs` — cleared before that cache can be freed; tested
//! under AddressSanitizer with user code re-entering from the cache's key
//! comparison and with interning from thread-local destructors),
//! and the `pthread_atfork` and `madvise` declarations. Each site carries a `// SAFETY:`
//! argument. They rest on these protocol invariants, each model-checked by
//! loom (`loom-tests/`, which also holds mutants proving the models fail
//! when the protocol is broken):
//!
//! | invariant | loom models |
//! |---|---|
//! | a slot's *holds* (threads holding it + pins + in-flight transfers) reach zero exactly once per object, and only that thread finalizes | `concurrent_last_releases_finalize_once_at_home`, `holder_retains_while_other_thread_drops_its_last`, `pin_unpin_racing_last_release` |
//! | holds are only incremented from a non-zero value of the right generation (CAS): nothing resurrects, a stale handle never acquires a reused slot | `stale_handle_never_resolves_to_reused_slot` |
//! | a transfer carries its own hold; a raw token is claimed at most once | `transfer_in_flight_keeps_object_alive`, `raw_transfer_taken_back_racing_claim_raw` |
//! | a guard or proxy is a reference of its thread | `guard_blocks_finalization_not_threads` |
//! | a value sent to a home inbox is dropped exactly once, even if the home exits meanwhile (the sender's swap on `pending` and `close`'s RMW on it: one reads from the other) | `remote_release_racing_home_exit_is_never_lost`, `limited_drain_racing_a_remote_release_and_exit_never_strands`, `thread_exit_racing_release` |
//! | the `pending` flag never loses a queued value | `pending_flag_never_loses_a_queued_value` |
//! | pages are installed once (CAS); a thread always finds its table | `concurrent_first_use_installs_pages_once` |
//! | no lock is held while user code runs | `reentrant_drop_racing_remote_release` |
//! | a free slot is claimed by exactly one insert (CAS on its `home`), even when a thread popping its own free-slot cache races another stealing from it; `Full` only when no slot is free; `len()` never exceeds the capacity | `cached_free_slot_is_claimed_once`, `insert_at_capacity_racing_release` |
//! | an interned key's `init` runs once per object; waiters get the same object, each with its own reference | `two_threads_interning_one_key_init_runs_once` |
//! | interning never returns a dead handle (a dying object's hold is refused by the CAS; a fresh one is made) | `intern_racing_final_release_never_returns_a_dead_handle` |
//! | a failed `init` wakes its waiters with the error and leaves the key usable | `failing_init_with_a_waiter_does_not_poison_the_key` |
//! | `shutdown` returns `Ok` only after every value released to a home was dropped there (a value counts from "not live" until its `Drop` ran out of the inbox), and never while an insert can still complete (Dekker on `closed`) | `shutdown_waits_for_a_value_on_its_way_home`, `no_insert_completes_after_shutdown_says_ok` |
//! | the access rule is decided about the object a thread's first hold lands on: on the state word its CAS replaces and the home read after that word was, which is that object's (a successor id taking the slot mid-check gets nothing; a refusal trusts the home only if the object still lives after it was read, else says `Stale`) | `successor_id_gives_no_access_when_the_slot_is_reused_mid_check`, `guard_blocks_finalization_not_threads` |
//! | a home's notifier runs at most once per idle → pending edge, and no wake-up is lost (the sender's swap on `pending`, then `armed`; the re-arm's `armed`, then its RMW on `pending`) | `a_value_queued_during_the_homes_drain_is_never_lost`, `two_senders_on_one_edge_notify_once` |
//! | a weak upgrade takes its hold by the same CAS (non-zero holds, right generation): it wins against the last release or returns `None`, never a finalized or queued value | `upgrade_racing_the_last_remote_release_never_resurrects`, `upgrade_racing_the_homes_finalization_never_sees_the_value_go` |
//!
//! # Implementation notes
//!
//! **Vocabulary**, used the same way in the code:
//!
//! * A thread's **count** for an object: everything that thread holds on
//!   it — its **explicit references** (`insert`, `retain`, `claim`,
//!   given up with `release` or `transfer`) plus its **RAII references**
//!   (live [`Proxy`]s and [`Guard`]s, which give themselves up on drop;
//!   `Kind::Root` and "roots" in the code). It lives in the thread's own
//!   table **entry** (`total << 32 | explicit`).
//! * A **hold** is what keeps an object alive in its slot's state word:
//!   one per thread whose count is non-zero, one per pin, one per
//!   transfer in flight. A thread's 0→1 transition (its **first
//!   reference**, where the access rule applies) takes a hold; its 1→0
//!   transition (**letting go**) drops it; the **last hold** finalizes.
//! * `Held` (in `inner/resolve.rs`) is one thread's hold on one object as
//!   a value — slot, table, entry, handle — made by the one resolve path
//!   every operation starts from (`lookup` fast, `resolve` general).
//! * A **slot claim** takes a free slot for an insert (a CAS on its `home`);
//!   a **transfer claim** turns a transfer's hold into a reference of the
//!   claiming thread. A **late hold** is a proxy or guard that outlives its
//!   thread's exit hook.
//!
//! * **Slots** live in pages of geometrically growing size that never move:
//!   a lookup is one leading-zero count (the page), one bit cleared (the
//!   offset) and one load. Each slot has one
//!   atomic state word `generation << 32 | holds`. Pages are allocated
//!   zeroed (mapped lazily); slot pages of 2 MiB or more ask Linux for
//!   transparent huge pages, so a million live objects do not miss the TLB
//!   on every access.
//! * **Per-thread counts** live in a dense table per thread and registry,
//!   indexed by slot: retaining or releasing a handle the thread already
//!   holds is a plain increment of a word nobody else writes. Only a thread's
//!   0↔1 transitions touch the shared state word. A thread's word is
//!   `total << 32 | refs` (all it holds, and of that its explicit
//!   references), so the limit check is one compare of the whole word and
//!   the count `retain` and `release` report is one shift.
//! * **Free slots** are claimed with one CAS on the slot's `home` pointer.
//!   A thread keeps up to 32 slots it freed in its own cache (written with
//!   plain stores); the global free list's lock is taken only to spill or
//!   refill that cache, and a registry at capacity steals from the other
//!   threads' caches before it says `Full`. Insert + final release on one
//!   thread: one CAS and one `fetch_sub`, no lock, no shared counter.
//! * **`len()`** sums per-thread insert and finalize counters (each written
//!   only by its thread), so there is no shared live counter to contend on;
//!   it is exact whenever no other thread is mid-insert or mid-release.
//! * **Finding the thread's table** is one thread-local read: each thread
//!   caches the table of the registry it used last, keyed by the registry's
//!   serial shifted above the tag bits. ORing in a handle's tag gives a
//!   value that equals the registry's own key only if both the cache and
//!   the handle belong to this registry: one comparison checks both.
//! * **Remote final releases** move the value into the home thread's own
//!   crossbeam channel; the home thread checks one relaxed flag per call.
//! * **Fork detection** costs the fast paths nothing: a `pthread_atfork`
//!   child handler sets a flag and clears the forking thread's cached
//!   table (the only thread a child has), so the first call in a child
//!   misses the cache and the slow path, which loads the flag, says
//!   `Forked`.
//! * Limits (index, generation and tag bits) are in one place, `limits.rs`.

#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![deny(unsafe_op_in_unsafe_fn)]

mod builder;
mod caught;
mod diag;
mod error;
mod fork;
mod free;
mod guard;
mod handle;
mod inbox;
mod inner;
mod interner;
mod leak;
mod limits;
mod local;
mod page;
mod pending;
mod proxy;
mod registry;
#[cfg(feature = "serde")]
mod serde_impl;
mod slot;
mod snapshot;
mod sync;
mod tag;
mod tid;
mod token;
mod transfer;
mod weak;

pub use builder::{Builder, ThreadExit};
pub use diag::{Event, Misuse};
pub use error::{Error, InsertError};
pub use guard::Guard;
pub use handle::Handle;
pub use interner::{InternError, Interner};
pub use leak::{LeakHolder, LeakReport, LeakedObject};
pub use pending::Pending;
pub use proxy::Proxy;
pub use registry::{Registry, Released};
pub use snapshot::{HolderSnapshot, ObjectSnapshot, Snapshot, ThreadSnapshot};
pub use transfer::Transfer;
pub use weak::Weak;
