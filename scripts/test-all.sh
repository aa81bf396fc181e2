#!/usr/bin/env bash
# Every test of Marina, from a fresh machine: installs what the tests need (Redis and HAProxy
# from apt, the Node and Python MCP clients, the conformance suites and schemathesis from
# npm/PyPI, promtool from apt), then checks the dashboards and alert rules (tests/dashboards),
# runs formatting and lint checks, the Rust unit and integration tests (which
# start their own redis-server and marina processes on free loopback ports), the real-client and
# conformance tests (conformance 0.1.16 against one node; 0.2.0-alpha.12, both requirement sets,
# through two nodes on one Redis behind a round-robin HAProxy), and schemathesis against the
# admin API's OpenAPI document, and the Helm chart's tests (lint, golden renders, offline schema
# validation, refused bad values).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# One-shot builds gain nothing from incremental compilation, and a reused target directory's
# incremental state has crashed rustc 1.95 (an ICE in `evaluate_obligation`).
export CARGO_INCREMENTAL=0
# Every node a test starts serves its admin API on a free port unless the test names one.
export MARINA__ADMIN__BIND=127.0.0.1:0

step() { printf '\n== %s\n' "$*"; }

step "installing test dependencies"
bash scripts/install-test-deps.sh

step "dashboards and Prometheus rules (generated files fresh, lint, promtool check/test rules)"
bash tests/dashboards/run.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building marina"
cargo build --bin marina --quiet
export MARINA_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/marina"

step "Rust unit and integration tests"
cargo test --workspace --quiet

step "the dashboards and rules on a live two-node cluster behind HAProxy, under scripts/load.py"
bash tests/dashboards/live_cluster.sh

step "real clients (Python and TypeScript SDKs) and the conformance suites (single node, and a two-node cluster)"
bash scripts/test-peers.sh

step "the admin API against its own OpenAPI document (schemathesis)"
bash tests/peers/schemathesis/run.sh

step "the Helm chart (helm lint/template, golden files, Kubernetes and prometheus-operator schemas)"
bash tests/helm/run.sh

step "all tests passed"
