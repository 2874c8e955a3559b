#!/usr/bin/env bash
# Prepares the thread sweep for a many-core machine that has no Rust toolchain (the device
# machines lent to some sessions): builds the showdown binary here and puts it, with a run
# script, in device/ (ignored by git). Then, on the device, from the repository root:
#     bash device/run.sh            # prints the machine, then the sweep 1..16 threads
# and record what it printed, with the machine, in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example showdown
mkdir -p device
cp target/release/examples/showdown device/showdown
cat > device/run.sh <<'RUN'
#!/usr/bin/env bash
set -eu
cd "$(dirname "$0")"
echo "cores: $(nproc)"; (lscpu 2>/dev/null | grep -E 'Model name|Socket|NUMA node\(s\)|L[123]') || true
threads=${THREADS:-1,2,4,8,16}
./showdown --only throughput --threads "$threads"
RUN
chmod +x device/run.sh
echo "ready: device/showdown and device/run.sh (pass 'device' in the run tool's carry)"
