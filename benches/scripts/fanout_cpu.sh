#!/bin/bash
# A querier's CPU (perf stat task-clock) per /api/fanout query, after two
# warm-up queries, and its peak RSS. Run two builds alternately to compare.
# usage: benches/scripts/fanout_cpu.sh <spanlake binary> <blocks dir> [queries, default 5]
# Blocks: SPANLAKE_BENCH_FANOUT_DIR=<empty dir> cargo bench --bench fanout.
set -euo pipefail
BIN=$1; DATA=$2; N=${3:-5}
OUT=$(mktemp)
source "$(dirname "$0")/fanout_querier.sh"
start_querier
curl -s -o /dev/null "$URL"; curl -s -o /dev/null "$URL"
perf stat -e task-clock -p $QPID -o "$OUT" 2>/dev/null &
PERF=$!
sleep 0.5
for _ in $(seq "$N"); do curl -s -o /dev/null "$URL"; done
kill -INT $PERF; wait $PERF 2>/dev/null || true
HWM=$(awk '/VmHWM/ {print $2/1024}' /proc/$QPID/status)
awk -v n="$N" -v b="$(basename "$BIN")" -v hwm="$HWM" \
  '/task-clock/ {t=$1; gsub(",", "", t)} END {printf "%s: cpu_ms_per_query=%.1f peak_rss_mib=%s\n", b, t/n, hwm}' "$OUT"
