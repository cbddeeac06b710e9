#!/usr/bin/env bash
# Builds the fuzz target (fuzz/, see fuzz/README.md) exactly as
# `cargo fuzz build` does, without needing cargo-fuzz: nightly, SanitizerCoverage
# for libFuzzer (which libfuzzer-sys compiles with the system C++ compiler),
# AddressSanitizer, debug assertions. It does not run it: scripts/fuzz.sh does.
#
#   scripts/fuzz-build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "SKIPPED: the fuzz target needs the nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
target=x86_64-unknown-linux-gnu

# The flags of cargo-fuzz 0.13 (`cargo fuzz build model`, default options), so
# a later `cargo fuzz run` reuses this build from fuzz/target.
flags="-Cpasses=sancov-module"
flags+=" -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" --cfg fuzzing"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
flags+=" -Zsanitizer=address"
flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth"
flags+=" -Cdebug-assertions"
flags+=" -Ccodegen-units=1"

RUSTFLAGS="$flags" cargo +nightly build \
    --manifest-path fuzz/Cargo.toml --target "$target" \
    --release --config 'profile.release.debug="line-tables-only"' --bins
echo "fuzz target built: fuzz/target/$target/release/model"
