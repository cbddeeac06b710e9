//! The issue-4 report: every row of the table measured in one run, tether
//! and its baselines side by side, with the ratio, the target and PASS/MISS,
//! and a PNG plot of the ratios.
//!
//! ```sh
//! cargo bench --bench report     # under a minute; writes target/tether-perf.png
//! ```
//!
//! Timing: the workloads are the criterion benches' own (see
//! `benches/common/suite.rs`). Each is warmed up and its iteration count
//! calibrated so one sample takes `FULL.sample`; then the cases of a group
//! are sampled in turn, one sample each, `FULL.samples` times, so a change
//! in the machine's load hits tether and its baselines alike. The median is
//! reported in ns per operation per thread, with the fastest and slowest
//! sample beside it. Every target compares two cases of the same group.
//! Figures from a busy machine are noisy: the load average at the start is
//! printed for that reason.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs a quick smoke
//! pass with tiny samples: the table is printed but means nothing, and the
//! plot goes to `target/tether-perf-smoke.png`.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use common::footprint::{footprint, OBJECTS};
use common::suite::{groups, Run};

#[global_allocator]
static ALLOC: common::alloc::Counting = common::alloc::Counting;

/// How long and how often to sample.
struct Plan {
    warm_up: Duration,
    sample: Duration,
    samples: usize,
}

const FULL: Plan = Plan {
    warm_up: Duration::from_millis(100),
    sample: Duration::from_millis(30),
    samples: 21,
};

const SMOKE: Plan = Plan {
    warm_up: Duration::from_millis(1),
    sample: Duration::from_millis(1),
    samples: 3,
};

/// A measured figure: ns per operation, or bytes per object for G7.
#[derive(Clone, Copy)]
struct Figure {
    median: f64,
    low: f64,
    high: f64,
}

/// One target of the issue: `tether / baseline <= limit`.
struct Target {
    id: &'static str,
    what: &'static str,
    tether: &'static str,
    baseline: &'static str,
    limit: f64,
    /// A reference row, not a target: the floor of any handle-based design
    /// (`benches/common/floor.rs`) against the same baseline and limit.
    floor: bool,
}

const fn target(
    id: &'static str,
    what: &'static str,
    tether: &'static str,
    baseline: &'static str,
    limit: f64,
) -> Target {
    Target {
        id,
        what,
        tether,
        baseline,
        limit,
        floor: false,
    }
}

/// A reference row: the floor measured against a target's baseline and limit.
const fn floor(target: Target) -> Target {
    Target {
        floor: true,
        ..target
    }
}

/// The issue's targets, in table order: (row, what, tether case, baseline
/// case, limit on tether / baseline).
#[rustfmt::skip]
const TARGETS: &[Target] = &[
    target("G1", "retain+release vs Rc clone+drop", "g1.raw", "g1.rc", 2.5),
    target("G1", "retain+release vs Arc clone+drop", "g1.raw", "g1.arc", 0.8),
    floor(target("G1", "floor (checked per-thread count) vs Rc", "g1.floor", "g1.rc", 2.5)),
    target("G1", "Proxy clone+drop vs Rc clone+drop", "g1.proxy", "g1.rc", 2.5),
    floor(target("G1", "floor (Rc + own count, clone+drop) vs Rc", "g1.proxyfloor", "g1.rc", 2.5)),
    target("G1", "Proxy clone+drop vs Arc clone+drop", "g1.proxy", "g1.arc", 0.8),
    target("G2", "2 threads, same object vs 2 threads, one Arc", "g2.tether.2t", "arc.2t", 0.25),
    target("G2", "2 threads vs tether 1 thread", "g2.tether.2t", "g2.tether.1t", 1.3),
    target("G3", "0->1->0, 1 thread vs Arc alone", "g3.tether.1t", "arc.1t", 1.3),
    floor(target("G3", "floor (checked count + 2 RMWs) vs Arc alone", "g3.floor.1t", "arc.1t", 1.3)),
    target("G3", "0->1->0, 2 threads vs Arc contended", "g3.tether.2t", "arc.2t", 1.2),
    floor(target("G3", "floor (checked count + 2 RMWs) vs Arc contended", "g3.floor.2t", "arc.2t", 1.2)),
    target("G4", "get vs slab::get", "g4.tether.1t", "g4.slab.1t", 1.5),
    floor(target("G4", "floor (checked per-thread count) vs slab::get", "g4.floor.1t", "g4.slab.1t", 1.5)),
    target("G4", "get vs sharded-slab get, 1 thread", "g4.tether.1t", "g4.sharded.1t", 0.33),
    target("G4", "get vs sharded-slab, hot shared key, 2 threads", "g4.tether.2s", "g4.sharded.2s", 0.1),
    target("G5", "insert+release vs Mutex<Slab>, 1 thread", "g5.tether.1t", "g5.mutex.1t", 1.3),
    target("G5", "insert+release vs sharded-slab, 2 threads", "g5.tether.2t", "g5.sharded.2t", 1.0),
    target("G6", "remote release + pump vs crossbeam send+recv", "g6.tether", "g6.crossbeam", 2.0),
    target("G7", "bytes per object vs Vec<Arc<T>>", "g7.tether", "g7.arc", 1.0),
    floor(target("G7", "floor (state + value + counts, exact) vs Arc", "g7.floor", "g7.arc", 1.0)),
    target("G8", "retain+release, 1M live vs 1K live", "g8.tether.1m", "g8.tether.1k", 1.5),
    target("D", "retain+release with an event hook vs none", "d1.hook", "d1.plain", 1.1),
    target("D", "intern of a held key vs get of a held handle", "d2.intern", "d2.get", 1.1),
];

/// Warms `run` up and returns the iteration count of one sample.
fn calibrate(run: &mut Run, plan: &Plan) -> u64 {
    // Doubling until a call takes a tenth of a sample is the start of the
    // warm-up; the rest of `warm_up` finishes it.
    let started = Instant::now();
    let mut n = 1u64;
    let mut took = run(n);
    while took < plan.sample / 10 && n < 1 << 40 {
        n *= 2;
        took = run(n);
    }
    while started.elapsed() < plan.warm_up {
        took = run(n);
    }
    let per_op = took.as_secs_f64() / n as f64;
    ((plan.sample.as_secs_f64() / per_op) as u64).max(1)
}

/// Measures the cases of one group with their samples interleaved (one of
/// each in turn), so a change in the machine's load hits tether and its
/// baselines alike.
fn measure_group(runs: &mut [Run], plan: &Plan) -> Vec<Figure> {
    let iters: Vec<u64> = runs.iter_mut().map(|r| calibrate(r, plan)).collect();
    let mut ns = vec![Vec::with_capacity(plan.samples); runs.len()];
    for _ in 0..plan.samples {
        for ((run, &n), ns) in runs.iter_mut().zip(&iters).zip(&mut ns) {
            ns.push(run(n).as_secs_f64() * 1e9 / n as f64);
        }
    }
    ns.into_iter()
        .map(|mut ns| {
            ns.sort_by(f64::total_cmp);
            Figure {
                median: ns[ns.len() / 2],
                low: ns[0],
                high: ns[ns.len() - 1],
            }
        })
        .collect()
}

fn first_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| first_line(&t, "model name"))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .map_or(String::new(), |l| format!(", load average {l} at start"));
    format!(
        "{cpu}, {cores} cores, {}, {rustc}{load}",
        std::env::consts::OS
    )
}

fn unit_of(key: &str) -> &'static str {
    if key.starts_with("g7.") {
        "B"
    } else {
        "ns"
    }
}

fn show(f: Figure, unit: &str) -> String {
    let digits = if f.median < 10.0 { 2 } else { 1 };
    format!("{:.*} {unit}", digits, f.median)
}

/// `target/tether-perf.png` (the smoke pass writes `tether-perf-smoke.png`
/// so it never overwrites a real report).
fn plot_path(full: bool) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join(if full {
            "tether-perf.png"
        } else {
            "tether-perf-smoke.png"
        })
}

/// One plotted row: label, ratio, limit, and whether it is a floor row
/// (a reference, drawn grey).
type Bar = (String, f64, f64, bool);

fn plot(bars: &[Bar], subtitle: &str, path: &PathBuf) -> Result<(), Box<dyn std::error::Error>> {
    let rows = bars.len() as i32;
    let height = 150 + 34 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1280, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(70);
    title.draw(&Text::new(
        "tether / baseline: measured ratio (bar) and target (black mark); log scale, lower is better",
        (16, 12),
        ("sans-serif", 21).into_font(),
    ))?;
    title.draw(&Text::new(
        subtitle.to_owned(),
        (16, 42),
        ("sans-serif", 15).into_font(),
    ))?;
    let smallest = bars.iter().map(|b| b.1.min(b.2)).fold(f64::MAX, f64::min);
    let largest = bars.iter().map(|b| b.1.max(b.2)).fold(0.0, f64::max);
    // Room on the right for the label after the longest bar.
    let (lo, hi) = ((smallest / 2.0).min(0.05), (largest * 8.0).max(10.0));
    let mut chart = ChartBuilder::on(&body)
        .margin_right(24)
        .margin_bottom(8)
        .x_label_area_size(44)
        .y_label_area_size(450)
        // An integer range is inclusive as a discrete axis: `0..rows - 1` has
        // exactly `rows` segments.
        .build_cartesian_2d((lo..hi).log_scale(), (0..rows - 1).into_segmented())?;
    let label_of = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if (0..rows).contains(i) => {
            bars[(rows - 1 - i) as usize].0.clone()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&label_of)
        .x_label_formatter(&|x| format!("{x}x"))
        .x_desc("ratio")
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (_, ratio, limit, floor)) in bars.iter().enumerate() {
        let row = rows - 1 - i as i32;
        let pass = ratio <= limit;
        let color = match (floor, pass) {
            (true, _) => RGBColor(140, 140, 140),
            (false, true) => RGBColor(46, 160, 67),
            (false, false) => RGBColor(215, 58, 73),
        };
        let top = SegmentValue::Exact(row + 1);
        let bottom = SegmentValue::Exact(row);
        let mut bar = Rectangle::new(
            [(lo, top.clone()), (*ratio, bottom.clone())],
            color.filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        chart.draw_series([bar])?;
        chart.draw_series([PathElement::new(
            vec![(*limit, top), (*limit, bottom)],
            BLACK.stroke_width(3),
        )])?;
        let verdict = match (floor, pass) {
            (true, true) => "(floor) within",
            (true, false) => "(floor) beyond",
            (false, true) => "PASS",
            (false, false) => "MISS",
        };
        chart.draw_series([Text::new(
            format!("{ratio:.2}x  (target <= {limit}x) {verdict}"),
            (ratio.max(*limit) * 1.08, SegmentValue::CenterOf(row)),
            TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        )])?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let started = Instant::now();
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { &FULL } else { &SMOKE };
    common::register_font();

    let machine = machine();
    println!("tether benchmark report (issue 4)");
    println!("machine: {machine}");
    if full {
        println!(
            "timing: warm-up {} ms, then median of {} samples of ~{} ms; [fastest .. slowest sample]",
            plan.warm_up.as_millis(),
            plan.samples,
            plan.sample.as_millis()
        );
    } else {
        println!("smoke mode (no --bench): tiny samples, figures are meaningless");
    }
    println!("every time is per operation per thread\n");

    // (row id, case key) -> figure: each target compares cases of its own
    // group, measured together.
    let mut figures: HashMap<(&'static str, &'static str), Figure> = HashMap::new();
    for g in groups() {
        println!("{}  {}", g.id, g.title);
        let mut runs: Vec<Run> = g.cases.iter().map(|c| (c.make)()).collect();
        let measured = measure_group(&mut runs, plan);
        drop(runs);
        for (case, f) in g.cases.iter().zip(measured) {
            figures.insert((g.id, case.key), f);
            println!(
                "    {:<46} {:>9}   [{:.2} .. {:.2}]",
                case.name,
                show(f, "ns"),
                f.low,
                f.high
            );
        }
        if g.id == "G6" {
            println!(
                "G7  heap bytes per live object ({OBJECTS} objects of 16 bytes, each held by 2 threads)"
            );
            for (key, name, bytes) in footprint() {
                let f = Figure {
                    median: bytes,
                    low: bytes,
                    high: bytes,
                };
                figures.insert(("G7", key), f);
                println!("    {name:<46} {:>9}", show(f, "B"));
            }
        }
    }

    println!();
    println!(
        "| id | target | tether | baseline | ratio | limit | result |\n|----|--------|-------:|---------:|------:|------:|--------|"
    );
    let mut bars = Vec::new();
    let mut missed = 0;
    let targets = TARGETS.iter().filter(|t| !t.floor).count();
    for t in TARGETS {
        let (a, b) = (figures[&(t.id, t.tether)], figures[&(t.id, t.baseline)]);
        let ratio = a.median / b.median;
        let pass = ratio <= t.limit;
        missed += usize::from(!pass && !t.floor);
        let unit = unit_of(t.tether);
        println!(
            "| {} | {:<48} | {:>9} | {:>9} | {:>6.2}x | {:<8} | {} |",
            t.id,
            t.what,
            show(a, unit),
            show(b, unit),
            ratio,
            format!("<= {}x", t.limit),
            match (t.floor, pass) {
                (false, true) => "PASS",
                (false, false) => "MISS",
                (true, true) => "(floor) within",
                (true, false) => "(floor) beyond",
            }
        );
        bars.push((format!("{}  {}", t.id, t.what), ratio, t.limit, t.floor));
    }
    println!("\n{} of {} targets met.", targets - missed, targets);

    let path = plot_path(full);
    match plot(&bars, &machine, &path) {
        Ok(()) => println!("plot: {}", path.display()),
        Err(e) => eprintln!("could not write the plot {}: {e}", path.display()),
    }
    println!(
        "reproduce: cargo bench --bench report   ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
