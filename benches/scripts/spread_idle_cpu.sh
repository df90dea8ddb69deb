#!/bin/bash
# What three idle queriers that spread over each other cost: their CPU over
# a minute with no query, mostly the catalog refresh and the peers' probes
# (each probes the three every --refresh-interval, 1 s here by default).
# usage: benches/scripts/spread_idle_cpu.sh <spanlake binary> <blocks dir> [seconds, default 60]
set -euo pipefail
BIN=$1; DATA=$2; SECONDS_IDLE=${3:-60}
source "$(dirname "$0")/spread_queriers.sh"
c0=$(cpu "${PIDS[@]}"); sleep "$SECONDS_IDLE"; c1=$(cpu "${PIDS[@]}")
echo "three idle queriers, refresh ${REFRESH:-1s}: $(echo "($c1-$c0)/100" | bc -l | cut -c1-5) CPU-s over ${SECONDS_IDLE} s"
