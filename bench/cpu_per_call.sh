#!/usr/bin/env bash
# Marina's CPU per proxied tools/call, for comparing two builds in one session (docs/benchmarks.md).
# Usage: bench/cpu_per_call.sh MARINA_BINARY [CONCURRENCY=32] [SECONDS=5]
# Layout as in `bench/run.py --overhead`: Marina on CPU 0 (Redis store, JSON tools/call answers),
# rmcp-echo + wrk + Redis on CPU 1. Needs /tmp/rmcp-echo-target/release/rmcp-echo (see
# docs/benchmarks.md), wrk, redis-server. Prints calls/s and Marina CPU µs per call.
set -euo pipefail
BIN=$(realpath "$1"); C=${2:-32}; D=${3:-5}
ECHO=${ECHO_BIN:-/tmp/rmcp-echo-target/release/rmcp-echo}
HERE=$(cd "$(dirname "$0")" && pwd)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(port); UPP=$(port); MP=$(port)
TMP=$(mktemp -d)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
taskset -c 1 redis-server --port "$RP" --save '' --appendonly no >/dev/null 2>&1 & PIDS+=($!)
ADDR=127.0.0.1:$UPP THREADS=1 taskset -c 1 "$ECHO" 2>/dev/null & PIDS+=($!)
printf 'egress:\n  allow_loopback: true\ntenants:\n  bench:\n    upstreams:\n      - {kind: mcp, name: up, prefix: "", url: "http://127.0.0.1:%s/mcp"}\n' "$UPP" > "$TMP/m.yaml"
sleep 0.5
MARINA__SESSIONS__TOOLS_CALL_RESPONSE=json taskset -c 0 "$BIN" serve --config "$TMP/m.yaml" \
    --bind "127.0.0.1:$MP" --redis-url "redis://127.0.0.1:$RP/" >"$TMP/log" 2>&1 & M=$!; PIDS+=($M)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$MP/healthz" && break; sleep 0.1; done
URL=http://127.0.0.1:$MP/t/bench/mcp
H=(-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream')
SID=$(curl -s -i -X POST "$URL" "${H[@]}" -d '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}' \
    | grep -i '^mcp-session-id' | cut -d' ' -f2 | tr -d '\r')
curl -s -X POST "$URL" "${H[@]}" -H "MCP-Session-Id: $SID" -H 'MCP-Protocol-Version: 2025-11-25' \
    -d '{"jsonrpc":"2.0","method":"notifications/initialized"}'
export MCP_SESSIONS=$SID MCP_TOOL=echo MCP_ARGS='{"message":"hello"}'
taskset -c 1 wrk -t1 -c"$C" -d2s -s "$HERE/mcp_call.lua" "$URL" >/dev/null   # warm-up
ticks() { awk '{print $14+$15}' "/proc/$M/stat"; }
T0=$(ticks)
OUT=$(taskset -c 1 wrk -t1 -c"$C" -d"${D}s" -s "$HERE/mcp_call.lua" "$URL" | grep MCPRESULT)
T1=$(ticks)
OK=$(sed 's/.*ok=\([0-9]*\).*/\1/' <<<"$OUT")
HZ=$(getconf CLK_TCK)
echo "$(basename "$BIN") C=$C $OUT cpu_us_per_call=$(( (T1 - T0) * 1000000 / HZ / OK ))"
