//! Timing loops shared by every workload: one thread, or several started
//! together from a barrier.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Times `iters` calls of `op` on the calling thread (each result goes
/// through `black_box`).
#[inline]
pub fn time<R>(iters: u64, mut op: impl FnMut() -> R) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(op());
    }
    t.elapsed()
}

/// Warms `op` up, waits at `start` for the other threads, then times
/// `iters` calls of `op`.
#[inline]
pub fn timed<R>(start: &Barrier, iters: u64, mut op: impl FnMut() -> R) -> Duration {
    for _ in 0..iters / 8 + 64 {
        black_box(op());
    }
    start.wait();
    time(iters, op)
}

/// Runs `body` on one new thread per element of `states`, all at once
/// (each body calls [`timed`] with the shared barrier), and returns the
/// slowest thread's timed span: the wall time of `iters` operations done by
/// every thread in parallel.
pub fn on_threads<S: Send>(
    states: Vec<S>,
    body: impl Fn(S, &Barrier) -> Duration + Sync,
) -> Duration {
    let start = Barrier::new(states.len());
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
