#!/bin/bash
# One build's /api/fanout on kept blocks, on a lone querier and spread over
# three (ports 3400-3403 and 47001-47003 on loopback): median times and the
# CPU-s per query of the lone querier, and of the three together (and the
# loopback bytes per spread query).
# usage: benches/scripts/fanout_spread_ab.sh <spanlake binary> <blocks dir> [queries, default 3]
# Blocks: SPANLAKE_BENCH_FANOUT_DIR=<empty dir> cargo bench --bench fanout.
# PARENTS: the parents asked for, as query parameters (default one operation,
# "service=frontend&operation=GET%20/search"; PARENTS= asks for every parent,
# whose statistics travel with every call).
# ALTERNATE=1: a query alone, then one spread, N of each, instead of N alone
# then N spread. EXTRA: more flags for all four queriers.
# WARM=1: first, each of the spread bench's SQL, search and metrics queries
# six times on the lone querier and on the three (queriers that have served
# other queries, as in the spread bench).
# PERF_OUT=<file> / PERF_ALONE=<file>: also record a profile of the three /
# of the lone querier during their queries (see spread_queriers.sh).
set -euo pipefail
BIN=$1; DATA=$2; N=${3:-3}
source "$(dirname "$0")/spread_queriers.sh"
NOW=$(date +%s)
PARENTS=${PARENTS-service=frontend&operation=GET%20/search}
url() { echo "http://127.0.0.1:$1/api/fanout?${PARENTS:+$PARENTS&}start=$((NOW-86400))&end=$NOW&percentiles=0.5,0.9,0.99,0.999"; }
for port in 3400 3401; do curl -s -o /dev/null "$(url $port)"; curl -s -o /dev/null "$(url $port)"; done
if [ -n "${WARM:-}" ]; then
  window=(--data-urlencode "start=$((NOW-86400))" --data-urlencode "end=$NOW")
  for port in 3400 3401; do
    for _ in 1 2 3 4 5 6; do
      for q in "SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY 1 ORDER BY 1" \
        "SELECT service_name, name, count(*) FROM spans WHERE status_code = 'error' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20" \
        "SELECT count(*), max(span_count), avg(duration_ns) FROM traces"; do
        curl -s -o /dev/null -X POST --data "$q" "http://127.0.0.1:$port/api/sql"
      done
      for q in "{ kind = server && duration > 1s }" "{ status = error } > { kind = client }"; do
        curl -s -o /dev/null -G "http://127.0.0.1:$port/api/search" --data-urlencode "q=$q" "${window[@]}" --data-urlencode "limit=20"
      done
      for q in "{ } | rate() by(resource.service.name)" \
        "{ kind = server } | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name)"; do
        curl -s -o /dev/null -G "http://127.0.0.1:$port/api/metrics/query_range" --data-urlencode "q=$q" "${window[@]}" --data-urlencode "step=15s"
      done
    done
  done
fi
if [ -n "${ALTERNATE:-}" ]; then
  A=0; S=0
  for _ in $(seq "$N"); do
    c0=$(cpu $ALONE); curl -s -o /dev/null "$(url 3400)"; c1=$(cpu $ALONE); A=$((A + c1 - c0))
    c0=$(cpu "${PIDS[@]}"); curl -s -o /dev/null "$(url 3401)"; c1=$(cpu "${PIDS[@]}"); S=$((S + c1 - c0))
  done
  echo "alternating: alone cpu_s/query=$(echo "$A/100/$N" | bc -l | cut -c1-5) spread cpu_s/query=$(echo "$S/100/$N" | bc -l | cut -c1-5)"
  exit 0
fi
if [ -n "${PERF_ALONE:-}" ]; then perf_start "$PERF_ALONE" $ALONE; fi
C0=$(cpu $ALONE); T=""; for _ in $(seq "$N"); do T="$T $(curl -s -o /dev/null -w '%{time_total}' "$(url 3400)")"; done; C1=$(cpu $ALONE)
perf_stop
echo "alone: times$T cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-5)"
if [ -n "${PERF_OUT:-}" ]; then perf_start "$PERF_OUT" "${PIDS[@]}"; fi
L0=$(lo); C0=$(cpu "${PIDS[@]}"); T=""; for _ in $(seq "$N"); do T="$T $(curl -s -o /dev/null -w '%{time_total}' "$(url 3401)")"; done; C1=$(cpu "${PIDS[@]}"); L1=$(lo)
perf_stop
echo "spread: times$T cpu_s/query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-5) loopback_MB/query=$(echo "($L1-$L0)/1000000/$N" | bc -l | cut -c1-6)"
