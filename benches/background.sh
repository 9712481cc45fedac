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

# Starts nginx as a plain HTTP reverse proxy in front of UPSTREAM_URL (http://host:port): two
# workers (one per core, as the gateway's tokio runtime), keep-alive connections upstream, no
# access log and no response buffering (SSE events are relayed as they arrive). Sets NGINX_URL
# and NGINX_WORKER_PIDS; returns 1, saying why, when nginx is missing or does not start.
start_nginx() {
  local upstream=${1#http://}
  if ! command -v nginx >/dev/null; then
    log "nginx not measured: not installed (apt-get install nginx-light)"
    return 1
  fi
  local port dir=$OUT_DIR/nginx
  port=$(free_port)
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream upstream_server { server $upstream; keepalive 64; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://upstream_server;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
  # In the foreground (daemon off), so that cleanup stops it with the other servers.
  nginx -c "$dir/nginx.conf" 2>"$dir/start.err" &
  local master=$!
  PIDS+=("$master")
  NGINX_URL=http://127.0.0.1:$port
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "$NGINX_URL/" && break
    sleep 0.1
  done
  if ! curl -s -o /dev/null "$NGINX_URL/"; then
    log "nginx did not start: $(cat "$dir/start.err")"
    return 1
  fi
  NGINX_WORKER_PIDS=$(pgrep -P "$master" | tr '\n' ' ')
  log "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') at $NGINX_URL (workers $NGINX_WORKER_PIDS)"
}
