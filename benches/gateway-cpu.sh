#!/usr/bin/env bash
# The gateway's CPU time per request (user + system, from /proc/PID/stat), non-streaming and
# streaming, at a fixed number of closed-loop clients (issue 3, Benchmark). Unlike latency it
# hardly moves with what else runs on the machine, so it is the figure to optimize against on a
# shared machine. Results and how to read them: docs/benchmarks.md, "Gateway added latency".
#
# Starts the fake harmony and the gateway of `gateway_bench` as their own processes, reads the
# gateway's and the fake's CPU ticks before and after each load run, and divides by the requests
# the gateway served (the run, its warm-up and the load generator's two checks).
#
# Environment: BIN (a gateway_bench binary; default: build it), REQUESTS (20000), CLIENTS (16),
# CARGO_TARGET_DIR (default target).
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

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

start_server fake "$BIN" fake
FAKE_URL=$SERVER_URL
FAKE_PID=$SERVER_PID
start_server gateway "$BIN" gateway --upstream "$FAKE_URL" --listen 127.0.0.1:0
GATEWAY_URL=$SERVER_URL
GATEWAY_PID=$SERVER_PID

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| mode | clients | requests | gateway CPU µs/request | fake CPU µs/request |"
echo "|---|---:|---:|---:|---:|"
for mode in unary stream; do
  gateway_before=$(ticks "$GATEWAY_PID")
  fake_before=$(ticks "$FAKE_PID")
  "$BIN" load --target "gateway=$GATEWAY_URL/v1" --clients "$CLIENTS" --modes "$mode" \
    --requests "$REQUESTS" --warmup "$WARMUP" --max-seconds 600 >"$OUT_DIR/load-$mode.out" 2>"$OUT_DIR/load-$mode.err"
  gateway_after=$(ticks "$GATEWAY_PID")
  fake_after=$(ticks "$FAKE_PID")
  # The load generator warms up with max(WARMUP, 2 x clients) requests.
  warmup=$(( WARMUP > 2 * CLIENTS ? WARMUP : 2 * CLIENTS ))
  served=$((REQUESTS + warmup + 2))
  echo "| $mode | $CLIENTS | $served | $(( (gateway_after - gateway_before) * 1000000 / HZ / served )) | $(( (fake_after - fake_before) * 1000000 / HZ / served )) |"
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
