#!/usr/bin/env bash
# Runs the MCP conformance suite 0.2.0-alpha.12 (run-2026.sh) through a two-node Marina cluster:
#
#   conformance -> HAProxy (127.0.0.1, mode http, balance roundrobin, per request)
#                    -> marina A ┐ one private redis-server (no persistence)
#                    -> marina B ┘
#                         -> tests/peers/upstream-v2/server.mjs (TS SDK v2, both protocol eras)
#
# HAProxy closes the server side after every response (option http-server-close) and has no
# stickiness, so consecutive requests of one client, even on one keep-alive connection,
# alternate between the nodes: every request that depends on state a previous request left
# (a 2025-11-25 Mcp-Session-Id, a 2026-07-28 requestState, an SSE resume) lands on the other
# node as often as not.
#
# Two runs, in this order; both must pass:
#   --requirements 2026-07-28 --expected-failures baseline-2026-07-28.yml
#   --requirements 2025-11-25 (no baseline: every scored scenario must pass)
# Then it checks that both nodes served about half of the requests (HAProxy's stats; its log
# and each node's access log are counted too), and that both nodes exit 0 within 10 s of SIGTERM.
#
# Exit code: 0 if all of that holds, 1 if a run or check failed, 2 on a setup error.
# Env: MARINA_BIN (default <repo>/target/debug/marina), KEEP_RESULTS=1 keeps the work dir (logs
# of every process, conformance results) even on success; it is always kept on failure.
# Extra arguments are passed to both run-2026.sh runs (e.g. --verbose).
# Needs redis-server, haproxy (apt) and tests/peers/upstream-v2/node_modules:
# scripts/install-test-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
PEER_DIR=$REPO/tests/peers/upstream-v2
MARINA_BIN=${MARINA_BIN:-$REPO/target/debug/marina}
TENANT=conf
BASELINE_2026=$HERE/baseline-2026-07-28.yml

die() { echo "conformance/cluster-2026.sh: $*" >&2; exit 2; }
say() { echo "conformance/cluster-2026.sh: $*"; }

# haproxy lives in /usr/sbin, which a non-root PATH may lack.
HAPROXY=$(command -v haproxy || true)
[[ -n $HAPROXY || ! -x /usr/sbin/haproxy ]] || HAPROXY=/usr/sbin/haproxy
REDIS=$(command -v redis-server || true)
[[ -x $MARINA_BIN ]] || die "marina binary not found at $MARINA_BIN (build it, or set MARINA_BIN)"
[[ -n $HAPROXY ]] || die "haproxy not installed (run scripts/install-test-deps.sh as root)"
[[ -n $REDIS ]] || die "redis-server not installed (run scripts/install-test-deps.sh as root)"
[[ -d $PEER_DIR/node_modules ]] || die "upstream-v2 deps missing: run scripts/install-test-deps.sh"
[[ -f $BASELINE_2026 ]] || die "baseline not found: $BASELINE_2026"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/marina-cluster-2026.XXXXXX")
REDIS_PID= UPSTREAM_PID= HAPROXY_PID= MARINA_A_PID= MARINA_B_PID=

# SIGTERM a process, SIGKILL it after 10 s; return 0 only if it exited 0 within the 10 s.
stop_pid() {
  local pid=$1 rc=0
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  # Outermost first: nothing new reaches a node while it shuts down.
  stop_pid "$HAPROXY_PID" || true
  stop_pid "$MARINA_A_PID" || true
  stop_pid "$MARINA_B_PID" || true
  stop_pid "$UPSTREAM_PID" || true
  stop_pid "$REDIS_PID" || true
  if [[ $rc -ne 0 || ${KEEP_RESULTS:-} == 1 ]]; then
    echo "conformance/cluster-2026.sh: logs and results kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# 0 if GET $1 answers 200 within 1 s.
healthy() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# 0 if redis on port $1 answers PING.
redis_up() {
  python3 - "$1" <<'PY'
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PY
}

# wait_until SECONDS PID CMD...: poll CMD every 0.1 s until it succeeds (0), PID dies (1) or
# SECONDS pass (1).
wait_until() {
  local secs=$1 pid=$2; shift 2
  local end=$((SECONDS + secs))
  while ((SECONDS < end)); do
    kill -0 "$pid" 2>/dev/null || return 1
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# --- redis: private, loopback, no persistence ------------------------------------------------
mkdir -p "$WORK/redis"
for attempt in 1 2 3; do  # retried (bounded) only if it loses a free-port race
  REDIS_PORT=$(free_port)
  "$REDIS" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$WORK/redis" \
    --protected-mode yes >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_until 10 "$REDIS_PID" redis_up "$REDIS_PORT" && break
  stop_pid "$REDIS_PID" || true
  REDIS_PID=
  [[ $attempt -eq 3 ]] && { tail -n 20 "$WORK/redis.log" >&2; die "redis-server did not start"; }
done
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/

# --- the TS SDK v2 upstream (binds a free port itself and prints its URL) ---------------------
(cd "$PEER_DIR" && PORT=0 exec node server.mjs) >"$WORK/upstream.log" 2>&1 &
UPSTREAM_PID=$!
upstream_url() { UPSTREAM_URL=$(grep -om1 'http://127\.0\.0\.1:[0-9]*/mcp' "$WORK/upstream.log"); }
wait_until 20 "$UPSTREAM_PID" upstream_url || { cat "$WORK/upstream.log" >&2; die "upstream-v2 did not start"; }

cat >"$WORK/marina.yaml" <<EOF
server: {stateless_era: true}
egress: {allow_loopback: true}
tenants:
  $TENANT:
    upstreams:
      - {kind: mcp, name: v2, url: "$UPSTREAM_URL", prefix: ""}
EOF

# --- two marina nodes on the one redis (no cluster secret: they bind loopback only) -----------
# start_marina NAME: sets MARINA_<NAME>_PID and PORT_<NAME>; log in $WORK/marina-<NAME>.log.
start_marina() {
  local name=$1 port pid attempt
  for attempt in 1 2 3; do  # retried (bounded) only if it loses a free-port race
    port=$(free_port)
    RUST_BACKTRACE=1 MARINA__SERVER__SHUTDOWN_DELAY_MS=0 "$MARINA_BIN" serve --config "$WORK/marina.yaml" --bind "127.0.0.1:$port" \
      --admin-bind 127.0.0.1:0 --redis-url "$REDIS_URL" --node-id "cluster-$name" \
      >"$WORK/marina-$name.log" 2>&1 &
    pid=$!
    printf -v "MARINA_${name}_PID" %s "$pid"
    printf -v "PORT_${name}" %s "$port"
    # ready, not just alive
    wait_until 30 "$pid" healthy "http://127.0.0.1:$port/readyz" && return 0
    stop_pid "$pid" || true
    printf -v "MARINA_${name}_PID" %s ""
    [[ $attempt -eq 3 ]] && { tail -n 40 "$WORK/marina-$name.log" >&2; die "marina $name did not become ready"; }
  done
}
start_marina A
start_marina B

# --- haproxy: per-request round robin, no stickiness, no health checks ------------------------
# (a health check that marked a slow node down would silently send everything to the other)
HAPROXY_LOG=$WORK/haproxy.log
for attempt in 1 2 3; do  # retried (bounded) only if it loses a free-port race
  LB_PORT=$(free_port)
  cat >"$WORK/haproxy.cfg" <<EOF
global
  log stdout format raw local0 info
  maxconn 1024
  stats socket $WORK/haproxy.sock mode 600 level user

defaults
  mode http
  log global
  option httplog
  # A new server-side connection, hence a new balancing decision, for every request.
  option http-server-close
  no option redispatch
  retries 0
  timeout connect 5s
  timeout http-request 30s
  timeout http-keep-alive 30s
  # SSE streams can stay quiet for a while; no scenario takes near this long.
  timeout client 120s
  timeout server 120s
  timeout tunnel 1h

frontend lb
  bind 127.0.0.1:$LB_PORT
  default_backend marina

backend marina
  balance roundrobin
  server A 127.0.0.1:$PORT_A
  server B 127.0.0.1:$PORT_B
EOF
  "$HAPROXY" -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 \
    || { cat "$WORK/haproxy-check.log" >&2; die "haproxy rejected its config"; }
  "$HAPROXY" -db -f "$WORK/haproxy.cfg" >"$HAPROXY_LOG" 2>&1 &
  HAPROXY_PID=$!
  # Two consecutive 200s through the balancer: both nodes answer through it.
  lb_ready() { healthy "http://127.0.0.1:$LB_PORT/readyz" && healthy "http://127.0.0.1:$LB_PORT/readyz"; }
  wait_until 20 "$HAPROXY_PID" lb_ready && break
  stop_pid "$HAPROXY_PID" || true
  HAPROXY_PID=
  [[ $attempt -eq 3 ]] && { tail -n 20 "$HAPROXY_LOG" >&2; die "haproxy did not start"; }
done

URL=http://127.0.0.1:$LB_PORT/t/$TENANT/mcp
say "cluster up: $URL -> haproxy -> marina A :$PORT_A, B :$PORT_B (redis :$REDIS_PORT) -> $UPSTREAM_URL"

# --- the suite, twice ---------------------------------------------------------------------------
rc=0
failed=()
run_suite() {  # REV [run-2026.sh args...]
  local rev=$1; shift
  say "=== requirements $rev through the cluster"
  # run-2026.sh keeps its results dir under $WORK when it fails (TMPDIR).
  if ! TMPDIR=$WORK bash "$HERE/run-2026.sh" --url "$URL" --requirements "$rev" "$@"; then
    failed+=("requirements $rev")
    rc=1
  fi
}
run_suite 2026-07-28 --expected-failures "$BASELINE_2026" "$@"
run_suite 2025-11-25 "$@"

# --- proof that requests were balanced per request ---------------------------------------------
# HAProxy counts the requests it sent each server (stats socket, `stot`: with
# http-server-close every request is a server session of its own). Round robin over two equal
# servers without health checks alternates strictly, so each node must have served about half.
lb_stats() {  # -> "A <n>\nB <n>"
  python3 - "$WORK/haproxy.sock" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
lines = data.decode().splitlines()
head = lines[0].lstrip("# ").split(",")
for line in lines[1:]:
    row = dict(zip(head, line.split(",")))
    if row.get("pxname") == "marina" and row.get("svname") in ("A", "B"):
        print(row["svname"], row["stot"])
PY
}
stats=$(lb_stats) || stats=
st_a=$(awk '$1 == "A" {print $2}' <<<"$stats"); st_a=${st_a:-0}
st_b=$(awk '$1 == "B" {print $2}' <<<"$stats"); st_b=${st_b:-0}
total=$((st_a + st_b))
say "requests per node (haproxy stats): A=$st_a B=$st_b"
if ((total < 100 || st_a * 10 < total * 4 || st_b * 10 < total * 4)); then
  echo "conformance/cluster-2026.sh: requests were not balanced across both nodes (A=$st_a B=$st_b)" >&2
  failed+=("balancing")
  rc=1
fi

# --- shutdown: haproxy gracefully (so it logs every request), then both nodes, which must exit 0
# within 10 s of SIGTERM -----------------------------------------------------------------------
kill -USR1 "$HAPROXY_PID" 2>/dev/null || true  # soft stop: finish what is in flight, then exit
for _ in $(seq 100); do kill -0 "$HAPROXY_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$HAPROXY_PID" 2>/dev/null; then
  say "note: haproxy still had streams open 10 s after its soft stop (the log misses them)"
fi
stop_pid "$HAPROXY_PID" || true
HAPROXY_PID=
for name in A B; do
  pid_var=MARINA_${name}_PID
  if ! stop_pid "${!pid_var}"; then
    echo "conformance/cluster-2026.sh: marina $name did not exit 0 within 10 s of SIGTERM (log: $WORK/marina-$name.log)" >&2
    failed+=("marina $name shutdown")
    rc=1
  fi
  printf -v "$pid_var" %s ""
done

# The same from the logs: HAProxy's line per request ("lb marina/A ... /t/conf/mcp"), and each
# node's access line per request ("marina::access: request done ... path=/t/conf/mcp"). A node
# that gets a request for a session another node holds forwards it there, and both log it.
lb_a=$(grep -c " marina/A .*/t/$TENANT/mcp" "$HAPROXY_LOG" || true)
lb_b=$(grep -c " marina/B .*/t/$TENANT/mcp" "$HAPROXY_LOG" || true)
acc_a=$(grep 'marina::access: request done' "$WORK/marina-A.log" | grep -c "path=/t/$TENANT/mcp " || true)
acc_b=$(grep 'marina::access: request done' "$WORK/marina-B.log" | grep -c "path=/t/$TENANT/mcp " || true)
say "MCP requests per node: haproxy log A=$lb_a B=$lb_b; marina access logs A=$acc_a B=$acc_b" \
  "($((acc_a + acc_b - lb_a - lb_b)) forwarded between the nodes)"
if ((acc_a == 0 || acc_b == 0)); then
  echo "conformance/cluster-2026.sh: a node logged no MCP requests (A=$acc_a B=$acc_b)" >&2
  failed+=("balancing (access logs)")
  rc=1
fi

if ((rc == 0)); then
  say "all passed (2026-07-28 against its baseline, 2025-11-25 complete, both nodes served)"
else
  say "FAILED: ${failed[*]}"
fi
exit "$rc"
