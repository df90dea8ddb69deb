#!/bin/bash
# One build's /api/fanout on kept blocks: median time and querier CPU-s per query.
# usage: benches/scripts/fanout_ab.sh <spanlake binary> <blocks dir> [queries, default 5]
# Blocks: SPANLAKE_BENCH_FANOUT_DIR=<empty dir> cargo bench --bench fanout.
# Run two builds alternately on the same blocks to compare them.
set -euo pipefail
BIN=$1; DATA=$2; N=${3:-5}
source "$(dirname "$0")/fanout_querier.sh"
start_querier
curl -s -o /dev/null "$URL"; curl -s -o /dev/null "$URL"
cpu() { awk '{print $14+$15}' /proc/$QPID/stat; }
C0=$(cpu)
TIMES=""
for _ in $(seq "$N"); do TIMES="$TIMES $(curl -s -o /dev/null -w '%{time_total}' "$URL")"; done
C1=$(cpu)
RSS=$(awk '/VmHWM/ {print $2/1024}' /proc/$QPID/status)
MEDIAN=$(echo $TIMES | tr ' ' '\n' | sort -n | sed -n "$(( (N + 1) / 2 ))p")
echo "$(basename "$BIN"): times$TIMES median=$MEDIAN cpu_s_per_query=$(echo "($C1-$C0)/100/$N" | bc -l | cut -c1-5) peak_rss_mib=$RSS"
