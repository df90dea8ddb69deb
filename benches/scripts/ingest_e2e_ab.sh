#!/usr/bin/env bash
# End-to-end ingest A/B: two spanlake binaries, alternately, each all-in-one
# on a fresh data directory, loaded by `spanlake loadgen` (gRPC, 64
# concurrent clients, 100 traces a request) as fast as acknowledgements
# allow. Prints server CPU seconds per 1M spans (from /proc), throughput and
# peak RSS per run. Loopback only; each run stops by itself.
#
#   benches/scripts/ingest_e2e_ab.sh <binary A> <binary B> [rounds] [traces]
set -euo pipefail
a=$1 b=$2 rounds=${3:-3} traces=${4:-20000}
run() {
  local bin=$1 dir addr pid before after out
  dir=$(mktemp -d)
  SPANLAKE_OTLP_GRPC_ADDR=127.0.0.1:0 SPANLAKE_OTLP_HTTP_ADDR=127.0.0.1:0 SPANLAKE_PG_ADDR=127.0.0.1:0 \
    "$bin" --storage "$dir/data" --http-addr 127.0.0.1:0 --listen-addr-file "$dir/addr.json" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do [ -s "$dir/addr.json" ] && break; sleep 0.1; done
  addr=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['otlp_grpc'])" "$dir/addr.json")
  before=$(awk '{print $14+$15}' /proc/$pid/stat)
  out=$("$b" loadgen --endpoint "http://$addr" --rate 0 --traces "$traces" --concurrency 64 --batch 100 2>&1 | tail -1)
  after=$(awk '{print $14+$15}' /proc/$pid/stat)
  local rss; rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  local spans; spans=$(echo "$out" | grep -o '[0-9]* acknowledged, [0-9]* rejected' | tail -1 | awk '{print $1}')
  local rate; rate=$(echo "$out" | grep -o '[0-9]* spans/s' | awk '{print $1}')
  python3 -c "import sys; t,s=int(sys.argv[1]),int(sys.argv[2]); print(f'{sys.argv[3]}: {t/100/s*1e6:.2f} server CPU-s per 1M spans, {sys.argv[4]} spans/s, {s} spans, peak RSS {int(sys.argv[5])//1024} MiB')" \
    $((after - before)) "$spans" "$(basename "$bin")" "$rate" "$rss"
  rm -rf "$dir"
}
for _ in $(seq "$rounds"); do run "$a"; run "$b"; done
