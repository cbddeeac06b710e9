#!/usr/bin/env bash
# Applies each patch in loom-tests/mutants/ to a scratch copy of the tree,
# runs the loom suite there, and reports `caught` (the suite failed) or
# `MISSED` (it passed: the models cannot see that bug). Exits 1 if any
# mutant is missed.
#
#   loom-tests/mutants.sh [patch ...]     (default: all)
#
# LOOM_MAX_PREEMPTIONS defaults to 2, as in CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR="$root/target/loom-mutants"
export RUSTFLAGS="--cfg loom"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"

patches=("$@")
if [ ${#patches[@]} -eq 0 ]; then
    patches=("$root"/loom-tests/mutants/*.patch)
fi

missed=0
for patch in "${patches[@]}"; do
    name="$(basename "$patch" .patch)"
    rm -rf "$scratch/tree"
    mkdir -p "$scratch/tree"
    (cd "$root" && tar --exclude=./target --exclude=./.git --exclude=./fuzz --exclude=./mutants.out -cf - .) | tar -xf - -C "$scratch/tree"
    if ! (cd "$scratch/tree" && patch -s -p1 --dry-run < "$patch" >/dev/null 2>&1); then
        printf '%-28s BROKEN (the patch no longer applies: regenerate it)\n' "$name"
        missed=$((missed + 1))
        continue
    fi
    (cd "$scratch/tree" && patch -s -p1 < "$patch")
    start=$(date +%s)
    if (cd "$scratch/tree" && timeout 900 cargo test -q -p loom-tests --release --no-fail-fast >"$scratch/log" 2>&1); then
        result="MISSED"
        missed=$((missed + 1))
    elif grep -q "could not compile" "$scratch/log"; then
        result="BROKEN (the patch does not build)"
        missed=$((missed + 1))
    else
        # A failing loom model aborts its test binary (loom panics again
        # while unwinding), so this names the first failing model of each
        # binary (--no-fail-fast runs the other binaries).
        failing=$( (grep -oE "thread '[a-z0-9_]+' \([0-9]+\) panicked" "$scratch/log" || true) \
            | cut -d"'" -f2 | sort -u | paste -sd, -)
        result="caught by ${failing:-a timeout}"
    fi
    printf '%-28s %s (%ss)\n' "$name" "$result" "$(( $(date +%s) - start ))"
done
exit $(( missed > 0 ))
