#!/usr/bin/env bash
# CPU time per request (user + system, from /proc/PID/stat) of the gateway and, in the same run,
# of two proxies that do none of its work: gateway_bench's byte-copying TCP relay and nginx (when
# installed), each in front of the same fake harmony, non-streaming and streaming, at a fixed
# number of closed-loop clients (issue 3, Benchmark). Unlike latency it hardly moves with what
# else runs on the machine, so it is the figure to optimize against on a shared machine; the
# relay and nginx rows show what one more loopback hop costs by itself. Results and how to read
# them: docs/benchmarks.md, "Gateway added latency".
#
# Starts the fake harmony and the proxies as their own processes, reads each proxy's and the
# fake's CPU ticks before and after each load run, and divides by the requests the proxy served
# (the run, its warm-up and the load generator's two checks).
#
# Environment: BIN (a gateway_bench binary; default: build it), REQUESTS (20000), CLIENTS (16),
# SKIP_NGINX=1, CARGO_TARGET_DIR (default target).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-20000}
CLIENTS=${CLIENTS:-16}
WARMUP=500
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT_DIR=$(mktemp -d)

# shellcheck source=benches/background.sh
. benches/background.sh

if [ -z "${BIN:-}" ]; then
  log "building gateway_bench (release)"
  cargo build --release -q -p adaptive-gateway --example gateway_bench
  BIN=$CARGO_TARGET_DIR/release/examples/gateway_bench
fi

# Sums the user + system ticks (or, with `user`, the user ticks) of the given processes.
ticks() {
  local field='$14 + $15'
  if [ "$1" = user ]; then field='$14'; shift; fi
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk "{print $field}" "/proc/$pid/stat"))); done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
per_request() { echo $(( $1 * 1000000 / HZ / $2 )); }

start_server fake "$BIN" fake
FAKE_URL=$SERVER_URL
FAKE_PID=$SERVER_PID
start_server gateway "$BIN" gateway --upstream "$FAKE_URL" --listen 127.0.0.1:0
PROXIES=("gateway $SERVER_URL $SERVER_PID")
start_server relay "$BIN" relay --upstream "$FAKE_URL" --listen 127.0.0.1:0
PROXIES+=("tcp-relay $SERVER_URL $SERVER_PID")
if [ "${SKIP_NGINX:-0}" != 1 ] && start_nginx "$FAKE_URL"; then
  PROXIES+=("nginx $NGINX_URL $NGINX_WORKER_PIDS")
fi

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| mode | clients | proxy | requests | proxy CPU µs/request | of which user | fake CPU µs/request |"
echo "|---|---:|---|---:|---:|---:|---:|"
# The load generator warms up with max(WARMUP, 2 x clients) requests and checks with two more.
warmup=$(( WARMUP > 2 * CLIENTS ? WARMUP : 2 * CLIENTS ))
served=$((REQUESTS + warmup + 2))
for mode in unary stream; do
  for proxy in "${PROXIES[@]}"; do
    read -r name url pids <<<"$proxy"
    # shellcheck disable=SC2086 # pids is a list
    {
      before=$(ticks $pids)
      user_before=$(ticks user $pids)
      fake_before=$(ticks "$FAKE_PID")
      "$BIN" load --target "$name=$url/v1" --clients "$CLIENTS" --modes "$mode" \
        --requests "$REQUESTS" --warmup "$WARMUP" --max-seconds 600 >"$OUT_DIR/load-$mode-$name.out" 2>"$OUT_DIR/load-$mode-$name.err"
      after=$(ticks $pids)
      user_after=$(ticks user $pids)
      fake_after=$(ticks "$FAKE_PID")
    }
    echo "| $mode | $CLIENTS | $name | $served | $(per_request $((after - before)) "$served") | $(per_request $((user_after - user_before)) "$served") | $(per_request $((fake_after - fake_before)) "$served") |"
  done
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
