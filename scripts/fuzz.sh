#!/usr/bin/env bash
# Runs the fuzz target for real, on one core (installs cargo-fuzz if missing).
# The corpus grows in fuzz/corpus/model, crashes land in fuzz/artifacts/model
# (both git-ignored); see fuzz/README.md to replay one.
#
#   scripts/fuzz.sh [seconds] [libFuzzer flags...]    (default: 600 seconds)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: fuzzing needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
seconds="${1:-600}"
shift || true
cd fuzz
cargo +nightly fuzz run model -- -max_total_time="$seconds" -print_final_stats=1 "$@"
