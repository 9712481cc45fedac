#!/usr/bin/env bash
# Added latency of the gateway and of the LiteLLM proxy over a FAKE harmony (issue 3, Benchmark).
#
# Builds the gateway_bench example, starts (each its own process, 127.0.0.1 only):
#   fake harmony  - fixed reply, streamed at once (adaptive-test-support; no model)
#   gateway       - in front of the fake, interaction logging on (in-memory store)
#   tcp-relay     - gateway_bench's byte-copying TCP relay in front of the fake: the floor for the
#                   latency any proxy adds here (one more loopback hop each way, nothing parsed)
#   nginx         - nginx as a plain HTTP reverse proxy in front of the fake (keep-alive upstream,
#                   no access log, no buffering), when `nginx` is installed (apt-get install
#                   nginx-light): a mature L7 proxy that does none of the gateway's work
#   litellm proxy - PyPI litellm[proxy] in .cache/litellm-venv, model_list entry openai/chat-model
#                   with api_base = the fake, no database, telemetry and callbacks off
# then runs the closed-loop load generator against direct / gateway / litellm, prints a markdown
# table, and stops everything. Results and how to read them: docs/benchmarks.md.
#
# Environment: REQUESTS (per point, default 5000), WARMUP (500), MAX_SECONDS (per point, 20),
# CLIENTS (1,16,256), MODES (unary,stream), LITELLM_WORKERS (1), SKIP_LITELLM=1, SKIP_NGINX=1,
# BIN (a gateway_bench binary, to compare builds; default: build it),
# CARGO_TARGET_DIR (default target), OUT_DIR (where logs and results.jsonl go; default a tmp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-5000}
WARMUP=${WARMUP:-500}
MAX_SECONDS=${MAX_SECONDS:-20}
CLIENTS=${CLIENTS:-1,16,256}
MODES=${MODES:-unary,stream}
LITELLM_WORKERS=${LITELLM_WORKERS:-1}
VENV=.cache/litellm-venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"

# shellcheck source=benches/background.sh
. benches/background.sh

if [ -z "${BIN:-}" ]; then
  log "building gateway_bench (release)"
  cargo build --release -q -p adaptive-gateway --example gateway_bench
  BIN=$CARGO_TARGET_DIR/release/examples/gateway_bench
fi

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
start_server fake "$BIN" fake
FAKE_URL=$SERVER_URL
start_server gateway "$BIN" gateway --upstream "$FAKE_URL" --listen 127.0.0.1:0
GATEWAY_URL=$SERVER_URL
start_server relay "$BIN" relay --upstream "$FAKE_URL" --listen 127.0.0.1:0
RELAY_URL=$SERVER_URL
log "fake harmony at $FAKE_URL, gateway at $GATEWAY_URL, tcp relay at $RELAY_URL"

TARGETS=(--target "direct=$FAKE_URL/v1" --target "tcp-relay=$RELAY_URL/v1")
if [ "${SKIP_NGINX:-0}" != 1 ] && start_nginx "$FAKE_URL"; then
  TARGETS+=(--target "nginx=$NGINX_URL/v1")
elif [ "${SKIP_NGINX:-0}" = 1 ]; then
  log "nginx not measured (SKIP_NGINX=1)"
fi
TARGETS+=(--target "gateway=$GATEWAY_URL/v1")
LITELLM_NOTE=""
if [ "${SKIP_LITELLM:-0}" != 1 ]; then
  if [ ! -x "$VENV/bin/litellm" ]; then
    log "installing litellm[proxy] into $VENV"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'litellm[proxy]'; } >"$OUT_DIR/litellm-install.log" 2>&1; then
      LITELLM_NOTE="litellm[proxy] could not be installed: $(tail -n 3 "$OUT_DIR/litellm-install.log" | tr '\n' ' ')"
    fi
  fi
  if [ -z "$LITELLM_NOTE" ]; then
    LITELLM_PORT=$(free_port)
    cat >"$OUT_DIR/litellm.yaml" <<YAML
model_list:
  - model_name: proj
    litellm_params:
      model: openai/chat-model
      api_base: $FAKE_URL/v1
      api_key: dummy-key
litellm_settings:
  telemetry: false
  set_verbose: false
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: sk-bench-0123456789abcdef0123456789abcdef
YAML
    # No DATABASE_URL: no spend logs, no prisma. Local cost map: no fetch at start.
    env -u DATABASE_URL LITELLM_TELEMETRY=False LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR \
      "$VENV/bin/litellm" --config "$OUT_DIR/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
      --num_workers "$LITELLM_WORKERS" >"$OUT_DIR/litellm.out" 2>"$OUT_DIR/litellm.err" &
    PIDS+=($!)
    LITELLM_URL=http://127.0.0.1:$LITELLM_PORT
    ready=0
    for _ in $(seq 1 1500); do
      if curl -sf "$LITELLM_URL/health/liveliness" >/dev/null 2>&1; then
        ready=1
        break
      fi
      sleep 0.2
    done
    if [ "$ready" = 1 ]; then
      log "litellm $("$VENV/bin/pip" show litellm 2>/dev/null | sed -n 's/^Version: //p') at $LITELLM_URL ($LITELLM_WORKERS worker(s))"
      TARGETS+=(--target "litellm=$LITELLM_URL/v1")
    else
      LITELLM_NOTE="litellm did not become ready within 300 s: $(tail -n 3 "$OUT_DIR/litellm.err" | tr '\n' ' ')"
    fi
  fi
fi
[ -n "$LITELLM_NOTE" ] && log "$LITELLM_NOTE"

"$BIN" load "${TARGETS[@]}" --clients "$CLIENTS" --modes "$MODES" --requests "$REQUESTS" \
  --warmup "$WARMUP" --max-seconds "$MAX_SECONDS" --json "$OUT_DIR/results.jsonl" >"$OUT_DIR/table.md"

cleanup
PIDS=()
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
log "$(cat "$OUT_DIR/gateway.err")"
log "results in $OUT_DIR"
cat "$OUT_DIR/table.md"
[ -n "$LITELLM_NOTE" ] && echo && echo "LiteLLM not measured: $LITELLM_NOTE"
exit 0
