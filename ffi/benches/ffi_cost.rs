//! The FFI cost: a `retain` + `release` pair of a held handle, called
//!
//! 1. from Rust on a `tether::Registry` (the library itself),
//! 2. from Rust through the C functions (`tether_retain`/`tether_release`:
//!    panic guard, registry tag check, out-parameter),
//! 3. from C (`benches/retain_release.c`, `cc -O2`, linked with the
//!    optimized `libtether_ffi.a` this bench was built with).
//!
//! `cargo bench -p tether-ffi`. Best of five runs of 10 M pairs each, on one
//! thread; a benchmark, not a test: nothing is asserted.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tether_ffi::*;

const PAIRS: u32 = 10_000_000;

fn best_ns_per_pair(mut pairs: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            pairs();
            start.elapsed().as_nanos() as f64 / f64::from(PAIRS)
        })
        .fold(f64::INFINITY, f64::min)
}

fn rust_library() -> f64 {
    let reg: tether::Registry<u64> = tether::Registry::new();
    let h = reg.insert(1).expect("insert");
    best_ns_per_pair(|| {
        for _ in 0..PAIRS {
            black_box(reg.retain(black_box(h)).expect("retain"));
            black_box(reg.release(black_box(h)).expect("release"));
        }
    })
}

fn through_c_functions() -> f64 {
    // SAFETY: a registry made here, used on this thread, freed at the end;
    // every out-parameter is a live local.
    unsafe {
        let reg = tether_registry_new(None, std::ptr::null_mut());
        let mut h = 0;
        assert_eq!(
            tether_insert(reg, std::ptr::null_mut(), &mut h),
            tether_status::TETHER_OK
        );
        let (mut n, mut r) = (0u32, tether_released::TETHER_HELD);
        let ns = best_ns_per_pair(|| {
            for _ in 0..PAIRS {
                black_box(tether_retain(reg, black_box(h), &mut n));
                black_box(tether_release(reg, black_box(h), &mut r));
            }
        });
        tether_registry_free(reg);
        ns
    }
}

fn from_c() -> Option<f64> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deps = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let lib = deps.join("libtether_ffi.a");
    let program = deps.join("tether-ffi-bench-retain-release");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let built = Command::new(&cc)
        .args(["-std=c11", "-O2", "-D_GNU_SOURCE", "-I"])
        .arg(manifest.join("include"))
        .arg(manifest.join("benches/retain_release.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&program)
        .status()
        .ok()?;
    if !built.success() {
        return None;
    }
    let out = Command::new(&program)
        .arg(PAIRS.to_string())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once
    // without: skip the timing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rust = rust_library();
    let wrapped = through_c_functions();
    println!("retain + release of a held handle, ns per pair (best of 5 x {PAIRS}):");
    println!("  Rust, tether::Registry           {rust:6.2}   1.00");
    println!(
        "  Rust, through the C functions    {wrapped:6.2}   {:.2}",
        wrapped / rust
    );
    match from_c() {
        Some(c) => println!(
            "  C (cc -O2), libtether_ffi.a      {c:6.2}   {:.2}",
            c / rust
        ),
        None => println!("  C: could not build or run benches/retain_release.c"),
    }
}
