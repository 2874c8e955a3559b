#!/usr/bin/env bash
# The cost of issue #3's features, measured against the core (issue #2's last commit, 01db9ff):
#   1. callgrind: instructions and D1 misses per read hit, core vs this tree (plain, +ttl,
#      +stats, +ttl with CoarseClock), with a one-file probe (benches/feature_ab/) built against
#      each checkout; deterministic;
#   2. throughput in one process (benches/feature_ab_timed/): the core and this tree's plain,
#      +ttl and +stats caches in back-to-back rounds, medians of per-round ratios (TIMED_ROUNDS
#      rounds of 20 ms, default 101), on the probe's skewed, cache-resident workload;
#   3. throughput: the showdown's read-hit rows, core vs this tree, interleaved ALTERNATIONS
#      times (default 7); within this tree's process, +ttl and +stats over plain as the median
#      of per-round ratios over ROUNDS rounds (default 9), which a noisy neighbour disturbs
#      less than a ratio of medians; the medians of all three ratios over the alternations.
# Usage: benches/feature_ab.sh [BASE_COMMIT]. Needs git, valgrind; takes about 9 minutes.
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

# Throughput in one process: the core (renamed 0.0.0-core so both link) and this tree's
# variants in back-to-back rounds (benches/feature_ab_timed/).
mkdir -p "$work/timed"
cp -r benches/feature_ab_timed/src "$work/timed/"
sed -i 's/^version = .*/version = "0.0.0-core"/' "$work/base/Cargo.toml"
sed "s#path = \"../..\"#path = \"$root\"#; s#CORE_PATH#$work/base#" \
  benches/feature_ab_timed/Cargo.toml > "$work/timed/Cargo.toml"
(cd "$work/timed" && CARGO_TARGET_DIR="$work/timed/target" cargo build --release -q)
"$work/timed/target/release/feature-ab-timed" "${TIMED_ROUNDS:-101}" 20
git -C "$work/base" checkout -q -- Cargo.toml

# Throughput, interleaved.
(cd "$work/base" && CARGO_TARGET_DIR="$work/target-base" cargo build --release -q --example showdown)
cargo build --release -q --example showdown
base_bin=$work/target-base/release/examples/showdown
new_bin=${CARGO_TARGET_DIR:-target}/release/examples/showdown
echo "read-hit Mops/s: core | plain +ttl +stats (same process); 'pair' = +ttl and +stats over"
echo "plain, median of per-round ratios (CLOCKLINE_PAIRED; rounds taken back to back)"
for r in $(seq "${ALTERNATIONS:-7}"); do
  "$base_bin" --only throughput --contenders clockline --rounds 5 2>&1 \
    | grep -A3 '^read-hit' | tail -2 | awk '{ print "core", $1 "T", $2 }'
  CLOCKLINE_PAIRED=1 CLOCKLINE_FEATURE_VARIANTS=1 "$new_bin" --only throughput \
    --contenders clockline,clockline+ttl,clockline+stats --rounds "${ROUNDS:-9}" 2>&1 \
    | grep -A5 '^read-hit' | tail -4 \
    | awk '$1 == "paired" { print "pair", t "T", $3, $4; next } { t = $1; print "new ", $1 "T", $2, $3, $4 }'
done | tee "$work/runs.txt"

# Medians over the alternations: plain/core pairs each core line with the next new line.
echo "medians over ${ALTERNATIONS:-7} alternations:"
awk '
  $1 == "core" { core[$2] = $3 }
  $1 == "new" { n[$2]++; pc[$2, n[$2]] = $3 / core[$2] }
  $1 == "pair" { m[$2]++; tt[$2, m[$2]] = $3 + 0; st[$2, m[$2]] = $4 + 0 }
  function med(a, t, k,   i, j, x, v) {
    for (i = 1; i <= k; i++) v[i] = a[t, i]
    for (i = 2; i <= k; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
    return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
  }
  END { for (t in n) printf "  %s  plain/core %.3f  ttl/plain %.3f  stats/plain %.3f\n", t, med(pc, t, n[t]), med(tt, t, m[t]), med(st, t, m[t]) }
' "$work/runs.txt" | sort
