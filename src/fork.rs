//! `fork()` detection (invariant 9): a child process fails fast.
//!
//! A `pthread_atfork` child handler sets a process-wide flag and clears the
//! forking thread's table cache (the only thread a child has), so the fast
//! paths, which start with a cache hit, need no check of their own, and
//! every slow path checks [`forked`] before it takes a lock.

/// Set in a child process by the `pthread_atfork` child handler.
#[cfg(not(loom))]
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `true` in a child process created by `fork()` after tether was used.
///
/// One relaxed load of a flag that a `pthread_atfork` child handler sets
/// (no `getpid()` system call). The fast paths do not even load it: the
/// same handler clears the forking thread's table cache, so a cache hit
/// already means "not forked" (see `Inner::my_table`).
#[cfg(not(loom))]
#[inline(always)]
pub(crate) fn forked() -> bool {
    FORKED.load(std::sync::atomic::Ordering::Relaxed)
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
        FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
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
