#!/usr/bin/env bash
# Every test clockline has, in the order CI runs them: format, lints, rustdoc's warnings, unit +
# integration + doc tests (including the short stress tests), loom models, an AddressSanitizer run of the test
# suites (ci/asan.sh), a ThreadSanitizer run of the concurrent ones (ci/tsan.sh) and Miri on the
# Miri-sized scenarios (ci/miri.sh); each of the last three says "skipped" where nightly (for
# TSan, its rust-src; for Miri, its miri component) is missing.
# README.md calls this "the test command"; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
step() { printf '\n== %s (at %ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings denied)"
cargo clippy --all-targets --locked -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked

step "cargo test (unit, integration, doc, short stress)"
cargo test --locked

step "loom models (LOOM_MAX_PREEMPTIONS=2)"
if [ -x loom-tests/run.sh ]; then
    loom-tests/run.sh
else
    echo "loom-tests/run.sh missing" >&2
    exit 1
fi

step "AddressSanitizer (nightly)"
ci/asan.sh
step "ThreadSanitizer (nightly, rust-src)"
ci/tsan.sh
step "Miri (nightly)"
ci/miri.sh

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - t0 ))"
