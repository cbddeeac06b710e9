//! The C suite: each `tests/c/*.c` is compiled with the system C compiler
//! (`$CC`, else `cc`) against `include/tether.h`, linked with the static
//! library that this `cargo test` just built, and run. Each program prints
//! a line per C test and "N passed, N failed"; any failure fails the Rust
//! test, with the program's output.
//!
//! `TETHER_FFI_C_RUNNER` runs the programs under a wrapper, e.g.
//! `TETHER_FFI_C_RUNNER="valgrind --error-exitcode=1"` (see
//! `ffi/valgrind.sh`); `TETHER_FFI_C_SCALE` scales the threaded tests'
//! iteration counts (a percentage, default 100). A program still running
//! after 10 minutes (a deadlock) is killed and fails its test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `libtether_ffi.a`, built with this test (the crate's `staticlib` output).
fn static_lib() -> PathBuf {
    common::built_lib("libtether_ffi.a")
}

/// Compiles `tests/c/<name>.c` and returns the program's path.
fn compile(name: &str) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tether-ffi-c-{name}"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-std=c11", "-D_GNU_SOURCE", "-g", "-O1"])
        .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg(manifest.join(format!("tests/c/{name}.c")))
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm"])
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(status.success(), "compiling tests/c/{name}.c failed");
    out
}

/// The command that runs `program`, under `$TETHER_FFI_C_RUNNER` if set.
fn command(program: &Path) -> Command {
    let runner = std::env::var("TETHER_FFI_C_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.args(words).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Compiles and runs `tests/c/<name>.c`; panics with its output on failure.
fn run_c(name: &str) {
    let program = compile(name);
    let output = common::output_within(&mut command(&program), Duration::from_secs(600));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .unwrap_or_else(|| panic!("tests/c/{name}.c printed no summary ({})", output.status));
    assert!(
        output.status.success() && summary.ends_with(" 0 failed"),
        "tests/c/{name}.c: {summary} ({})",
        output.status
    );
}

#[test]
fn c_lifecycle() {
    run_c("lifecycle");
}

#[test]
fn c_threads() {
    run_c("threads");
}

#[test]
fn c_bad_input() {
    run_c("bad_input");
}

/// The README's C example (`tests/c/example.c`, included verbatim in
/// `ffi/README.md`) builds, runs and prints what the README says.
#[test]
fn c_readme_example() {
    let program = compile("example");
    let output = common::output_within(&mut command(&program), Duration::from_secs(600));
    assert!(output.status.success(), "example: {}", output.status);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "worker sees hello\nfinalized at home: 1\n"
    );
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("ffi/README.md");
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/example.c"))
            .expect("tests/c/example.c");
    assert!(
        readme.contains(&format!("```c\n{example}```")),
        "ffi/README.md must show tests/c/example.c verbatim"
    );
}

/// `include/tether.h` compiles on its own as C99, C11 and C23 (where the
/// status enums get their `uint32_t` underlying type), and as C++11 when a
/// C++ compiler is installed.
#[test]
fn header_compiles_as_c_and_cpp() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let source = "#include \"tether.h\"\nint main(void) {\n    tether_status s = TETHER_OK;\n    tether_released r = TETHER_QUEUED;\n    return (int)s + (int)r - 2 + (tether_status_str(s) == 0);\n}\n";
    let c = dir.join("tether-ffi-header.c");
    let cpp = dir.join("tether-ffi-header.cpp");
    std::fs::write(&c, source).expect("write");
    std::fs::write(&cpp, source).expect("write");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    for std in ["-std=c99", "-std=c11", "-std=c2x"] {
        let status = Command::new(&cc)
            .args([
                std,
                "-Wall",
                "-Wextra",
                "-Wpedantic",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(manifest.join("include"))
            .arg(&c)
            .status()
            .expect("run the C compiler");
        assert!(status.success(), "tether.h does not compile with {std}");
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    match Command::new(&cxx)
        .args([
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
        ])
        .arg(manifest.join("include"))
        .arg(&cpp)
        .status()
    {
        Ok(status) => assert!(status.success(), "tether.h does not compile as C++11"),
        Err(_) => eprintln!("no C++ compiler `{cxx}`: C++ check skipped"),
    }
}
