//! Stress and soak tests (issue 5, item 2): many threads, many objects, and
//! the invariants checked at the end of every run — the registry is empty and
//! every value was finalized exactly once, on its home thread.
//!
//! Sized to run in well under a minute in debug on two cores. For longer local
//! runs, `TETHER_SOAK=<multiplier>` (default 1) scales the iteration counts:
//!
//! ```text
//! TETHER_SOAK=10 cargo test --release --test stress -- --nocapture
//! ```
//!
//! | test | default size (× `TETHER_SOAK`) |
//! |---|---|
//! | `greedy_gc_home_pumps_while_workers_churn_transfers` | 20 000 objects, 1–8 hops each, 4 workers |
//! | `memory_pressure_at_small_capacity_loses_no_slot` | capacity 64, 4 workers × 300 fill rounds |
//! | `thread_churn_exit_releases_claimed_references` | 300 short-lived threads, 100 objects |
//! | `million_live_objects_held_by_two_threads_return_memory` | 1 M objects, 1 + multiplier fill/release cycles |
//!
//! Synchronisation is by channels and barriers only; nothing sleeps for
//! correctness and nothing asserts on time. Watchdogs only turn a hang into a
//! failure. A counting global allocator measures live heap bytes for the 1 M
//! test; that test takes an exclusive lock so the other tests (which take it
//! shared) do not allocate meanwhile.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Barrier, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use common::{join, recv, rel, spawn, Rel};
use tether::{Error, Handle, Proxy, Registry, Transfer};

// ----- counting allocator ------------------------------------------------

/// `System`, counting bytes allocated and freed (live = allocated - freed).
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees carry over; the counters are plain
// atomics and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by this allocator
        // (i.e. by `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        FREED.fetch_add(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            FREED.fetch_add(layout.size(), Ordering::Relaxed);
            ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Live heap bytes of the whole process (every thread).
fn live_bytes() -> isize {
    // Read FREED first: a concurrent alloc+free pair can then only make the
    // figure larger, never negative.
    let freed = FREED.load(Ordering::SeqCst);
    let allocated = ALLOCATED.load(Ordering::SeqCst);
    allocated as isize - freed as isize
}

fn mib(bytes: isize) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

// ----- test isolation, sizing, watchdog ----------------------------------

/// Taken shared by every test and exclusively by the memory test, so nothing
/// else allocates while it measures.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

/// `TETHER_SOAK=<multiplier>`, default 1.
fn soak() -> usize {
    match std::env::var("TETHER_SOAK") {
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| panic!("TETHER_SOAK must be a positive integer, got {s:?}")),
        Err(_) => 1,
    }
}

/// How long a whole stress test may run before it counts as hung. Generous
/// (debug builds, loaded CI machines); never a performance assertion.
fn hang_limit() -> Duration {
    Duration::from_secs(300 * soak() as u64)
}

/// Runs `f` on a fresh named thread (which becomes the home thread of what it
/// inserts); a hang fails the test after [`hang_limit`], a panic is re-raised.
/// Prints how long it took.
fn watchdog<F, R>(what: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let h = spawn(what, move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    let limit = hang_limit();
    match rx.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            let r = join(h);
            eprintln!("[stress] {what}: {:.2?}", start.elapsed());
            r
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("{what}: did not finish after {limit:?} — deadlock or lost value")
        }
    }
}

/// Fails (instead of spinning forever) once `limit` has passed.
struct Deadline {
    what: &'static str,
    until: Instant,
}

impl Deadline {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            until: Instant::now() + hang_limit(),
        }
    }

    fn check(&self, state: impl FnOnce() -> String) {
        if Instant::now() > self.until {
            panic!(
                "{}: no progress within {:?}: {}",
                self.what,
                hang_limit(),
                state()
            );
        }
    }
}

// ----- values and their drop book ----------------------------------------

/// Drop counts per value id, and drops that ran off the value's home thread.
struct Book {
    drops: Vec<AtomicU32>,
    next: AtomicUsize,
    total: AtomicUsize,
    off_home: AtomicUsize,
}

impl Book {
    fn new(max_values: usize) -> Arc<Self> {
        Arc::new(Self {
            drops: (0..max_values).map(|_| AtomicU32::new(0)).collect(),
            next: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            off_home: AtomicUsize::new(0),
        })
    }

    /// A new value, whose home is the calling thread (it is about to insert it).
    fn obj(self: &Arc<Self>) -> Obj {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(id < self.drops.len(), "test bug: Book sized too small");
        Obj {
            id: id as u32,
            home: thread::current().id(),
            book: Arc::clone(self),
        }
    }

    fn created(&self) -> usize {
        self.next.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Every value created was dropped exactly once, on its home thread.
    fn assert_all_dropped_once_at_home(&self, what: &str) {
        let created = self.created();
        let mut wrong = Vec::new();
        for (id, n) in self.drops[..created].iter().enumerate() {
            let n = n.load(Ordering::SeqCst);
            if n != 1 {
                wrong.push((id, n));
            }
        }
        assert!(
            wrong.is_empty(),
            "{what}: {} of {created} values not dropped exactly once (id, drops), first: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        assert_eq!(self.dropped(), created, "{what}: total drops");
        assert_eq!(
            self.off_home.load(Ordering::SeqCst),
            0,
            "{what}: values dropped off their home thread"
        );
    }
}

/// A small value that records its drop in a [`Book`].
struct Obj {
    id: u32,
    home: ThreadId,
    book: Arc<Book>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        self.book.drops[self.id as usize].fetch_add(1, Ordering::SeqCst);
        if thread::current().id() != self.home {
            self.book.off_home.fetch_add(1, Ordering::SeqCst);
        }
        self.book.total.fetch_add(1, Ordering::SeqCst);
    }
}

/// The end state every test checks: nothing live, nothing queued.
fn assert_registry_empty(reg: &Registry<Obj>, what: &str) {
    let s = reg.snapshot();
    assert!(
        reg.is_empty() && s.live == 0 && s.objects.is_empty(),
        "{what}: registry not empty: len {}, {} objects in snapshot",
        reg.len(),
        s.objects.len()
    );
    assert_eq!(s.pending(), 0, "{what}: finalizations still queued");
    assert_eq!(s.drop_panics, 0, "{what}: drop panics");
}

/// Joins any worker that has finished early (i.e. panicked), re-raising its
/// panic — so a dead worker fails the test instead of starving a spin loop.
fn reap_finished<R>(workers: &mut [Option<JoinHandle<R>>]) {
    for w in workers.iter_mut() {
        if w.as_ref().is_some_and(|h| h.is_finished()) {
            join(w.take().unwrap());
            panic!("a worker exited before it was told to stop");
        }
    }
}

// ----- (a) greedy GC -----------------------------------------------------

enum Hop {
    /// One reference to object `id`, to be passed on `hops` more times.
    Go {
        t: Transfer<Obj>,
        id: u32,
        hops: u32,
    },
    Stop,
}

/// The home thread pumps (and, like a greedy garbage collector, touches every
/// handle it ever issued with `get`) in a tight loop while 4 workers claim,
/// retain, release and pass transfers to each other; the last holder
/// releases. Every value is finalized exactly once, at home.
#[test]
fn greedy_gc_home_pumps_while_workers_churn_transfers() {
    let _g = shared();
    const WORKERS: usize = 4;
    let n = 20_000 * soak();
    watchdog("greedy-gc", move || {
        let book = Book::new(n);
        let reg: Registry<Obj> = Registry::new();
        let (txs, rxs): (Vec<Sender<Hop>>, Vec<Receiver<Hop>>) =
            (0..WORKERS).map(|_| mpsc::channel()).unzip();
        // Worker releases of their last reference: [queued to home, held by
        // another thread, total hops].
        let stats = Arc::new([(); 3].map(|_| AtomicUsize::new(0)));
        let mut workers: Vec<Option<JoinHandle<()>>> = rxs
            .into_iter()
            .enumerate()
            .map(|(w, rx)| {
                let reg = reg.clone();
                let txs = txs.clone();
                let stats = Arc::clone(&stats);
                Some(spawn(&format!("gc-worker-{w}"), move || {
                    gc_worker(w, &reg, &rx, &txs, &stats)
                }))
            })
            .collect();

        // Home: insert, hand each object's only reference to a worker, and
        // pump + probe between sends.
        let mut handles = Vec::with_capacity(n);
        let mut probe = 0usize;
        let mut probes = [0usize; 2]; // home gets: [live, stale]
        let gc_step = |handles: &Vec<Handle>, probe: &mut usize, probes: &mut [usize; 2]| {
            reg.pump();
            if handles.is_empty() {
                return;
            }
            // Mostly the newest handles (likely still in flight), sometimes
            // any handle ever issued (likely finalized).
            *probe = probe.wrapping_add(7919);
            let i = if *probe % 4 == 0 {
                *probe % handles.len()
            } else {
                handles.len() - 1 - *probe % handles.len().min(64)
            };
            let h = handles[i];
            match reg.get(h) {
                Ok(g) => {
                    assert_eq!(g.id as usize, i, "home get resolved the wrong value");
                    probes[0] += 1;
                }
                Err(Error::Stale(s)) => {
                    assert_eq!(s, h);
                    probes[1] += 1;
                }
                Err(e) => panic!("home get of a handle it issued: {e:?}"),
            }
        };
        for i in 0..n {
            let h = reg.insert(book.obj()).unwrap_or_else(|e| panic!("{e:?}"));
            handles.push(h);
            let t = reg.transfer(h).unwrap();
            let hops = 1 + ((i as u32).wrapping_mul(2_654_435_761) >> 29); // 1..=8
            txs[i % WORKERS]
                .send(Hop::Go {
                    t,
                    id: i as u32,
                    hops,
                })
                .unwrap();
            gc_step(&handles, &mut probe, &mut probes);
        }

        // Greedy GC: tight loop until every value is finalized.
        let deadline = Deadline::new("greedy-gc");
        let mut spins = 0u64;
        while book.dropped() < n {
            gc_step(&handles, &mut probe, &mut probes);
            spins += 1;
            if spins % 1024 == 0 {
                reap_finished(&mut workers);
                deadline.check(|| format!("{} of {n} dropped", book.dropped()));
            }
        }
        for tx in &txs {
            tx.send(Hop::Stop).unwrap();
        }
        for w in workers.iter_mut() {
            join(w.take().unwrap());
        }
        reg.pump();
        assert_registry_empty(&reg, "greedy-gc");
        book.assert_all_dropped_once_at_home("greedy-gc");
        for &h in handles.iter().step_by(97) {
            assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
        }
        eprintln!(
            "[stress] greedy-gc: {n} objects, {} hops; worker releases: {} queued to home, {} still held \
             elsewhere; home gets: {} live, {} stale",
            stats[2].load(Ordering::SeqCst),
            stats[0].load(Ordering::SeqCst),
            stats[1].load(Ordering::SeqCst),
            probes[0],
            probes[1],
        );
    });
}

fn gc_worker(
    w: usize,
    reg: &Registry<Obj>,
    rx: &Receiver<Hop>,
    txs: &[Sender<Hop>],
    stats: &[AtomicUsize; 3],
) {
    let me = thread::current().id();
    loop {
        let (t, id, hops) = match recv(rx, "gc worker") {
            Hop::Stop => return,
            Hop::Go { t, id, hops } => (t, id, hops),
        };
        let h = t.handle();
        let claimed = reg.claim(t).unwrap_or_else(|e| panic!("claim: {e:?}"));
        assert_eq!(claimed, h);
        assert_eq!(reg.retain(h), Ok(2));
        assert_eq!(reg.get(h).unwrap().id, id);
        assert_eq!(reg.count(h), Ok(2));
        assert!(reg
            .holders(h)
            .unwrap()
            .iter()
            .any(|&(t, c)| t == me && c == 2));
        stats[2].fetch_add(1, Ordering::Relaxed);
        if hops > 1 {
            // Pass one reference on, then drop ours. The transfer in flight
            // keeps the object alive until claimed; the next worker may
            // already have claimed it and let go, so ours may be the last.
            let t = reg.transfer(h).unwrap();
            let next = (w + 1 + id as usize % (txs.len() - 1)) % txs.len();
            txs[next]
                .send(Hop::Go {
                    t,
                    id,
                    hops: hops - 1,
                })
                .unwrap();
            count_release(reg.release(h), id, stats);
            match reg.release(h) {
                Err(Error::NotHeld(x) | Error::Stale(x)) => assert_eq!(x, h),
                other => panic!("release by a thread that let go: {other:?}"),
            }
        } else {
            assert_eq!(rel(reg.release(h)), Rel::Held(1));
            // Our last reference. Another holder may remain: the home's
            // greedy `get` guard, or the previous worker not yet released.
            count_release(reg.release(h), id, stats);
            assert!(reg.release(h).is_err(), "double release accepted");
        }
    }
}

/// A worker's release of its last reference to `id`: `Queued` to the home
/// if it was the object's last, `Held(0)` if another thread still holds it.
fn count_release(r: Result<tether::Released, Error>, id: u32, stats: &[AtomicUsize; 3]) {
    match rel(r) {
        Rel::Queued => stats[0].fetch_add(1, Ordering::Relaxed),
        Rel::Held(0) => stats[1].fetch_add(1, Ordering::Relaxed),
        other => panic!("worker's release of its last reference to #{id}: {other:?}"),
    };
}

// ----- (b) memory pressure -----------------------------------------------

/// Four workers fill a registry of capacity 64 until `Full` (getting the same
/// value back), release part of what they hold, and repeat; afterwards the
/// capacity is fully reusable: exactly 64 inserts succeed, the 65th is
/// `Full`.
#[test]
fn memory_pressure_at_small_capacity_loses_no_slot() {
    let _g = shared();
    const CAP: usize = 64;
    const WORKERS: usize = 4;
    let rounds = 300 * soak();
    watchdog("memory-pressure", move || {
        let book = Book::new(WORKERS * rounds * (CAP + 1) + 2 * CAP + 16);
        let reg: Registry<Obj> = Registry::builder().capacity(CAP).build();
        assert_eq!(reg.capacity(), CAP);
        let barrier = Arc::new(Barrier::new(WORKERS));
        let fulls = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (reg, book, barrier, fulls) = (
                    reg.clone(),
                    Arc::clone(&book),
                    Arc::clone(&barrier),
                    Arc::clone(&fulls),
                );
                spawn(&format!("pressure-{w}"), move || {
                    let mut held: Vec<(Handle, u32)> = Vec::new();
                    let mut pending = book.obj();
                    for round in 0..rounds {
                        // Fill until full.
                        loop {
                            let id = pending.id;
                            match reg.insert(pending) {
                                Ok(h) => {
                                    held.push((h, id));
                                    pending = book.obj();
                                }
                                Err(e) => {
                                    assert_eq!(e.error(), Error::Full);
                                    pending = e.into_value();
                                    assert_eq!(pending.id, id, "Full handed back another value");
                                    fulls.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                            assert!(held.len() <= CAP, "more than capacity held by one thread");
                            assert!(reg.len() <= CAP, "len {} > capacity", reg.len());
                        }
                        // Release every other one (all, every 8th round).
                        let keep_some = round % 8 != 7;
                        let mut i = 0;
                        held.retain(|&(h, id)| {
                            i += 1;
                            if keep_some && i % 2 == 0 {
                                return true;
                            }
                            assert_eq!(reg.get(h).unwrap().id, id);
                            assert_eq!(rel(reg.release(h)), Rel::Finalized);
                            false
                        });
                    }
                    for (h, _) in held.drain(..) {
                        assert_eq!(rel(reg.release(h)), Rel::Finalized);
                    }
                    // Everyone has let go: 4 leftovers fit in 64 slots.
                    barrier.wait();
                    let h = match reg.insert(pending) {
                        Ok(h) => h,
                        Err(e) => panic!("leftover insert after everyone released: {e:?}"),
                    };
                    assert_eq!(rel(reg.release(h)), Rel::Finalized);
                })
            })
            .collect();
        for w in workers {
            join(w);
        }
        assert_registry_empty(&reg, "memory-pressure after workers");

        // No slot lost: exactly CAP inserts succeed, then Full, twice over.
        for cycle in 0..2 {
            let mut hs = Vec::new();
            for _ in 0..CAP {
                hs.push(reg.insert(book.obj()).unwrap_or_else(|e| {
                    panic!(
                        "cycle {cycle}: insert {} of {CAP} failed: {e:?}",
                        hs.len() + 1
                    )
                }));
            }
            assert_eq!(reg.len(), CAP);
            let extra = book.obj();
            let id = extra.id;
            let e = reg
                .insert(extra)
                .expect_err("insert beyond capacity succeeded");
            assert_eq!(e.error(), Error::Full);
            assert_eq!(e.into_value().id, id);
            for h in hs {
                assert_eq!(rel(reg.release(h)), Rel::Finalized);
            }
        }
        assert_registry_empty(&reg, "memory-pressure");
        assert_eq!(reg.snapshot().retired_slots, 0);
        book.assert_all_dropped_once_at_home("memory-pressure");
        eprintln!(
            "[stress] memory-pressure: {} values, {} Full results, capacity {CAP} fully reusable",
            book.created(),
            fulls.load(Ordering::SeqCst)
        );
    });
}

// ----- (c) thread churn --------------------------------------------------

thread_local! {
    /// Proxies kept until this thread's thread-local destructors run.
    static KEPT: RefCell<Vec<Proxy<Obj>>> = const { RefCell::new(Vec::new()) };
}

/// Hundreds of short-lived threads claim references and exit holding them
/// (explicit references released by `ThreadExit::Release`, some proxies kept
/// in a thread-local and released by its destructor). For half of the
/// objects a dying thread holds the last reference, so the final release at
/// thread exit is queued to the home thread.
#[test]
fn thread_churn_exit_releases_claimed_references() {
    let _g = shared();
    let threads = 300 * soak();
    const OBJECTS: usize = 100;
    const PER_THREAD: usize = 3;
    const ALIVE: usize = 16;
    watchdog("thread-churn", move || {
        let book = Book::new(OBJECTS);
        let reg: Registry<Obj> = Registry::new();
        let hs: Vec<Handle> = (0..OBJECTS)
            .map(|_| reg.insert(book.obj()).unwrap_or_else(|e| panic!("{e:?}")))
            .collect();
        // Thread t uses objects (t + k * 37) % OBJECTS; count the uses so the
        // home gives away its own reference with the last transfer of every
        // odd object.
        let uses_of = |t: usize| (0..PER_THREAD).map(move |k| (t + k * 37) % OBJECTS);
        let mut left = vec![0usize; OBJECTS];
        for t in 0..threads {
            for j in uses_of(t) {
                left[j] += 1;
            }
        }
        let mut running = std::collections::VecDeque::new();
        for t in 0..threads {
            let mut ts = Vec::new();
            for j in uses_of(t) {
                left[j] -= 1;
                let give_away = j % 2 == 1 && left[j] == 0;
                if !give_away {
                    reg.retain(hs[j]).unwrap();
                }
                ts.push((reg.transfer(hs[j]).unwrap(), j as u32));
            }
            let r = reg.clone();
            running.push_back(spawn(&format!("churn-{t}"), move || {
                for (k, (tr, id)) in ts.into_iter().enumerate() {
                    let h = r.claim(tr).unwrap_or_else(|e| panic!("claim: {e:?}"));
                    assert_eq!(r.get(h).unwrap().id, id);
                    for _ in 0..(t + k) % 3 {
                        r.retain(h).unwrap();
                    }
                    if (t + k) % 3 == 0 {
                        let p = r.proxy(h).unwrap();
                        KEPT.with(|kept| kept.borrow_mut().push(p));
                    }
                }
                // Exit holding everything.
            }));
            while running.len() >= ALIVE {
                join(running.pop_front().unwrap());
                reg.pump();
            }
            reg.pump();
        }
        for h in running {
            join(h);
        }
        // Every dying thread released at exit (join returns after its
        // thread-local destructors ran): only the home's references remain.
        reg.pump();
        let odd = (0..OBJECTS).filter(|j| j % 2 == 1).count();
        assert_eq!(
            book.dropped(),
            odd,
            "odd objects: last release was a thread exit"
        );
        assert_eq!(reg.len(), OBJECTS - odd);
        for (j, &h) in hs.iter().enumerate() {
            if j % 2 == 1 {
                assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
                continue;
            }
            let s = reg.snapshot();
            let o = s.object(h).expect("even object live");
            assert_eq!(o.transfers, 0);
            assert_eq!(
                o.holders.iter().filter(|x| x.count > 0).count(),
                1,
                "object #{j}: an exited thread still holds it"
            );
            assert_eq!(rel(reg.release(h)), Rel::Finalized);
        }
        assert_registry_empty(&reg, "thread-churn");
        book.assert_all_dropped_once_at_home("thread-churn");
        let threads_left = reg.snapshot().threads.len();
        eprintln!(
            "[stress] thread-churn: {threads} threads, {OBJECTS} objects, {threads_left} thread tables left"
        );
    });
}

// ----- (d) 1 M live objects ----------------------------------------------

enum Cmd {
    /// Claim these transfers (each is the object's second reference).
    Claim(Vec<Transfer<Obj>>),
    /// Report how many you hold, with a sample of handles and their ids.
    Report,
    /// Release everything you hold.
    ReleaseAll,
    Stop,
}

/// `n` objects inserted by the home thread and claimed by a second thread,
/// so each is held by two threads; then all released (the worker last, so
/// every finalization goes through the home's inbox). The heap returns to
/// the same live-byte figure after every cycle (no growth = no leak), and to
/// the pre-test figure once the registry and worker are gone.
#[test]
fn million_live_objects_held_by_two_threads_return_memory() {
    let _g = exclusive();
    let n = 1_000_000;
    let cycles = 1 + soak();
    watchdog("million", move || million(n, cycles));
}

fn million(n: usize, cycles: usize) {
    const BATCH: usize = 4096;
    let book = Book::new(n * cycles);
    // After the drop book (4 bytes per value): the figures are the
    // registry's and the two threads' handle vectors.
    let before = live_bytes();
    let reg: Registry<Obj> = Registry::new();
    let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>();
    let (ack_tx, ack_rx) = mpsc::channel::<(usize, Vec<(Handle, u32)>)>();
    let worker = {
        let reg = reg.clone();
        spawn("million-worker", move || {
            let mut held: Vec<Handle> = Vec::new();
            loop {
                match recv(&cmd_rx, "million worker") {
                    Cmd::Claim(ts) => {
                        for t in ts {
                            held.push(reg.claim(t).unwrap_or_else(|e| panic!("claim: {e:?}")));
                        }
                    }
                    Cmd::Report => {
                        let sample = held
                            .iter()
                            .step_by(9973)
                            .map(|&h| (h, reg.get(h).unwrap().id))
                            .collect();
                        ack_tx.send((held.len(), sample)).unwrap();
                    }
                    Cmd::ReleaseAll => {
                        let mut queued = 0;
                        for h in held.drain(..) {
                            match rel(reg.release(h)) {
                                Rel::Queued => queued += 1,
                                other => panic!("worker's last release: {other:?}"),
                            }
                        }
                        held.shrink_to_fit();
                        ack_tx.send((queued, Vec::new())).unwrap();
                    }
                    Cmd::Stop => return,
                }
            }
        })
    };

    let me = thread::current().id();
    let mut after_cycle = Vec::new();
    let mut peak = 0isize;
    for cycle in 0..cycles {
        let t0 = Instant::now();
        let mut hs = Vec::with_capacity(n);
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..n {
            let h = reg.insert(book.obj()).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(reg.retain(h), Ok(2));
            batch.push(reg.transfer(h).unwrap());
            hs.push(h);
            if batch.len() == BATCH {
                cmd_tx
                    .send(Cmd::Claim(std::mem::replace(
                        &mut batch,
                        Vec::with_capacity(BATCH),
                    )))
                    .unwrap();
            }
        }
        cmd_tx.send(Cmd::Claim(batch)).unwrap();
        cmd_tx.send(Cmd::Report).unwrap();
        let (worker_holds, sample) = recv(&ack_rx, "worker report");
        assert_eq!(worker_holds, n);
        assert_eq!(reg.len(), n);
        for (h, id) in sample {
            assert_eq!(reg.get(h).unwrap().id, id);
            let mut holders = common::nonzero(reg.holders(h).unwrap());
            holders.retain(|&(t, _)| t == me);
            assert_eq!(holders, vec![(me, 1)], "home's count of a shared object");
            assert_eq!(reg.holders(h).unwrap().len(), 2, "two holders");
        }
        let full = live_bytes() - before;
        peak = peak.max(full);
        let filled = t0.elapsed();

        // The home lets go first: the worker keeps every object alive.
        for &h in &hs {
            assert_eq!(rel(reg.release(h)), Rel::Held(0));
        }
        assert_eq!(reg.len(), n);
        assert_eq!(book.dropped(), cycle * n);
        // The worker lets go last: every value is queued to this thread.
        cmd_tx.send(Cmd::ReleaseAll).unwrap();
        let (queued, _) = recv(&ack_rx, "worker release");
        assert_eq!(queued, n);
        assert!(reg.is_empty(), "queued values are not live");
        let pumped = reg.pump();
        assert_eq!(pumped, n, "pump finalizes every queued value");
        assert_eq!(book.dropped(), (cycle + 1) * n);
        assert_registry_empty(&reg, "million");
        for &h in hs.iter().step_by(9973) {
            assert_eq!(reg.get(h).err(), Some(Error::Stale(h)));
        }
        drop(hs);
        let live = live_bytes() - before;
        eprintln!(
            "[stress] million: cycle {cycle}: {n} objects, filled in {filled:.2?}, cycle {:.2?}; \
             live heap full {} (release frees {:.1} B/object), after release {}",
            t0.elapsed(),
            mib(full),
            (full - live) as f64 / n as f64,
            mib(live)
        );
        after_cycle.push(live);
    }

    // The first cycle grows the slot pages and both threads' count tables,
    // which never shrink; every later cycle must end where the first did.
    let baseline = after_cycle[0];
    let tolerance: isize = 256 * 1024;
    for (cycle, &live) in after_cycle.iter().enumerate().skip(1) {
        eprintln!(
            "[stress] million: cycle {cycle} ends {:+} bytes from cycle 0",
            live - baseline
        );
        assert!(
            (live - baseline).abs() <= tolerance,
            "cycle {cycle}: live heap {} vs {} after the first cycle — {} per cycle leaked",
            mib(live),
            mib(baseline),
            mib(live - baseline)
        );
    }

    cmd_tx.send(Cmd::Stop).unwrap();
    join(worker);
    drop(reg);
    book.assert_all_dropped_once_at_home("million");
    let end = live_bytes() - before;
    drop(book);
    eprintln!(
        "[stress] million: peak {} over the start, {} retained after each cycle (pages + tables), \
         {} ({end} bytes) after the registry is dropped",
        mib(peak),
        mib(baseline),
        mib(end)
    );
    assert!(
        end.abs() <= tolerance,
        "registry and worker gone, yet {} still live",
        mib(end)
    );
}
