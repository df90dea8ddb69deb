#!/bin/bash
# A querier that stops answering mid-cluster: three queriers spread over
# each other (ports 3401-3403, workers 47001-47003 on loopback), one is
# frozen (SIGSTOP), and the same query is asked of another right away and
# then again; then the frozen one goes on (SIGCONT). Prints each answer's
# HTTP status, seconds, whether it was spread, and the asked querier's
# spread outcomes. The query's deadline is the default 30 s.
# usage: benches/scripts/spread_stall.sh <spanlake binary> <blocks dir> [refresh interval, default 5s] ["<SQL>"]
# Blocks: SPANLAKE_BENCH_SPREAD_DIR=<empty dir> cargo bench --bench spread.
set -euo pipefail
BIN=$1; DATA=$2; REFRESH=${3:-5s}
QUERY=${4:-SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY 1 ORDER BY 1}

source "$(dirname "$0")/spread_queriers.sh"
ask() {
  curl -s -o /dev/null -D - -w 'status=%{http_code} seconds=%{time_total}\n' -X POST --data "$QUERY" \
    http://127.0.0.1:3401/api/sql | awk -v what="$1" '
      tolower($1) == "x-spanlake-spread:" { spread = "spread" }
      /^status=/ { print what ": " $0 " " (spread ? spread : "not spread") }'
}
outcomes() { curl -s http://127.0.0.1:3401/metrics | grep '^spanlake_querier_queries_spread_total' | sed 's/spanlake_querier_queries_spread_total//' | tr '\n' ' '; echo; }
sleep "${REFRESH%s}"
ask "three queriers"
ask "three queriers"
kill -STOP "${PIDS[2]}"
trap 'kill -CONT ${PIDS[2]} 2>/dev/null; kill $ALONE ${PIDS[*]} 2>/dev/null; rm -f "$PEERS"' EXIT
ask "one stopped, asked at once"
ask "one stopped, asked again"
outcomes
kill -CONT "${PIDS[2]}"
sleep "$(( ${REFRESH%s} + 3 ))"
ask "after it goes on"
outcomes
