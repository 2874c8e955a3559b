#!/usr/bin/env bash
# Prepares the thread sweep for a many-core machine that has no Rust toolchain (the device
# machines lent to some sessions): builds the showdown binary here (honouring CARGO_TARGET_DIR)
# and puts it, with a run script, in device/ (ignored by git). Then, on the device, from the
# repository root:
#     bash device/run.sh
# It prints the machine (lscpu) and a time estimate, then runs, each step only if it can still
# start before DEADLINE seconds (default 540; the device allows 600 per command):
#   1. the throughput section (read-hit, cache-aside, write-50) at threads 1,2,4,8,16, then
#      the same for clockline, clockline+ttl, clockline+stats (the cost of issue #3's
#      features) and clockline-pinned (one epoch pin per 1,024 lookups: how much of read-hit
#      scaling the per-get pin costs), with paired per-round ratios; about 90 s;
#   2. the sweep: the get/put grid (Zipf 0.8/0.99/1.2 x 100/95/75/50/0 % get) at the same
#      threads, 3 interleaved rounds of 100 ms per cell and contender (about 190 s on 16 cores);
#   3. the latency section at 16 threads;
#   4. the counters section, if this showdown has one.
# CSVs (throughput-<N>core-standard.csv, throughput-<N>core.csv, latency-<N>core.csv) and the
# full log (run.log) go to $OUT when it is set (the device's output folder), else to device/.
# Copy the CSVs to docs/data/, run `cargo run --release --example plots`, and record the log,
# with the machine, in docs/benchmarks.md. About 5.5 minutes on 16 cores (the estimate it prints:
# throughput ~100 s, sweep ~190 s, latency ~12 s, counters ~15 s).
#
# Knobs (environment of run.sh): THREADS (default 1,2,4,8,16), SWEEP_ZIPF, SWEEP_READS,
# SWEEP_ROUNDS (3), SWEEP_MS (100), ROUNDS / MS (throughput section: 5 / 200),
# LATENCY_THREADS (the largest of THREADS), DEADLINE (540), QUICK=1 (tiny sizes: a smoke test,
# e.g. `QUICK=1 THREADS=1,2 bash device/run.sh` here).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example showdown
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p device
cp "$target_dir/release/examples/showdown" device/showdown
cat > device/run.sh <<'RUN'
#!/usr/bin/env bash
# Written by benches/scaling.sh; see there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin="$here/showdown"
threads=${THREADS:-1,2,4,8,16}
zipf=${SWEEP_ZIPF:-0.8,0.99,1.2}
reads=${SWEEP_READS:-100,95,75,50,0}
quick=()
short=
if [ -n "${QUICK:-}" ]; then quick=(--quick); short=1; fi
sweep_rounds=${SWEEP_ROUNDS:-3}
sweep_ms=${SWEEP_MS:-${short:+20}}
sweep_ms=${sweep_ms:-100}
rounds=${ROUNDS:-${short:+3}}
rounds=${rounds:-5}
ms=${MS:-${short:+20}}
ms=${ms:-200}
latency_threads=${LATENCY_THREADS:-$(tr ',' '\n' <<<"$threads" | sort -n | tail -1)}
deadline=${DEADLINE:-540}
cores=$(nproc)
log="$out/run.log"
: >"$log"
say() { echo "$@" | tee -a "$log"; }
step() { # step NAME COMMAND...: runs it, logged, unless the deadline has passed
  local name=$1; shift
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "== skipped $name: ${SECONDS}s elapsed, deadline ${deadline}s"
    return 0
  fi
  say "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$log" || say "== $name failed (status ${PIPESTATUS[0]})"
  say "== $name took $((SECONDS - t0)) s"
}

count() { tr ',' '\n' <<<"$1" | grep -c .; }
nt=$(count "$threads"); nz=$(count "$zipf"); nr=$(count "$reads")
has_counters=0
if "$bin" --help 2>&1 | grep -qw counters; then has_counters=1; fi
# Estimate, in ms, at full sizes: measured rounds plus filling (about 0.6 s per workload and
# thread count for the throughput section, 0.45 s per sweep cell, 0.3 s per key array).
est_tp=$(( 3 * nt * (5 * (rounds + 1) * ms + 600) + 1500 ))
est_sweep=$(( nz * nr * nt * (5 * (sweep_rounds + 1) * sweep_ms + 450) + nz * nr * 300 ))
est_lat=12000
est_cnt=$(( has_counters * 15000 ))
est=$(( (est_tp + est_sweep + est_lat + est_cnt) / 1000 ))

say "== machine: $cores cores; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
(lscpu 2>/dev/null || cat /proc/cpuinfo 2>/dev/null | head -30 || true) | tee -a "$log"
say "== estimate (full sizes): throughput $((est_tp / 1000)) s + sweep $((est_sweep / 1000)) s" \
    "+ latency $((est_lat / 1000)) s + counters $((est_cnt / 1000)) s (a guess) = ${est} s;" \
    "deadline ${deadline} s"

step throughput "$bin" "${quick[@]}" --only throughput --threads "$threads" \
  --rounds "$rounds" --ms "$ms" --csv "$out/throughput-${cores}core-standard.csv"
# Issue #3: clockline with expiry (cached tick) and with statistics beside plain clockline;
# issue #2: clockline read through one pinned handle per 1,024 lookups (no epoch pin per get),
# whose scaling against plain clockline's says how much of the 16-core gap the pin is.
CLOCKLINE_PAIRED=1 CLOCKLINE_FEATURE_VARIANTS=1 step features "$bin" "${quick[@]}" \
  --only throughput --threads "$threads" --rounds "$rounds" --ms "$ms" \
  --contenders clockline,clockline+ttl,clockline+stats,clockline-pinned
step sweep "$bin" "${quick[@]}" --only sweep --threads "$threads" --zipf "$zipf" \
  --reads "$reads" --rounds "$sweep_rounds" --ms "$sweep_ms" \
  --csv "$out/throughput-${cores}core.csv"
step latency "$bin" "${quick[@]}" --only latency --threads "$latency_threads" \
  --csv "$out/latency-${cores}core.csv"
if [ "$has_counters" = 1 ]; then
  step counters "$bin" "${quick[@]}" --only counters
else
  say "== counters: this showdown has no counters section; skipped"
fi
say "== done in ${SECONDS} s; files in $out:"
ls -l "$out" | tee -a "$log"
RUN
chmod +x device/run.sh
echo "ready: device/showdown and device/run.sh (pass 'device' in the run tool's carry)"
