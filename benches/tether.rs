//! Benchmarks (criterion). The full suite against Rc/Arc/slab/sharded-slab
//! baselines is its own work item; this file keeps the first yardstick of
//! DESIGN §7: a held reference's clone+drop on its own thread, against `Rc`
//! and `Arc`, measured side by side in one run.
//!
//! Run with `cargo bench`.

use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tether::Registry;

fn clone_drop(c: &mut Criterion) {
    let mut g = c.benchmark_group("clone+drop, own thread");
    let rc = Rc::new(1u64);
    g.bench_function("Rc", |b| b.iter(|| drop(black_box(Rc::clone(&rc)))));
    let arc = Arc::new(1u64);
    g.bench_function("Arc", |b| b.iter(|| drop(black_box(Arc::clone(&arc)))));
    let reg = Registry::new();
    let p = reg.insert_proxy(1u64).expect("insert");
    g.bench_function("tether Proxy", |b| b.iter(|| drop(black_box(p.clone()))));
    let h = p.handle();
    g.bench_function("tether retain+release", |b| {
        b.iter(|| {
            reg.retain(black_box(h)).expect("retain");
            reg.release(black_box(h)).expect("release");
        })
    });
    g.bench_function("tether get", |b| {
        b.iter(|| black_box(*reg.get(black_box(h)).expect("get")))
    });
    g.finish();
}

criterion_group!(benches, clone_drop);
criterion_main!(benches);
