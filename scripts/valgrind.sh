#!/usr/bin/env bash
# Runs examples/bridge.rs under valgrind memcheck: fails on any invalid read
# or write and on any definite or indirect leak.
#
#   scripts/valgrind.sh [objects]     (default 2000: valgrind serializes threads)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example bridge
valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    target/release/examples/bridge "${1:-2000}"
echo "valgrind: no invalid access, no definite or indirect leak"
