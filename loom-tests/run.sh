#!/usr/bin/env bash
# Runs clockline's loom models (tests/*.rs) in release mode with debug assertions on.
#
#   ./run.sh                        every model
#   ./run.sh replace_vs_evict       the models whose name contains the filter (libtest filter)
#   ./run.sh --test clock           one file of models (arguments before `--` go to cargo)
#
# Prints the build time and the elapsed time of the run; exits non-zero if a model fails.
# LOOM_MAX_PREEMPTIONS defaults to 2; other LOOM_* variables pass through. With
# LOOM_CHECKPOINT_FILE set, loom's `checkpoint` feature is built in (see README.md, "Replaying
# a failure").
set -euo pipefail
cd "$(dirname "$0")"

export RUSTFLAGS="--cfg clockline_loom --cfg crossbeam_loom --cfg crossbeam_sanitize ${RUSTFLAGS:-}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
# Cargo.toml's release profile already keeps debug assertions on; this wins over a caller's
# CARGO_PROFILE_RELEASE_* overrides too.
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true

cargo_args=()
test_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; test_args+=("$@"); break ;;
        --test|--features) cargo_args+=("$1" "$2"); shift 2 ;;
        -*) cargo_args+=("$1"); shift ;;
        *) test_args+=("$1"); shift ;;
    esac
done
if [ -n "${LOOM_CHECKPOINT_FILE:-}" ]; then
    cargo_args+=(--features checkpoint)
fi

now() { date +%s%N; }
start=$(now)
cargo test --release "${cargo_args[@]}" --no-run
built=$(now)

status=0
# Two test threads: one per core of the project's build machines.
cargo test --release "${cargo_args[@]}" -- --test-threads="${LOOM_TEST_THREADS:-2}" \
    "${test_args[@]}" || status=$?
end=$(now)

secs() { printf '%d.%d' $(($1 / 1000000000)) $(($1 / 100000000 % 10)); }
echo "loom: build $(secs $((built - start))) s, models $(secs $((end - built))) s," \
    "total $(secs $((end - start))) s (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
if [ "$status" -ne 0 ]; then
    echo "loom: FAILED (exit $status)" >&2
fi
exit "$status"
