#!/usr/bin/env bash
# Instructions per operation on the fast paths, counted by callgrind
# (deterministic: independent of the machine's load).
#
#   scripts/callgrind.sh [operation ...]     (default: all)
#
# Each operation runs N and 2N times; the difference divided by N is the
# cost of one iteration (loop and black_box included, set-up excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${CALLGRIND_N:-200000}
ops=("$@")
all=$([ ${#ops[@]} -eq 0 ] && echo 1 || echo 0)
[ ${#ops[@]} -eq 0 ] && ops=(retain_release get proxy_clone_drop zero_one_zero insert_release
    alt1 alt2 alt4 pinned_first_last intern_release queue_home lifecycle remote_release_pump
    floor_retain_release design_floor_retain_release floor_get design_floor_get floor_copy_get floor_first_last floor_first_last_calls design_floor_first_last floor_proxy_clone_drop
    upgrade_held upgrade_first transfer_claim std_weak_upgrade
    rc_clone_drop arc_clone_drop empty)
cargo bench --bench ops --no-run >/dev/null 2>&1
bin=$(ls -t target/release/deps/ops-* | grep -v '\.d$' | head -1)
# An operation whose row times only part of its work is counted only
# inside the functions that do that part.
only() {
    case "$1" in
    remote_release_pump) echo "--toggle-collect=*g6_release_all* --toggle-collect=*g6_pump*" ;;
    esac
}
count() {
    local opts
    read -ra opts <<<"$(only "$1")" # split into words, no globbing
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "${opts[@]}" "$bin" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
# Without arguments, also written to target/tether-callgrind.txt, which
# `cargo bench --bench report` prints beside its timings (with the commit it
# was counted at).
out=${CARGO_TARGET_DIR:-target}/tether-callgrind.txt
[ "$all" = 1 ] || out=/dev/null
rev=$(git describe --always --dirty 2>/dev/null || echo unknown)
{
    echo "# instructions per iteration (callgrind), commit $rev, $(date -u +%Y-%m-%d)"
    printf '%-22s %s\n' operation "instructions per iteration"
    for op in "${ops[@]}"; do
        a=$(count "$op" "$N")
        b=$(count "$op" $((2 * N)))
        awk -v a="$a" -v b="$b" -v n="$N" -v op="$op" 'BEGIN { printf "%-22s %.1f\n", op, (b - a) / n }'
    done
} | if [ "$out" = /dev/null ]; then cat; else tee "$out.tmp" && mv "$out.tmp" "$out"; fi
