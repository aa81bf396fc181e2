#!/usr/bin/env bash
# Installs what the real-client peer tests (tests/peers) need. Idempotent and quiet: prints
# nothing when everything is already in place, and a step's full output only when it fails.
#
#   - redis-server (apt, needs root) for the Redis-backed store tests
#   - haproxy (apt, needs root): the round-robin load balancer of conformance/cluster-2026.sh
#   - prometheus (apt, needs root): its promtool checks the /metrics scrape (tests/it/metrics.rs)
#   - tests/peers/node/node_modules  (npm ci from the lockfile; includes a local Node 22)
#   - tests/peers/upstream/node_modules (npm ci from the lockfile; the test upstream MCP server)
#   - tests/peers/upstream-v2/node_modules (npm ci from the lockfile; the TS SDK v2 test upstream,
#     plus the 0.2.0-alpha.12 conformance suite and a local Node 22 for conformance/run-2026.sh)
#   - tests/peers/oidc/node_modules     (npm ci from the lockfile; oidc-provider, a real OAuth issuer)
#   - tests/peers/python/.venv       (python3 -m venv + pip install -r requirements.txt)
#   - tests/peers/schemathesis/.venv (the same, for schemathesis: the admin API's OpenAPI check)
#   - promtool (apt `prometheus`, needs root): rule checks and rule unit tests (tests/dashboards)
#   - tests/dashboards/.venv (grafana-foundation-sdk, promql-parser, pytest: dashboards/rules)
#   - the Helm chart's test tools (tests/helm/run.sh), cached in $MARINA_TOOLS (default
#     ~/.cache/marina-tools): helm v3.22.0 and tests/helm/crdcheck built with `go install`
#     (Go module proxy), kubernetes-validate from PyPI in a venv (its bundled schemas)
#
# node_modules and .venv each carry a .deps-stamp with the hash of the files they were
# installed from, so a changed lockfile / requirements.txt triggers a reinstall.
# Only the package registries are contacted (Debian apt, npm, PyPI, the Go module proxy).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE_DIR=$REPO/tests/peers/node
UPSTREAM_DIR=$REPO/tests/peers/upstream
UPSTREAM_V2_DIR=$REPO/tests/peers/upstream-v2
OIDC_DIR=$REPO/tests/peers/oidc
PY_DIR=$REPO/tests/peers/python
VENV=$PY_DIR/.venv
ST_DIR=$REPO/tests/peers/schemathesis

# Run a command with its output captured; show the output only if it fails.
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "install-test-deps: FAILED ($rc): $*" >&2
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$rc"
}

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to apt-get install $* (or install them yourself)" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Try with the current package lists first; refresh them only if that fails.
  apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  quiet apt-get update -q
  quiet apt-get install -y -q --no-install-recommends "$@"
}

stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- redis ---------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server redis-tools
fi

# --- haproxy (per-request load balancer in front of a two-node cluster) ----------------------
if ! command -v haproxy >/dev/null 2>&1; then
  apt_install haproxy
fi

# --- promtool (`promtool check metrics` on a live scrape) --------------------------------------
if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi

# --- node: conformance suite, TS SDK, local Node 22 ----------------------------------------
command -v npm >/dev/null 2>&1 || { echo "install-test-deps: npm not found (need Node >= 20)" >&2; exit 1; }
node_want=$( (cat "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)
node_stamp=$NODE_DIR/node_modules/.deps-stamp
if [[ ! -f $node_stamp || $(cat "$node_stamp") != "$node_want" ]]; then
  # `node@22` installs its binary from the npm registry in a preinstall script, so scripts
  # must not be disabled here.
  quiet npm ci --prefix "$NODE_DIR" --no-audit --no-fund --ignore-scripts=false
  echo "$node_want" >"$node_stamp"
fi
if ! "$NODE_DIR/node_modules/.bin/node" --version 2>/dev/null | grep -q '^v22\.'; then
  echo "install-test-deps: tests/peers/node/node_modules/.bin/node is not Node 22 (conformance needs it)" >&2
  rm -f "$node_stamp"
  exit 1
fi

# --- node: test upstream MCP server (TS SDK, conformance naming contract) -------------------
upstream_want=$( (cat "$UPSTREAM_DIR/package.json" "$UPSTREAM_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)
upstream_stamp=$UPSTREAM_DIR/node_modules/.deps-stamp
if [[ ! -f $upstream_stamp || $(cat "$upstream_stamp") != "$upstream_want" ]]; then
  quiet npm ci --prefix "$UPSTREAM_DIR" --no-audit --no-fund
  echo "$upstream_want" >"$upstream_stamp"
fi

# --- node: test upstream MCP server on the TS SDK v2 (both protocol eras) + conformance 0.2 ---
upstream_v2_want=$( (cat "$UPSTREAM_V2_DIR/package.json" "$UPSTREAM_V2_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)
upstream_v2_stamp=$UPSTREAM_V2_DIR/node_modules/.deps-stamp
if [[ ! -f $upstream_v2_stamp || $(cat "$upstream_v2_stamp") != "$upstream_v2_want" ]]; then
  # Its devDependency `node@22` installs its binary in a preinstall script (see above).
  quiet npm ci --prefix "$UPSTREAM_V2_DIR" --no-audit --no-fund --ignore-scripts=false
  echo "$upstream_v2_want" >"$upstream_v2_stamp"
fi
if ! "$UPSTREAM_V2_DIR/node_modules/.bin/node" --version 2>/dev/null | grep -q '^v22\.'; then
  echo "install-test-deps: tests/peers/upstream-v2/node_modules/.bin/node is not Node 22 (conformance 0.2 needs it)" >&2
  rm -f "$upstream_v2_stamp"
  exit 1
fi

# --- node: a real OAuth authorization server (oidc-provider) for the authentication tests ----
oidc_want=$( (cat "$OIDC_DIR/package.json" "$OIDC_DIR/package-lock.json"; node --version) | sha256sum | cut -d' ' -f1)
oidc_stamp=$OIDC_DIR/node_modules/.deps-stamp
if [[ ! -f $oidc_stamp || $(cat "$oidc_stamp") != "$oidc_want" ]]; then
  quiet npm ci --prefix "$OIDC_DIR" --no-audit --no-fund
  echo "$oidc_want" >"$oidc_stamp"
fi

# --- python: official MCP SDK client + pytest ----------------------------------------------
command -v python3 >/dev/null 2>&1 || apt_install python3
# Debian's python3 ships venv/ensurepip separately.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_install python3-venv
fi
# A venv at $1 holding exactly $2 (a requirements file), reinstalled when either changes (or any
# further file given, e.g. one that $2 includes with -r).
venv_install() {
  local venv=$1 req=$2 want stamp
  want=$( (cat "$req" "${@:3}"; python3 --version) | sha256sum | cut -d' ' -f1)
  stamp=$venv/.deps-stamp
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    # A venv made by another python (or half-made) is rebuilt from scratch.
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1 \
       || [[ $("$venv/bin/python" --version 2>&1) != "$(python3 --version 2>&1)" ]]; then
      rm -rf "$venv"
      quiet python3 -m venv "$venv"
    fi
    quiet "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    echo "$want" >"$stamp"
  fi
}
venv_install "$VENV" "$PY_DIR/requirements.txt"

# --- python: schemathesis, in its own venv (its dependencies never move the SDK's pins) ------
venv_install "$ST_DIR/.venv" "$ST_DIR/requirements.txt"

# --- promtool (Debian's prometheus package) and the dashboards' Python tools -----------------
if ! command -v promtool >/dev/null 2>&1; then
  apt_install prometheus
fi
venv_install "$REPO/tests/dashboards/.venv" "$REPO/tests/dashboards/requirements.txt" \
  "$REPO/dashboards/requirements.txt"
# --- Helm chart tests: helm, kubernetes-validate, crdcheck (tests/helm/run.sh) ---------------
# Cached outside the repo, keyed by version (and for crdcheck by the hash of its sources), so a
# second run does nothing. Cold (empty Go caches): helm ~6 min of CPU (11.5 min on two busy
# cores), crdcheck ~1.5 min, kubernetes-validate ~45 s; with warm Go caches all three ~1 min.
TOOLS=${MARINA_TOOLS:-$HOME/.cache/marina-tools}
HELM_VERSION=v3.22.0
KUBERNETES_VALIDATE_VERSION=1.37.0
mkdir -p "$TOOLS/bin"
# helm v3.22.0 needs Go >= 1.26 (Debian's golang-go is older): the machine's Go toolchain.
if ! command -v go >/dev/null 2>&1 || ! go version | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
  echo "install-test-deps: the Helm chart tests need Go >= 1.26 on PATH to build helm (found: $(go version 2>&1))" >&2
  exit 1
fi
if [[ ! -x $TOOLS/bin/helm ]] || ! "$TOOLS/bin/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  GOBIN=$TOOLS/bin GOFLAGS=-buildvcs=false quiet nice -n 10 go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
crdcheck_want=$( (cat "$REPO"/tests/helm/crdcheck/go.mod "$REPO"/tests/helm/crdcheck/go.sum "$REPO"/tests/helm/crdcheck/*.go; go version) | sha256sum | cut -d' ' -f1)
if [[ ! -x $TOOLS/bin/crdcheck || ! -f $TOOLS/bin/.crdcheck-stamp || $(cat "$TOOLS/bin/.crdcheck-stamp") != "$crdcheck_want" ]]; then
  (cd "$REPO/tests/helm/crdcheck" && GOBIN=$TOOLS/bin GOFLAGS=-buildvcs=false quiet nice -n 10 go install .)
  echo "$crdcheck_want" >"$TOOLS/bin/.crdcheck-stamp"
fi
kv_req=$TOOLS/kubernetes-validate.requirements.txt
echo "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >"$kv_req"
venv_install "$TOOLS/kubernetes-validate" "$kv_req"
