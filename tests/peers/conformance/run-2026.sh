#!/usr/bin/env bash
# Runs the MCP conformance suite 0.2.0-alpha.12 (server scenarios of one frozen requirement set,
# `--requirements 2026-07-28` or `--requirements 2025-11-25`) against a running MCP endpoint, or
# against a fresh tests/peers/upstream-v2 server (--self), with an expected-failures baseline.
#
#   run-2026.sh --url http://127.0.0.1:PORT/t/demo/mcp [--requirements REV] [--expected-failures FILE] [ARGS...]
#   run-2026.sh --self [--requirements REV] [--expected-failures FILE] [ARGS...]
#
#   --url URL                the endpoint to test (must already be up)
#   --self                   start tests/peers/upstream-v2/server.mjs on a free loopback port, test
#                            it, then stop it (it must exit 0 within 10 s of SIGTERM)
#   --requirements REV       2026-07-28 (default) or 2025-11-25: the scenarios that revision
#                            requires, each run at that revision's wire (2026-07-28 stateless with
#                            per-request _meta; 2025-11-25 initialize + Mcp-Session-Id). Scenarios
#                            the set lists as not_scored (extensions such as tasks-*, pending and
#                            added-after-release ones) run too but never fail the run.
#   --expected-failures FILE a baseline like baseline.yml (`server:` list of scenario names or
#                            `scenario:check-id` entries); default: none, i.e. every scored
#                            scenario must pass
#   ARGS...                  passed to `conformance server` (e.g. --verbose, --timeout 60000)
#
# Exit code: the conformance runner's (0 only if every scored scenario passes or fails as the
# baseline expects; a baseline entry that now passes is stale and fails the run), 2 on a usage or
# setup error. With --self a peer that does not exit cleanly on SIGTERM also fails the run.
# Needs tests/peers/upstream-v2/node_modules (scripts/install-test-deps.sh): the suite and the
# local Node 22 it requires are devDependencies there.
# Env: KEEP_RESULTS=1 keeps the results dir (it is always kept on failure).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
PEER_DIR=$REPO/tests/peers/upstream-v2
NODE22=$PEER_DIR/node_modules/.bin/node
CONFORMANCE=$PEER_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js
REQ_DIR=$PEER_DIR/node_modules/@modelcontextprotocol/conformance/requirements

die() { echo "conformance/run-2026.sh: $*" >&2; exit 2; }

URL= SELF= REV=2026-07-28 BASELINE=
PASS=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --url) [[ $# -ge 2 ]] || die "--url needs a value"; URL=$2; shift 2 ;;
    --url=*) URL=${1#*=}; shift ;;
    --self) SELF=1; shift ;;
    --requirements) [[ $# -ge 2 ]] || die "--requirements needs a value"; REV=$2; shift 2 ;;
    --requirements=*) REV=${1#*=}; shift ;;
    --expected-failures) [[ $# -ge 2 ]] || die "--expected-failures needs a value"; BASELINE=$2; shift 2 ;;
    --expected-failures=*) BASELINE=${1#*=}; shift ;;
    --suite|--suite=*|--scenario|--scenario=*|--spec-version|--spec-version=*|-o|--output-dir|--output-dir=*)
      die "$1 is not allowed here: --requirements selects the scenarios and the results dir is managed" ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[[ -n $URL || -n $SELF ]] || die "give --url URL or --self"
[[ -z $URL || -z $SELF ]] || die "give either --url or --self, not both"
[[ -x $NODE22 && -f $CONFORMANCE ]] || die "conformance deps missing: run scripts/install-test-deps.sh"
[[ -f $REQ_DIR/$REV.yaml ]] || die "unknown requirement set '$REV' (have: $(cd "$REQ_DIR" && ls | sed 's/\.yaml$//' | tr '\n' ' '))"
if [[ -n $BASELINE ]]; then
  [[ -f $BASELINE ]] || die "baseline not found: $BASELINE"
  BASELINE=$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")
fi

OUT=$(mktemp -d "${TMPDIR:-/tmp}/marina-conformance-2026.XXXXXX")
PEER_PID=
stop_peer() {  # -> 0 if the peer exited 0 within 10 s of SIGTERM
  local rc=0
  kill -TERM "$PEER_PID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$PEER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$PEER_PID" 2>/dev/null; then
    echo "conformance/run-2026.sh: upstream-v2 did not exit within 10 s of SIGTERM" >&2
    kill -KILL "$PEER_PID" 2>/dev/null || true
    rc=1
  fi
  wait "$PEER_PID" 2>/dev/null || rc=$?
  PEER_PID=
  return "$rc"
}
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  [[ -z $PEER_PID ]] || stop_peer || true
  if [[ $rc -ne 0 || ${KEEP_RESULTS:-} == 1 ]]; then
    echo "conformance/run-2026.sh: results kept in $OUT" >&2
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT

if [[ -n $SELF ]]; then
  # PORT=0: the peer binds a free port itself and prints it, so there is no port race.
  (cd "$PEER_DIR" && PORT=0 exec node server.mjs) >"$OUT/upstream.log" 2>&1 &
  PEER_PID=$!
  for _ in $(seq 100); do  # <= ~10 s
    URL=$(grep -om1 'http://127\.0\.0\.1:[0-9]*/mcp' "$OUT/upstream.log" || true)
    [[ -n $URL ]] && break
    kill -0 "$PEER_PID" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n $URL ]] || { cat "$OUT/upstream.log" >&2; die "upstream-v2 did not start"; }
fi

echo "conformance: testing $URL (requirements $REV)"
set +e
(cd "$PEER_DIR" && timeout 900 "$NODE22" "$CONFORMANCE" server --url "$URL" --requirements "$REV" \
  ${BASELINE:+--expected-failures "$BASELINE"} -o "$OUT/results" ${PASS[@]+"${PASS[@]}"})
rc=$?
set -e

if [[ -n $SELF ]]; then
  if ! stop_peer; then
    echo "conformance/run-2026.sh: upstream-v2 did not shut down cleanly (log: $OUT/upstream.log)" >&2
    [[ $rc -eq 0 ]] && rc=1
  fi
fi

# The runner's "Total: N passed, M failed" line counts checks, and counts unscored and baselined
# failures as failures. Close with a line that reads the same way as the exit code, per scenario:
# scored scenarios that passed; scored scenarios that failed against the baseline (new failures
# and stale entries); and, as skipped, expected (baselined) failures plus failing not_scored ones.
# A scenario whose only problems are WARNINGs shows as ✓ in the runner's summary but fails (or
# is an expected failure) when a baseline is given: the runner's own rule, followed here.
"$NODE22" - "$OUT/results" "$REQ_DIR/$REV.yaml" "${BASELINE:-}" <<'JS' || true
const fs = require('node:fs');
const path = require('node:path');
const [results, reqFile, baseline] = process.argv.slice(2);
const req = fs.readFileSync(reqFile, 'utf8');
const notScored = new Set();
for (const m of req.matchAll(/-\s*scenario:\s*([\w./-]+)\s*\n\s*leg:\s*server/g)) notScored.add(m[1]);
// Baseline entries, read the way the runner reads them: a whole scenario, or `scenario:check-id`.
const whole = new Set(), perCheck = new Map();
if (baseline) {
  let inServer = false;
  for (const line of fs.readFileSync(baseline, 'utf8').split('\n')) {
    if (/^\S/.test(line)) inServer = /^server\s*:/.test(line);
    const m = inServer && /^\s*-\s*([\w./-]+)(?::([\w./-]+))?\s*(#.*)?$/.exec(line);
    if (!m) continue;
    if (m[2]) perCheck.set(m[1], (perCheck.get(m[1]) ?? new Set()).add(m[2]));
    else whole.add(m[1]);
  }
}
// With --expected-failures the runner counts a WARNING (a SHOULD) as failing, like a FAILURE;
// without one only FAILUREs of scored scenarios fail the run.
const bad = c => c.status === 'FAILURE' || (baseline !== '' && c.status === 'WARNING');
let passed = 0, failed = 0, skipped = 0;
const dirs = fs.existsSync(results) ? fs.readdirSync(results) : [];
for (const d of dirs.sort()) {
  const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(d);
  if (!m) continue;
  const name = m[1];
  const checks = JSON.parse(fs.readFileSync(path.join(results, d, 'checks.json'), 'utf8'));
  const ok = !checks.some(bad);
  if (notScored.has(name)) { if (ok) passed++; else skipped++; }  // never scored, never baselined
  else if (whole.has(name)) { if (ok) failed++; else skipped++; } // passing + baselined = stale
  else if (perCheck.has(name)) {
    const listed = perCheck.get(name);
    const unexpected = checks.some(c => bad(c) && !listed.has(c.id));
    const stale = [...listed].some(id => checks.find(c => c.id === id && c.status !== 'INFO')?.status === 'SUCCESS');
    if (unexpected || stale) failed++;
    else if (checks.some(c => bad(c) && listed.has(c.id))) skipped++;
    else passed++;
  }
  else if (ok) passed++;
  else failed++;
}
console.log(`conformance: ${passed} passed, ${failed} failed, ${skipped} skipped`);
JS
exit "$rc"
