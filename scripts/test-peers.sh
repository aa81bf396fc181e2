#!/usr/bin/env bash
# Runs Marina's real-client peer tests, stopping at the first failing stage:
#   1. scripts/install-test-deps.sh     (redis, node_modules, Python venv)
#   2. pytest tests/peers/python        (official Python SDK client; memory + Redis stores)
#   3. node --test tests/peers/node/    (official TypeScript SDK clients v1 and v2, system Node)
#   4. tests/peers/conformance/run.sh   (MCP conformance suite vs baseline.yml)
#   5. tests/peers/conformance/cluster-2026.sh (conformance 0.2.0-alpha.12, --requirements
#      2026-07-28 vs baseline-2026-07-28.yml and 2025-11-25 complete, through two marina nodes on
#      one Redis behind HAProxy round robin, in front of the TS SDK v2 upstream)
# Needs a built marina: target/debug/marina, or MARINA_BIN.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export MARINA_BIN=${MARINA_BIN:-$REPO/target/debug/marina}
MARINA_BIN=$(realpath -m "$MARINA_BIN")

stage() { printf '\n=== test-peers: %s\n' "$1"; }
fail() { printf '\n*** test-peers: FAILED in stage: %s\n' "$1" >&2; exit 1; }

[[ -x $MARINA_BIN ]] || fail "prerequisites (no marina binary at $MARINA_BIN; run cargo build first)"

stage "install test dependencies"
bash scripts/install-test-deps.sh || fail "install test dependencies"

stage "pytest (Python SDK client)"
(cd tests/peers/python && .venv/bin/python -m pytest -q) || fail "pytest (Python SDK client)"

stage "node --test (TypeScript SDK client)"
node --test tests/peers/node/ || fail "node --test (TypeScript SDK client)"

stage "conformance suite"
bash tests/peers/conformance/run.sh || fail "conformance suite"

stage "conformance suite 0.2 (2026-07-28 and 2025-11-25) through a two-node cluster"
bash tests/peers/conformance/cluster-2026.sh || fail "conformance suite 0.2 through a two-node cluster"

printf '\n=== test-peers: all stages passed\n'
