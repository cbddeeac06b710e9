//! Diagnostics: lifecycle events, the misuse policy, and the origin records
//! (insert time and backtraces) behind the leak report.
//!
//! Everything here runs on slow paths only (a thread's 0↔1 transitions,
//! inserts, transfers, finalization, errors); the hot paths never look at it.
//! No registry lock is held while the event hook runs, and a panicking hook
//! is caught and counted, never propagated into the registry.

use std::backtrace::Backtrace;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, ThreadId};
use crate::{Error, Handle, LeakReport};

/// The event hook's type.
pub(crate) type Hook = Arc<dyn Fn(&Event) + Send + Sync + 'static>;

/// Something that happened in a registry, as seen by
/// [`Builder::on_event`](crate::Builder::on_event) (and by `tracing` with the
/// `tracing` feature).
///
/// Every variant names the thread it happened on. Events are delivered
/// synchronously on that thread, with no registry lock held; the hook may
/// call the registry.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tether::{Event, Registry};
///
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&log);
/// let reg = Registry::builder()
///     .on_event(move |e: &Event| sink.lock().unwrap().push(e.name()))
///     .build();
/// let h = reg.insert("x")?;
/// reg.release(h)?;
/// assert_eq!(
///     *log.lock().unwrap(),
///     ["inserted", "first_reference", "last_reference", "finalized"]
/// );
/// # Ok::<(), tether::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An object was inserted; `thread` is its home. (It is also that
    /// thread's first reference: a `FirstReference` follows.)
    Inserted {
        /// The new object.
        handle: Handle,
        /// The inserting (home) thread.
        thread: ThreadId,
    },
    /// A thread's count for an object went from 0 to 1 (insert, first
    /// retain/get/proxy, claim, intern).
    FirstReference {
        /// The object.
        handle: Handle,
        /// The thread that now holds it.
        thread: ThreadId,
    },
    /// A thread's count for an object went from 1 to 0 (release, last proxy
    /// or guard dropped, transfer of its last reference, thread exit).
    LastReference {
        /// The object.
        handle: Handle,
        /// The thread that no longer holds it.
        thread: ThreadId,
    },
    /// One of `thread`'s references went in flight as a `Transfer`.
    Transferred {
        /// The object.
        handle: Handle,
        /// The sending thread.
        thread: ThreadId,
    },
    /// A transfer was claimed.
    Claimed {
        /// The object.
        handle: Handle,
        /// The claiming thread.
        thread: ThreadId,
    },
    /// The object was pinned.
    Pinned {
        /// The object.
        handle: Handle,
        /// The pinning thread.
        thread: ThreadId,
    },
    /// One pin was removed.
    Unpinned {
        /// The object.
        handle: Handle,
        /// The unpinning thread.
        thread: ThreadId,
    },
    /// The last reference went away on `thread`, which is not the home
    /// thread: the value was queued to its home.
    QueuedHome {
        /// The object.
        handle: Handle,
        /// The releasing thread.
        thread: ThreadId,
    },
    /// The value was dropped, on `thread`.
    Finalized {
        /// The (now stale) handle.
        handle: Handle,
        /// The thread the `Drop` ran on.
        thread: ThreadId,
        /// The `Drop` panicked (caught; counted in the snapshot).
        panicked: bool,
    },
    /// A thread's exit hook ran for this registry.
    ThreadExited {
        /// The exiting thread.
        thread: ThreadId,
        /// Objects whose references it released (`ThreadExit::Release`).
        released: usize,
        /// Objects it still holds: kept by `ThreadExit::Leak`, or proxies
        /// that outlive the thread's exit hook.
        kept: usize,
    },
    /// A call failed because of a caller bug: a stale, forged or foreign
    /// handle, a release or access by a thread that holds nothing, an unpin
    /// without a pin, a transfer claimed twice (see [`Error::is_misuse`]).
    Misuse {
        /// The call that failed (`"retain"`, `"claim_raw"`, ...).
        operation: &'static str,
        /// What was wrong.
        error: Error,
        /// The calling thread.
        thread: ThreadId,
    },
    /// The last [`Registry`](crate::Registry) clone was dropped while objects
    /// were still held. Proxies and transfers keep the table (and the
    /// objects) alive; explicit references and pins can no longer be
    /// released and are finalized when the table goes.
    Leaked {
        /// What was still held.
        report: LeakReport,
        /// The thread that dropped the last `Registry`.
        thread: ThreadId,
    },
}

impl Event {
    /// The event's kind as a `snake_case` name (`"inserted"`,
    /// `"first_reference"`, ...): the `tracing` event name too.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Inserted { .. } => "inserted",
            Event::FirstReference { .. } => "first_reference",
            Event::LastReference { .. } => "last_reference",
            Event::Transferred { .. } => "transferred",
            Event::Claimed { .. } => "claimed",
            Event::Pinned { .. } => "pinned",
            Event::Unpinned { .. } => "unpinned",
            Event::QueuedHome { .. } => "queued_home",
            Event::Finalized { .. } => "finalized",
            Event::ThreadExited { .. } => "thread_exited",
            Event::Misuse { .. } => "misuse",
            Event::Leaked { .. } => "leaked",
        }
    }

    /// The object the event is about, if it is about one.
    pub fn handle(&self) -> Option<Handle> {
        match self {
            Event::Inserted { handle, .. }
            | Event::FirstReference { handle, .. }
            | Event::LastReference { handle, .. }
            | Event::Transferred { handle, .. }
            | Event::Claimed { handle, .. }
            | Event::Pinned { handle, .. }
            | Event::Unpinned { handle, .. }
            | Event::QueuedHome { handle, .. }
            | Event::Finalized { handle, .. } => Some(*handle),
            Event::Misuse { error, .. } => error.handle(),
            Event::ThreadExited { .. } | Event::Leaked { .. } => None,
        }
    }

    /// The thread the event happened on.
    pub fn thread(&self) -> ThreadId {
        match self {
            Event::Inserted { thread, .. }
            | Event::FirstReference { thread, .. }
            | Event::LastReference { thread, .. }
            | Event::Transferred { thread, .. }
            | Event::Claimed { thread, .. }
            | Event::Pinned { thread, .. }
            | Event::Unpinned { thread, .. }
            | Event::QueuedHome { thread, .. }
            | Event::Finalized { thread, .. }
            | Event::ThreadExited { thread, .. }
            | Event::Misuse { thread, .. }
            | Event::Leaked { thread, .. } => *thread,
        }
    }
}

impl fmt::Display for Event {
    /// One line: `name handle on thread`, plus the details of the kind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(h) = self.handle() {
            write!(f, " {h}")?;
        }
        write!(f, " on {:?}", self.thread())?;
        match self {
            Event::Finalized { panicked: true, .. } => write!(f, " (drop panicked)"),
            Event::ThreadExited { released, kept, .. } => {
                write!(f, ": released {released}, kept {kept}")
            }
            Event::Misuse {
                operation, error, ..
            } => write!(f, ": {operation}: {error}"),
            Event::Leaked { report, .. } => {
                write!(f, ": {} object(s) still held", report.objects.len())
            }
            _ => Ok(()),
        }
    }
}

/// What a registry does when a call fails because of a caller bug (see
/// [`Error::is_misuse`]), set with
/// [`Builder::on_misuse`](crate::Builder::on_misuse). Whatever the policy, the
/// registry is unchanged by the failed call and the event hook sees a
/// [`Event::Misuse`].
///
/// ```should_panic
/// use tether::{Misuse, Registry};
///
/// let reg = Registry::builder().on_misuse(Misuse::Panic).build();
/// let h = reg.insert(1).unwrap();
/// reg.release(h).unwrap();
/// let _ = reg.release(h); // double release: panics, naming the handle and thread
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Misuse {
    /// Return the `Err` (the default).
    #[default]
    Error,
    /// Panic in the caller, with a message naming the operation, the handle,
    /// the thread and (with [`capture_backtraces`](crate::Builder::capture_backtraces))
    /// where the object was inserted. For test suites that want the first
    /// misuse to stop them. The panic is raised after the registry is back
    /// in a consistent state, with no lock held.
    Panic,
    /// Write one line to stderr (and return the `Err`): you asked for it.
    Log,
}

/// Where and when an object came from (kept only with
/// `capture_backtraces(true)` or `track_ages(true)`).
struct Origin {
    handle: Handle,
    born: Instant,
    inserted_at: Option<Arc<Backtrace>>,
    /// Each holding thread's first retain / claim of its current hold.
    first_held_at: Vec<(ThreadId, Arc<Backtrace>)>,
}

/// A live object's origin, for the leak report.
pub(crate) struct OriginView {
    pub(crate) age: Duration,
    pub(crate) inserted_at: Option<Arc<Backtrace>>,
    pub(crate) first_held_at: Vec<(ThreadId, Arc<Backtrace>)>,
}

/// The diagnostics state of one registry.
pub(crate) struct Diag {
    hook: Option<Hook>,
    pub(crate) misuse: Misuse,
    backtraces: bool,
    /// Origins are kept (`capture_backtraces` or `track_ages`).
    origins_on: bool,
    /// Origins are kept or somebody listens: the slow paths have work to do.
    active: bool,
    origins: Mutex<HashMap<u32, Origin>>,
    hook_panics: AtomicU64,
    /// `Event::Leaked` was delivered (it is delivered once).
    leak_reported: AtomicBool,
}

/// Diagnostics settings, from the builder.
#[derive(Clone, Default)]
pub(crate) struct DiagConfig {
    pub(crate) hook: Option<Hook>,
    pub(crate) misuse: Misuse,
    pub(crate) backtraces: bool,
    pub(crate) ages: bool,
}

impl fmt::Debug for DiagConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiagConfig")
            .field("hook", &self.hook.as_ref().map(|_| "Fn(&Event)"))
            .field("misuse", &self.misuse)
            .field("backtraces", &self.backtraces)
            .field("ages", &self.ages)
            .finish()
    }
}

impl Diag {
    pub(crate) fn new(config: DiagConfig) -> Self {
        let origins_on = config.backtraces || config.ages;
        let active = origins_on || config.hook.is_some() || cfg!(feature = "tracing");
        Diag {
            hook: config.hook,
            misuse: config.misuse,
            backtraces: config.backtraces,
            origins_on,
            active,
            origins: Mutex::new(HashMap::new()),
            hook_panics: AtomicU64::new(0),
            leak_reported: AtomicBool::new(false),
        }
    }

    /// Whether anybody listens to events (the hook, or `tracing`).
    #[inline]
    pub(crate) fn listening(&self) -> bool {
        cfg!(feature = "tracing") || self.hook.is_some()
    }

    /// Delivers an event, built only if somebody listens. Always inlined:
    /// unheard, it is one test of a flag, less than a call.
    #[inline(always)]
    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if self.listening() {
            self.deliver(&event());
        }
    }

    #[cold]
    pub(crate) fn deliver(&self, event: &Event) {
        // A subscriber may panic (e.g. `fmt`'s thread-local buffer is gone
        // when a thread-exit event comes from a thread-local destructor):
        // caught like the hook's, never unwinding into the registry.
        #[cfg(feature = "tracing")]
        self.guarded(|| trace_event(event));
        if let Some(hook) = &self.hook {
            self.guarded(|| hook(event));
        }
    }

    /// Runs a listener, catching and counting its panic.
    fn guarded(&self, listener: impl FnOnce()) {
        if crate::caught::call_caught(listener) {
            self.hook_panics.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `true` the first time only: whether to deliver `Event::Leaked`.
    pub(crate) fn first_leak_report(&self) -> bool {
        !self.leak_reported.swap(true, Ordering::Relaxed)
    }

    /// Counts a panic caught in another callback (a home's notifier).
    pub(crate) fn count_hook_panic(&self) {
        self.hook_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Panics caught in the event hook and the notifiers.
    pub(crate) fn hook_panics(&self) -> u64 {
        self.hook_panics.load(Ordering::Relaxed)
    }

    fn capture(&self) -> Option<Arc<Backtrace>> {
        self.backtraces
            .then(|| Arc::new(Backtrace::force_capture()))
    }

    /// An object was inserted by `thread`.
    #[inline]
    pub(crate) fn inserted(&self, handle: Handle, thread: ThreadId) {
        if self.active {
            self.inserted_slow(handle, thread);
        }
    }

    #[cold]
    #[inline(never)]
    fn inserted_slow(&self, handle: Handle, thread: ThreadId) {
        if self.origins_on {
            let origin = Origin {
                handle,
                born: Instant::now(),
                inserted_at: self.capture(),
                first_held_at: Vec::new(),
            };
            self.origins.lock().insert(handle.index(), origin);
        }
        self.emit(|| Event::Inserted { handle, thread });
        self.emit(|| Event::FirstReference { handle, thread });
    }

    /// `thread`'s count for `handle` went 0 → 1 (not by insert).
    #[inline]
    pub(crate) fn first_reference(&self, handle: Handle, thread: ThreadId) {
        if self.active {
            self.first_reference_slow(handle, thread);
        }
    }

    #[cold]
    #[inline(never)]
    fn first_reference_slow(&self, handle: Handle, thread: ThreadId) {
        if self.backtraces {
            let bt = self.capture();
            let mut origins = self.origins.lock();
            if let (Some(o), Some(bt)) = (origins.get_mut(&handle.index()), bt) {
                if o.handle == handle {
                    o.first_held_at.retain(|(t, _)| *t != thread);
                    o.first_held_at.push((thread, bt));
                }
            }
        }
        self.emit(|| Event::FirstReference { handle, thread });
    }

    /// `thread`'s count for `handle` went 1 → 0.
    #[inline]
    pub(crate) fn last_reference(&self, handle: Handle, thread: ThreadId) {
        if self.active {
            self.last_reference_slow(handle, thread);
        }
    }

    #[cold]
    #[inline(never)]
    fn last_reference_slow(&self, handle: Handle, thread: ThreadId) {
        if self.backtraces {
            let mut origins = self.origins.lock();
            if let Some(o) = origins.get_mut(&handle.index()) {
                if o.handle == handle {
                    o.first_held_at.retain(|(t, _)| *t != thread);
                }
            }
        }
        self.emit(|| Event::LastReference { handle, thread });
    }

    /// The object died (its slot is free): forget its origin.
    #[inline]
    pub(crate) fn died(&self, handle: Handle) {
        if self.origins_on {
            self.died_slow(handle);
        }
    }

    #[cold]
    #[inline(never)]
    fn died_slow(&self, handle: Handle) {
        if self.origins_on {
            let removed = {
                let mut origins = self.origins.lock();
                match origins.get(&handle.index()) {
                    Some(o) if o.handle == handle => origins.remove(&handle.index()),
                    _ => None,
                }
            };
            drop(removed); // backtraces freed outside the lock
        }
    }

    /// The origin of a live object, if kept.
    pub(crate) fn origin(&self, handle: Handle) -> Option<OriginView> {
        if !self.origins_on {
            return None;
        }
        let origins = self.origins.lock();
        let o = origins
            .get(&handle.index())
            .filter(|o| o.handle == handle)?;
        Some(OriginView {
            age: o.born.elapsed(),
            inserted_at: o.inserted_at.clone(),
            first_held_at: o.first_held_at.clone(),
        })
    }

    /// Applies the misuse policy to a failed call's error (cold: only ever
    /// called on `Err`).
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(crate) fn failed(&self, operation: &'static str, error: Error) -> Error {
        if !error.is_misuse() || crate::fork::forked() {
            return error;
        }
        let thread = crate::sync::current_thread();
        if self.listening() {
            self.deliver(&Event::Misuse {
                operation,
                error,
                thread: thread.0,
            });
        }
        match self.misuse {
            Misuse::Error => {}
            Misuse::Log => {
                eprintln!("{}", self.misuse_message(operation, error, &thread));
            }
            Misuse::Panic => {
                panic!("{}", self.misuse_message(operation, error, &thread));
            }
        }
        error
    }

    fn misuse_message(
        &self,
        operation: &'static str,
        error: Error,
        thread: &(ThreadId, Option<String>),
    ) -> String {
        let name = thread
            .1
            .as_deref()
            .map_or(String::new(), |n| format!(" '{n}'"));
        let mut msg = format!(
            "tether: misuse in {operation} on thread {:?}{name}: {error}",
            thread.0
        );
        if let Some(bt) = error
            .handle()
            .and_then(|h| self.origin(h))
            .and_then(|o| o.inserted_at)
        {
            msg.push_str(&format!("\nthe object was inserted at:\n{bt}"));
        }
        if self.backtraces {
            msg.push_str(&format!(
                "\nthe misuse happened at:\n{}",
                Backtrace::force_capture()
            ));
        }
        msg
    }
}

/// The `tracing` form of an event: one event per kind, structured fields,
/// misuse and leaks at `WARN`, the rest at `TRACE`/`DEBUG`.
#[cfg(feature = "tracing")]
fn trace_event(event: &Event) {
    use tracing::{debug, trace, warn};
    let name = event.name();
    let handle = event.handle().map(Handle::to_raw);
    let thread = format!("{:?}", event.thread());
    match event {
        Event::Misuse {
            operation, error, ..
        } => warn!(target: "tether", event = name, handle, thread, operation, %error, "misuse"),
        Event::Leaked { report, .. } => warn!(
            target: "tether",
            event = name,
            thread,
            objects = report.objects.len(),
            "registry dropped with objects still held:\n{report}"
        ),
        Event::ThreadExited { released, kept, .. } => {
            debug!(target: "tether", event = name, thread, released, kept, "thread exited")
        }
        Event::Finalized { panicked, .. } => {
            trace!(target: "tether", event = name, handle, thread, panicked, "finalized")
        }
        _ => trace!(target: "tether", event = name, handle, thread, "{name}"),
    }
}
