#!/usr/bin/env bash
# Dashboards and Prometheus rules, offline: the committed JSON and rule files equal a fresh
# generation; promtool (Debian's prometheus package) checks the rules and every dashboard
# expression, and runs the alert fixtures (rules.test.yaml); pytest runs the dashboard lint
# (grafana/dashboard-linter's rules, the metrics contract), the rule conventions and the unit
# tests of check_live.py; then live_smoke.sh runs every panel and rule on a real Prometheus
# scraping synthetic nodes. Needs what scripts/install-test-deps.sh installs (prometheus, promtool and
# tests/dashboards/.venv).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
PY=$REPO/tests/dashboards/.venv/bin/python
step() { printf '\n-- %s\n' "$*"; }

if [[ ! -x $PY ]] || ! command -v promtool >/dev/null 2>&1; then
  echo "tests/dashboards/run.sh: run scripts/install-test-deps.sh first (needs promtool and tests/dashboards/.venv)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "the committed dashboards and rule files equal a fresh generation"
"$PY" dashboards/generate.py --check
"$PY" dashboards/rules.py --check

step "promtool check rules"
promtool check rules dashboards/prometheus/marina-rules.yaml helm/marina/files/prometheus-rules.yaml

step "every dashboard target parses with Prometheus' parser (promtool check rules)"
(cd tests/dashboards && "$PY" dashboard_exprs.py) >"$tmp/dashboard-targets.yaml"
promtool check rules "$tmp/dashboard-targets.yaml"

step "promtool test rules (every alert fires where it should and stays silent where it should not)"
promtool test rules tests/dashboards/rules.test.yaml

step "dashboard lint, rule conventions, check_live unit tests (pytest)"
cd tests/dashboards
"$PY" -m pytest -q -p no:cacheprovider .

step "the dashboards and rules on a real Prometheus scraping synthetic nodes (live_smoke.sh)"
cd "$REPO"
bash tests/dashboards/live_smoke.sh
