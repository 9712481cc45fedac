#!/usr/bin/env bash
# Drive the control plane's management API through the real adaptive-sdk Python client.
#
# Creates (once) a virtual environment in .cache/sdk-venv with tests/python/requirements.txt,
# builds the `adaptive` binary unless ADAPTIVE_BIN names one, and runs pytest. The tests start
# `adaptive control-plane` on free ports against SQLite and against the PostgreSQL server at
# ADAPTIVE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SDK_VENV:-$root/.cache/sdk-venv}"
# Reinstall when requirements.txt changes (the stamp holds the digest it was installed from).
requirements="$root/tests/python/requirements.txt"
digest="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/pytest" ] || [ "$(cat "$venv/.requirements-digest" 2>/dev/null)" != "$digest" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$requirements"
    echo "$digest" > "$venv/.requirements-digest"
fi
export PATH="$venv/bin:$PATH"
if [ -z "${ADAPTIVE_BIN:-}" ]; then
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
    cargo build --quiet -p adaptive-cli --manifest-path "$root/Cargo.toml"
    export ADAPTIVE_BIN="$target_dir/debug/adaptive"
fi
exec "$venv/bin/pytest" -q "$root/tests/python" "$@"
