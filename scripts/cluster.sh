#!/usr/bin/env bash
# The SaaS topology on one machine, on loopback:
#
#   clients -> HAProxy (round robin per request, health checks on /readyz, redispatch + retries,
#              no stickiness)  -> marina n1 … nN (default 3) -> one redis-server (no persistence)
#                                   └─ tenant acme's upstream: tests/peers/upstream/server.mjs
#   Prometheus scrapes every node's /metrics (admin listener) with dashboards/prometheus rules.
#
#   scripts/cluster.sh up [--nodes N]   start everything, print every URL (and write them to
#                                       $DIR/cluster.env for scripts: the load generator reads it)
#   scripts/cluster.sh down             stop everything it started (nothing is left running)
#   scripts/cluster.sh status           what runs, and the URLs
#   scripts/cluster.sh stop-node I      SIGTERM node I (it drains), wait for it to exit
#   scripts/cluster.sh kill-node I      kill -9 node I
#   scripts/cluster.sh start-node I     start node I again (waits until /readyz is 200)
#   scripts/cluster.sh stop-upstream | start-upstream    take acme's upstream away / bring it back
#
# Env: MARINA_BIN (default target/release/marina if built, else target/debug/marina),
# MARINA_CLUSTER_DIR (default ${TMPDIR:-/tmp}/marina-cluster: configuration, logs, pids, data).
# Needs redis-server, haproxy, prometheus (apt) and tests/peers/upstream/node_modules:
# scripts/install-test-deps.sh. Tenants: `demo` (built-in tools, open) and `acme` (API keys, RBAC,
# rate limits, built-in tools and an upstream MCP server); its keys are in $DIR/cluster.env.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${MARINA_CLUSTER_DIR:-${TMPDIR:-/tmp}/marina-cluster}
if [[ -z ${MARINA_BIN:-} ]]; then
  MARINA_BIN=$REPO/target/debug/marina
  [[ -x $REPO/target/release/marina ]] && MARINA_BIN=$REPO/target/release/marina
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

die() { echo "cluster.sh: $*" >&2; exit 1; }
say() { echo "cluster.sh: $*"; }

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
}

# Wait (at most $2 s) until URL $1 answers 200.
wait_ok() {
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null --max-time 1 "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

alive() { [[ -f $DIR/$1.pid ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# SIGTERM (or $2) a process named by its pid file; SIGKILL it after 60 s.
stop_proc() {
  local name=$1 sig=${2:-TERM} pid
  alive "$name" || { rm -f "$DIR/$name.pid"; return 0; }
  pid=$(cat "$DIR/$name.pid")
  kill -"$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$DIR/$name.pid"
}

load_env() {
  [[ -f $DIR/cluster.env ]] || die "no cluster in $DIR (scripts/cluster.sh up)"
  # shellcheck disable=SC1091
  source "$DIR/cluster.env"
}

start_node() {
  local i=$1
  local mcp_var=NODE${i}_PORT admin_var=NODE${i}_ADMIN_PORT
  MARINA__SERVER__LOG_FILTER=${MARINA_LOG_FILTER:-info} MARINA__SERVER__LOG_FORMAT=json \
    setsid "$MARINA_BIN" serve --config "$DIR/marina.yaml" --node-id "n$i" \
    --bind "127.0.0.1:${!mcp_var}" --admin-bind "127.0.0.1:${!admin_var}" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/" </dev/null >>"$DIR/n$i.log" 2>&1 &
  echo $! >"$DIR/n$i.pid"
  wait_ok "http://127.0.0.1:${!mcp_var}/readyz" 60 || die "node n$i did not become ready (log: $DIR/n$i.log)"
}

start_upstream() {
  (cd "$REPO/tests/peers/upstream" && PORT=$UPSTREAM_PORT exec setsid node server.mjs) \
    </dev/null >>"$DIR/upstream.log" 2>&1 &
  echo $! >"$DIR/upstream.pid"
  local deadline=$((SECONDS + 20))
  until (exec 3<>"/dev/tcp/127.0.0.1/$UPSTREAM_PORT") 2>/dev/null; do
    ((SECONDS < deadline)) || die "the upstream did not start (log: $DIR/upstream.log)"
    sleep 0.2
  done
}

print_urls() {
  cat <<EOF
MCP endpoint (HAProxy):  http://127.0.0.1:$LB_PORT/t/demo/mcp   (and /t/acme/mcp: X-API-Key in $DIR/cluster.env)
HAProxy stats:           http://127.0.0.1:$STATS_PORT/
Prometheus:              http://127.0.0.1:$PROM_PORT/   (alerts: /alerts, rules: /rules, targets: /targets)
EOF
  for i in $(seq "$NODES"); do
    local mcp_var=NODE${i}_PORT admin_var=NODE${i}_ADMIN_PORT
    echo "node n$i:                 http://127.0.0.1:${!mcp_var}/  admin + metrics: http://127.0.0.1:${!admin_var}/metrics  log: $DIR/n$i.log"
  done
  echo "acme's upstream:         http://127.0.0.1:$UPSTREAM_PORT/mcp"
  echo "redis:                   redis://127.0.0.1:$REDIS_PORT/"
}

up() {
  local nodes=3
  while (($#)); do
    case $1 in
      --nodes) nodes=$2; shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  ((nodes >= 1 && nodes <= 9)) || die "--nodes must be 1..9"
  [[ -x $MARINA_BIN ]] || die "no marina binary at $MARINA_BIN (cargo build --bin marina, or set MARINA_BIN)"
  for tool in redis-server prometheus node curl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/install-test-deps.sh)"
  done
  [[ -x $HAPROXY ]] || die "haproxy is not installed (scripts/install-test-deps.sh)"
  [[ -d $REPO/tests/peers/upstream/node_modules ]] || die "tests/peers/upstream/node_modules is missing (scripts/install-test-deps.sh)"
  if [[ -f $DIR/cluster.env ]]; then die "a cluster is already up in $DIR (scripts/cluster.sh down)"; fi
  mkdir -p "$DIR"
  # Anything that fails from here on takes down what was started.
  trap 'down >/dev/null 2>&1 || true' ERR

  local ports
  read -r -a ports <<<"$(free_ports $((6 + 2 * nodes)))"
  {
    echo "NODES=$nodes"
    echo "REDIS_PORT=${ports[0]} LB_PORT=${ports[1]} STATS_PORT=${ports[2]} PROM_PORT=${ports[3]} UPSTREAM_PORT=${ports[4]}"
    for i in $(seq "$nodes"); do
      echo "NODE${i}_PORT=${ports[$((4 + 2 * i - 1))]} NODE${i}_ADMIN_PORT=${ports[$((4 + 2 * i))]}"
    done
  } >"$DIR/ports.env"
  # shellcheck disable=SC1091
  source "$DIR/ports.env"

  # Keys of tenant acme: an operator (may call everything) and a viewer (only echo).
  local op viewer
  op=$("$MARINA_BIN" keys new --subject ops-bot --roles operator | head -1)
  viewer=$("$MARINA_BIN" keys new --subject viewer-bot --roles viewer | head -1)
  sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
  cat >"$DIR/marina.yaml" <<EOF
egress: {allow_loopback: true}
tenants:
  demo:
    upstreams: [{kind: builtin}]
  acme:
    auth:
      api_keys:
        - {subject: ops-bot, sha256: $(sha "$op"), roles: [operator]}
        - {subject: viewer-bot, sha256: $(sha "$viewer"), roles: [viewer]}
    rbac:
      policy: |
        p, viewer, tool:echo, call, allow
        p, operator, tool:*, call, allow
        p, operator, resource:*, read, allow
        p, operator, prompt:*, get, allow
        g, operator, viewer
    limits:
      rate:
        principal: 200/s
        tools: {"add": 5/s}
    upstreams:
      - {kind: builtin}
      - {kind: mcp, name: up, url: "http://127.0.0.1:$UPSTREAM_PORT/mcp"}
EOF

  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >/dev/null
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  start_upstream
  for i in $(seq "$nodes"); do start_node "$i"; done

  {
    cat <<EOF
global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  timeout http-request 10s
  timeout queue 5s
  # A readiness check may take up to 2 s, as the chart's probes may (default: inter).
  timeout check 2s
  # A request whose connection to a dead node fails is sent to another node.
  option redispatch
  retries 3
  option http-server-close
  default-server inter 500ms fall 2 rise 2
frontend mcp
  bind 127.0.0.1:$LB_PORT
  default_backend marina
backend marina
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
EOF
    for i in $(seq "$nodes"); do
      local mcp_var=NODE${i}_PORT
      echo "  server n$i 127.0.0.1:${!mcp_var} check"
    done
    cat <<EOF
listen stats
  bind 127.0.0.1:$STATS_PORT
  stats enable
  stats uri /
  stats refresh 5s
EOF
  } >"$DIR/haproxy.cfg"
  "$HAPROXY" -f "$DIR/haproxy.cfg" -D -p "$DIR/haproxy.pid" >"$DIR/haproxy.log" 2>&1

  # Rules evaluated every 5 s here (1 m in production), so alerts show within seconds.
  # Runbook links to this checkout's docs; rules evaluated every 5 s, for a quick demo.
  sed -e 's/^  interval: 1m$/  interval: 5s/' \
    -e "s|https://marina.invalid/docs/operations.md|file://$REPO/docs/operations.md|" \
    "$REPO/dashboards/prometheus/marina-rules.yaml" >"$DIR/marina-rules.yaml"
  {
    cat <<EOF
global: {scrape_interval: 2s, evaluation_interval: 5s}
rule_files: [marina-rules.yaml]
scrape_configs:
  - job_name: marina
    static_configs:
EOF
    for i in $(seq "$nodes"); do
      local admin_var=NODE${i}_ADMIN_PORT
      # The labels Kubernetes service discovery would give (the dashboards' variables).
      echo "      - {targets: [\"127.0.0.1:${!admin_var}\"], labels: {namespace: local, pod: n$i}}"
    done
  } >"$DIR/prometheus.yml"
  setsid prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" </dev/null >"$DIR/prometheus.log" 2>&1 &
  echo $! >"$DIR/prometheus.pid"
  wait_ok "http://127.0.0.1:$PROM_PORT/-/ready" 30 || die "Prometheus did not start (log: $DIR/prometheus.log)"
  wait_ok "http://127.0.0.1:$LB_PORT/readyz" 20 || die "HAProxy sees no node up (log: $DIR/haproxy.log)"

  {
    cat "$DIR/ports.env"
    echo "MARINA_BIN=$MARINA_BIN"
    echo "ACME_OPERATOR_KEY=$op"
    echo "ACME_VIEWER_KEY=$viewer"
    echo "LB_URL=http://127.0.0.1:$LB_PORT"
    echo "PROM_URL=http://127.0.0.1:$PROM_PORT"
  } >"$DIR/cluster.env"
  trap - ERR
  say "up in $DIR"
  print_urls
}

down() {
  [[ -d $DIR ]] || return 0
  # Outermost first: nothing new reaches a node while it shuts down.
  stop_proc prometheus
  stop_proc haproxy
  for pidfile in "$DIR"/n*.pid; do
    [[ -e $pidfile ]] || continue
    stop_proc "$(basename "$pidfile" .pid)"
  done
  stop_proc upstream
  if [[ -f $DIR/redis.pid ]]; then
    local port
    port=$(sed -n 's/.*REDIS_PORT=\([0-9]*\).*/\1/p' "$DIR/ports.env" 2>/dev/null || true)
    [[ -n $port ]] && redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    stop_proc redis
  fi
  rm -rf "$DIR"
  say "down"
}

status() {
  load_env
  for name in redis upstream haproxy prometheus $(for i in $(seq "$NODES"); do echo "n$i"; done); do
    if alive "$name"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"; else echo "$name: stopped"; fi
  done
  print_urls
}

node_arg() {
  [[ ${1:-} =~ ^[1-9]$ ]] && (($1 <= NODES)) || die "name a node 1..$NODES"
}

cmd=${1:-}
shift || true
case $cmd in
  up) up "$@" ;;
  down) down ;;
  status) status ;;
  stop-node) load_env; node_arg "${1:-}"; stop_proc "n$1" TERM; say "node n$1 stopped" ;;
  kill-node) load_env; node_arg "${1:-}"; stop_proc "n$1" KILL; say "node n$1 killed" ;;
  start-node) load_env; node_arg "${1:-}"; alive "n$1" && die "node n$1 is running"; start_node "$1"; say "node n$1 started" ;;
  stop-upstream) load_env; stop_proc upstream; say "upstream stopped" ;;
  start-upstream) load_env; alive upstream && die "the upstream is running"; start_upstream; say "upstream started" ;;
  *) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
