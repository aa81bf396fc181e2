#!/usr/bin/env bash
# The dashboards and rules on real Marina nodes: scripts/cluster.sh starts two nodes behind
# HAProxy with Redis, acme's upstream MCP server and Debian's Prometheus (rules loaded, 2 s
# scrapes); scripts/load.py drives every kind of traffic and disruption through the balancer
# (sessions, streams, replays, stateless and listen requests, errors, auth failures, denials,
# limits, a control-plane change, a drain, an upstream outage, a node kill, a Redis stall); then
# check_live.py runs every target of every dashboard panel (variables "All", then tenant=acme)
# and every rule expression: each must return data, every alert's selectors must match live
# series, and every loaded rule must be healthy.
#
#   MARINA_BIN=target/debug/marina bash tests/dashboards/live_cluster.sh
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
PY=$REPO/tests/dashboards/.venv/bin/python
[[ -x $PY ]] || { echo "live_cluster.sh: run scripts/install-test-deps.sh first" >&2; exit 1; }
[[ -x ${MARINA_BIN:-} ]] || { echo "live_cluster.sh: set MARINA_BIN to a built marina" >&2; exit 1; }

export MARINA_CLUSTER_DIR
MARINA_CLUSTER_DIR=$(mktemp -d)
cleanup() {
  local rc=$?
  if ((rc != 0)); then
    echo "live_cluster.sh: failed; the nodes' last log lines:" >&2
    tail -n 20 "$MARINA_CLUSTER_DIR"/n*.log >&2 2>/dev/null || true
  fi
  bash scripts/cluster.sh down >/dev/null 2>&1 || true
  rm -rf "$MARINA_CLUSTER_DIR"
}
trap cleanup EXIT

bash scripts/cluster.sh up --nodes 2 >/dev/null
# shellcheck disable=SC1091
source "$MARINA_CLUSTER_DIR/cluster.env"
python3 scripts/load.py --seconds 40

# Wait (bounded) until Prometheus has scraped what the last disruptions left (store errors, the
# kill's takeovers) and evaluated the slowest recording rules over it.
ready=
for _ in $(seq 1 60); do
  if "$PY" - "$PROM_URL" <<'PY'
import json, sys, urllib.parse, urllib.request
queries = [
    'count(marina_store_errors_total) and count(marina_session_takeovers_total{reason!="drain"})',
    "count(namespace_tenant:mcp_server_operation_errors:ratio_rate3d)",
    'count(up{job="marina"} == 1) == 2',
]
try:
    for q in queries:
        url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=2) as r:
            if not json.load(r)["data"]["result"]:
                sys.exit(1)
except Exception:
    sys.exit(1)
PY
  then ready=1; break; fi
  sleep 1
done
[[ -n $ready ]] || echo "live_cluster.sh: Prometheus never had every expected series; check_live.py says which" >&2

status=0
"$PY" tests/dashboards/check_live.py --prometheus "$PROM_URL" --scrape-interval 2s --range 5m || status=1
"$PY" tests/dashboards/check_live.py --prometheus "$PROM_URL" --scrape-interval 2s --range 5m \
  --var tenant=acme || status=1

# `cluster.sh down` leaves nothing behind: no process it started, no port it listened on.
pids=$(cat "$MARINA_CLUSTER_DIR"/*.pid 2>/dev/null || true)
ports=$(grep -o '_PORT=[0-9]*' "$MARINA_CLUSTER_DIR/ports.env" | cut -d= -f2)
bash scripts/cluster.sh down >/dev/null
left=
for _ in $(seq 1 50); do
  left=
  for pid in $pids; do kill -0 "$pid" 2>/dev/null && left+=" process $pid"; done
  for port in $ports; do ss -ltnH "sport = :$port" | grep -q . && left+=" port $port"; done
  [[ -z $left ]] && break
  sleep 0.2
done
if [[ -n $left ]]; then
  echo "live_cluster.sh: scripts/cluster.sh down left$left" >&2
  status=1
else
  echo "live_cluster.sh: cluster.sh down left no process ($(echo $pids | wc -w)) and no port ($(echo $ports | wc -w)) behind"
fi
exit $status
