#!/bin/bash
# A querier's RSS (MiB) and thread count every 50 ms during three /api/fanout
# queries, in a fresh process, then its peak RSS after each.
# usage: benches/scripts/fanout_rss_probe.sh <spanlake binary> <blocks dir>
# Blocks: SPANLAKE_BENCH_FANOUT_DIR=<empty dir> cargo bench --bench fanout.
# Allocator settings pass through the environment (MIMALLOC_PURGE_DELAY=50 …).
set -euo pipefail
BIN=$1; DATA=$2
source "$(dirname "$0")/fanout_querier.sh"
start_querier --sql-memory-limit 16GiB --query-timeout 30m
echo "idle: $(awk '/VmRSS/ {print $2/1024}' /proc/$QPID/status) MiB"
for q in 1 2 3; do
  ( while kill -0 $QPID 2>/dev/null; do
      awk '/VmRSS/ {r=$2/1024} /Threads/ {t=$2} END {printf "%d/%d ", r, t}' /proc/$QPID/status
      sleep 0.05
    done ) &
  SAMPLER=$!
  curl -s -o /dev/null -w "\nquery $q: %{time_total} s\n" "$URL"
  kill $SAMPLER
  echo "peak RSS: $(awk '/VmHWM/ {print $2/1024}' /proc/$QPID/status) MiB"
done
