//! Observers of deaths: how an upper layer (the interner) hears that an
//! object died or that a thread let go of one, without the core knowing it.
//!
//! The core calls out through this small interface (as crossbeam-channel's
//! `counter.rs` takes the upper layer's action as a closure); nothing here
//! names the interner.

use std::sync::{OnceLock, Weak};

use crate::sync::{AtomicBool, Mutex, Ordering};
use crate::Handle;

/// Told when an object dies.
pub(crate) trait Deaths: Send + Sync {
    /// `h`'s object was finalized (its slot is already free). Runs inside
    /// the release that finalized it: it must not unwind.
    fn died(&self, h: Handle);
}

/// The observers of one registry.
pub(crate) struct Observers {
    list: Mutex<Vec<Weak<dyn Deaths>>>,
    /// Any observer was added.
    any: AtomicBool,
    /// Any observer was added or the diagnostics are active (fixed at
    /// build): what a thread's last reference checks, in one load.
    observed: AtomicBool,
    /// Called on a thread whose count for a handle went to 0 (per-thread
    /// caches forget it). One function for all observers.
    on_let_go: OnceLock<fn(Handle)>,
}

impl Observers {
    /// No observers; `diag_active`: the registry's diagnostics are (see
    /// [`Observers::observed`]).
    pub(crate) fn new(diag_active: bool) -> Self {
        Observers {
            list: Mutex::new(Vec::new()),
            any: AtomicBool::new(false),
            observed: AtomicBool::new(diag_active),
            on_let_go: OnceLock::new(),
        }
    }

    /// Adds an observer of deaths, and the function that tells per-thread
    /// state that the calling thread let go of a handle.
    pub(crate) fn add(&self, o: Weak<dyn Deaths>, on_let_go: fn(Handle)) {
        let _ = self.on_let_go.set(on_let_go);
        let mut list = self.list.lock();
        list.retain(|w| w.strong_count() > 0);
        list.push(o);
        self.any.store(true, Ordering::Release);
        self.observed.store(true, Ordering::Relaxed);
    }

    /// Whether any observer was ever added or the registry's diagnostics
    /// are active (one relaxed load): a thread's last reference then takes
    /// the path that tells them.
    #[inline]
    pub(crate) fn observed(&self) -> bool {
        self.observed.load(Ordering::Relaxed)
    }

    /// The calling thread's count for `h` went to 0.
    #[inline]
    pub(crate) fn let_go(&self, h: Handle) {
        if self.any.load(Ordering::Relaxed) {
            self.let_go_slow(h);
        }
    }

    #[cold]
    fn let_go_slow(&self, h: Handle) {
        if let Some(f) = self.on_let_go.get() {
            f(h);
        }
    }

    /// `h`'s object died: tells every live observer (never under the lock).
    #[inline]
    pub(crate) fn died(&self, h: Handle) {
        if self.any.load(Ordering::Acquire) {
            self.died_slow(h);
        }
    }

    #[cold]
    fn died_slow(&self, h: Handle) {
        let live: Vec<_> = self.list.lock().iter().filter_map(Weak::upgrade).collect();
        for o in live {
            o.died(h);
        }
    }
}
