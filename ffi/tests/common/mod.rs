//! Shared by the tests that run programs built from this crate's outputs.

#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A library this `cargo test` built (`libtether_ffi.a`, `.so`): the copy
/// beside the running test binary, in `target/<profile>/deps`, which cargo
/// rebuilds with the test. (Not the copy in `target/<profile>`: cargo
/// refreshes that one on `cargo build` only, so it can be stale here.)
pub fn built_lib(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe
        .parent()
        .expect("test binary is in <target>/<profile>/deps");
    let lib = deps.join(file);
    assert!(lib.exists(), "{file} not found in {}", deps.display());
    lib
}

/// Runs `cmd` to completion, killing it after `limit`: a deadlocked
/// program is a failure, not a hung test run.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drain the pipes on threads so a chatty child never blocks on them.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut v).ok();
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut v).ok();
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?} (deadlock?): killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
