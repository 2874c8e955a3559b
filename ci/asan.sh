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
source ci/sanitizer.sh

sanitizer_setup asan -Zsanitizer=address
# detect_leaks: nothing the cache allocated may outlive it once epoch garbage is flushed.
# The stack-use-after-return check is off: it costs much time and guards nothing clockline does.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=0}"

if [ "$#" -eq 0 ]; then
    set -- --tests
fi
sanitizer_run asan "$@"
