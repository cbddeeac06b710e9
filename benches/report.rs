//! The issue-4/18 report: every row of the table measured in one run,
//! tether and its baselines (floors, and what a user would pick) side by
//! side, with the ratio, the target and PASS/MISS, each case's instruction
//! count per operation (from `target/tether-callgrind.txt`, written by
//! `scripts/callgrind.sh`), a markdown table (`target/tether-perf.md`, the
//! README's), a PNG plot of the ratios, and every sample of every case in
//! round order (`target/tether-perf-samples.txt`).
//!
//! ```sh
//! cargo bench --bench report     # about two minutes; writes target/tether-perf.{md,png}, tether-perf-samples.txt
//! scripts/perf-table.sh          # callgrind, this, and the README table in one go
//! TETHER_REPORT_GROUPS=G2,M cargo bench --bench report   # some groups only
//! ```
//!
//! Timing: the workloads are the criterion benches' own (see
//! `benches/common/suite.rs`). Each is warmed up and its iteration count
//! calibrated so one sample takes `FULL.sample`; then the cases of a group
//! are sampled in turn, one sample each, `FULL.samples` times, so a change
//! in the machine's load hits tether and its baselines alike. The median is
//! reported in ns per operation per thread, with the fastest and slowest
//! sample beside it. Every target compares two cases of the same group (a
//! 2-thread row with a control divides its slowdown by the control's, all
//! four cases from one group); its ratio is paired: the median over the
//! rounds of each round's own ratio (see `paired_ratio`).
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
    samples: 41,
};

const SMOKE: Plan = Plan {
    warm_up: Duration::from_millis(1),
    sample: Duration::from_millis(1),
    samples: 3,
};

/// A measured figure: ns per operation, or bytes per object for G7.
#[derive(Clone)]
struct Figure {
    median: f64,
    low: f64,
    high: f64,
    /// Every sample, in the order taken: sample `i` of each case of a
    /// group was taken in the same round (see [`paired_ratio`]).
    samples: Vec<f64>,
}

/// What a row is: a target (counted), a floor's distance from a baseline or
/// any other reference (shown, not counted).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Target,
    Info,
}

/// One row: `tether / baseline <= limit`; with a `control`, the ratio is
/// `(tether / tether_1) / (control_n / control_1)`: a slowdown (N threads
/// against 1) over the same slowdown of a floor that shares nothing,
/// measured in the same run.
struct Target {
    id: &'static str,
    what: &'static str,
    tether: &'static str,
    baseline: &'static str,
    limit: f64,
    kind: Kind,
    control: Option<(&'static str, &'static str)>,
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
        kind: Kind::Target,
        control: None,
    }
}

/// A reference row (shown, not counted).
const fn info(target: Target) -> Target {
    Target {
        kind: Kind::Info,
        ..target
    }
}

/// A 2-thread row with its control: `(tether_n / tether_1) / (floor_n /
/// floor_1)`.
const fn controlled(target: Target, floor_n: &'static str, floor_1: &'static str) -> Target {
    Target {
        control: Some((floor_n, floor_1)),
        ..target
    }
}

/// The targets (issues 4, 6 and 18), in table order: (row, what, tether
/// case, baseline case, limit on tether / baseline). Floors are the
/// cheapest correct code for their row (`benches/common/floor.rs`).
#[rustfmt::skip]
const TARGETS: &[Target] = &[
    target("G1", "retain+release vs its floor", "g1.raw", "g1.floor", 1.3),
    target("G1", "retain+release vs Arc clone+drop", "g1.raw", "g1.arc", 0.8),
    target("G1", "Proxy clone+drop vs its floor", "g1.proxy", "g1.proxyfloor", 1.3),
    target("G1", "Proxy clone+drop vs Arc clone+drop", "g1.proxy", "g1.arc", 0.8),
    info(target("G1", "(DESIGN's per-call work at the floor vs the floor: which registry, drain flag, count limit)", "g1.dfloor", "g1.floor", 1.3)),
    info(target("G1", "(retain+release vs that DESIGN floor)", "g1.raw", "g1.dfloor", 1.3)),
    info(target("G1", "(retain+release floor vs Rc clone+drop)", "g1.floor", "g1.rc", 2.5)),
    info(target("G1", "(Proxy floor vs Rc clone+drop)", "g1.proxyfloor", "g1.rc", 2.5)),
    target("G2", "2 threads, same object vs 2 threads, one Arc", "g2.raw.2s", "arc.2t", 0.25),
    controlled(target("G2", "retain+release, same object: 2t/1t over floor's", "g2.raw.2s", "g2.raw.1t", 1.15), "g2.floor.2t", "g2.floor.1t"),
    controlled(target("G2", "retain+release, own objects: 2t/1t over floor's", "g2.raw.2d", "g2.raw.1t", 1.15), "g2.floor.2t", "g2.floor.1t"),
    controlled(target("G2", "Proxy, same object: 2t/1t over floor's", "g2.proxy.2s", "g2.proxy.1t", 1.15), "g2.floor.2t", "g2.floor.1t"),
    controlled(target("G2", "Proxy, own objects: 2t/1t over floor's", "g2.proxy.2d", "g2.proxy.1t", 1.15), "g2.floor.2t", "g2.floor.1t"),
    target("G3", "0->1->0 vs its floor, alone", "g3.tether.1t", "g3.floor.1t", 1.3),
    target("G3", "0->1->0 vs its floor, 2 threads contended", "g3.tether.2t", "g3.floor.2t", 1.3),
    info(target("G3", "(the floor as two calls with tether's harness vs the floor, alone)", "g3.floor2.1t", "g3.floor.1t", 1.3)),
    info(target("G3", "(0->1->0 vs that two-call floor, alone)", "g3.tether.1t", "g3.floor2.1t", 1.3)),
    info(target("G3", "(DESIGN's first-reference work at the floor vs the floor, alone)", "g3.dfloor.1t", "g3.floor.1t", 1.3)),
    info(target("G3", "(0->1->0 vs that DESIGN floor, alone)", "g3.tether.1t", "g3.dfloor.1t", 1.3)),
    info(target("G3", "(DESIGN's first-reference work at the floor vs the floor, contended)", "g3.dfloor.2t", "g3.floor.2t", 1.3)),
    info(target("G3", "(0->1->0 vs that DESIGN floor, contended)", "g3.tether.2t", "g3.dfloor.2t", 1.3)),
    info(target("G3", "(floor vs Arc clone+drop, alone)", "g3.floor.1t", "arc.1t", 1.3)),
    info(target("G3", "(floor vs Arc clone+drop, contended)", "g3.floor.2t", "arc.2t", 1.2)),
    target("G4", "get vs its floor", "g4.tether.1t", "g4.floor.1t", 1.3),
    info(target("G4", "(get vs a copy-out floor: no guard, count kept in a register)", "g4.tether.1t", "g4.copyfloor.1t", 1.3)),
    info(target("G4", "(DESIGN's per-call work at the floor vs the floor, get)", "g4.dfloor.1t", "g4.floor.1t", 1.3)),
    info(target("G4", "(get vs that DESIGN floor)", "g4.tether.1t", "g4.dfloor.1t", 1.3)),
    info(target("G4", "(get floor vs slab::get, unchecked)", "g4.floor.1t", "g4.slab.1t", 1.5)),
    target("G4", "get vs sharded-slab get, 1 thread", "g4.tether.1t", "g4.sharded.1t", 0.33),
    target("G4", "get vs sharded-slab, hot shared key, 2 threads", "g4.tether.2s", "g4.sharded.2s", 0.1),
    target("G5", "insert+release vs Mutex<Slab>, home finalization on", "g5.tether.1t", "g5.mutex.1t", 1.0),
    target("G5", "insert+release vs Mutex<Slab>, home finalization off", "g5.nohome.1t", "g5.mutex.1t", 1.0),
    target("G5", "insert+release vs sharded-slab, 2 threads", "g5.tether.2t", "g5.sharded.2t", 1.0),
    target("L", "lifecycle vs Mutex<Slab> + crossbeam send", "l.tether", "l.mutex", 1.0),
    info(target("L", "(floor with the trip home vs Mutex<Slab> + crossbeam send)", "l.floor", "l.mutex", 1.0)),
    info(target("L", "(lifecycle vs its floor with the trip home)", "l.tether", "l.floor", 1.3)),
    target("G6", "remote release + pump vs crossbeam send+recv", "g6.tether", "g6.crossbeam", 1.5),
    info(target("G6", "(floor: last RMW + send home, vs crossbeam send+recv)", "g6.floor", "g6.crossbeam", 1.5)),
    info(target("G6", "(remote release + pump vs its floor)", "g6.tether", "g6.floor", 1.3)),
    info(target("G6", "(floor + the home's pending flag, an RMW per send, vs crossbeam)", "g6.dfloor", "g6.crossbeam", 1.5)),
    info(target("G6", "(remote release + pump vs that DESIGN floor)", "g6.tether", "g6.dfloor", 1.3)),
    target("G7", "bytes per object vs Vec<Arc<T>>", "g7.tether", "g7.arc", 1.0),
    info(target("G7", "(floor: state + value + counts, exact, vs Arc)", "g7.floor", "g7.arc", 1.0)),
    target("G8", "retain+release, 1M live vs 1K live", "g8.tether.1m", "g8.tether.1k", 1.5),
    target("M", "2 registries alternated vs 1", "m.2", "m.1", 1.15),
    target("M", "4 registries in turn vs 1", "m.4", "m.1", 1.15),
    info(target("W", "(Weak::upgrade of a held object vs std Weak::upgrade)", "w.held", "w.std", 1.0)),
    info(target("W", "(Weak::upgrade, thread holds nothing, vs std Weak::upgrade)", "w.first", "w.std", 1.0)),
    target("W", "Weak::upgrade, thread holds nothing, vs transfer+claim", "w.first", "w.claim", 1.1),
    target("D", "hook installed, retain+release (emits nothing) vs none", "d1.hook", "d1.plain", 1.1),
    info(target("D", "(0->1->0 with a hook taking its 2 events vs none)", "d1.zhook", "d1.zplain", 1.1)),
    target("D", "intern+release of a held key vs get (+1 -1 both)", "d2.intern", "d2.get", 1.1),
    // What the interner itself adds: both sides +1 and -1 a raw handle.
    info(target("D", "(intern+release vs retain+release: the key lookup alone)", "d2.intern", "d1.plain", 1.1)),
    info(target("D", "(floor: key lookup + retain+release vs the get floor)", "d2.floor", "d2.getfloor", 1.1)),
    info(target("D", "(intern+release vs its floor)", "d2.intern", "d2.floor", 1.3)),
];

/// The callgrind operation (`benches/ops.rs`) that runs a case's
/// per-thread loop, for the instruction count shown beside its time.
fn op_of(key: &str) -> Option<&'static str> {
    Some(match key {
        "g1.raw" | "g2.raw.1t" | "g2.raw.2s" | "g2.raw.2d" | "d1.plain" | "d1.hook" => {
            "retain_release"
        }
        "g1.arc" | "arc.1t" => "arc_clone_drop",
        "g1.rc" => "rc_clone_drop",
        "g1.floor" | "g2.floor.1t" | "g2.floor.2t" => "floor_retain_release",
        "g1.proxy" | "g2.proxy.1t" | "g2.proxy.2s" | "g2.proxy.2d" => "proxy_clone_drop",
        "g1.proxyfloor" => "floor_proxy_clone_drop",
        "g1.dfloor" => "design_floor_retain_release",
        "g4.dfloor.1t" => "design_floor_get",
        "g3.tether.1t" | "g3.tether.2t" => "pinned_first_last",
        "g3.floor.1t" | "g3.floor.2t" => "floor_first_last",
        "g3.floor2.1t" => "floor_first_last_calls",
        "g3.dfloor.1t" | "g3.dfloor.2t" => "design_floor_first_last",
        "g4.tether.1t" | "d2.get" => "get",
        "d2.intern" => "intern_release",
        "g4.floor.1t" => "floor_get",
        "g4.copyfloor.1t" => "floor_copy_get",
        "g5.tether.1t" => "insert_release",
        "l.tether" => "lifecycle",
        "g6.tether" => "remote_release_pump",
        "d1.zplain" => "zero_one_zero",
        "m.1" => "alt1",
        "m.2" => "alt2",
        "m.4" => "alt4",
        "w.std" => "std_weak_upgrade",
        "w.held" => "upgrade_held",
        "w.first" => "upgrade_first",
        "w.claim" => "transfer_claim",
        _ => return None,
    })
}

/// Instruction counts per operation from `target/tether-callgrind.txt`
/// (written by `scripts/callgrind.sh`), and its header line.
fn instructions() -> (HashMap<String, f64>, Option<String>) {
    let path = target_dir().join("tether-callgrind.txt");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return (HashMap::new(), None);
    };
    let header = text
        .lines()
        .find(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim().to_owned());
    let counts = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect();
    (counts, header)
}

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
        .map(|samples| {
            let mut sorted = samples.clone();
            sorted.sort_by(f64::total_cmp);
            Figure {
                median: sorted[sorted.len() / 2],
                low: sorted[0],
                high: sorted[sorted.len() - 1],
                samples,
            }
        })
        .collect()
}

/// The median of `xs` (not empty).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A row's ratio from paired samples: for each round `i` the ratio of
/// the cases' samples `i` (`(a/b) / (cn/c1)` with a control), then the
/// median over the rounds. The samples of one round were taken one after
/// the other, so a load change on the VM (a second vCPU there for some
/// rounds and not for others) hits both sides of each ratio alike, where a
/// ratio of two medians could pair a quiet sample with a busy one.
fn paired_ratio(a: &Figure, b: &Figure, control: Option<(&Figure, &Figure)>) -> f64 {
    let ratios: Vec<f64> = (0..a.samples.len().min(b.samples.len()))
        .map(|i| {
            let r = a.samples[i] / b.samples[i];
            match control {
                None => r,
                Some((cn, c1)) => r / (cn.samples[i] / c1.samples[i]),
            }
        })
        .collect();
    median(&ratios)
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

fn show(f: &Figure, unit: &str) -> String {
    let digits = if f.median < 10.0 { 2 } else { 1 };
    format!("{:.*} {unit}", digits, f.median)
}

/// `target/tether-perf.png` (the smoke pass writes `tether-perf-smoke.png`
/// so it never overwrites a real report).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn plot_path(full: bool) -> PathBuf {
    target_dir().join(if full {
        "tether-perf.png"
    } else {
        "tether-perf-smoke.png"
    })
}

/// One plotted row: label, ratio, limit, and whether it is a reference
/// row (drawn grey, not counted).
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
            (true, _) => "(reference)",
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

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn main() {
    let started = Instant::now();
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full { &FULL } else { &SMOKE };
    common::register_font();

    let machine = machine();
    let (instr, instr_from) = instructions();
    println!("tether benchmark report (issues 4, 6, 18)");
    println!("machine: {machine}");
    match &instr_from {
        Some(h) => println!("instructions per operation: {h} (target/tether-callgrind.txt)"),
        None => println!("instructions per operation: none (run scripts/callgrind.sh first)"),
    }
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
    let instr_of = |key: &str| op_of(key).and_then(|op| instr.get(op).copied());
    let show_instr = |key: &str| instr_of(key).map_or(String::from("-"), |i| format!("{i:.0}"));

    // (row id, case key) -> figure: each target compares cases of its own
    // group, measured together.
    let mut figures: HashMap<(&'static str, &'static str), Figure> = HashMap::new();
    // `TETHER_REPORT_GROUPS=G2,M`: only those groups (for a quick look;
    // the rows of the others are left out of the table).
    let only: Option<Vec<String>> = std::env::var("TETHER_REPORT_GROUPS")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let wanted = |id: &str| only.as_ref().map_or(true, |o| o.iter().any(|w| w == id));
    // Every sample, one line per case in round order: a row's median hides
    // a case whose samples fall into two groups (see `threads::Start`).
    let mut samples = String::from("# group case ns-per-operation-of-each-round...\n");
    for g in groups().into_iter().filter(|g| wanted(g.id)) {
        println!("{}  {}", g.id, g.title);
        let mut runs: Vec<Run> = g.cases.iter().map(|c| (c.make)()).collect();
        let measured = measure_group(&mut runs, plan);
        drop(runs);
        for (case, f) in g.cases.iter().zip(measured) {
            samples += &format!("{} {}", g.id, case.key);
            for x in &f.samples {
                samples += &format!(" {x:.2}");
            }
            samples.push('\n');
            println!(
                "    {:<50} {:>9}   [{:.2} .. {:.2}]  {:>5} instr",
                case.name,
                show(&f, "ns"),
                f.low,
                f.high,
                show_instr(case.key),
            );
            figures.insert((g.id, case.key), f);
        }
        if g.id == "G6" && wanted("G7") {
            println!(
                "G7  heap bytes per live object ({OBJECTS} objects of 16 bytes, each held by 2 threads)"
            );
            for (key, name, bytes) in footprint() {
                let f = Figure {
                    median: bytes,
                    low: bytes,
                    high: bytes,
                    samples: vec![bytes],
                };
                println!("    {name:<50} {:>9}", show(&f, "B"));
                figures.insert(("G7", key), f);
            }
        }
    }

    let mut md = String::new();
    md += &format!(
        "Measured {} with `cargo bench --bench report` on {machine}.",
        today()
    );
    if let Some(h) = &instr_from {
        md += &format!(" Instructions per operation: {h}.");
    }
    md += "\n\n| id | row | tether | instr | baseline | instr | ratio | limit | result |\n";
    md += "|----|-----|-------:|------:|---------:|------:|------:|------:|--------|\n";
    let mut bars = Vec::new();
    let mut missed = 0;
    let targets = TARGETS
        .iter()
        .filter(|t| t.kind == Kind::Target && wanted(t.id))
        .count();
    for t in TARGETS.iter().filter(|t| wanted(t.id)) {
        let fig = |key| &figures[&(t.id, key)];
        let (a, b) = (fig(t.tether), fig(t.baseline));
        let unit = unit_of(t.tether);
        let (ratio, tether, baseline) = match t.control {
            None => (paired_ratio(a, b, None), show(a, unit), show(b, unit)),
            Some((cn, c1)) => {
                let (cn, c1) = (fig(cn), fig(c1));
                (
                    paired_ratio(a, b, Some((cn, c1))),
                    format!("{:.2} / {:.2} ns", a.median, b.median),
                    format!("{:.2} / {:.2} ns", cn.median, c1.median),
                )
            }
        };
        let (ia, ib) = match t.control {
            None => (show_instr(t.tether), show_instr(t.baseline)),
            Some((cn, _)) => (show_instr(t.tether), show_instr(cn)),
        };
        let pass = ratio <= t.limit;
        let is_target = t.kind == Kind::Target;
        missed += usize::from(!pass && is_target);
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {:.2}x | <= {}x | {} |\n",
            t.id,
            t.what,
            tether,
            ia,
            baseline,
            ib,
            ratio,
            t.limit,
            match (is_target, pass) {
                (true, true) => "PASS",
                (true, false) => "MISS",
                (false, _) => "(reference)",
            }
        );
        bars.push((format!("{}  {}", t.id, t.what), ratio, t.limit, !is_target));
    }
    md += &format!(
        "\n{} of {} targets met in this run.\n",
        targets - missed,
        targets
    );
    println!("\n{md}");
    let md_path = target_dir().join(if full {
        "tether-perf.md"
    } else {
        "tether-perf-smoke.md"
    });
    if let Err(e) = std::fs::write(&md_path, &md) {
        eprintln!("could not write {}: {e}", md_path.display());
    } else {
        println!("table: {}", md_path.display());
    }

    let samples_path = target_dir().join(if full {
        "tether-perf-samples.txt"
    } else {
        "tether-perf-samples-smoke.txt"
    });
    match std::fs::write(&samples_path, &samples) {
        Ok(()) => println!("samples: {}", samples_path.display()),
        Err(e) => eprintln!("could not write {}: {e}", samples_path.display()),
    }

    let path = plot_path(full);
    match plot(&bars, &machine, &path) {
        Ok(()) => println!("plot: {}", path.display()),
        Err(e) => eprintln!("could not write the plot {}: {e}", path.display()),
    }
    println!(
        "reproduce: scripts/perf-table.sh (callgrind, this report, README table)   ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
}
