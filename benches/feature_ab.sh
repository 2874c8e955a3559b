#!/usr/bin/env bash
# The cost of issue #3's features, measured against the core (issue #2's last commit, 01db9ff):
#   1. callgrind: instructions and D1 misses per read hit, core vs this tree (plain, +ttl,
#      +stats, +ttl with CoarseClock), with a one-file probe (benches/feature_ab/) built against
#      each checkout; deterministic;
#   2. throughput: the showdown's read-hit rows, core vs this tree, interleaved ALTERNATIONS
#      times (default 7).
# Usage: benches/feature_ab.sh [BASE_COMMIT]. Needs git, valgrind; takes about 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
base=${1:-01db9ff}
work=${TMPDIR:-/tmp}/clockline-feature-ab
rm -rf "$work"; mkdir -p "$work"
git worktree add -f "$work/base" "$base" >/dev/null
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true' EXIT

# The probe, twice: against the base checkout and against this tree.
for side in base new; do
  mkdir -p "$work/probe-$side"
  cp -r benches/feature_ab/src "$work/probe-$side/"
  path=$root; [ "$side" = base ] && path=$work/base
  sed "s#path = \"../..\"#path = \"$path\"#" benches/feature_ab/Cargo.toml > "$work/probe-$side/Cargo.toml"
  feat=(); [ "$side" = new ] && feat=(--features new)
  # Each probe in its own target folder: a CARGO_TARGET_DIR from the caller would put both
  # binaries on one path.
  (cd "$work/probe-$side" && CARGO_TARGET_DIR="$work/probe-$side/target" cargo build --release -q "${feat[@]}")
done
if command -v valgrind >/dev/null; then
  printf '%-22s %8s %8s\n' build "Ir/get" "D1mr/get"
  run_cg() { # label binary variant probe
    valgrind --tool=callgrind --cache-sim=yes --collect-atstart=no --toggle-collect="$4" \
      --D1=32768,8,64 --LL=8388608,16,64 --callgrind-out-file="$work/cg.out" "$2" "$3" 2>&1 \
      | sed -n 's/.*Collected : //p' \
      | awk -v l="$1" '{ n = 2621440; printf "%-22s %8.1f %8.3f\n", l, $1 / n, $5 / n }'
  }
  run_cg "core ($base)" "$work/probe-base/target/release/feature-ab-probe" plain probe_plain
  run_cg "plain" "$work/probe-new/target/release/feature-ab-probe" plain probe_plain
  run_cg "plain, Policy::Clock" "$work/probe-new/target/release/feature-ab-probe" clock probe_plain
  run_cg "+ttl (cached tick)" "$work/probe-new/target/release/feature-ab-probe" ttl probe_ttl
  run_cg "+stats" "$work/probe-new/target/release/feature-ab-probe" stats probe_stats
  run_cg "+ttl (CoarseClock)" "$work/probe-new/target/release/feature-ab-probe" coarse probe_ttl
else
  echo "skipped callgrind: valgrind not installed"
fi

# Throughput, interleaved.
(cd "$work/base" && CARGO_TARGET_DIR="$work/target-base" cargo build --release -q --example showdown)
cargo build --release -q --example showdown
base_bin=$work/target-base/release/examples/showdown
new_bin=${CARGO_TARGET_DIR:-target}/release/examples/showdown
echo "read-hit Mops/s: core | plain +ttl +stats (same process)"
for r in $(seq "${ALTERNATIONS:-7}"); do
  "$base_bin" --only throughput --contenders clockline --rounds 5 2>&1 \
    | grep -A3 '^read-hit' | tail -2 | awk '{ print "core", $1 "T", $2 }'
  CLOCKLINE_FEATURE_VARIANTS=1 "$new_bin" --only throughput \
    --contenders clockline,clockline+ttl,clockline+stats --rounds 5 2>&1 \
    | grep -A3 '^read-hit' | tail -2 | awk '{ print "new ", $1 "T", $2, $3, $4 }'
done
