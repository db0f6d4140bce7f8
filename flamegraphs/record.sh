#!/usr/bin/env bash
# Records a flamegraph of the embedded engine under the demo workload, from a
# fresh clone, with this machine's own tools: perf (software sampling, so it
# works without hardware counters) and inferno. Installs what is missing.
#   flamegraphs/record.sh [demo options]      -> flamegraphs/demo-embedded.svg
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v perf >/dev/null || { echo "perf is missing: install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked
./run demo --transactions 1 --reference-seconds 0 >/dev/null # builds, checks system packages
binary="${CARGO_TARGET_DIR:-target}/release/caduceus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# DWARF unwinding: release builds keep no frame pointers.
perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -o "$work/perf.data" \
    "$binary" demo --dir "$work/ledger" --reference-seconds 0 "$@" >"$work/demo.txt"
grep -E 'throughput' "$work/demo.txt"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf > "$work/stacks.folded"
inferno-flamegraph --title "caduceus demo (embedded, 4 shards): signing, then committing" \
    < "$work/stacks.folded" > flamegraphs/demo-embedded.svg
echo "wrote flamegraphs/demo-embedded.svg"
