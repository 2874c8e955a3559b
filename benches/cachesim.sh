#!/usr/bin/env bash
# Deterministic cost of a read hit: instructions, D1 and LL misses per `get`, simulated by
# valgrind's callgrind around one probe function per contender (examples/cachesim.rs), with a
# pinned cache geometry (32 KiB 8-way D1, 8 MiB 16-way LL, 64-byte lines; valgrind would
# otherwise read the VM's CPUID). Two runs print the same numbers. Single-threaded by nature:
# it measures the cost of one lookup, not sharing between cores.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "skipped: valgrind not installed"; exit 0; }
cargo build --release --example cachesim >&2
bin=target/release/examples/cachesim
out=$(mktemp -d)
accesses=$("$bin" | sed -n 's/^accesses per probe: \([0-9]*\).*/\1/p')
printf '%-14s %10s %10s %10s %10s\n' contender "Ir/get" "Dr/get" "D1mr/get" "LLmr/get"
for c in clockline quick_cache papaya lru_mutex; do
    valgrind --tool=callgrind --cache-sim=yes --collect-atstart=no \
        --toggle-collect="cachesim_$c" --D1=32768,8,64 --LL=8388608,16,64 \
        --callgrind-out-file="$out/$c.out" "$bin" >/dev/null 2>"$out/$c.log"
    # "Collected : Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw"
    read -r ir dr _dw _i1 d1 _d1w _il dl _dlw < <(sed -n 's/.*Collected : //p' "$out/$c.log")
    awk -v c="$c" -v n="$accesses" -v ir="$ir" -v dr="$dr" -v d1="$d1" -v dl="$dl" \
        'BEGIN { printf "%-14s %10.1f %10.1f %10.2f %10.2f\n", c, ir/n, dr/n, d1/n, dl/n }'
done
rm -rf "$out"
