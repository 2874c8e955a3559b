#!/usr/bin/env bash
# Runs clockline's tests under AddressSanitizer: every integration suite (basic, model, hostile,
# the short stress tests) and the unit tests, in a debug build with nightly's -Zsanitizer=address.
# ASan turns a read of a value that epoch reclamation already freed (a reader's guard not
# honoured, a node retired twice) into a report instead of a silent wrong answer, and its leak
# checker reports nodes that were never freed.
#
#   ci/asan.sh                     # all of the above
#   ci/asan.sh --test stress       # extra arguments go to `cargo test` (before any `--`)
#
# Needs a nightly toolchain (`cargo +nightly`); prints "skipped: no nightly" and exits 0 without
# one. Builds into its own target directory (target/asan, or $ASAN_TARGET_DIR), since
# instrumented artifacts must not mix with ordinary ones. Exits with the tests' status.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "skipped: no nightly"
    exit 0
fi

# The host target is named explicitly so that build scripts and proc macros, which run on the
# host, are built without the sanitizer (only the tests and their dependencies are instrumented).
target=x86_64-unknown-linux-gnu
# clockline_no_pool: freed nodes go back to the allocator instead of a per-thread free list
# (src/table/pool.rs), so that a read of a freed node hits poisoned memory and is reported.
export RUSTFLAGS="-Zsanitizer=address --cfg clockline_no_pool ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${ASAN_TARGET_DIR:-target/asan}"
# detect_leaks: nothing the cache allocated may outlive it once epoch garbage is flushed.
# The stack-use-after-return check is off: it costs much time and guards nothing clockline does.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=0}"
# Fewer proptest cases: instrumented code runs several times slower.
export PROPTEST_CASES="${PROPTEST_CASES:-64}"

if [ "$#" -eq 0 ]; then
    set -- --tests
fi

start=$(date +%s)
status=0
cargo +nightly test --locked --target "$target" "$@" || status=$?
echo "asan: exit status $status after $(( $(date +%s) - start ))s"
exit "$status"
