//! G7: heap bytes per live object, counted by the global allocator.
//!
//! Every structure holds `OBJECTS` 16-byte values, each held by two
//! threads, and each thread keeps a `Vec` of its 8-byte references to them
//! (an `Arc`, a `Handle` or a `u64` key), grown by `push` like a program
//! would. The figure is all heap bytes still live, divided by `OBJECTS`:
//! values, per-object bookkeeping, both threads' reference lists and
//! tether's per-thread count tables.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crossbeam_channel::bounded;
use tether::{Handle, Registry};

use super::alloc::live_bytes;
use super::suite::V;

/// Objects per structure.
pub const OBJECTS: usize = 100_000;

/// One G7 line: `(key, name, bytes per object)`.
pub type Line = (&'static str, &'static str, f64);

/// Every G7 line, baselines first.
pub fn footprint() -> Vec<Line> {
    vec![
        ("g7.arc", "Vec<Arc<T>> per thread", per_object(arcs)),
        (
            "g7.hash",
            "HashMap<u64,T> (SipHash) + Vec<u64> per thread",
            per_object(map::<std::hash::RandomState>),
        ),
        (
            "g7.fxhash",
            "HashMap<u64,T> (FxHash) + Vec<u64> per thread",
            per_object(map::<rustc_hash::FxBuildHasher>),
        ),
        (
            "g7.floor",
            "floor: state word + value + a count per thread, exact-size",
            per_object(floor),
        ),
        (
            "g7.tether",
            "tether Registry + Vec<Handle> per thread",
            per_object(tether),
        ),
    ]
}

/// The least any per-thread-count registry can keep: per object, the
/// shared state word (generation and holds, to refuse stale ids) and the
/// value, and one 8-byte count in each holding thread's table — all in
/// exact-size arrays (no growth slack, no home pointer, no pin counts) —
/// plus each thread's list of its references, grown by `push` like
/// everybody else's.
/// What [`floor`] keeps: slots, both count tables, both reference lists.
type FloorParts = (Vec<(u64, V)>, [Vec<u64>; 2], Vec<u64>, Vec<u64>);

fn floor() -> FloorParts {
    let slots: Vec<(u64, V)> = (0..OBJECTS).map(|i| (1 << 32 | 2, val(i))).collect();
    let counts = [vec![1u64; OBJECTS], vec![1u64; OBJECTS]];
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..OBJECTS {
        a.push(i as u64);
        b.push(i as u64);
    }
    (slots, counts, a, b)
}

fn per_object<R>(build: fn() -> R) -> f64 {
    let (bytes, kept) = live_bytes(build);
    drop(kept);
    bytes as f64 / OBJECTS as f64
}

fn val(i: usize) -> V {
    [i as u64, !(i as u64)]
}

fn arcs() -> (Vec<Arc<V>>, Vec<Arc<V>>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..OBJECTS {
        let v = Arc::new(val(i));
        b.push(Arc::clone(&v));
        a.push(v);
    }
    (a, b)
}

fn map<S: BuildHasher + Default>() -> (HashMap<u64, V, S>, Vec<u64>, Vec<u64>) {
    let mut m = HashMap::with_hasher(S::default());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..OBJECTS {
        m.insert(i as u64, val(i));
        a.push(i as u64);
        b.push(i as u64);
    }
    (m, a, b)
}

/// The home thread inserts every object and keeps one reference; a worker
/// claims a second reference to each and keeps holding until dropped.
struct Held {
    reg: Registry<V>,
    mine: Vec<Handle>,
    done: Option<crossbeam_channel::Sender<()>>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.done = None;
        if let Some(w) = self.worker.take() {
            w.join().expect("G7 worker panicked");
        }
        for &h in &self.mine {
            self.reg.release(h).expect("release");
        }
    }
}

fn tether() -> Held {
    let reg = Registry::new();
    let (gift_tx, gift_rx) = bounded(1);
    let (ready_tx, ready_rx) = bounded(1);
    let (done, done_rx) = bounded::<()>(0);
    let worker = {
        let reg = reg.clone();
        std::thread::spawn(move || {
            let gifts: Vec<tether::Transfer<V>> = gift_rx.recv().expect("gifts");
            let mut theirs = Vec::new();
            for t in gifts {
                theirs.push(reg.claim(t).expect("claim"));
            }
            ready_tx.send(()).expect("ready");
            let _ = done_rx.recv(); // hold until the count is read
            for h in theirs {
                reg.release(h).expect("release");
            }
        })
    };
    let mut mine = Vec::new();
    let mut gifts = Vec::with_capacity(OBJECTS);
    for i in 0..OBJECTS {
        let h = reg.insert(val(i)).expect("insert");
        reg.retain(h).expect("retain");
        gifts.push(reg.transfer(h).expect("transfer"));
        mine.push(h);
    }
    gift_tx.send(gifts).expect("send gifts");
    ready_rx.recv().expect("worker ready");
    Held {
        reg,
        mine,
        done: Some(done),
        worker: Some(worker),
    }
}
