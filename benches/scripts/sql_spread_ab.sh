#!/bin/bash
# One SQL query on kept blocks, on a lone querier and spread over three
# (ports 3400-3403 and 47001-47003 on loopback): CPU-s per query of the lone
# querier and of the three together, and the loopback bytes per spread query
# (what travelled between the queriers, and the answer). Environment such as
# SPANLAKE_SPREAD_COMPRESSION=lz4 reaches the queriers.
# usage: benches/scripts/sql_spread_ab.sh <spanlake binary> <blocks dir> <queries> "<SQL>" [spread min bytes, default 1]
# Blocks: SPANLAKE_BENCH_SPREAD_DIR=<empty dir> cargo bench --bench spread.
# PERF_OUT=<file>: also record a profile of the three during their queries.
set -euo pipefail
BIN=$1; DATA=$2; N=$3; Q=$4; MIN=${5:-1}
PEERS=$(mktemp)
printf "http://127.0.0.1:47001\nhttp://127.0.0.1:47002\nhttp://127.0.0.1:47003\n" > "$PEERS"
PIDS=()
for i in 1 2 3; do
  SPANLAKE_WORKER_SECRET=s "$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:340$i --pg-addr off \
    --worker-addr 127.0.0.1:4700$i --query-peers "file://$PEERS" --spread-min-bytes $MIN --refresh-interval 1s > /dev/null 2>&1 &
  PIDS+=($!)
done
"$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:3400 --pg-addr off > /dev/null 2>&1 &
ALONE=$!
trap 'kill $ALONE ${PIDS[*]} 2>/dev/null; rm -f "$PEERS"' EXIT
sleep 5
cpu() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
ask() { curl -s -o /dev/null -D - -X POST --data "$Q" "http://127.0.0.1:$1/api/sql" | grep -ci "x-spanlake-spread" || true; }
for port in 3400 3401; do ask $port >/dev/null; ask $port > /dev/null; done
echo "spread header on 3401: $(ask 3401)"
C0=$(cpu $ALONE); for _ in $(seq "$N"); do ask 3400 > /dev/null; done; C1=$(cpu $ALONE)
echo "alone: cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-6)"
if [ -n "${PERF_OUT:-}" ]; then
  perf record -F 999 -g --call-graph dwarf,16384 -o "$PERF_OUT" -p "$(IFS=,; echo "${PIDS[*]}")" 2>/dev/null &
  PERF=$!; sleep 1
fi
lo() { awk '/lo:/{print $2}' /proc/net/dev; }
L0=$(lo); C0=$(cpu "${PIDS[@]}"); for _ in $(seq "$N"); do ask 3401 > /dev/null; done; C1=$(cpu "${PIDS[@]}"); L1=$(lo)
if [ -n "${PERF:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; fi
echo "spread: cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-6) loopback_MB/query=$(echo "($L1-$L0)/1000000/$N" | bc -l | cut -c1-6)"
