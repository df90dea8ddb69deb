#!/bin/bash
# One build's /api/fanout on kept blocks, on a lone querier and spread over
# three (ports 3400-3403 and 47001-47003 on loopback): median times and the
# CPU-s per query of the lone querier, and of the three together.
# usage: benches/scripts/fanout_spread_ab.sh <spanlake binary> <blocks dir> [queries, default 3]
# Blocks: SPANLAKE_BENCH_FANOUT_DIR=<empty dir> cargo bench --bench fanout.
# PARENTS: the parents asked for, as query parameters (default one operation,
# "service=frontend&operation=GET%20/search"; PARENTS= asks for every parent,
# whose statistics travel with every call).
# ALTERNATE=1: a query alone, then one spread, N of each, instead of N alone
# then N spread. EXTRA: more flags for all four queriers.
# PERF_OUT=<file>: also record a profile of the three during their queries
# (perf record -F 499 --call-graph dwarf,8192; read it with perf script; the
# spread CPU figure then includes the profiler's cost).
set -euo pipefail
BIN=$1; DATA=$2; N=${3:-3}
PEERS=$(mktemp)
printf "http://127.0.0.1:47001\nhttp://127.0.0.1:47002\nhttp://127.0.0.1:47003\n" > "$PEERS"
PIDS=()
for i in 1 2 3; do
  SPANLAKE_WORKER_SECRET=s "$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:340$i --pg-addr off \
    --worker-addr 127.0.0.1:4700$i --query-peers "file://$PEERS" --spread-min-bytes 1 --refresh-interval 1s ${EXTRA:-} > /dev/null 2>&1 &
  PIDS+=($!)
done
"$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:3400 --pg-addr off ${EXTRA:-} > /dev/null 2>&1 &
ALONE=$!
trap 'kill $ALONE ${PIDS[*]} 2>/dev/null; rm -f "$PEERS"' EXIT
sleep 5
NOW=$(date +%s)
PARENTS=${PARENTS-service=frontend&operation=GET%20/search}
url() { echo "http://127.0.0.1:$1/api/fanout?${PARENTS:+$PARENTS&}start=$((NOW-86400))&end=$NOW&percentiles=0.5,0.9,0.99,0.999"; }
cpu() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
for port in 3400 3401; do curl -s -o /dev/null "$(url $port)"; curl -s -o /dev/null "$(url $port)"; done
if [ -n "${ALTERNATE:-}" ]; then
  A=0; S=0
  for _ in $(seq "$N"); do
    c0=$(cpu $ALONE); curl -s -o /dev/null "$(url 3400)"; c1=$(cpu $ALONE); A=$((A + c1 - c0))
    c0=$(cpu "${PIDS[@]}"); curl -s -o /dev/null "$(url 3401)"; c1=$(cpu "${PIDS[@]}"); S=$((S + c1 - c0))
  done
  echo "alternating: alone cpu_s/query=$(echo "$A/100/$N" | bc -l | cut -c1-5) spread cpu_s/query=$(echo "$S/100/$N" | bc -l | cut -c1-5)"
  exit 0
fi
C0=$(cpu $ALONE); T=""; for _ in $(seq "$N"); do T="$T $(curl -s -o /dev/null -w '%{time_total}' "$(url 3400)")"; done; C1=$(cpu $ALONE)
echo "alone: times$T cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-5)"
if [ -n "${PERF_OUT:-}" ]; then
  perf record -F 499 -g --call-graph dwarf,${PERF_STACK:-8192} -o "$PERF_OUT" -p "$(IFS=,; echo "${PIDS[*]}")" 2>/dev/null &
  PERF=$!; sleep 1
fi
C0=$(cpu "${PIDS[@]}"); T=""; for _ in $(seq "$N"); do T="$T $(curl -s -o /dev/null -w '%{time_total}' "$(url 3401)")"; done; C1=$(cpu "${PIDS[@]}")
if [ -n "${PERF:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; fi
echo "spread: times$T cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-5)"
