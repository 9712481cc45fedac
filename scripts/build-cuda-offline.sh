#!/usr/bin/env bash
# Builds the engine's `cuda` feature on a machine with no GPU and no system CUDA toolkit.
#
# The toolkit comes from NVIDIA's PyPI wheels (fetched with `pip download`, unpacked, never
# installed) and is assembled under .cache/cuda/root, a directory laid out like
# /usr/local/cuda. Idempotent: wheels already downloaded and a root already assembled are kept.
#
#   scripts/build-cuda-offline.sh                         # cargo build -p adaptive-engine-models --features cuda
#   scripts/build-cuda-offline.sh build -p adaptive-harmony --features cuda
#   scripts/build-cuda-offline.sh test -p adaptive-engine-models --features cuda --no-run
#   source <(scripts/build-cuda-offline.sh --print-env)   # only assemble the root and print the env
#   scripts/build-cuda-offline.sh --gpu-bundle            # binaries + model for a lent GPU machine
#
# Arguments, if any, replace the default cargo arguments. CARGO_TARGET_DIR defaults to
# target-cuda, so a CUDA build never invalidates the CPU build's artifacts in target/.
#
# Why CUDA 13.0: our GPU test machines (H100/H200) run driver 580 (CUDA 13.0) with CUDA 13
# libraries in their image. candle loads its kernels as PTX that the driver JIT-compiles, and a
# driver rejects PTX from a newer toolkit than its own, so the PTX must come from nvcc <= 13.0;
# and the binary links the libraries by soname (libcublas.so.13, libcurand.so.10,
# libnvrtc.so.13, libcudart.so.13), which must be the ones the GPU machine has. CUDA_WHEELS_*
# below pick other 13.x versions; CUDA 12's wheels (*-cu12) use another layout (one
# nvidia/<package>/ directory each) that this script does not assemble.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Pinned wheel versions (the CUDA 13.0 release). Each wheel unpacks into nvidia/cu13/{bin,include,lib,...}.
#   nvcc:    nvcc, ptxas, cudafe++, fatbinary, nvlink: candle-kernels' build.rs (bindgen_cuda) runs
#            `nvcc --ptx` for every kernel and `nvcc -c`/`nvcc --lib` for the MoE kernels (libmoe.a);
#            cudarc's build.rs runs `nvcc --version` to choose its CUDA API version (the
#            `cuda-version-from-build-system` feature candle-core turns on).
#   nvvm:    cicc and libdevice, nvcc's device front end (nvcc fails without them).
#   crt:     include/crt/*.h, the host/device headers nvcc's own headers include.
#   runtime: cuda.h (bindgen_cuda only accepts a root whose include/cuda.h exists), cuda_runtime.h,
#            cuda_fp16/bf16/fp8.h that the kernels include, and libcudart.so.13 (candle-kernels
#            links `-lcudart`).
#   cccl:    include/cccl (<cuda/std/limits> in reduce.cu); nvcc adds it to the include path.
#   nvrtc, curand, cublas: libnvrtc.so.13, libcurand.so.10, libcublas.so.13, libcublasLt.so.13,
#            which cudarc links (`dynamic-linking`, forced by candle-core) into every binary.
nvcc_ver=${CUDA_WHEELS_NVCC:-13.0.88}
runtime_ver=${CUDA_WHEELS_RUNTIME:-13.0.96}
cccl_ver=${CUDA_WHEELS_CCCL:-13.0.85}
curand_ver=${CUDA_WHEELS_CURAND:-10.4.0.35}
cublas_ver=${CUDA_WHEELS_CUBLAS:-13.0.2.14}
wheels=(
  "nvidia-cuda-nvcc==$nvcc_ver"
  "nvidia-nvvm==$nvcc_ver"
  "nvidia-cuda-crt==$nvcc_ver"
  "nvidia-cuda-runtime==$runtime_ver"
  "nvidia-cuda-cccl==$cccl_ver"
  "nvidia-cuda-nvrtc==$nvcc_ver"
  "nvidia-curand==$curand_ver"
  "nvidia-cublas==$cublas_ver"
)

cache=$repo/.cache/cuda
root=$cache/root
stamp="$root/.assembled-$(printf '%s\n' "${wheels[@]}" | sha256sum | cut -c1-16)"

log() { echo "build-cuda-offline: $*" >&2; }

assemble() {
  mkdir -p "$cache/wheels"
  # 1. Fetch the wheels (only the missing ones; pip keeps what is already in the directory).
  local missing=()
  for spec in "${wheels[@]}"; do
    local name=${spec%%==*} ver=${spec##*==}
    local file_prefix
    file_prefix="$(echo "$name" | tr - _)-$ver-"
    if ! ls "$cache/wheels/$file_prefix"*.whl >/dev/null 2>&1; then missing+=("$spec"); fi
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "downloading ${missing[*]}"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
      --python-version 3.11 -d "$cache/wheels" "${missing[@]}"
  fi

  # 2. Unpack them over one another: together they form a toolkit root.
  log "assembling $root"
  rm -rf "$root" "$cache/unpack"
  mkdir -p "$cache/unpack"
  for spec in "${wheels[@]}"; do
    local name=${spec%%==*} ver=${spec##*==}
    local file_prefix
    file_prefix="$(echo "$name" | tr - _)-$ver-"
    python3 -m zipfile -e "$(ls "$cache/wheels/$file_prefix"*.whl | head -n1)" "$cache/unpack"
  done
  mv "$cache/unpack/nvidia/cu13" "$root"
  rm -rf "$cache/unpack"
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* # zip extraction drops the execute bits

  # 3. nvcc.profile looks for headers and libraries in $TOP/targets/x86_64-linux/{include,lib},
  #    the layout of a real toolkit; the wheels put them in $TOP/{include,lib}.
  mkdir -p "$root/targets/x86_64-linux"
  ln -s ../../include "$root/targets/x86_64-linux/include"
  ln -s ../../lib "$root/targets/x86_64-linux/lib"
  ln -s lib "$root/lib64"

  # 4. The linker resolves `-lcudart`, `-lcublas`, ... through the unversioned names, which only a
  #    toolkit's -dev packages ship; the binary still records the versioned sonames.
  (cd "$root/lib" && for so in lib*.so.*; do
    base=${so%%.so.*}.so
    case "$base" in *.alt.so | libnvrtc-builtins*) continue ;; esac
    [ -e "$base" ] || ln -s "$so" "$base"
  done)

  # 5. libcuda.so belongs to the driver, not to any wheel; a toolkit ships a stub of it in
  #    lib/stubs for linking on machines without a driver. Make one: every function cuda.h (and
  #    cudaProfiler.h) declare (before and after macro expansion: cudarc calls cuMemAlloc_v2 where
  #    the header says cuMemAlloc), as an empty function, in a library named like the driver's (libcuda.so.1), so
  #    the GPU machine's real driver library is the one loaded at run time.
  mkdir -p "$root/lib/stubs"
  {
    echo '/* generated by scripts/build-cuda-offline.sh: link-time stub of the CUDA driver API */'
    {
      for defs in "" "-DCUDA_API_PER_THREAD_DEFAULT_STREAM"; do
        # shellcheck disable=SC2086 # $defs is one flag or none
        echo '#include "cuda.h"' | cc -E -P $defs -I"$root/include" -x c -
      done
      cat "$root/include/cuda.h" # the names before the _v2 renames too
      # cudaProfiler.h, which cudarc's bindings also cover, is in none of the wheels; its functions:
      echo 'cuProfilerInitialize( cuProfilerStart( cuProfilerStop('
    } | grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d '( \t' | sort -u |
      sed 's/.*/int &(void) { return 999; }/'
  } >"$root/lib/stubs/libcuda.c"
  cc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda.c"
  # Under its run-time name too, so that a cuda-feature binary starts on this machine (with
  # LD_LIBRARY_PATH=$root/lib:$root/lib/stubs) and runs its CPU paths; asking it for a CUDA
  # device then fails cleanly (every stub returns CUDA_ERROR_UNKNOWN). Never put lib/stubs on
  # the library path of a machine with a driver.
  ln -sf libcuda.so "$root/lib/stubs/libcuda.so.1"

  "$root/bin/nvcc" --version >/dev/null
  touch "$stamp"
}

[ -e "$stamp" ] || assemble

# bindgen_cuda and cudarc find the toolkit through CUDA_ROOT/CUDA_PATH/CUDA_HOME (their include/cuda.h,
# their lib and lib/stubs); nvcc must be on PATH. CUDA_COMPUTE_CAP=90 (H100/H200) keeps
# bindgen_cuda from running nvidia-smi, which fails without a GPU.
export CUDA_ROOT=$root CUDA_PATH=$root CUDA_HOME=$root
export PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target-cuda}

# --gpu-bundle: what a session with a lent GPU machine (no Rust toolchain, no network there, 64 MiB
# carried per call) needs to run the exactness tests and the benchmark on the GPU, built here:
# .cache/cuda/gpu-bundle/call1 (the binaries, stripped and compressed, the first part of the
# SmolLM2 model, run.sh) and call2 (the rest of the model). See run.sh's header for the calls.
gpu_bundle() {
  local out=$cache/gpu-bundle stage=$cache/gpu-bundle-stage
  rm -rf "$out" "$stage"
  mkdir -p "$out/call1" "$out/call2" "$stage"
  nice cargo build -p adaptive-engine-models --features cuda --example bench_decode
  local tests
  tests=$(nice cargo test -p adaptive-engine-models --features cuda --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "models":
        print(m["executable"])')
  cp "$tests" "$stage/models"
  cp "$CARGO_TARGET_DIR/debug/examples/bench_decode" "$stage/bench_decode"
  strip "$stage/models" "$stage/bench_decode"
  tar -C "$stage" -cJf "$out/call1/bins.tar.xz" models bench_decode
  rm -rf "$stage"
  local model=models/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -f "$model" ] || scripts/fetch-model.sh
  local budget=$((56 << 20)) # per call, with the tracked tree (a few MiB) beside it
  local first=$((budget - $(stat -c %s "$out/call1/bins.tar.xz")))
  head -c "$first" "$model" >"$out/call1/model.part1"
  tail -c +$((first + 1)) "$model" >"$out/call2/model.part2"
  sha256sum "$model" | cut -d' ' -f1 >"$out/call1/model.sha256"
  write_run_sh | sed "s|@REPO@|$repo|g" >"$out/call1/run.sh"
  chmod +x "$out/call1/run.sh"
  du -sh "$out"/call1 "$out"/call2 >&2
}

write_run_sh() {
  cat <<'RUN'
#!/usr/bin/env bash
# Runs on a lent GPU machine, from the repository root, the bundle that
# `scripts/build-cuda-offline.sh --gpu-bundle` built. Two calls of the device tool, back to back
# (the machine keeps the first call's files only while warm, 30 s):
#   1. carry [".cache/cuda/gpu-bundle/call1"]: bash .cache/cuda/gpu-bundle/call1/run.sh tests
#      (the tiny-model exactness tests, generic path on the GPU vs the CPU reference)
#   2. carry [".cache/cuda/gpu-bundle/call2"]: bash .cache/cuda/gpu-bundle/call1/run.sh smollm
#      (SmolLM2 on the GPU against candle's quantized_llama on the CPU, then the benchmark)
# Logs go to $OUT when the tool sets it.
set -uo pipefail
bundle=.cache/cuda/gpu-bundle
bin=/tmp/engine-gpu
out=${OUT:-/tmp}
if [ ! -x "$bin/models" ]; then
  mkdir -p "$bin" && tar -C "$bin" -xJf "$bundle/call1/bins.tar.xz" || exit 1
fi
# The binaries need the CUDA 13 libraries (libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libnvrtc.so.13, libcudart.so.13) and the driver's libcuda.so.1: the image's toolkit, or the
# nvidia wheels of its Python.
dirs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 2>/dev/null)
dirs="$dirs $(python3 -c 'import os, nvidia
print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null)"
for d in $dirs; do [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"; done
export LD_LIBRARY_PATH
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv
if ldd "$bin/models" | grep 'not found'; then echo "missing libraries (LD_LIBRARY_PATH=$LD_LIBRARY_PATH)"; exit 1; fi
export ENGINE_TEST_DEVICE=cuda RUST_BACKTRACE=1
case "${1:-tests}" in
  tests)
    # The tests' own tempdirs hold the tiny models; `reference::` needs no file.
    "$bin/models" reference:: --test-threads=4 2>&1 | tee "$out/tests.log"
    ;;
  smollm)
    # The tests look for the model where it was at build time (the build machine's checkout).
    mkdir -p @REPO@/models && model=@REPO@/models/SmolLM2-135M-Instruct.Q4_1.gguf
    cat "$bundle/call1/model.part1" "$bundle/call2/model.part2" >"$model"
    [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$(cat "$bundle/call1/model.sha256")" ] || { echo "model checksum mismatch"; exit 1; }
    "$bin/models" smollm::smollm_gguf_matches_candle_quantized_llama 2>&1 | tee "$out/smollm.log"
    for args in "1,8,32 32 cuda" "1,8,32 32 cuda --f32" "1,8 16 cpu"; do
      # shellcheck disable=SC2086 # the arguments are words
      "$bin/bench_decode" "$model" $args 2>&1 | tee -a "$out/bench.log"
    done
    ;;
esac
RUN
}

if [ "${1:-}" = "--gpu-bundle" ]; then
  gpu_bundle
  exit 0
fi

if [ "${1:-}" = "--print-env" ]; then
  for v in CUDA_ROOT CUDA_PATH CUDA_HOME PATH CUDA_COMPUTE_CAP CARGO_TARGET_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

if [ $# -eq 0 ]; then
  set -- build -p adaptive-engine-models --features cuda
fi
log "cargo $* (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
exec nice cargo "$@"
