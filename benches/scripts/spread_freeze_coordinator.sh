#!/bin/bash
# The querier coordinating a spread fan-out is frozen (SIGSTOP) a moment
# into it: do the queriers running its shares let go of them? Three
# queriers spread over each other (ports 3401-3403, workers 47001-47003 on
# loopback); prints the RSS of the two others and their established worker
# connections, idle, then 1 to 60 s after the freeze.
# usage: benches/scripts/spread_freeze_coordinator.sh <spanlake binary> <blocks dir> [seconds into the query, default 0.25]
# Blocks: SPANLAKE_BENCH_SPREAD_DIR=<empty dir> cargo bench --bench spread.
set -euo pipefail
BIN=$1; DATA=$2; AFTER=${3:-0.25}
source "$(dirname "$0")/spread_queriers.sh"
trap 'kill -CONT ${PIDS[0]} 2>/dev/null; kill $ALONE ${PIDS[*]} 2>/dev/null; rm -f "$PEERS"' EXIT
NOW=$(date +%s)
URL="http://127.0.0.1:3401/api/fanout?start=$((NOW-86400))&end=$NOW"
curl -s -o /dev/null -w "a first fan-out: %{http_code} %{time_total}s\n" "$URL"
workers() {
  for p in "${PIDS[1]}" "${PIDS[2]}"; do echo -n "$(awk '/VmRSS/{print int($2/1024)}' "/proc/$p/status") MiB, "; done
  echo "connections $(ss -tn state established '( sport = :47002 or sport = :47003 )' | tail -n +2 | wc -l)"
}
echo -n "idle: "; workers
curl -s -o /dev/null "$URL" &
sleep "$AFTER"
kill -STOP "${PIDS[0]}"
previous=0
for t in 1 5 15 30 45 60; do
  sleep $((t - previous)); previous=$t
  echo -n "${t} s after the freeze: "; workers
done
