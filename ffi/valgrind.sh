#!/usr/bin/env bash
# Runs the C suite (ffi/tests/c/*.c) under valgrind memcheck: fails on any
# invalid read or write, use of uninitialised memory, and any definite or
# indirect leak. Valgrind serialises threads, so the threaded tests run at
# a reduced scale (TETHER_FFI_C_SCALE, percent; default 20 here).
#
#   ffi/valgrind.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 1; }
export TETHER_FFI_C_SCALE="${TETHER_FFI_C_SCALE:-20}"
export TETHER_FFI_C_RUNNER="valgrind --quiet --error-exitcode=99 --leak-check=full \
--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
--track-fds=no --child-silent-after-fork=no --trace-children=no"
cargo test -p tether-ffi --test c -- --test-threads=1 --nocapture
echo "valgrind: C suite clean (no invalid access, no definite or indirect leak)"
