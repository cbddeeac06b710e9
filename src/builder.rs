//! Registry settings.

use std::fmt;
use std::marker::PhantomData;

use crate::diag::DiagConfig;
use crate::inner::{Config, Inner};
use crate::limits::{MAX_CAPACITY, MAX_GENERATION};
use crate::local::MAX_COUNT;
use crate::{Event, Misuse, Registry};

/// What happens to a thread's references when it exits.
///
/// ```
/// use tether::{Registry, ThreadExit};
///
/// let reg = Registry::builder().thread_exit(ThreadExit::Leak).build();
/// let h = reg.insert(1)?;
/// let t = reg.transfer(h)?;
/// let reg2 = reg.clone();
/// std::thread::spawn(move || { reg2.claim(t).unwrap(); }).join().unwrap(); // exits holding it
/// let snapshot = reg.snapshot();
/// let holder = &snapshot.object(h).unwrap().holders[0];
/// assert!(holder.exited && holder.count == 1); // kept, and reported
/// # Ok::<(), tether::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ThreadExit {
    /// Release them, as if the thread had called `release` for each
    /// (invariant 7). The default.
    #[default]
    Release,
    /// Keep them: the objects stay alive, and [`Registry::holders`] and the
    /// [`Snapshot`](crate::Snapshot) report the exited thread as a holder
    /// (`exited: true`). For finding the leak rather than hiding it.
    Leak,
}

/// Builds a [`Registry`] with non-default settings.
///
/// ```
/// use tether::{Registry, ThreadExit};
///
/// let reg: Registry<String> = Registry::builder()
///     .capacity(1 << 20)                 // Err(Full) beyond
///     .thread_exit(ThreadExit::Release)  // or ThreadExit::Leak
///     .home_finalization(true)           // false: finalize on the releasing thread
///     .build();
/// assert_eq!(reg.capacity(), 1 << 20);
/// ```
pub struct Builder<T> {
    config: Config,
    _values: PhantomData<fn() -> T>,
}

impl<T: Send + Sync + 'static> Builder<T> {
    /// The default settings: maximum capacity (2^24), `ThreadExit::Release`,
    /// home finalization on, counts up to 2^21 - 1 per thread and object.
    pub fn new() -> Self {
        Builder {
            config: Config {
                capacity: MAX_CAPACITY as u32,
                thread_exit: ThreadExit::Release,
                home_finalization: true,
                max_count: MAX_COUNT,
                max_generation: MAX_GENERATION,
                diag: DiagConfig::default(),
            },
            _values: PhantomData,
        }
    }

    /// At most `n` live objects (clamped to 2^24); an insert beyond returns
    /// [`Error::Full`](crate::Error::Full) and hands the value back. Slots are
    /// allocated on demand, so a large capacity costs nothing up front.
    pub fn capacity(mut self, n: usize) -> Self {
        self.config.capacity = n.min(MAX_CAPACITY) as u32;
        self
    }

    /// What a thread's exit does with the references it still holds.
    pub fn thread_exit(mut self, policy: ThreadExit) -> Self {
        self.config.thread_exit = policy;
        self
    }

    /// `true` (default): an object whose last reference is released on
    /// another thread is finalized on its home thread (the inserting one) —
    /// what makes storing thread-bound values sound. `false`: finalize on the
    /// releasing thread, always.
    pub fn home_finalization(mut self, on: bool) -> Self {
        self.config.home_finalization = on;
        self
    }

    /// Limit on one thread's count for one object (explicit references plus
    /// proxies and guards); taking more returns
    /// [`Error::Overflow`](crate::Error::Overflow) (and `Proxy::clone`
    /// panics). Default and maximum 2^21 - 1 (2 097 151): a thread's
    /// entry for an object packs its explicit references, its total and the
    /// object's generation in one word, so that an operation on a held
    /// handle reads one cache line. Small values make overflow handling
    /// easy to test.
    ///
    /// At least 1: `max_count(0)` is taken as `max_count(1)`, since an
    /// insert or a claim always gives its thread one reference. With 1, a
    /// thread holding its one reference cannot also take a guard or proxy
    /// (`Overflow`). Values above the maximum are taken as the maximum.
    pub fn max_count(mut self, n: u32) -> Self {
        self.config.max_count = n.clamp(1, MAX_COUNT);
        self
    }

    /// Limit on a slot's generation (default and maximum 2^21 - 1). A slot
    /// whose generation would pass it is retired, never reused, so a stale
    /// handle can never name a new object. Small values make retirement easy
    /// to test.
    pub fn generation_limit(mut self, n: u32) -> Self {
        self.config.max_generation = n.min(MAX_GENERATION);
        self
    }

    /// Calls `hook` with an [`Event`] for every insert, every thread's first
    /// and last reference, transfer, claim, pin, unpin, queueing to a home
    /// thread, finalization, thread exit and misuse — and with the leak
    /// report when the last `Registry` is dropped while objects are held.
    ///
    /// The hook runs synchronously on the thread where the event happened,
    /// with no registry lock held; it may call the registry. A panic in it is
    /// caught and counted ([`Registry::hook_panics`]). Events come from slow
    /// paths only: retaining, releasing and getting a handle the thread
    /// already holds emits nothing and costs the same with or without a hook.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use tether::{Event, Registry};
    ///
    /// let finalized = Arc::new(AtomicUsize::new(0));
    /// let seen = Arc::clone(&finalized);
    /// let reg = Registry::builder()
    ///     .on_event(move |e| {
    ///         if let Event::Finalized { .. } = e {
    ///             seen.fetch_add(1, Ordering::Relaxed);
    ///         }
    ///     })
    ///     .build();
    /// let h = reg.insert(7)?;
    /// reg.release(h)?;
    /// assert_eq!(finalized.load(Ordering::Relaxed), 1);
    /// # Ok::<(), tether::Error>(())
    /// ```
    pub fn on_event(mut self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.config.diag.hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// What a call that fails because of a caller bug does (see [`Misuse`]);
    /// default [`Misuse::Error`].
    pub fn on_misuse(mut self, policy: Misuse) -> Self {
        self.config.diag.misuse = policy;
        self
    }

    /// `true`: record a backtrace of each insert and of each thread's first
    /// retain / get / proxy / claim of an object (std [`Backtrace`], symbols
    /// resolved lazily when printed), plus insert times as with
    /// [`track_ages`](Builder::track_ages). The [`LeakReport`] shows them, and
    /// so does the [`Misuse::Panic`] message. Off by default: a capture costs
    /// microseconds, on every insert and first reference.
    ///
    /// [`Backtrace`]: std::backtrace::Backtrace
    /// [`LeakReport`]: crate::LeakReport
    pub fn capture_backtraces(mut self, on: bool) -> Self {
        self.config.diag.backtraces = on;
        self
    }

    /// `true`: record each object's insert time, so the
    /// [`LeakReport`](crate::LeakReport) shows its age. Off by default (it
    /// reads the clock on every insert).
    pub fn track_ages(mut self, on: bool) -> Self {
        self.config.diag.ages = on;
        self
    }

    /// The registry.
    pub fn build(self) -> Registry<T> {
        Registry {
            inner: Inner::new(self.config),
        }
    }
}

impl<T: Send + Sync + 'static> Default for Builder<T> {
    fn default() -> Self {
        Builder::new()
    }
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish()
    }
}
