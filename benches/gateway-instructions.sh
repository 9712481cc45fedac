#!/usr/bin/env bash
# The gateway's user-space instructions per request (valgrind callgrind), non-streaming and
# streaming, at 16 closed-loop clients (issue 3, Benchmark). Deterministic to about 0.1 % run to
# run, whatever else runs on the machine, where CPU time per request (benches/gateway-cpu.sh)
# moves by ±10 % on a shared machine: use this one to judge a change to the gateway's own code,
# and gateway-cpu.sh for what it costs all told (kernel, page faults and cache misses included,
# which this one does not see). Results: docs/benchmarks.md, "Gateway added latency".
#
# Starts the fake harmony and, under callgrind, the gateway of `gateway_bench`; warms up, zeroes
# the counters, runs REQUESTS requests, dumps the counters and divides by the requests served.
# The profile is kept: open it with callgrind_annotate.
#
# Environment: BIN (a gateway_bench binary; default: build it), REQUESTS (3000), MODES
# (unary,stream), CARGO_TARGET_DIR (default target), OUT_DIR (where the profiles go; default a
# tmp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-3000}
MODES=${MODES:-unary,stream}
CLIENTS=16
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"

# shellcheck source=benches/background.sh
. benches/background.sh

if ! command -v valgrind >/dev/null; then
  log "valgrind is missing (apt-get install valgrind)"
  exit 1
fi
if [ -z "${BIN:-}" ]; then
  log "building gateway_bench (release)"
  cargo build --release -q -p adaptive-gateway --example gateway_bench
  BIN=$CARGO_TARGET_DIR/release/examples/gateway_bench
fi

start_server fake "$BIN" fake
FAKE_URL=$SERVER_URL

echo "| mode | clients | requests | gateway instructions/request |"
echo "|---|---:|---:|---:|"
for mode in ${MODES//,/ }; do
  PROFILE=$OUT_DIR/callgrind-$mode
  valgrind --tool=callgrind --callgrind-out-file="$PROFILE.%p" \
    "$BIN" gateway --upstream "$FAKE_URL" --listen 127.0.0.1:0 \
    >"$OUT_DIR/gateway-$mode.out" 2>"$OUT_DIR/gateway-$mode.err" &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  GATEWAY_URL=""
  # Slower to start under valgrind than start_server waits for.
  for _ in $(seq 1 600); do
    GATEWAY_URL=$(sed -n 's/^listening on //p' "$OUT_DIR/gateway-$mode.out" | head -n1)
    [ -n "$GATEWAY_URL" ] && break
    sleep 0.1
  done
  if [ -z "$GATEWAY_URL" ]; then
    log "the gateway did not start under valgrind; see $OUT_DIR/gateway-$mode.err"
    exit 1
  fi
  "$BIN" load --target "gateway=$GATEWAY_URL/v1" --clients "$CLIENTS" --modes "$mode" \
    --requests 500 --warmup 100 --max-seconds 600 >/dev/null 2>&1
  callgrind_control --zero "$GATEWAY_PID" >/dev/null 2>&1
  "$BIN" load --target "gateway=$GATEWAY_URL/v1" --clients "$CLIENTS" --modes "$mode" \
    --requests "$REQUESTS" --warmup "$CLIENTS" --max-seconds 600 >/dev/null 2>&1
  callgrind_control --dump "$GATEWAY_PID" >/dev/null 2>&1
  # The load generator warms up with max(warmup, 2 x clients) requests and checks with two more.
  served=$((REQUESTS + 2 * CLIENTS + 2))
  dump=$(ls -t "$PROFILE.$GATEWAY_PID".* | head -n1)
  instructions=$(sed -n 's/^totals: //p' "$dump")
  echo "| $mode | $CLIENTS | $served | $((instructions / served)) |"
  log "profile: $dump"
  kill -TERM "$GATEWAY_PID"
  wait "$GATEWAY_PID" 2>/dev/null || true
done
