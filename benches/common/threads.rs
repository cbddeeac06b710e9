//! Timing loops shared by every workload: one thread, or several started
//! together from a spinning start line ([`Start`]).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Calls of [`time`] so far: each runs its loop at another stack depth.
static CALLS: AtomicUsize = AtomicUsize::new(0);
/// Stack depths [`time`] cycles through (frames of about 100 bytes: about
/// 6 KiB in all, so the loop's stack slots take every position within a
/// 4 KiB page in turn).
const DEPTHS: usize = 64;

/// Times `iters` calls of `op` on the calling thread (each result goes
/// through `black_box`).
///
/// Each call runs the loop at the next of [`DEPTHS`] stack depths, in a
/// scrambled order. A loop's time can depend on where its stack slots sit
/// relative to the heap words it writes (most likely 4K aliasing, their
/// addresses modulo 4 KiB: a load held back behind an earlier store to
/// another address with the same low 12 bits; inferred from timings, not
/// counted). With a fixed depth every round of a process gets the
/// same placement, which address-space randomization draws anew for each
/// run. Measured on the `Proxy` floor, identical binary: 1.84-3.57 ns from
/// one run to the next. Cycling the depth gives every case the same spread
/// of placements in every run, so a row's median over the rounds is its
/// typical time, for tether and its floor alike.
#[inline]
pub fn time<R>(iters: u64, mut op: impl FnMut() -> R) -> Duration {
    let depth = CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(37) % DEPTHS;
    let mut run = || {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(op());
        }
        t.elapsed()
    };
    at_depth(depth, &mut run)
}

/// Calls `f` `depth` frames below this one.
#[inline(never)]
fn at_depth(depth: usize, f: &mut dyn FnMut() -> Duration) -> Duration {
    let frame = [0u8; 64];
    black_box(&frame);
    let elapsed = if depth == 0 {
        f()
    } else {
        at_depth(depth - 1, f)
    };
    // Used after the call, so the frame is not reused by a tail call.
    black_box(&frame);
    elapsed
}

/// Warms `op` up, waits at `start` for the other threads, then times
/// `iters` calls of `op`.
#[inline]
pub fn timed<R>(start: &Start, iters: u64, mut op: impl FnMut() -> R) -> Duration {
    for _ in 0..iters / 8 + 64 {
        black_box(op());
    }
    start.wait();
    time(iters, op)
}

/// Runs `body` on one new thread per element of `states`, all at once
/// (each body calls [`timed`] with the shared start line), and returns the
/// slowest thread's timed span: the wall time of `iters` operations done by
/// every thread in parallel.
pub fn on_threads<S: Send>(
    states: Vec<S>,
    body: impl Fn(S, &Start) -> Duration + Sync,
) -> Duration {
    let start = Start::new(states.len());
    std::thread::scope(|s| {
        let running: Vec<_> = states
            .into_iter()
            .map(|state| {
                let (start, body) = (&start, &body);
                s.spawn(move || body(state, start))
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("benchmark thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

/// The start line of one sample's threads: each spins, on its CPU, until
/// every thread has arrived, so all of them start timing at once.
///
/// A `std::sync::Barrier` parks the threads that arrive early; the last
/// one starts timing at once and the others only when the kernel has woken
/// them. On this project's 2-vCPU VM that wake-up took long enough for one
/// thread to do much of its loop alone, uncontended. In one G3 run
/// (2026-12-06) the 2-thread samples of G3's DESIGN floor fell apart: 17
/// of 41 at 21-25 ns, its 1-thread time, the rest at 40-121 ns; the
/// floor's, 16 at 27-41 ns and 25 at 53-82 ns. With this start line, in
/// the next run, 40 of the floor's 41 samples read 56-90 ns (one 29 ns).
pub struct Start {
    arrived: AtomicUsize,
    threads: usize,
}

impl Start {
    /// A start line for `threads` threads.
    pub fn new(threads: usize) -> Start {
        Start {
            arrived: AtomicUsize::new(0),
            threads,
        }
    }

    /// Arrives and spins until every thread has (yielding now and then,
    /// should there be more threads than CPUs).
    pub fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let mut spins = 0u32;
        while self.arrived.load(Ordering::Acquire) < self.threads {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 16) == 0 {
                std::thread::yield_now();
            }
        }
    }
}
