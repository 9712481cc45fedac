#!/usr/bin/env bash
# Harmony against llama.cpp on the same GGUF, same machine, same run (issue 7, "Benchmark").
#
# 1. Builds llama-server and llama-bench (CPU only, -DGGML_NATIVE=ON, Release) from the full
#    llama.cpp tree vendored in the PyPI source package of llama-cpp-python $LLAMA_CPP_PYTHON
#    into .cache/llama-cpp (gitignored; skipped when the binaries exist), with cmake from its PyPI
#    wheel in .cache/llama-tools. Takes ~10 minutes on 2 cores.
# 2. Builds harmony's `serve` and `bench` examples: the library calls of `adaptive harmony` and
#    `adaptive bench` without the control plane the `adaptive` binary also carries (much quicker
#    to build). Dev profile, with the engine, engine-models and harmony crates at opt-level 3 like
#    their dependencies (no LTO).
# 3. In-process engine figures: `llama-bench` (pp512, tg$MAX_TOKENS) and the `bench` example
#    (`adaptive bench` defaults: prompt processing of 512 tokens, decode of 64 tokens at 1, 4, 16
#    and 64 sequences).
# 4. Over HTTP, one server at a time on 127.0.0.1, the same client for both
#    (benches/openai_stream_load.py: /v1/completions, raw prompt, greedy, ignore_eos, streamed):
#    single-stream decode, $STREAMS concurrent streams, TTFT of a 1000-token prompt, TTFT of
#    $STREAMS concurrent 512-token prompts. `adaptive harmony` first, then llama-server with
#    $STREAMS slots and continuous batching.
# Prints the load average before and after each phase and a summary table with the ratios.
#
# Environment: MODEL (default models/SmolLM2-135M-Instruct.Q4_1.gguf, fetched when missing),
# MAX_TOKENS (128), STREAMS (16), RUNS (3), THREADS (nproc), HTTP_BENCHES
# (single,parallel,ttft,ttft-load), SKIP_ENGINE=1 (skip step 3), CARGO_TARGET_DIR (target),
# OUT_DIR (logs and results.jsonl; default a tmp dir).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-0.3.36}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
MAX_TOKENS=${MAX_TOKENS:-128}
STREAMS=${STREAMS:-16}
RUNS=${RUNS:-3}
THREADS=${THREADS:-$(nproc)}
HTTP_BENCHES=${HTTP_BENCHES:-single,parallel,ttft,ttft-load}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT_DIR=${OUT_DIR:-$(mktemp -d)}
mkdir -p "$OUT_DIR"
LLAMA_DIR=.cache/llama-cpp
LLAMA_BIN=$LLAMA_DIR/build/bin

# shellcheck source=benches/background.sh
. benches/background.sh
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Polls "$1" until it answers 200 and its body contains "$2" (up to 10 minutes).
wait_for_http() {
  for _ in $(seq 1 3000); do
    if curl -sf "$1" 2>/dev/null | grep -q "$2"; then
      return 0
    fi
    sleep 0.2
  done
  log "no answer from $1"
  return 1
}

build_llama_cpp() {
  if [ -x "$LLAMA_BIN/llama-server" ] && [ -x "$LLAMA_BIN/llama-bench" ]; then
    return 0
  fi
  # cmake from its PyPI wheel; scikit-build-core lets pip read the sdist's metadata without
  # building cmake from source in an isolated environment.
  local tools=.cache/llama-tools
  if [ ! -x "$tools/bin/cmake" ]; then
    log "installing cmake and scikit-build-core (PyPI wheels) into $tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --only-binary :all: cmake scikit-build-core
  fi
  local cmake=$tools/bin/cmake
  mkdir -p "$LLAMA_DIR"
  local sdist=$LLAMA_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON.tar.gz
  if [ ! -f "$sdist" ]; then
    log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON sdist"
    "$tools/bin/pip" download --quiet --no-deps --no-binary :all: \
      --no-build-isolation "llama-cpp-python==$LLAMA_CPP_PYTHON" -d "$LLAMA_DIR"
  fi
  local source=$LLAMA_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON/vendor/llama.cpp
  [ -d "$source" ] || tar -xzf "$sdist" -C "$LLAMA_DIR"
  log "building llama-server and llama-bench (log: $LLAMA_DIR/build.log)"
  "$cmake" -S "$source" -B "$LLAMA_DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF >"$LLAMA_DIR/configure.log"
  "$cmake" --build "$LLAMA_DIR/build" --config Release -j "$(nproc)" \
    --target llama-server llama-bench >"$LLAMA_DIR/build.log"
}

[ -f "$MODEL" ] || ./scripts/fetch-model.sh
build_llama_cpp
log "building harmony's serve and bench examples (engine crates at opt-level 3)"
cargo build -q -p adaptive-harmony --example serve --example bench \
  --config 'profile.dev.package.adaptive-engine.opt-level=3' \
  --config 'profile.dev.package.adaptive-engine-models.opt-level=3' \
  --config 'profile.dev.package.adaptive-harmony.opt-level=3'
EXAMPLES=$CARGO_TARGET_DIR/debug/examples

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $(nproc) cpus"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB; kernel $(uname -r)"
  echo "llama.cpp: llama-cpp-python $LLAMA_CPP_PYTHON vendor tree, $("$LLAMA_BIN/llama-server" --version 2>&1 | grep -m1 -i version || true)"
  echo "model: $MODEL; threads: $THREADS; max_tokens: $MAX_TOKENS; streams: $STREAMS"
} | tee "$OUT_DIR/machine.txt" >&2

if [ "${SKIP_ENGINE:-0}" != 1 ]; then
  log "load average before llama-bench: $(loadavg)"
  "$LLAMA_BIN/llama-bench" -m "$MODEL" -t "$THREADS" -p 512 -n "$MAX_TOKENS" -r "$RUNS" -o md \
    | tee "$OUT_DIR/llama-bench.md" >&2
  log "load average before the harmony engine bench: $(loadavg)"
  "$EXAMPLES/bench" "$MODEL" ttft,prefix 2>/dev/null | tee "$OUT_DIR/harmony-bench.txt" >&2
  log "load average after: $(loadavg)"
fi

http_bench() {
  local server=$1 url=$2 model=$3
  log "load average before $server over HTTP: $(loadavg)"
  python3 benches/openai_stream_load.py --url "$url" --model "$model" --bench "$HTTP_BENCHES" \
    --max-tokens "$MAX_TOKENS" --streams "$STREAMS" --runs "$RUNS" \
    | sed -u "s/^{/{\"server\": \"$server\", /" | tee -a "$OUT_DIR/results.jsonl" >&2
  log "load average after $server over HTTP: $(loadavg)"
}

port=$(free_port)
HARMONY_MAX_RUNNING_SEQUENCES=$((STREAMS > 64 ? STREAMS : 64)) \
  "$EXAMPLES/serve" "127.0.0.1:$port" "smol=$MODEL" \
  >"$OUT_DIR/harmony.out" 2>"$OUT_DIR/harmony.err" &
PIDS+=($!)
wait_for_http "http://127.0.0.1:$port/v1/models" '"smol"'
http_bench harmony "http://127.0.0.1:$port" smol
cleanup

port=$(free_port)
# One slot per stream, each with room for the ~1000-token prompt plus max_tokens.
"$LLAMA_BIN/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$port" -t "$THREADS" \
  -np "$STREAMS" -c $((STREAMS * 2048)) --cont-batching \
  >"$OUT_DIR/llama-server.out" 2>"$OUT_DIR/llama-server.err" &
PIDS+=($!)
wait_for_http "http://127.0.0.1:$port/health" 'ok'
http_bench llama-server "http://127.0.0.1:$port" smol
cleanup

log "results in $OUT_DIR"
python3 - "$OUT_DIR/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {(r["server"], r["bench"]): r for r in rows}
metrics = [
    ("single", "decode_tok_s_median", "single-stream decode tok/s (median)", True),
    ("parallel", "aggregate_decode_tok_s", "concurrent streams, aggregate decode tok/s", True),
    ("parallel", "end_to_end_tok_s", "concurrent streams, end-to-end tok/s", True),
    ("ttft", "ttft_s_median", "TTFT 1000-token prompt, s (median)", False),
    ("ttft-load", "ttft_s_p50", "TTFT concurrent 512-token prompts, p50 s", False),
    ("ttft-load", "ttft_s_p90", "TTFT concurrent 512-token prompts, p90 s", False),
]
# Speed ratio: above 1, harmony is faster (more tokens/s, or a shorter TTFT).
print("| measure | harmony | llama-server | harmony speed ÷ llama-server's |")
print("|---|---:|---:|---:|")
for bench, key, label, higher_is_better in metrics:
    ours, theirs = by.get(("harmony", bench)), by.get(("llama-server", bench))
    if not ours or not theirs:
        continue
    a, b = ours[key], theirs[key]
    ratio = a / b if higher_is_better else b / a
    print(f"| {label} | {a} | {b} | {ratio:.2f}× |")
PY
