#!/usr/bin/env bash
# Runs the integration tests under ThreadSanitizer and AddressSanitizer
# (nightly toolchain; std itself is not instrumented).
#
# tests/quickjs.rs runs here too (about 12 s more per sanitizer, mostly
# rquickjs-sys compiling QuickJS; the tests take under a second). Its build
# script compiles QuickJS's C code without -fsanitize, so the engine itself
# is not instrumented: the sanitizers check the Rust side (tether, the
# bridge's threads), and ASan/LSan still see the engine's malloc and free
# (a leaked runtime or object would be reported). QuickJS only ever runs
# on each test's main thread.
#
#   scripts/sanitizers.sh [tsan|asan]    (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "SKIPPED: the sanitizers need the nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
target=x86_64-unknown-linux-gnu
which="${1:-all}"

if [ "$which" = all ] || [ "$which" = tsan ]; then
    echo "--- ThreadSanitizer: integration tests"
    # --test-threads=1: the harness runs one test at a time. Each test's own
    # threads still run (and race) under TSan; what is avoided is libtest
    # capturing the output of deliberately panicking Drops from two tests at
    # once through std's uninstrumented mutex (a false positive).
    # --skip fork: TSan does not support fork() in a multi-threaded process;
    # the fork tests run under ASan below.
    TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp halt_on_error=1" \
    RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
    CARGO_TARGET_DIR=target/tsan \
        cargo +nightly test --target "$target" --tests -- --test-threads=1 --skip fork
fi

if [ "$which" = all ] || [ "$which" = asan ]; then
    echo "--- AddressSanitizer (with LeakSanitizer): integration tests"
    ASAN_OPTIONS="detect_leaks=1" \
    LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp" \
    RUSTFLAGS="-Zsanitizer=address -Cunsafe-allow-abi-mismatch=sanitizer" \
    CARGO_TARGET_DIR=target/asan \
        cargo +nightly test --target "$target" --tests
fi
