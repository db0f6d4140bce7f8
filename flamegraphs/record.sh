#!/usr/bin/env bash
# Records a flamegraph of the embedded engine under loadgen, from a fresh
# clone, with this machine's own tools: perf (software sampling, so it works
# without hardware counters) and inferno. Installs what is missing.
#   flamegraphs/record.sh [loadgen run options]   -> flamegraphs/loadgen-embedded.svg
# The workload is generated and signed first, outside the recording, so the
# graph shows the engine: verify, execute, persist and RocksDB's own threads.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v perf >/dev/null || { echo "perf is missing: install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
./run demo --transactions 1 --reference-seconds 0 >/dev/null # builds, checks system packages
cargo build --release -p caduceus-loadgen
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$loadgen" generate --out "$work/workload.cw" --transactions 300000 >/dev/null
# DWARF unwinding: release builds keep no frame pointers.
perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$work/perf.data" \
    "$loadgen" run --embedded --dir "$work/ledger" --workload "$work/workload.cw" --no-reference "$@" >"$work/run.txt"
grep -E '^(load|throughput|cpu)' "$work/run.txt"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/stacks.folded"
inferno-flamegraph --title "caduceus embedded engine under loadgen (4 shards, RocksDB, closed loop)" \
    < "$work/stacks.folded" > flamegraphs/loadgen-embedded.svg
echo "wrote flamegraphs/loadgen-embedded.svg"
