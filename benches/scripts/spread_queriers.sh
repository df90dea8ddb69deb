# Sourced by the spread A/B scripts: starts three queriers that spread over
# each other (HTTP 3401-3403, workers 47001-47003) and a lone one (HTTP 3400)
# on loopback, all on "$DATA" with "$BIN", stopped when the script exits.
# Reads MIN (--spread-min-bytes, default 1), REFRESH (their
# --refresh-interval, default 1s) and EXTRA (more flags for all
# four). Defines PIDS, ALONE, cpu <pid…> (their CPU ticks), lo, perf_start and
# perf_stop.
PEERS=$(mktemp)
printf "http://127.0.0.1:47001\nhttp://127.0.0.1:47002\nhttp://127.0.0.1:47003\n" > "$PEERS"
PIDS=()
for i in 1 2 3; do
  SPANLAKE_WORKER_SECRET=s "$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:340$i --pg-addr off \
    --worker-addr 127.0.0.1:4700$i --query-peers "file://$PEERS" --spread-min-bytes "${MIN:-1}" \
    --refresh-interval "${REFRESH:-1s}" ${EXTRA:-} > /dev/null 2>&1 &
  PIDS+=($!)
done
"$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:3400 --pg-addr off ${EXTRA:-} > /dev/null 2>&1 &
ALONE=$!
trap 'kill $ALONE ${PIDS[*]} 2>/dev/null; rm -f "$PEERS"' EXIT
sleep 5
# lo: bytes received on loopback so far (the curl answers included).
lo() { awk '/lo:/{print $2}' /proc/net/dev; }
cpu() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
# perf_start <file> <pid…>: record those processes' stacks (perf record -F 499,
# dwarf call graphs) until perf_stop; read the file with perf script. The CPU
# they are measured with then includes the profiler's cost.
perf_start() {
  local out=$1; shift
  perf record -F 499 -g --call-graph dwarf,${PERF_STACK:-8192} -o "$out" -p "$(IFS=,; echo "$*")" 2>/dev/null &
  PERF=$!; sleep 1
}
perf_stop() { if [ -n "${PERF:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; PERF=""; fi; }
