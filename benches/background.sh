# Sourced by the benchmark scripts: their log line, and the servers they start in the
# background (PIDS), stopped on exit or by `cleanup`.

log() { echo "[bench] $*" >&2; }

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts "$@" in the background with its output in $OUT_DIR/NAME.{out,err}, waits for its
# "listening on URL" line, sets SERVER_URL and SERVER_PID.
start_server() {
  local name=$1
  shift
  "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 100); do
    if SERVER_URL=$(sed -n 's/^listening on //p' "$OUT_DIR/$name.out" | head -n1) && [ -n "$SERVER_URL" ]; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not start; see $OUT_DIR/$name.err"
  return 1
}
