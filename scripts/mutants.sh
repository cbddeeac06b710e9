#!/usr/bin/env bash
# cargo mutants, without the mutants of code compiled only under `cfg(loom)`.
#
#   scripts/mutants.sh                 # the whole crate (see docs/mutants.md)
#   scripts/mutants.sh -f src/inner.rs # any cargo-mutants arguments
#   scripts/mutants.sh --list          # what would run
#
# cargo-mutants does not evaluate `cfg`, so it mutates loom-only items too
# (the loom mutex, condvar and queue, loom's `forked` and `tid_alloc`, ...).
# They are not in a normal build: no test can catch them. Several share their
# name with the real item, so they cannot be excluded by a fixed pattern.
# This script finds every item under a plain `#[cfg(loom)]` attribute in
# src/, and excludes exactly the mutants inside those items, by full name
# (file:line:col included), so no other mutant is ever hidden.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every integration test binary must be in .cargo/mutants.toml's list (all
# but stress and model, see there): a binary left out silently weakens the
# score, as eight did until this check.
missing=()
for t in tests/*.rs tests/*/main.rs; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .rs)
    [ "$name" = main ] && name=$(basename "$(dirname "$t")")
    case "$name" in stress | model) continue ;; esac
    grep -q "\"--test=$name\"" .cargo/mutants.toml || missing+=("$name")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "scripts/mutants.sh: not in .cargo/mutants.toml's test list: ${missing[*]}" >&2
    exit 1
fi

# "file start end" for each item (fn, impl, mod, ...) under `#[cfg(loom)]`:
# from the attribute to the item's closing brace (or its `;`). Statements
# under `#[cfg(loom)]` inside a function body are not items: the function
# is compiled, so its mutants stay.
ranges=$(find src -name '*.rs' -print0 | xargs -0 awk '
    FNR == 1 { pending = 0; depth = 0; inside = 0 }
    inside {
        n = gsub(/\{/, "{"); m = gsub(/\}/, "}"); depth += n - m
        if (depth <= 0 && (n + m > 0 || /;[[:space:]]*$/)) { print FILENAME, start, FNR; inside = 0 }
        next
    }
    /^[[:space:]]*#\[cfg\(loom\)\]/ { pending = 1; start = FNR; next }
    pending && /^[[:space:]]*#\[/ { next }
    pending && !/^[[:space:]]*(pub(\([^)]*\))?[[:space:]]+)?((unsafe|const|async|extern "C")[[:space:]]+)*(fn|impl|mod|struct|enum|union|const|static|use|type|trait)[[:space:]<]/ {
        pending = 0 # a statement inside a function body, not an item
        next
    }
    pending {
        pending = 0
        n = gsub(/\{/, "{"); m = gsub(/\}/, "}"); depth = n - m
        if (depth > 0) { inside = 1 } else { print FILENAME, start, FNR }
    }
')

excludes=()
while IFS= read -r name; do
    file=${name%%:*}
    rest=${name#*:}
    line=${rest%%:*}
    if awk -v f="$file" -v l="$line" '$1 == f && l >= $2 && l <= $3 { found = 1 } END { exit !found }' <<<"$ranges"; then
        escaped=$(printf '%s' "$name" | sed 's/[][\\^$.|?*+(){}]/\\&/g')
        excludes+=(--exclude-re "^${escaped}\$")
    fi
done < <(cargo mutants --list --line-col=true 2>/dev/null)

echo "scripts/mutants.sh: excluding $(( ${#excludes[@]} / 2 )) mutants of cfg(loom)-only code" >&2
exec cargo mutants "${excludes[@]}" "$@"
