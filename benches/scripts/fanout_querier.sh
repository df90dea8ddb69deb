# Sourced by the fanout_*.sh scripts. start_querier [flags…] starts a querier
# of binary $BIN on the blocks in $DATA, sets QPID (killed on exit) and URL
# (one /api/fanout query over the last day), and waits for it to start.
start_querier() {
  PORT=$((3300 + RANDOM % 500))
  "$BIN" run querier --storage "$DATA" --http-addr 127.0.0.1:$PORT --pg-addr off "$@" > /dev/null 2>&1 &
  QPID=$!
  trap 'kill $QPID 2>/dev/null; rm -f "${OUT:-}"' EXIT
  sleep 3
  NOW=$(date +%s)
  URL="http://127.0.0.1:$PORT/api/fanout?service=frontend&operation=GET%20/search&start=$((NOW-86400))&end=$NOW&percentiles=0.5,0.9,0.99,0.999"
}
