//! The one place that names synchronization primitives.
//!
//! Every lock, atomic, thread-local, thread id and channel used by tether comes
//! from here. Under `cfg(loom)` each of them is swapped for loom's model
//! version (or, where loom cannot see inside a crate — parking_lot and
//! crossbeam-channel — for a small equivalent built on loom's primitives), so
//! the loom suite in `loom-tests/` explores the real protocol code.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};

/// Declares thread-locals: `const`-initialised std thread-locals (no lazy
/// initialisation check on access), or loom's mock thread-locals under loom.
macro_rules! thread_locals {
    ($($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;)*) => {
        #[cfg(not(loom))]
        std::thread_local! { $($(#[$attr])* static $name: $t = const { $init };)* }
        #[cfg(loom)]
        loom::thread_local! { $($(#[$attr])* static $name: $t = $init;)* }
    };
}
pub(crate) use thread_locals;

/// Thread identity as reported in snapshots and `holders()`. Under loom this
/// is still std's id (loom runs its model threads as coroutines, so they share
/// one); it is diagnostics only and no protocol depends on it.
pub(crate) use std::thread::ThreadId;

/// The calling thread's id and name.
pub(crate) fn current_thread() -> (ThreadId, Option<String>) {
    let t = std::thread::current();
    (t.id(), t.name().map(str::to_owned))
}

/// A mutex without poisoning whose `lock()` returns the guard directly.
///
/// parking_lot's mutex does not poison, so a panic in a (never user-code)
/// critical section cannot wedge the registry.
#[cfg(not(loom))]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

#[cfg(not(loom))]
impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Self {
        Mutex(parking_lot::const_mutex(value))
    }

    #[inline]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }
}

/// loom's mutex, wrapped so call sites read `lock()` without `unwrap` and so a
/// poisoned lock (a panicking model thread) is still usable, like parking_lot.
#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A condition variable for [`Mutex`] (interner waiters).
#[cfg(not(loom))]
#[derive(Default)]
pub(crate) struct Condvar(parking_lot::Condvar);

#[cfg(not(loom))]
impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(parking_lot::Condvar::new())
    }

    /// Blocks until notified (spurious wake-ups possible: re-check).
    pub(crate) fn wait<'a, T>(
        &self,
        mut guard: parking_lot::MutexGuard<'a, T>,
    ) -> parking_lot::MutexGuard<'a, T> {
        self.0.wait(&mut guard);
        guard
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// loom's condition variable, with the same API as above.
#[cfg(loom)]
#[derive(Default)]
pub(crate) struct Condvar(loom::sync::Condvar);

#[cfg(loom)]
impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(loom::sync::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(
        &self,
        guard: loom::sync::MutexGuard<'a, T>,
    ) -> loom::sync::MutexGuard<'a, T> {
        self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mutex")
    }
}

/// An `UnsafeCell` with loom's closure-based API on both configurations.
/// (Outside loom, cells are only ever created zeroed, in slot pages: see
/// `Slot::new_page`.) `repr(transparent)`: all-zero bits are valid iff they
/// are for `T`.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;

/// The home inbox channel: unbounded, multi-producer, never blocks a sender.
#[cfg(not(loom))]
pub(crate) mod channel {
    pub(crate) use crossbeam_channel::{unbounded, Receiver, Sender};
}

/// Under loom: a queue over loom's mutex with the subset of the
/// crossbeam-channel API tether uses (`send`, `try_recv`, `len`).
#[cfg(loom)]
pub(crate) mod channel {
    use std::collections::VecDeque;
    use std::sync::Arc;

    pub(crate) struct Sender<T>(Arc<super::Mutex<VecDeque<T>>>);
    pub(crate) struct Receiver<T>(Arc<super::Mutex<VecDeque<T>>>);

    pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        let q = Arc::new(super::Mutex::new(VecDeque::new()));
        (Sender(q.clone()), Receiver(q))
    }

    impl<T> Sender<T> {
        pub(crate) fn send(&self, value: T) -> Result<(), T> {
            self.0.lock().push_back(value);
            Ok(())
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn try_recv(&self) -> Result<T, ()> {
            self.0.lock().pop_front().ok_or(())
        }

        pub(crate) fn len(&self) -> usize {
            self.0.lock().len()
        }
    }
}

/// Process-wide, lock-free counters and flags that loom does not need to
/// model (they are not part of any inter-thread protocol): the registry tag
/// counter and the fork flag.
mod process {
    #[cfg(not(loom))]
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::{AtomicU64, Ordering};

    static REGISTRY_SERIAL: AtomicU64 = AtomicU64::new(0);
    #[cfg(not(loom))]
    pub(super) static FORKED: AtomicBool = AtomicBool::new(false);

    pub(crate) fn next_registry_serial() -> u64 {
        REGISTRY_SERIAL.fetch_add(1, Ordering::Relaxed)
    }

    static INTERNER_SERIAL: AtomicU64 = AtomicU64::new(1);

    /// A process-unique interner id (never 0), keying per-thread caches.
    pub(crate) fn next_interner_serial() -> u64 {
        INTERNER_SERIAL.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) use process::{next_interner_serial, next_registry_serial};

/// `true` in a child process created by `fork()` after tether was used.
///
/// One relaxed load of a flag that a `pthread_atfork` child handler sets
/// (no `getpid()` system call). The fast paths do not even load it: the
/// same handler clears the forking thread's table cache, so a cache hit
/// already means "not forked" (see `Inner::my_table`).
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn forked() -> bool {
    process::FORKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// loom models never fork.
#[cfg(loom)]
#[inline(always)]
pub(crate) fn forked() -> bool {
    false
}

/// Installs the `pthread_atfork` child handler once per process.
#[cfg(all(unix, not(loom)))]
pub(crate) fn install_fork_handler() {
    use std::os::raw::c_int;
    use std::sync::Once;

    extern "C" {
        fn pthread_atfork(
            prepare: Option<extern "C" fn()>,
            parent: Option<extern "C" fn()>,
            child: Option<extern "C" fn()>,
        ) -> c_int;
    }

    extern "C" fn in_child() {
        process::FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
        crate::tid::forget_cache_after_fork();
    }

    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `pthread_atfork` is declared with its POSIX signature; the
        // handler is an `extern "C" fn()` with 'static lifetime that only does
        // one atomic store and one store to a `const`-initialised thread-local
        // of the calling thread (no allocation, no lock), as a child handler
        // must. If
        // registration fails (ENOMEM) fork detection is lost, not soundness:
        // nothing else depends on the flag being set.
        unsafe {
            pthread_atfork(None, None, Some(in_child));
        }
    });
}

/// No `fork()` to detect on this platform / under loom.
#[cfg(any(not(unix), loom))]
pub(crate) fn install_fork_handler() {}

/// The process-wide thread-index allocator.
#[cfg(not(loom))]
static TIDS: Mutex<crate::tid::TidAlloc> = Mutex::new(crate::tid::TidAlloc::new());

/// A thread index for a thread starting to use tether.
#[cfg(not(loom))]
pub(crate) fn tid_alloc() -> Option<u32> {
    TIDS.lock().alloc()
}

/// Returns an exiting thread's index for reuse.
#[cfg(not(loom))]
pub(crate) fn tid_free(tid: u32) {
    TIDS.lock().free(tid);
}

/// Under loom, thread indices are never reused within one execution, and
/// restart from 0 in each execution (so every execution is deterministic).
///
/// Reuse is ordered in production by the allocator's mutex (the exiting
/// thread nulls its directory cells before freeing its index). A loom-visible
/// mutex cannot be used — loom tears its statics down before the main model
/// thread's thread-locals, whose destructor frees the index — and with an
/// invisible one loom would explore a reuse without that ordering, which no
/// real execution can produce.
///
/// The counter is a *std* thread-local: loom runs all threads of one model as
/// coroutines on the test's OS thread, while the test harness runs several
/// models in parallel on different OS threads.
#[cfg(loom)]
pub(crate) fn tid_alloc() -> Option<u32> {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
    static EXECUTIONS: StdAtomicU64 = StdAtomicU64::new(0);
    std::thread_local! {
        static NEXT: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
    }
    loom::lazy_static! {
        static ref EXECUTION: u64 = EXECUTIONS.fetch_add(1, StdOrdering::Relaxed);
    }
    let execution = *EXECUTION;
    NEXT.with(|next| {
        let (seen, n) = next.get();
        let n = if seen == execution { n } else { 0 };
        next.set((execution, n + 1));
        Some(n)
    })
}

/// Under loom indices are not reused (see `tid_alloc`).
#[cfg(loom)]
pub(crate) fn tid_free(_tid: u32) {}

/// Waits a little while polling (`shutdown`): sleeps, or under loom lets
/// the model's other threads run.
pub(crate) fn nap(d: std::time::Duration) {
    #[cfg(loom)]
    {
        let _ = d;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    std::thread::sleep(d);
}
