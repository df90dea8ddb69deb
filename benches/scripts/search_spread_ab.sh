#!/bin/bash
# One TraceQL search on kept blocks, on a lone querier and spread over three
# (ports 3400-3403 and 47001-47003 on loopback): the CPU of the three
# together against the lone querier's, and each of the three's share of
# the block bytes they read (`spanlake_querier_block_bytes_read`). The
# search's window is the blocks' span starts (read with pyarrow).
# usage: benches/scripts/search_spread_ab.sh <spanlake binary> <blocks dir> <searches> ["<TraceQL>"] [spread min bytes, default 8MiB]
# Blocks: SPANLAKE_BENCH_SPREAD_DIR=<empty dir> cargo bench --bench spread
# (kept compacted; a copy taken while it runs keeps them as ingested).
set -euo pipefail
BIN=$1; DATA=$2; N=$3; Q=${4:-"{ status = error } > { kind = client }"}; MIN=${5:-8MiB}
read -r START END < <(python3 - "$DATA" <<'PY'
import glob, sys
import pyarrow.parquet as pq
lo = hi = None
for path in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True):
    meta = pq.ParquetFile(path).metadata
    column = [c for c in range(meta.num_columns) if meta.schema.column(c).path == "start_time"][0]
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        lo = stats.min_raw if lo is None else min(lo, stats.min_raw)
        hi = stats.max_raw if hi is None else max(hi, stats.max_raw)
print(lo // 10**9, hi // 10**9 + 1)
PY
)
source "$(dirname "$0")/spread_queriers.sh"
ask() {
  curl -s -o /dev/null -w "%{http_code}" -G "http://127.0.0.1:$1/api/search" --data-urlencode "q=$Q" \
    --data-urlencode "start=$START" --data-urlencode "end=$END" --data-urlencode limit=20 | grep -q 200
}
bytes() { for port in 3401 3402 3403; do curl -s "http://127.0.0.1:$port/metrics" | awk '/^spanlake_querier_block_bytes_read_total /{print $2}'; done | tr '\n' ' '; }
ask 3400; ask 3401
C0=$(cpu $ALONE); for _ in $(seq "$N"); do ask 3400; done; C1=$(cpu $ALONE)
B0=$(bytes); S0=$(cpu "${PIDS[@]}"); for _ in $(seq "$N"); do ask 3401; done; S1=$(cpu "${PIDS[@]}"); B1=$(bytes)
python3 - "$B0" "$B1" $((C1 - C0)) $((S1 - S0)) "$N" <<'PY'
import sys
before, after = [float(b) for b in sys.argv[1].split()], [float(b) for b in sys.argv[2].split()]
alone, three, n = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
read = [a - b for a, b in zip(after, before)]
total = sum(read)
print(f"alone {alone / 100 / n:.3f} CPU-s a search, three {three / 100 / n:.3f} ({three / max(alone, 1):.2f}x); "
      f"{total / n / 1e6:.1f} MB a search, shares {[round(100 * r / total) for r in read]} %")
PY
