#!/bin/bash
# One SQL query on kept blocks, on a lone querier and spread over three
# (ports 3400-3403 and 47001-47003 on loopback): CPU-s per query of the lone
# querier and of the three together, and the loopback bytes per spread query
# (what travelled between the queriers, and the answer). Environment such as
# SPANLAKE_SPREAD_COMPRESSION=lz4 reaches the queriers.
# usage: benches/scripts/sql_spread_ab.sh <spanlake binary> <blocks dir> <queries> "<SQL>" [spread min bytes, default 1]
# Blocks: SPANLAKE_BENCH_SPREAD_DIR=<empty dir> cargo bench --bench spread.
# PERF_OUT=<file> / PERF_ALONE=<file>: also record a profile of the three /
# of the lone querier during their queries (see spread_queriers.sh).
set -euo pipefail
BIN=$1; DATA=$2; N=$3; Q=$4; MIN=${5:-1}
source "$(dirname "$0")/spread_queriers.sh"
ask() { curl -s -o /dev/null -D - -X POST --data "$Q" "http://127.0.0.1:$1/api/sql" | grep -ci "x-spanlake-spread" || true; }
for port in 3400 3401; do ask $port >/dev/null; ask $port > /dev/null; done
echo "spread header on 3401: $(ask 3401)"
if [ -n "${PERF_ALONE:-}" ]; then perf_start "$PERF_ALONE" $ALONE; fi
C0=$(cpu $ALONE); for _ in $(seq "$N"); do ask 3400 > /dev/null; done; C1=$(cpu $ALONE)
perf_stop
echo "alone: cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-6)"
if [ -n "${PERF_OUT:-}" ]; then perf_start "$PERF_OUT" "${PIDS[@]}"; fi
L0=$(lo); C0=$(cpu "${PIDS[@]}"); for _ in $(seq "$N"); do ask 3401 > /dev/null; done; C1=$(cpu "${PIDS[@]}"); L1=$(lo)
perf_stop
echo "spread: cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-6) loopback_MB/query=$(echo "($L1-$L0)/1000000/$N" | bc -l | cut -c1-6)"
