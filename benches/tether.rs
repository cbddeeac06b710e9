//! Criterion benchmarks: one group per row of issue 4's table (G1..G8),
//! tether next to its baselines in the same group, with criterion's HTML
//! plots in `target/criterion/report/index.html`.
//!
//! ```sh
//! cargo bench --bench tether            # everything (a few minutes)
//! cargo bench --bench tether -- G4      # one group
//! cargo bench --bench report            # the issue's table with PASS/MISS, in one run
//! ```
//!
//! Every figure is time per operation per thread; multi-thread cases start
//! their threads together and report the slowest one. G7 counts heap bytes
//! (no timing) and is printed, not benchmarked. The workloads live in
//! `benches/common/suite.rs`, shared with the report.

mod common;

use std::time::Duration;

use criterion::Criterion;

use common::suite::{groups, Group, Run};

#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

fn bench_group(c: &mut Criterion, g: &Group) {
    let mut group = c.benchmark_group(format!("{} {}", g.id, g.title));
    for case in &g.cases {
        // Built on first use, so a filtered-out case costs no setup.
        let mut run: Option<Run> = None;
        group.bench_function(case.name, |b| {
            b.iter_custom(|n| run.get_or_insert_with(case.make)(n))
        });
    }
    group.finish();
}

fn print_footprint() {
    println!(
        "G7 heap bytes per live object ({} objects of 16 bytes, each held by 2 threads):",
        common::footprint::OBJECTS
    );
    for (_, name, bytes) in common::footprint::footprint() {
        println!("    {name:<52} {bytes:>7.1} B");
    }
}

fn main() {
    common::register_font();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    for g in groups() {
        if g.id == "G8" {
            print_footprint();
        }
        bench_group(&mut c, &g);
    }
    c.final_summary();
}
