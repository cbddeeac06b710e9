//! The Python client: `python/test_tether.py` drives the `cdylib` this
//! `cargo test` just built, through the ctypes wrapper `python/tether.py`,
//! from real `threading` threads.
//!
//! Without a `python3` on PATH the test is skipped with a printed reason,
//! unless `CI` is set: then a missing interpreter is a failure. A run still
//! going after 5 minutes (a deadlock, say with the GIL) is killed and fails.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn python_client_on_real_threads() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    match Command::new(&python).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "`{python}` is not on PATH and CI is set: the Python client test must run in CI"
            );
            eprintln!("SKIPPED python_client_on_real_threads: no `{python}` on PATH");
            return;
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/test_tether.py");
    let output = common::output_within(
        Command::new(&python)
            .arg(&script)
            .arg("-v")
            .env("TETHER_FFI_LIB", common::built_lib("libtether_ffi.so"))
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{stderr}");
    assert!(
        output.status.success() && stderr.lines().any(|l| l == "OK"),
        "python/test_tether.py failed ({})",
        output.status
    );
}
