#!/usr/bin/env bash
# Runs the official MCP conformance suite (server scenarios, active suite) against a fresh
# `marina serve` (in-memory store) on a free loopback port, then stops marina.
#
# Exit code: the conformance runner's. With --expected-failures it is 0 only when exactly the
# scenarios in baseline.yml fail: a new failure fails the run, and so does a stale baseline
# entry (a listed scenario that now passes).
#
# Env: MARINA_BIN (default <repo>/target/debug/marina), KEEP_RESULTS=1 to keep the results dir.
# Extra arguments are passed to `conformance server` (e.g. --scenario ping --verbose).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
NODE_DIR=$REPO/tests/peers/node
MARINA_BIN=${MARINA_BIN:-$REPO/target/debug/marina}
# conformance 0.1.16 needs Node >= 22 (it imports fs.globSync); package.json pins node@22 locally.
NODE22=$NODE_DIR/node_modules/.bin/node
CONFORMANCE=$NODE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js

die() { echo "conformance/run.sh: $*" >&2; exit 2; }
[[ -x $MARINA_BIN ]] || die "marina binary not found at $MARINA_BIN (build it, or set MARINA_BIN)"
[[ -x $NODE22 && -f $CONFORMANCE ]] || die "conformance deps missing: run scripts/install-test-deps.sh"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/marina-conformance.XXXXXX")
MARINA_PID=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  if [[ -n $MARINA_PID ]] && kill -0 "$MARINA_PID" 2>/dev/null; then
    kill -TERM "$MARINA_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$MARINA_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$MARINA_PID" 2>/dev/null || true
    wait "$MARINA_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 || ${KEEP_RESULTS:-} == 1 ]]; then
    echo "conformance/run.sh: results and marina log kept in $OUT" >&2
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

healthy() {
  python3 - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# Start marina; retry (bounded) only if it loses a free-port race and exits.
for attempt in 1 2 3; do
  PORT=$(free_port)
  "$MARINA_BIN" serve --bind "127.0.0.1:$PORT" --admin-bind 127.0.0.1:0 --node-id conformance >"$OUT/marina.log" 2>&1 &
  MARINA_PID=$!
  up=
  for _ in $(seq 200); do  # <= ~20 s
    kill -0 "$MARINA_PID" 2>/dev/null || break
    if healthy "http://127.0.0.1:$PORT/readyz"; then up=1; break; fi  # ready, not just alive
    sleep 0.1
  done
  [[ -n $up ]] && break
  kill -TERM "$MARINA_PID" 2>/dev/null || true
  wait "$MARINA_PID" 2>/dev/null || true
  MARINA_PID=
  [[ $attempt -eq 3 ]] && { tail -n 40 "$OUT/marina.log" >&2; die "marina did not become ready"; }
done

URL="http://127.0.0.1:$PORT/t/demo/mcp"
echo "conformance: testing $URL"
set +e
(cd "$NODE_DIR" && timeout 600 "$NODE22" "$CONFORMANCE" server --url "$URL" \
  --expected-failures "$HERE/baseline.yml" -o "$OUT/results" "$@")
rc=$?
set -e

# marina must shut down cleanly on SIGTERM (exit 0, within 10 s); report it, but a failing
# suite's verdict wins.
kill -TERM "$MARINA_PID"
t0=$SECONDS
for _ in $(seq 100); do kill -0 "$MARINA_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$MARINA_PID" 2>/dev/null; then
  echo "conformance/run.sh: marina did not exit within 10 s of SIGTERM (log: $OUT/marina.log)" >&2
  [[ $rc -eq 0 ]] && rc=1
else
  set +e; wait "$MARINA_PID"; mrc=$?; set -e
  MARINA_PID=
  if [[ $mrc -ne 0 ]]; then
    echo "conformance/run.sh: marina exited with $mrc on SIGTERM after $((SECONDS - t0)) s" >&2
    [[ $rc -eq 0 ]] && rc=1
  fi
fi

# The runner's own "Total: N passed, M failed" line counts the baseline's expected failures as
# failures. Close with a line that reads the same way as the exit code: scenarios that passed,
# scenarios that failed against the baseline (new failures and stale entries), and the
# baseline's expected failures as skipped.
python3 - "$OUT/results" "$HERE/baseline.yml" <<'PY' || true
import json, pathlib, re, sys
results, baseline = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
expected = {m.group(1) for m in re.finditer(r"^\s*-\s*([\w.-]+)\s*$", baseline.read_text(), re.M)}
passed = failed = skipped = 0
for d in sorted(results.glob("server-*")):
    m = re.match(r"^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$", d.name)
    if not m:
        continue
    checks = json.loads((d / "checks.json").read_text())
    ok = not any(c.get("status") == "FAILURE" for c in checks)
    if m.group(1) in expected:
        skipped, failed = (skipped + 1, failed) if not ok else (skipped, failed + 1)  # stale entry
    elif ok:
        passed += 1
    else:
        failed += 1
print(f"conformance: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit "$rc"
