#!/usr/bin/env bash
# Counts the instructions the embedded engine spends, with callgrind: unlike
# wall-clock figures on a shared VM, the count is the same from run to run for
# the same binary and input (within about 2%, as the grouping of batches into
# rounds follows timing), so two builds can be compared from one run each. It
# counts instructions, not cache misses: a change that saves memory traffic
# rather than work shows up in loadgen's CPU per transaction, not here.
#   bench/instructions.sh [transactions [loadgen binary]]
# Prints the total, the part outside the batched signature check (the work a
# faster engine can remove) and the persist stage's share, in millions. The execute
# stage is not split out: its shards run on pool threads, and callgrind
# charges their work to whichever thread ran it, which varies from run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-20000}
command -v valgrind >/dev/null || { [ "$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
command -v valgrind >/dev/null || { echo "valgrind is missing: install valgrind" >&2; exit 1; }
if [ -n "${2:-}" ]; then
    loadgen=$2
else
    ./run demo --transactions 1 --reference-seconds 0 >/dev/null # builds, checks system packages
    cargo build --release -p caduceus-loadgen
    loadgen="${CARGO_TARGET_DIR:-target}/release/loadgen"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$loadgen" generate --out "$work/workload.cw" --transactions 300000 >/dev/null
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$loadgen" run --embedded --dir "$work/ledger" --workload "$work/workload.cw" \
    --transactions "$count" --no-reference >"$work/run.txt" 2>"$work/valgrind.txt"
callgrind_annotate --inclusive=yes "$work/callgrind.out" >"$work/inclusive.txt" 2>/dev/null
# The inclusive count of the first function whose name matches $1, in millions.
millions() { grep -E "$1" "$work/inclusive.txt" | head -1 | awk '{gsub(",", "", $1); print int($1 / 1000000)}'; }
total=$(millions "PROGRAM TOTALS")
verify=$(millions "caduceus_engine::signature::batch_valid")
rounds=$(grep -oE "=> .*round::execute_round \(([0-9,]+)x\)" "$work/inclusive.txt" | head -1 | grep -oE "[0-9,]+x" | tr -d ,x)
echo "instructions (millions), one run: the workload's setup (registrations) and then $count transactions, in ${rounds:-?} rounds"
echo "  total                        $total"
echo "  outside the batch check      $((total - verify))"
echo "  persist stage (one thread)   $(millions 'ledger::persist_stage')"
echo "    of which RocksDB's write    $(millions 'DBImpl::WriteImpl')"
