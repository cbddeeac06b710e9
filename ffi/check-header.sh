#!/usr/bin/env bash
# Checks that ffi/include/tether.h is what cbindgen generates from ffi/src
# (ffi/cbindgen.toml); fails on any difference. With --update, rewrites it.
#
#   ffi/check-header.sh            # CI: fail if the committed header is stale
#   ffi/check-header.sh --update   # after changing the C API: regenerate
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--update" ]]; then
    TETHER_FFI_UPDATE_HEADER=1 cargo test -p tether-ffi --test header
    git --no-pager diff --stat -- ffi/include/tether.h
else
    cargo test -p tether-ffi --test header
    # The test compares with the file on disk; also fail if that differs
    # from what is committed (a regenerated but uncommitted header).
    git diff --exit-code -- ffi/include/tether.h
fi
