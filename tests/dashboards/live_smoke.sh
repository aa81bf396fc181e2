#!/usr/bin/env bash
# The dashboards and rules on a real Prometheus (Debian's prometheus package): it scrapes two
# synthetic Marina nodes (synthetic_exporter.py: every metric of the metrics reference, with its
# labels and buckets) with the rule file loaded, and check_live.py then runs every panel target
# (variables "All", then tenant=acme) and every rule expression through the HTTP API: each must
# return data (alerts: evaluate, and every selector in them match series) and every rule must
# be healthy. This proves the queries on Prometheus' engine (joins, grouping, histogram_quantile)
# before the Rust metrics exist; the same check_live.py runs against real nodes in the cluster test.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
PY=$REPO/tests/dashboards/.venv/bin/python
if [[ ! -x $PY ]] || ! command -v prometheus >/dev/null 2>&1; then
  echo "tests/dashboards/live_smoke.sh: run scripts/install-test-deps.sh first (needs prometheus and tests/dashboards/.venv)" >&2
  exit 1
fi
tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

read -r exporter1 exporter2 prom_port < <("$PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
"$PY" tests/dashboards/synthetic_exporter.py "$exporter1" "$exporter2" &
pids+=($!)

# The rule groups evaluate every second here instead of every minute, so they have data at once.
sed 's/^  interval: 1m$/  interval: 1s/' dashboards/prometheus/marina-rules.yaml >"$tmp/marina-rules.yaml"
cat >"$tmp/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [marina-rules.yaml]
scrape_configs:
  - job_name: marina
    static_configs: [{targets: ["127.0.0.1:$exporter1", "127.0.0.1:$exporter2"]}]
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
URL=http://127.0.0.1:$prom_port

# Wait until the slowest recording rules (3-day windows over the ratio rules) have data.
ready=
for _ in $(seq 1 60); do
  if "$PY" - "$URL" <<'PY'
import json, sys, urllib.parse, urllib.request
q = "count(namespace_tenant:mcp_server_operation_errors:ratio_rate3d) and count(namespace_pod_tenant_le:mcp_server_operation_duration_seconds_bucket:rate5m)"
try:
    with urllib.request.urlopen(sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": q}), timeout=2) as r:
        sys.exit(0 if json.load(r)["data"]["result"] else 1)
except Exception:
    sys.exit(1)
PY
  then ready=1; break; fi
  sleep 1
done
if [[ -z $ready ]]; then
  echo "live_smoke: Prometheus never had the recording rules' data; its log:" >&2
  cat "$tmp/prometheus.log" >&2
  exit 1
fi
sleep 5  # a few more scrapes, so every $__rate_interval window holds two samples or more

"$PY" tests/dashboards/check_live.py --prometheus "$URL" --scrape-interval 1s --range 2m
"$PY" tests/dashboards/check_live.py --prometheus "$URL" --scrape-interval 1s --range 2m --var tenant=acme --only dashboards

# And it does catch a panel whose metric does not exist.
mkdir "$tmp/broken"
sed 's/marina_sessions_active{/marina_session_active{/' dashboards/marina-overview.json >"$tmp/broken/marina-overview.json"
if "$PY" tests/dashboards/check_live.py --prometheus "$URL" --scrape-interval 1s --range 2m --only dashboards \
    --dashboards "$tmp/broken" >"$tmp/broken.out"; then
  echo "live_smoke: check_live.py passed a dashboard with a misspelt metric" >&2
  exit 1
fi
grep -q '^NO DATA  panel     marina-overview / Active sessions / A' "$tmp/broken.out"
echo "live_smoke: check_live.py reports the misspelt metric: $(grep -c '^NO DATA' "$tmp/broken.out") panels without data"
