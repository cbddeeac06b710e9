#!/usr/bin/env bash
# Regenerates the README's Performance table and plot on this machine, in
# one go: instruction counts (scripts/callgrind.sh, load-immune), then the
# timed report (cargo bench --bench report, a few minutes), then the
# report's markdown table spliced into README.md between the
# `perf-table:start` / `perf-table:end` markers and its plot copied to
# docs/perf.png. Run it on a quiet machine; the table names the CPU, the
# date and the load average at the start.
#
#   scripts/perf-table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
scripts/callgrind.sh
cargo bench --bench report
cp "$target/tether-perf.png" docs/perf.png
awk -v md="$target/tether-perf.md" '
    /<!-- perf-table:start -->/ { print; while ((getline l < md) > 0) print l; skip = 1; next }
    /<!-- perf-table:end -->/ { skip = 0 }
    !skip { print }
' README.md > README.md.tmp
mv README.md.tmp README.md
echo "README.md and docs/perf.png updated from $target/tether-perf.md"
