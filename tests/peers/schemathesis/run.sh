#!/usr/bin/env bash
# Runs schemathesis against the admin API's live OpenAPI document: a fresh `marina serve` on a
# throwaway redis-server, with one platform administrator key, serves
# GET /admin/v1/openapi.json; a tenant (with a policy and an API key) is created through the API
# so there is data to read, then schemathesis generates requests from the document — valid and
# invalid ones, authenticated as the administrator — and checks every answer against it.
#
# Checks (each answer):
#   not_a_server_error            no 5xx (a 503 would mean the store is down: it is not here)
#   status_code_conformance       the status is one the operation documents
#   content_type_conformance      the Content-Type is the one documented for that status
#   response_headers_conformance  documented required headers are present and match their schema
#   response_schema_conformance   the body matches the documented schema
#   use_after_free                a deleted tenant or key is gone (404) afterwards
#   ensure_resource_availability  a tenant or key just created can be read at once
# One worker: the stateful checks follow one sequence of requests, which a second worker
# writing the same tenants would interleave with.
#
# Credentials: the administrator's key as `Authorization: Bearer` on every request, and no
# generated security parameters. The document's two schemes are alternatives (bearer or
# X-API-Key), and Marina refuses a request that carries two credentials (401, documented): a
# random X-API-Key generated beside the bearer would turn most cases into 401s and leave the
# handlers untested. (Missing and wrong credentials are covered by tests/it/admin.rs.)
#
# Not run, because they test for something this API deliberately does otherwise:
#   ignored_auth             expects 401/403 for a wrong credential; on a tenant's paths a
#                            credential that is not the tenant's gets 404, as if the tenant did
#                            not exist (docs/admin-api.md: nothing tells one tenant about another)
#   unsupported_method       expects 405; an unknown method/path pair is a 404 problem document
#   positive_data_acceptance expects 2xx for any schema-valid request; a tenant document's values
#                            are checked like the configuration file's (a policy that does not
#                            parse, an upstream URL the SSRF guard refuses, a `since` that is no
#                            date), which a schema cannot say, so valid-looking requests get 400
#   negative_data_rejection  expects 4xx for schema-invalid input; the handlers are lenient where
#                            it is harmless (limit clamped to its range, an unquoted ETag in
#                            If-Match), which the document states as the canonical form
#   missing_required_header  nothing to test: no operation requires a header
# The generated cases are bounded (--max-examples) so the run stays well under two minutes on a
# loaded 2-core machine (about 10 s idle, 30 s under load).
#
# Exit code: schemathesis's (non-zero on any failed check), or 2 when the setup fails.
# Env: MARINA_BIN (default <repo>/target/debug/marina), KEEP_RESULTS=1 to keep the logs and
# reports, ST_MAX_EXAMPLES (default 25), ST_CHECKS (a comma-separated list, instead of the
# checks above). Extra arguments go to `schemathesis run`
# (e.g. --include-operation-id putTenant, --seed 1).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
MARINA_BIN=${MARINA_BIN:-$REPO/target/debug/marina}
ST=$HERE/.venv/bin/schemathesis
# Whole-run bound: schemathesis stops on its own long before this.
RUN_TIMEOUT_S=150
CHECKS=${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,use_after_free,ensure_resource_availability}

die() { echo "schemathesis/run.sh: $*" >&2; exit 2; }
[[ -x $MARINA_BIN ]] || die "marina binary not found at $MARINA_BIN (build it, or set MARINA_BIN)"
[[ -x $ST ]] || die "schemathesis missing: run scripts/install-test-deps.sh"
command -v redis-server >/dev/null || die "redis-server missing: run scripts/install-test-deps.sh"
command -v curl >/dev/null || die "curl missing"

OUT=$(mktemp -d "${TMPDIR:-/tmp}/marina-schemathesis.XXXXXX")
MARINA_PID=
REDIS_PID=

# TERM `pid`, wait (bounded, 10 s) for it to go, then KILL it.
stop() {
  local pid=$1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  local rc=$?
  stop "$MARINA_PID"
  stop "$REDIS_PID"
  if [[ $rc -ne 0 || ${KEEP_RESULTS:-} == 1 ]]; then
    echo "schemathesis/run.sh: logs and reports kept in $OUT" >&2
  else
    rm -rf "$OUT"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- redis: a throwaway server on a free loopback port (bounded retry for the port race) ------
for attempt in 1 2 3; do
  REDIS_PORT=$(free_port)
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --dir "$OUT" \
    --protected-mode yes >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  up=
  for _ in $(seq 100); do  # <= ~10 s
    kill -0 "$REDIS_PID" 2>/dev/null || break
    if [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; then up=1; break; fi
    sleep 0.1
  done
  [[ -n $up ]] && break
  stop "$REDIS_PID"
  REDIS_PID=
  [[ $attempt -eq 3 ]] && { tail -n 20 "$OUT/redis.log" >&2; die "redis-server did not start"; }
done

# --- marina: one platform administrator key (made by `marina keys new`), ports read back ------
"$MARINA_BIN" keys new --subject ops >"$OUT/key.txt"
KEY=$(head -n 1 "$OUT/key.txt")
DIGEST=$(sed -n 's/^ *sha256: *\([0-9a-f]\{64\}\) *$/\1/p' "$OUT/key.txt")
[[ $KEY == mk_* && ${#DIGEST} -eq 64 ]] || die "unexpected output of marina keys new"
cat >"$OUT/marina.yaml" <<EOF
admin:
  api_keys:
    - {subject: ops, sha256: $DIGEST}
EOF

# Both listeners on port 0: the node prints the addresses it bound on stdout.
"$MARINA_BIN" serve --config "$OUT/marina.yaml" --bind 127.0.0.1:0 --admin-bind 127.0.0.1:0 \
  --redis-url "redis://127.0.0.1:$REDIS_PORT/" --node-id schemathesis \
  >"$OUT/marina.out" 2>"$OUT/marina.log" &
MARINA_PID=$!
BASE= ADMIN=
for _ in $(seq 300); do  # <= ~30 s
  kill -0 "$MARINA_PID" 2>/dev/null || break
  if grep -q '^marina listening on ' "$OUT/marina.out"; then
    ADMIN=$(sed -n 's|^admin API listening on \(http://[^ ]*/admin/v1\)$|\1|p' "$OUT/marina.out")
    BASE=$(sed -n 's|^marina listening on \(http://[^ ]*\) .*$|\1|p' "$OUT/marina.out")
    break
  fi
  sleep 0.1
done
if [[ -z $ADMIN || -z $BASE ]]; then
  cat "$OUT/marina.out" >&2; tail -n 40 "$OUT/marina.log" >&2
  die "marina did not start listening"
fi
ready=
for _ in $(seq 100); do  # <= ~10 s: ready (the store reached), not just listening
  if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/readyz") == 200 ]]; then ready=1; break; fi
  sleep 0.1
done
[[ -n $ready ]] || { tail -n 40 "$OUT/marina.log" >&2; die "marina did not become ready"; }

# --- data: a tenant with a policy and an API key, written through the API itself -------------
admin() {  # admin METHOD PATH [BODY]: the administrator's request; fails on anything but 2xx
  local args=(-sS --fail-with-body --max-time 10 -X "$1" "$ADMIN$2" -H "Authorization: Bearer $KEY")
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  curl "${args[@]}" >>"$OUT/setup.log" || { cat "$OUT/setup.log" >&2; die "setup request $1 $2 failed"; }
  echo >>"$OUT/setup.log"
}
BOB_DIGEST=$("$MARINA_BIN" keys new --subject bob | sed -n 's/^ *sha256: *\([0-9a-f]\{64\}\) *$/\1/p')
admin PUT /tenants/acme "{
  \"auth\": {\"api_keys\": [{\"subject\": \"bob\", \"sha256\": \"$BOB_DIGEST\", \"roles\": [\"viewer\"]}]},
  \"rbac\": {\"policy\": \"p, viewer, tool:echo, call, allow\\ng, alice, viewer\"},
  \"upstreams\": [{\"kind\": \"builtin\", \"tools\": [\"echo\", \"add\"]}],
  \"limits\": {\"rate\": {\"tenant\": \"1000/s\", \"principal\": \"50/s\"}}
}"
admin POST /tenants/acme/api-keys '{"subject": "ci-bot", "roles": ["viewer"], "expires": "2099-01-01T00:00:00Z"}'
admin PATCH /tenants/acme '{"allowed_origins": ["https://app.acme.example"]}'
admin PUT /tenants/beta '{"auth": {"anonymous": true}, "upstreams": [{"kind": "builtin", "tools": ["echo"]}]}'
admin GET /audit

# --- schemathesis against the live document ---------------------------------------------------
echo "schemathesis: testing $ADMIN/openapi.json"
set +e
(cd "$OUT" && timeout "$RUN_TIMEOUT_S" "$ST" run "$ADMIN/openapi.json" \
  --url "$ADMIN" \
  -H "Authorization: Bearer $KEY" \
  --generation-with-security-parameters false \
  --checks "$CHECKS" \
  --max-examples "${ST_MAX_EXAMPLES:-25}" \
  --request-timeout 10 \
  --workers 1 \
  --suppress-health-check too_slow \
  --report junit --report-dir "$OUT/report" \
  "$@")
rc=$?
set -e
[[ $rc -eq 124 ]] && echo "schemathesis/run.sh: schemathesis did not finish within ${RUN_TIMEOUT_S} s" >&2

# Whatever was fuzzed, the node must still be up and its store reachable.
if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$BASE/readyz") != 200 ]]; then
  echo "schemathesis/run.sh: marina is not ready after the run (log: $OUT/marina.log)" >&2
  [[ $rc -eq 0 ]] && rc=1
fi
exit "$rc"
