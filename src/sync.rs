//! The one place that names synchronization primitives.
//!
//! Every lock, atomic, thread-local, thread id and channel used by tether comes
//! from here. Under `cfg(loom)` each of them is swapped for loom's model
//! version (or, where loom cannot see inside a crate — parking_lot and
//! crossbeam-channel — for a small equivalent built on loom's primitives), so
//! the loom suite in `loom-tests/` explores the real protocol code.
//!
//! This file imports nothing from the crate: everything else builds on it.

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

    /// The guard if the lock is free now (never waits).
    #[inline]
    pub(crate) fn try_lock(&self) -> Option<parking_lot::MutexGuard<'_, T>> {
        self.0.try_lock()
    }
}

/// The guard of [`Mutex`].
#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

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

    pub(crate) fn try_lock(&self) -> Option<loom::sync::MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

/// The guard of [`Mutex`].
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

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

/// Under loom: a small lock-free queue over loom's atomics with the subset
/// of the crossbeam-channel API tether uses (`send`, `try_recv`, `len`).
///
/// No stronger than crossbeam's list channel: a send happens before the
/// receive that takes its value, senders' reservations are RMWs on one
/// index (crossbeam's SeqCst CAS, which loom reads as AcqRel), and a
/// `try_recv` that finds the queue empty only *loads*, so it synchronises
/// with no later sender. (A mutex here would: its unlock after an empty
/// receive would order the receiver before every later send, and hide a
/// missing handshake in the inbox.) Holds [`CAPACITY`] values in all:
/// models send a few.
#[cfg(loom)]
pub(crate) mod channel {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Values a queue takes over its life (models send a few).
    const CAPACITY: usize = 4;

    struct Cell<T> {
        /// The value is written (Release, by its sender).
        ready: AtomicBool,
        value: UnsafeCell<Option<T>>,
    }

    struct Queue<T> {
        /// Next cell to fill: senders reserve it with an RMW.
        tail: AtomicUsize,
        /// Next cell to take: receivers claim it with a CAS.
        head: AtomicUsize,
        cells: Vec<Cell<T>>,
    }

    // SAFETY: a value moves from its sender to the one receiver that
    // claims its cell (see `send` and `try_recv`): `T: Send` suffices.
    unsafe impl<T: Send> Sync for Queue<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Send for Queue<T> {}

    pub(crate) struct Sender<T>(Arc<Queue<T>>);
    pub(crate) struct Receiver<T>(Arc<Queue<T>>);

    pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        let q = Arc::new(Queue {
            tail: AtomicUsize::new(0),
            head: AtomicUsize::new(0),
            cells: (0..CAPACITY)
                .map(|_| Cell {
                    ready: AtomicBool::new(false),
                    value: UnsafeCell::new(None),
                })
                .collect(),
        });
        (Sender(q.clone()), Receiver(q))
    }

    impl<T> Sender<T> {
        pub(crate) fn send(&self, value: T) -> Result<(), T> {
            let i = self.0.tail.fetch_add(1, Ordering::AcqRel);
            let cell = self.0.cells.get(i).expect("loom channel: capacity");
            // SAFETY: cell `i` was reserved by this sender alone, and no
            // receiver reads it before `ready` says it is written.
            cell.value.with_mut(|v| unsafe { *v = Some(value) });
            cell.ready.store(true, Ordering::Release);
            Ok(())
        }
    }

    impl<T> Receiver<T> {
        pub(crate) fn try_recv(&self) -> Result<T, ()> {
            let q = &self.0;
            loop {
                let h = q.head.load(Ordering::Acquire);
                if h >= q.tail.load(Ordering::Acquire) {
                    return Err(());
                }
                // Reserved: crossbeam waits for the sender's write, too.
                while !q.cells[h].ready.load(Ordering::Acquire) {
                    loom::thread::yield_now();
                }
                if q.head
                    .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    // SAFETY: the CAS made cell `h` this receiver's alone,
                    // and its `ready` (acquire) says the sender wrote it.
                    let v = q.cells[h].value.with_mut(|v| unsafe { (*v).take() });
                    return Ok(v.expect("written"));
                }
            }
        }

        pub(crate) fn len(&self) -> usize {
            let h = self.0.head.load(Ordering::Acquire);
            self.0.tail.load(Ordering::Acquire).saturating_sub(h)
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }
}

/// Process-wide, lock-free counters that loom does not need to model (they
/// are not part of any inter-thread protocol): registry and interner
/// serials.
mod process {
    use std::sync::atomic::{AtomicU64, Ordering};

    static REGISTRY_SERIAL: AtomicU64 = AtomicU64::new(0);

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

/// `r` unchanged, with the compiler made to forget how its address was
/// computed, so the accesses through it address memory through one
/// register (`(reg)`) rather than folding the indexing into each access
/// (`(base, index, 8)`). Same instructions (one `lea` more); but recent
/// cores forward a store to a later load of the same word much sooner when
/// both name it through one unchanged register (memory renaming), and a
/// thread's entry is stored and reloaded on every retain, release and
/// guard. Measured on the project's Xeon (an Emerald Rapids core): a loop
/// of retain+release of a held handle, 6.36 -> 5.73 ns (README
/// Performance). Elsewhere it costs the one `lea`.
#[inline(always)]
pub(crate) fn direct<T>(r: &T) -> &T {
    #[cfg(all(not(loom), any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let mut p: *const T = r;
        // SAFETY: the asm block is empty (its text is a comment): it
        // leaves `p` as it was and touches no memory, stack or flags
        // (`nomem` is right: the pointer is passed, never dereferenced).
        #[allow(clippy::pointers_in_nomem_asm_block)]
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) p, options(pure, nomem, nostack, preserves_flags));
        }
        if p.is_null() {
            // SAFETY: `p` is still `r`, a reference: never null. Said so
            // that the compiler knows it again after the asm block.
            unsafe { std::hint::unreachable_unchecked() }
        }
        // SAFETY: `p` is still `r`, with `r`'s lifetime.
        unsafe { &*p }
    }
    #[cfg(not(all(not(loom), any(target_arch = "x86_64", target_arch = "aarch64"))))]
    {
        r
    }
}
