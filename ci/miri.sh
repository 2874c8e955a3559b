#!/usr/bin/env bash
# Runs the Miri-sized scenarios (tests/miri.rs, tests/miri_features.rs) and the unit tests of
# the node, its pool and the bucket under Miri, nightly's interpreter: it reports undefined
# behaviour that the optimised tests and ASan cannot see (an aliasing violation, a read through
# a pointer without the provenance for it, an uninitialised or misaligned read, a use after
# free) and data races between the threads of the concurrent scenarios.
#
#   ci/miri.sh                  # the CI subset: about 2 minutes of interpretation after the build
#   MIRI_FULL=1 ci/miri.sh      # also the growth scenario (ignored under Miri: 8 minutes)
#
# Flags, and why:
#   -Zmiri-tree-borrows          crossbeam-epoch is not compatible with Stacked Borrows (its
#                                `Entry` -> `Local` cast; crossbeam-rs/crossbeam#545) and runs
#                                its own Miri CI under Tree Borrows (crossbeam-rs/crossbeam#996).
#                                clockline's own unit tests pass under both (see below).
#   -Zmiri-permissive-provenance crossbeam-epoch keeps tagged pointers as integers.
#   -Zmiri-ignore-leaks          garbage still queued in crossbeam's static default collector
#                                at exit is never freed; the tests count every value's drop.
#   -Zmiri-disable-isolation     the default clock reads the real monotonic clock.
#
# Prints "skipped" and exits 0 where nightly's Miri is missing and cannot be added.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add miri --toolchain nightly >/dev/null 2>&1 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "skipped: no nightly Miri"
    exit 0
fi
cargo +nightly miri setup >/dev/null

base="-Zmiri-disable-isolation -Zmiri-permissive-provenance -Zmiri-ignore-leaks"
full=()
if [ "${MIRI_FULL:-0}" = 1 ]; then
    full=(--include-ignored)
fi

# clockline's own unsafe code (node layout and extension words, the pool, the bucket word)
# under the stricter Stacked Borrows too: these tests do not reach crossbeam-epoch's pin.
MIRIFLAGS="$base" cargo +nightly miri test --locked --lib -- \
    table::node:: table::pool:: bucket_is_one_cache_line a_failed_try_lock
MIRIFLAGS="$base -Zmiri-tree-borrows" cargo +nightly miri test --locked --test miri -- \
    --test-threads=1 "${full[@]}"
# The features' concurrent protocols (single flight, compute, ticker and janitor, statistics,
# versions, warm-up, iteration, a re-entrant listener) on two threads: about 90 s.
MIRIFLAGS="$base -Zmiri-tree-borrows" cargo +nightly miri test --locked --test miri_features -- \
    --test-threads=1
