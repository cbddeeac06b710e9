#!/usr/bin/env bash
# Applies each patch in loom-tests/mutants/ to a scratch copy of the tree and
# runs, there, each loom model the patch names: the mutant is `caught` only
# if every named model fails, within the time limit, through a failing loom
# execution, the way the patch says.
#
#   loom-tests/mutants.sh [patch ...]     (default: all)
#
# Each patch starts with header lines before the diff (`patch` ignores them):
#
#   # <what the bug is>
#   # caught-by: <model> <kind>       one line per model that must catch it
#
# <model> is a test fn in loom-tests/tests/*.rs; <kind> is
#
#   first-execution   the first execution loom explores fails: no preemption
#                     needed (a test-level catch, or a load given an old value)
#   interleaving      executions pass before one fails: only a particular
#                     interleaving catches it
#
# For each named model it prints one of
#
#   caught by <model> after P passing executions (<kind>), and what the same
#       model does with LOOM_MAX_PREEMPTIONS=0;
#   MISSED           the first named model passed, and so did every other model;
#   caught by the WRONG model (expected X, got Y)   X passed, others failed;
#   NOT caught by X  a further named model passed;
#   TIMEOUT          the model ran longer than MUTANT_TIMEOUT seconds;
#   KIND MISMATCH    caught, but not the way the header says;
#   BROKEN           no header, no such model, the patch does not apply or
#                    build, or the model failed outside a loom execution.
#
# Everything but `caught` counts as a failure: exits 1 if there is any.
# A failing loom model aborts its test binary, so running each named model
# alone (`--exact`) is also the only way to be sure which model failed.
#
# LOOM_MAX_PREEMPTIONS defaults to 2, as in CI; MUTANT_TIMEOUT to 600 s.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR="$root/target/loom-mutants"
export RUSTFLAGS="--cfg loom"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
limit="${MUTANT_TIMEOUT:-600}"

patches=("$@")
if [ ${#patches[@]} -eq 0 ]; then
    patches=("$root"/loom-tests/mutants/*.patch)
fi

# verdict <log>: `P` (passing executions before the failure) if a loom
# execution of the model failed, else nothing.
verdict() {
    sed -n 's/^loom-tests: execution [0-9]* failed, after \([0-9]*\) passing$/\1/p' "$1" | head -n 1
}

# test_file <model>: the test target (file stem) that defines it, if any.
test_file() {
    local f
    f="$(grep -l "^fn $1()" "$root"/loom-tests/tests/*.rs | head -n 1 || true)"
    [ -n "$f" ] && basename "$f" .rs
}

# run_model <model> <log> [env...]: runs one model in the scratch tree; its
# exit status (124 on timeout).
run_model() {
    local model="$1" log="$2"
    shift 2
    (cd "$scratch/tree" && env "$@" timeout "$limit" cargo test -q -p loom-tests --release \
        --test "$(test_file "$model")" -- --exact "$model" --nocapture >"$log" 2>&1)
}

# wrong_model <model>: after <model> passed, which models (if any) fail.
wrong_model() {
    local status=0 others
    # A failing model aborts its binary (the first one of each is named;
    # --no-fail-fast runs the other binaries), and an abort loses captured
    # output: --nocapture.
    (cd "$scratch/tree" && timeout "$limit" cargo test -q -p loom-tests --release \
        --no-fail-fast -- --nocapture >"$scratch/all" 2>&1) || status=$?
    others=$( (grep -oE "thread '[a-z0-9_]+' \([0-9]+\) panicked" "$scratch/all" || true) |
        cut -d"'" -f2 | sort -u | paste -sd, -)
    if [ -n "$others" ]; then
        echo "caught by the WRONG model (expected $1, got $others)"
    elif [ "$status" -eq 124 ]; then
        echo "MISSED by $1 (and the rest of the suite timed out)"
    else
        echo "MISSED (by $1 and by every other model)"
    fi
}

failures=0
for patch in "${patches[@]}"; do
    name="$(basename "$patch" .patch)"
    start=$(date +%s)
    first=1
    report() {
        if [ "$first" -eq 1 ]; then
            printf '%-36s %s (%ss)\n' "$name" "$1" "$(($(date +%s) - start))"
        else
            printf '%-36s %s (%ss)\n' "" "$1" "$(($(date +%s) - start))"
        fi
        first=0
    }
    fail() {
        report "$1"
        failures=$((failures + 1))
    }
    mapfile -t expected < <(sed -n 's/^# caught-by: *//p' "$patch")
    ok=1
    for line in "${expected[@]}"; do
        read -r model kind rest <<<"$line"
        if [ -n "$rest" ] || { [ "$kind" != first-execution ] && [ "$kind" != interleaving ]; }; then
            ok=0
        elif [ -z "$(test_file "$model")" ]; then
            fail "BROKEN (no model named $model in loom-tests/tests/)"
            ok=2
        fi
    done
    if [ ${#expected[@]} -eq 0 ] || [ "$ok" -eq 0 ]; then
        fail "BROKEN (needs '# caught-by: <model> first-execution|interleaving' headers)"
        continue
    fi
    [ "$ok" -eq 2 ] && continue
    rm -rf "$scratch/tree"
    mkdir -p "$scratch/tree"
    (cd "$root" && tar --exclude=./target --exclude=./.git --exclude=./fuzz --exclude=./mutants.out -cf - .) |
        tar -xf - -C "$scratch/tree"
    # `git apply --check`, as CI's: stricter than `patch` (no fuzz), so a
    # patch that only applies with fuzz is refreshed here, not found by CI.
    if ! (cd "$root" && git apply --check "$patch" >/dev/null 2>&1) ||
        ! (cd "$scratch/tree" && patch -s -p1 --dry-run <"$patch" >/dev/null 2>&1); then
        fail "BROKEN (the patch no longer applies: regenerate it)"
        continue
    fi
    (cd "$scratch/tree" && patch -s -p1 <"$patch")
    if ! (cd "$scratch/tree" && cargo test -q -p loom-tests --release --no-run >"$scratch/log" 2>&1); then
        fail "BROKEN (the patch does not build)"
        continue
    fi
    nth=0
    for line in "${expected[@]}"; do
        read -r model kind <<<"$line"
        nth=$((nth + 1))
        status=0
        run_model "$model" "$scratch/log" || status=$?
        passed="$(verdict "$scratch/log")"
        if [ "$status" -eq 124 ]; then
            fail "TIMEOUT ($model ran over ${limit}s)"
            continue
        elif [ "$status" -eq 0 ] && [ "$nth" -eq 1 ]; then
            fail "$(wrong_model "$model")"
            break
        elif [ "$status" -eq 0 ]; then
            fail "NOT caught by $model"
            continue
        elif [ -z "$passed" ]; then
            fail "BROKEN ($model failed, but not in a loom execution: see below)"
            tail -n 20 "$scratch/log"
            continue
        fi
        measured=interleaving
        [ "$passed" -eq 0 ] && measured=first-execution
        # The same model with no preemptions: switches only where a thread
        # blocks, yields or ends.
        status=0
        run_model "$model" "$scratch/log0" LOOM_MAX_PREEMPTIONS=0 || status=$?
        passed0="$(verdict "$scratch/log0")"
        if [ -n "$passed0" ]; then
            at0="caught after $passed0 passing"
        elif [ "$status" -eq 0 ]; then
            at0="missed, $(sed -n 's/^loom-tests: \([0-9]*\) executions, all passed$/\1/p' "$scratch/log0") executions pass"
        elif [ "$status" -eq 124 ]; then
            at0="timed out"
        else
            at0="failed outside loom"
        fi
        what="$model after $passed passing executions ($measured); preemptions 0: $at0"
        if [ "$measured" != "$kind" ]; then
            fail "KIND MISMATCH (declared $kind): caught by $what"
        else
            report "caught by $what"
        fi
    done
done
exit $((failures > 0))
