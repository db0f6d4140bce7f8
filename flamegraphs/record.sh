#!/usr/bin/env bash
# Records a flamegraph of the embedded engine under loadgen, from a fresh
# clone, with this machine's own tools: perf (software sampling, so it works
# without hardware counters) and inferno. Installs what is missing.
#   flamegraphs/record.sh [loadgen run options]             -> flamegraphs/loadgen-embedded.svg
#   flamegraphs/record.sh --cluster [loadgen run options]   -> flamegraphs/loadgen-cluster.svg
#   flamegraphs/record.sh --history LEDGER WORKLOAD SKIP [loadgen run options]
#                                                           -> flamegraphs/loadgen-history.svg
# The workload is generated and signed first, outside the recording, so the
# graph shows the engine: verify, execute, persist and RocksDB's own threads.
# With --cluster, a local cluster (coordinator and 2 shard servers) is
# recorded instead, every process of it, while loadgen drives it from outside.
# With --history, 300,000 transactions of WORKLOAD from SKIP on run on top of
# a copy of LEDGER (built from WORKLOAD's first SKIP transactions, e.g. 10M of
# history; see the README), so the graph shows what history costs.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v perf >/dev/null || { echo "perf is missing: install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
cluster=false
history=""
if [ "${1:-}" = --cluster ]; then cluster=true; shift; fi
if [ "${1:-}" = --history ]; then
    [ $# -ge 4 ] || { echo "usage: $0 --history LEDGER WORKLOAD SKIP [loadgen run options]" >&2; exit 2; }
    history=$(cd "$here" && realpath "$2") history_workload=$(cd "$here" && realpath "$3") history_skip=$4
    shift 4
fi
./run demo --transactions 1 --reference-seconds 0 >/dev/null # builds, checks system packages
cargo build --release -p caduceus-loadgen -p caduceus-cli
loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
caduceus="${CARGO_TARGET_DIR:-target}/release/caduceus"
work=$(mktemp -d)
trap '"$caduceus" cluster down --dir "$work/cluster" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
[ -n "$history" ] || "$loadgen" generate --out "$work/workload.cw" --transactions 300000 >/dev/null
# Folds the recording's stacks and draws them as flamegraphs/$2 titled $1, leaving out the
# stacks that match $3 if given; FOLDED_OUT=FILE keeps the folded stacks.
draw() {
    perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf | { grep -v -e "${3:-^$}" || true; } \
        > "$work/stacks.folded"
    inferno-flamegraph --title "$1" < "$work/stacks.folded" > "flamegraphs/$2"
    cp "$work/stacks.folded" "${FOLDED_OUT:-/dev/null}"
    echo "wrote flamegraphs/$2"
}
if [ -n "$history" ]; then
    cp -r "$history" "$work/ledger"
    sync
    perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$work/perf.data" \
        "$loadgen" run --embedded --dir "$work/ledger" --workload "$history_workload" --skip "$history_skip" \
        --transactions 300000 --no-reference "$@" >"$work/run.txt"
    grep -E '^(load|throughput|cpu|ledger open)' "$work/run.txt"
    # Skipping the workload's first transactions happens before the load starts; it is left out.
    draw "caduceus embedded engine under loadgen on top of $history_skip transactions of history" loadgen-history.svg \
        'loadgen::source::Source::file'
    exit 0
fi
if $cluster; then
    "$caduceus" cluster init --dir "$work/cluster" --shards 4 --servers 2 --base-port 0 >/dev/null
    # perf follows `cluster up` into every node process it starts.
    perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$work/perf.data" \
        "$caduceus" cluster up --dir "$work/cluster" >"$work/up.txt" 2>&1 &
    for _ in $(seq 300); do grep -q "client address" "$work/up.txt" && break; sleep 0.2; done
    "$loadgen" run --cluster-dir "$work/cluster" --workload "$work/workload.cw" --no-reference "$@" >"$work/run.txt"
    "$caduceus" cluster down --dir "$work/cluster" >/dev/null
    wait
    grep -E '^(load|throughput)' "$work/run.txt"
    draw "caduceus cluster (coordinator + 2 shard servers, 4 shards) under loadgen" loadgen-cluster.svg
    exit 0
fi
# DWARF unwinding: release builds keep no frame pointers.
perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$work/perf.data" \
    "$loadgen" run --embedded --dir "$work/ledger" --workload "$work/workload.cw" --no-reference "$@" >"$work/run.txt"
grep -E '^(load|throughput|cpu)' "$work/run.txt"
draw "caduceus embedded engine under loadgen (4 shards, RocksDB, closed loop)" loadgen-embedded.svg
