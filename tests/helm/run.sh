#!/usr/bin/env bash
# Tests of the Helm chart helm/marina, offline (tools from scripts/install-test-deps.sh, cached in
# $MARINA_TOOLS, default ~/.cache/marina-tools):
#
#   1. helm lint --strict with every value set of tests/helm/values/;
#   2. helm template with each value set, compared with tests/helm/golden/<set>.yaml, and its
#      NOTES.txt with <set>.notes.txt (`tests/helm/run.sh --update` rewrites the golden files);
#      NOTES.txt's warnings (tests/helm/fixtures/notes-warnings.yaml);
#   3. every rendered manifest validated strictly (unknown fields are errors) against the
#      Kubernetes schemas bundled in the kubernetes-validate PyPI package, for the oldest
#      Kubernetes the chart supports and the newest bundled; the prometheus-operator objects
#      (ServiceMonitor, PodMonitor, PrometheusRule) strictly decoded into the operator's Go types
#      (tests/helm/crdcheck);
#   4. the same with the chart's dashboards and rules (files/, from dashboards/generate.py)
#      with the monitoring CRDs served, so the PrometheusRule and dashboard templates are exercised;
#   5. each file of tests/helm/bad/ (layered over values/defaults.yaml) must be refused, with the
#      message its `# expect:` line names;
#   6. the validators themselves refuse the broken manifests of tests/helm/fixtures/invalid;
#   7. with MARINA_BIN (set by scripts/test-all.sh), the real binary starts with the rendered
#      configuration files (Marina's own checks of unknown keys, credentials on a public bind);
#   8. properties of the rendered output (security context, termination arithmetic, no Secret
#      rendered, capability gating) and the Dockerfile's agreement with the chart.
#
# The Dockerfile itself is not built: there is no Docker daemon and no registry for base images
# here (see helm/marina/README.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CHART=$REPO/helm/marina
TOOLS=${MARINA_TOOLS:-$HOME/.cache/marina-tools}
HELM=$TOOLS/bin/helm
CRDCHECK=$TOOLS/bin/crdcheck
KV=$TOOLS/kubernetes-validate/bin/kubernetes-validate
PY=$TOOLS/kubernetes-validate/bin/python
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with bundled
# schemas.
KUBE_VERSIONS=(1.27.0 1.37.0)
RELEASE=marina
NAMESPACE=marina

UPDATE=0
[[ ${1:-} == --update ]] && UPDATE=1

for t in "$HELM" "$CRDCHECK" "$KV" "$PY"; do
  if [[ ! -x $t ]]; then
    echo "tests/helm: $t is missing; run scripts/install-test-deps.sh" >&2
    exit 1
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
passed=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; passed=$((passed + 1)); }

# helm template of the chart at $1 with value files $2..; extra flags in TEMPLATE_FLAGS.
render() {
  local chart=$1; shift
  local args=()
  for v in "$@"; do args+=(-f "$v"); done
  "$HELM" template "$RELEASE" "$chart" --namespace "$NAMESPACE" \
    --kube-version "${KUBE_VERSIONS[-1]}" "${args[@]}" ${TEMPLATE_FLAGS:-}
}

# Validate one rendered file: Kubernetes kinds with kubernetes-validate --strict (every
# version), monitoring.coreos.com kinds with crdcheck.
validate() {
  local file=$1 name=$2
  local core=$WORK/$name.core.yaml
  "$PY" - "$file" "$core" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
EOF
  local v out
  for v in "${KUBE_VERSIONS[@]}"; do
    if out=$("$KV" --strict --quiet -k "$v" "$core" 2>&1); then
      ok "$name: Kubernetes $v schemas (strict)"
    else
      fail "$name: Kubernetes $v schemas"; echo "$out" >&2
    fi
  done
  if out=$("$CRDCHECK" "$file" 2>&1); then
    ok "$name: ${out#crdcheck: }"
  else
    fail "$name: prometheus-operator types"; echo "$out" >&2
  fi
}

echo "== the validators refuse broken manifests (tests/helm/fixtures/invalid)"
for broken in "$HERE"/fixtures/invalid/*.yaml; do
  name=$(basename "$broken" .yaml)
  case $name in
    servicemonitor-* | podmonitor-* | prometheusrule-*) check=("$CRDCHECK" "$broken") ;;
    *) check=("$KV" --strict --quiet -k "${KUBE_VERSIONS[-1]}" "$broken") ;;
  esac
  if "${check[@]}" >/dev/null 2>&1; then
    fail "invalid/$name was accepted by $(basename "${check[0]}")"
  else
    ok "invalid/$name refused by $(basename "${check[0]}")"
  fi
done

echo "== helm lint --strict"
for values in "$HERE"/values/*.yaml; do
  set_name=$(basename "$values" .yaml)
  if out=$("$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" \
      --kube-version "${KUBE_VERSIONS[0]}" -f "$values" 2>&1); then
    ok "lint $set_name"
  else
    fail "lint $set_name"; echo "$out" >&2
  fi
done

echo "== helm template: golden files and schema validation"
# As in a cluster with the prometheus-operator CRDs (capability-gated objects render).
for values in "$HERE"/values/*.yaml; do
  set_name=$(basename "$values" .yaml)
  out=$WORK/$set_name.yaml
  if ! TEMPLATE_FLAGS="--api-versions monitoring.coreos.com/v1" render "$CHART" "$values" >"$out" 2>"$WORK/err"; then
    fail "template $set_name"; cat "$WORK/err" >&2; continue
  fi
  golden=$HERE/golden/$set_name.yaml
  if [[ $UPDATE == 1 ]]; then
    cp "$out" "$golden"; ok "golden $set_name updated"
  elif [[ ! -f $golden ]]; then
    fail "golden $set_name: $golden is missing (tests/helm/run.sh --update)"
  elif ! diff -u "$golden" "$out" >"$WORK/diff"; then
    fail "golden $set_name differs from the rendered output (tests/helm/run.sh --update if intended):"
    head -60 "$WORK/diff" >&2
  else
    ok "golden $set_name"
  fi
  validate "$out" "$set_name"
done

echo "== NOTES.txt (golden tests/helm/golden/<set>.notes.txt, and its warnings)"
# helm template does not render NOTES.txt: a copy of the chart renders it through tpl.
cp -r "$CHART" "$WORK/notes-chart"
mkdir "$WORK/notes-chart/notes"
cp "$CHART/templates/NOTES.txt" "$WORK/notes-chart/notes/"
echo 'notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | toJson }}' >"$WORK/notes-chart/templates/zz-notes.yaml"
notes() {
  TEMPLATE_FLAGS="--show-only templates/zz-notes.yaml" render "$WORK/notes-chart" "$@" |
    "$PY" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["notes"] + "\n")'
}
for values in "$HERE"/values/*.yaml; do
  set_name=$(basename "$values" .yaml)
  notes "$values" >"$WORK/$set_name.notes.txt"
  golden=$HERE/golden/$set_name.notes.txt
  if [[ $UPDATE == 1 ]]; then
    cp "$WORK/$set_name.notes.txt" "$golden"; ok "golden $set_name.notes.txt updated"
  elif ! diff -u "$golden" "$WORK/$set_name.notes.txt" >"$WORK/diff" 2>&1; then
    fail "golden $set_name.notes.txt differs (tests/helm/run.sh --update if intended):"; head -40 "$WORK/diff" >&2
  else
    ok "golden $set_name.notes.txt"
  fi
done
# The warnings about missing rules and dashboards: a copy of the chart without its files/.
cp -r "$WORK/notes-chart" "$WORK/notes-chart-bare"
rm -rf "$WORK/notes-chart-bare/files"
TEMPLATE_FLAGS="--show-only templates/zz-notes.yaml" render "$WORK/notes-chart-bare" "$HERE/fixtures/notes-warnings.yaml" |
  "$PY" -c 'import sys, yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["notes"] + "\n")' >"$WORK/warnings.notes.txt"
for w in "more than one pod without Redis" "admin.enabled=false: no admin API and no /metrics" \
    "both a ServiceMonitor and a PodMonitor" "does not serve monitoring.coreos.com/v1" \
    "ships no files/prometheus-rules.yaml" "ships no files/dashboards/*.json"; do
  if grep -qF -- "$w" "$WORK/warnings.notes.txt"; then ok "NOTES warns: $w"; else fail "NOTES does not warn: $w"; fi
done
if grep -q WARNING "$WORK/defaults.notes.txt"; then fail "NOTES warns with the default values"; else ok "NOTES: no warning with the default values"; fi

echo "== dashboards and rules (the chart's files/, generated by dashboards/generate.py and rules.py)"
cp -r "$CHART" "$WORK/chart"
if ! compgen -G "$CHART/files/dashboards/*.json" >/dev/null || [[ ! -f $CHART/files/prometheus-rules.yaml ]]; then
  fail "the chart ships no files/dashboards/*.json or files/prometheus-rules.yaml (python3 dashboards/generate.py)"
fi
if TEMPLATE_FLAGS="--api-versions monitoring.coreos.com/v1" render "$WORK/chart" "$HERE/values/full.yaml" \
    >"$WORK/files.yaml" 2>"$WORK/err"; then
  validate "$WORK/files.yaml" "full+files"
  cp "$WORK/files.yaml" "$WORK/files-rendered.yaml"
else
  fail "template full+files"; cat "$WORK/err" >&2
fi
# A PodMonitor instead of the ServiceMonitor.
if TEMPLATE_FLAGS="--api-versions monitoring.coreos.com/v1" render "$WORK/chart" "$HERE/values/full.yaml" \
    "$HERE/fixtures/podmonitor.yaml" >"$WORK/podmonitor.yaml" 2>"$WORK/err"; then
  if grep -q '^kind: PodMonitor$' "$WORK/podmonitor.yaml" && ! grep -q '^kind: ServiceMonitor$' "$WORK/podmonitor.yaml"; then
    ok "full+podmonitor: a PodMonitor and no ServiceMonitor"
  else
    fail "full+podmonitor: expected a PodMonitor and no ServiceMonitor"
  fi
  validate "$WORK/podmonitor.yaml" "full+podmonitor"
else
  fail "template full+podmonitor"; cat "$WORK/err" >&2
fi

echo "== rendering refuses bad values (tests/helm/bad, each over values/defaults.yaml)"
for bad in "$HERE"/bad/*.yaml; do
  name=$(basename "$bad" .yaml)
  expect=$(sed -n 's/^# expect: //p' "$bad" | head -1)
  if [[ -z $expect ]]; then fail "bad/$name has no '# expect:' line"; continue; fi
  if render "$CHART" "$HERE/values/defaults.yaml" "$bad" >/dev/null 2>"$WORK/err"; then
    fail "bad/$name was accepted"
  elif ! grep -qF -- "$expect" "$WORK/err"; then
    fail "bad/$name was refused, but not with \"$expect\":"; cat "$WORK/err" >&2
  else
    ok "bad/$name refused: $(grep -F -- "$expect" "$WORK/err" | head -1 | cut -c1-150)"
  fi
done

echo "== the chart with nothing given is refused with a clear message"
if render "$CHART" >/dev/null 2>"$WORK/err"; then
  fail "the chart rendered without the required Secret references"
elif grep -qF "redis.existingSecret.name is required" "$WORK/err"; then
  ok "no values: $(grep -oF 'redis.existingSecret.name is required' "$WORK/err")"
else
  fail "no values: unexpected error"; cat "$WORK/err" >&2
fi

echo "== monitoring objects need the prometheus-operator API (or skipCapabilityCheck)"
render "$CHART" "$HERE/values/full.yaml" >"$WORK/nocrd.yaml"
printf 'monitoring:\n  skipCapabilityCheck: true\n' >"$WORK/skip.yaml"
render "$CHART" "$HERE/values/full.yaml" "$WORK/skip.yaml" >"$WORK/forced.yaml"

echo "== marina accepts the chart's configuration files (MARINA_BIN; skipped without it)"
# The ConfigMap's marina.yaml of the defaults and full value sets, with the pod's environment,
# started by the real binary on 0.0.0.0 (port 0) until it listens: Marina's own checks (unknown
# keys, admin credential and tenant auth on a non-loopback bind) pass. The in-memory store stands
# in for Redis; the Secret mounts for files in a temporary directory.
# Start marina with config $1, logging to $2; true once it listens (then stopped), false if it exits.
run_marina() {
  # Only the pod's MARINA__ variables (scripts/test-all.sh exports MARINA__ADMIN__BIND, which
  # would override the file's admin listener).
  (
    for v in $(compgen -e | grep '^MARINA__' || true); do unset "$v"; done
    MARINA__SERVER__ADVERTISE_URL=http://10.0.0.1:8080 MARINA__SERVER__NODE_ID=test-pod \
      exec "$MARINA_BIN" serve --config "$1"
  ) >"$2" 2>&1 </dev/null &
  local pid=$! i
  for i in $(seq 1 150); do
    if grep -q "marina listening on" "$2"; then kill "$pid"; wait "$pid" 2>/dev/null || true; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; return 1; fi
    sleep 0.2
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  return 1
}
if [[ -n ${MARINA_BIN:-} && -x ${MARINA_BIN:-} ]]; then
  for set_name in defaults full; do
    dir=$WORK/run-$set_name
    mkdir -p "$dir"
    "$PY" - "$WORK/$set_name.yaml" "$dir" <<'EOF_PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = sys.argv[2]
cm = next(d for d in docs if d["kind"] == "ConfigMap" and "marina.yaml" in d.get("data", {}))
text = cm["data"]["marina.yaml"].replace("/var/run/secrets/", out + "/secrets/")
cfg = yaml.safe_load(text)
cfg["server"]["bind"] = "0.0.0.0:0"
cfg["admin"]["bind"] = "0.0.0.0:0" if cfg["admin"]["bind"] else ""
open(out + "/marina.yaml", "w").write(yaml.safe_dump(cfg))
# The files the pod would have mounted (cluster secret, upstream tokens).
import os, re
for path in set(re.findall(re.escape(out) + r"/secrets/[^\s\"']+", text)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write("0123456789abcdef0123456789abcdef")
EOF_PY
    cfg_file=$dir/marina.yaml
    if run_marina "$cfg_file" "$dir/log"; then
      ok "marina serve --config <$set_name's marina.yaml> starts"
    elif grep -q 'unknown field `shutdown_delay_ms`' "$dir/log"; then
      "$PY" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c["server"].pop("shutdown_delay_ms"); yaml.safe_dump(c, open(sys.argv[1], "w"))' "$cfg_file"
      # This binary predates server.shutdown_delay_ms: the rest is still checked, the skip reported.
      if run_marina "$cfg_file" "$dir/log"; then
        ok "marina serve --config <$set_name's marina.yaml> starts (SKIPPED server.shutdown_delay_ms: this binary predates it)"
      else
        fail "marina refuses $set_name's configuration:"; cat "$dir/log" >&2
      fi
    else
      fail "marina refuses $set_name's configuration:"; cat "$dir/log" >&2
    fi
  done
else
  echo "(MARINA_BIN is not set: scripts/test-all.sh sets it after building marina)"
fi

echo "== properties of the rendered output, and the Dockerfile against the chart"
if "$PY" - "$WORK" "$REPO" >"$WORK/properties.log" 2>&1 <<'EOF'
import json, re, sys, yaml
work, repo = sys.argv[1], sys.argv[2]
problems = []
def check(cond, msg):
    if not cond:
        problems.append(msg)
    else:
        print("ok:", msg)
def load(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]
values = yaml.safe_load(open(f"{repo}/helm/marina/values.yaml"))
chart = yaml.safe_load(open(f"{repo}/helm/marina/Chart.yaml"))

for name in ["defaults", "minimal", "full"]:
    docs = load(f"{work}/{name}.yaml")
    kinds = [d["kind"] for d in docs]
    check("Secret" not in kinds, f"{name}: no Secret is rendered (secrets come from existing Secrets)")
    dep = next(d for d in docs if d["kind"] == "Deployment")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "marina.yaml" in d["data"])
    cfg = yaml.safe_load(cm["data"]["marina.yaml"])
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    sc = c["securityContext"]
    check(sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and not sc["allowPrivilegeEscalation"]
          and sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault",
          f"{name}: restrictive container securityContext")
    check(spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault",
          f"{name}: restrictive pod securityContext")
    check(any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
          and any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{name}: /tmp is an emptyDir")
    s = cfg["server"]
    need = -(-(s["shutdown_delay_ms"] + s["drain_timeout_ms"]) // 1000)
    check(spec["terminationGracePeriodSeconds"] > need,
          f"{name}: terminationGracePeriodSeconds {spec['terminationGracePeriodSeconds']} > shutdown delay + drain ({need} s)")
    check(re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"].get("checksum/config", "")),
          f"{name}: checksum/config annotation")
    env = {e["name"]: e for e in c["env"]}
    check(env["MARINA__SERVER__ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{values['containerPorts']['mcp']}"
          and env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP",
          f"{name}: advertise_url from the pod IP")
    check(s["bind"] == f"0.0.0.0:{values['containerPorts']['mcp']}", f"{name}: MCP binds 0.0.0.0")
    probes = {p: c[p]["httpGet"] for p in ["startupProbe", "livenessProbe", "readinessProbe"]}
    check(probes["livenessProbe"]["path"] == "/healthz" and probes["readinessProbe"]["path"] == "/readyz"
          and all(p["port"] == "mcp" for p in probes.values()), f"{name}: probes /healthz and /readyz on the MCP port")
    check(c["image"].split("@")[0].endswith(":" + (chart["appVersion"] if name != "full" else "0.1.0")),
          f"{name}: image tag pinned ({c['image']})")
    for d in docs:
        labels = d["metadata"]["labels"]
        for k in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"]:
            if k not in labels:
                problems.append(f"{name}: {d['kind']}/{d['metadata']['name']} lacks the label {k}")
    redis = "MARINA__STORE__REDIS_URL" in env
    check(redis == (name != "minimal"), f"{name}: Redis URL from a Secret only with Redis")
    if redis:
        check("secretKeyRef" in env["MARINA__STORE__REDIS_URL"]["valueFrom"], f"{name}: Redis URL from secretKeyRef")
        check(cfg["cluster"]["secret_file"].startswith("/var/run/secrets/marina/cluster/")
              and any("secret" in v for v in spec["volumes"] if v["name"] == "cluster-secret"),
              f"{name}: cluster secret mounted from a Secret")
    check(("admin" in [p["name"] for p in c["ports"]]) == (name != "minimal"), f"{name}: admin port iff admin.enabled")

full = load(f"{work}/full.yaml")
kinds = {d["kind"] for d in full}
check({"Deployment", "Service", "ConfigMap", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget",
       "NetworkPolicy", "ServiceMonitor"} <= kinds, f"full: every object kind ({sorted(kinds)})")
check("replicas" not in next(d for d in full if d["kind"] == "Deployment")["spec"], "full: no replicas with an HPA")
minimal = load(f"{work}/minimal.yaml")
check({d["kind"] for d in minimal} == {"Deployment", "Service", "ConfigMap", "ServiceAccount"},
      "minimal: Deployment, Service, ConfigMap and ServiceAccount only (no PDB for one replica)")
nocrd = {d["kind"] for d in load(f"{work}/nocrd.yaml")}
check(not nocrd & {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
      "without monitoring.coreos.com/v1 no monitor or rule is rendered")
forced = {d["kind"] for d in load(f"{work}/forced.yaml")}
check("ServiceMonitor" in forced, "skipCapabilityCheck renders the ServiceMonitor anyway")
files = load(f"{work}/files-rendered.yaml")
rule = [d for d in files if d["kind"] == "PrometheusRule"]
check(len(rule) == 1 and rule[0]["spec"]["groups"], "PrometheusRule rendered from files/prometheus-rules.yaml")
dash = [d for d in files if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
check(dash and all(json.loads(v) for d in dash for v in d["data"].values()),
      f"dashboards as ConfigMaps labelled grafana_dashboard=\"1\" ({len(dash)})")
# Shipped verbatim: the rules equal the rule file's groups, each dashboard its file (text with
# {{ }}, e.g. $labels in annotations or legend formats, is not rendered as a Helm template).
import glob, os
# ... but for the runbook links, which point where values/full.yaml says the docs are served.
runbooks = yaml.safe_load(open(f"{repo}/tests/helm/values/full.yaml"))["monitoring"]["prometheusRule"]["runbookBaseUrl"]
src_text = open(f"{work}/chart/files/prometheus-rules.yaml").read()
check("https://marina.invalid/docs/operations.md#" in src_text, "files/prometheus-rules.yaml links runbooks to the placeholder")
src_rules = yaml.safe_load(src_text.replace("https://marina.invalid/docs/operations.md", runbooks))["groups"]
check(rule and rule[0]["spec"]["groups"] == src_rules,
      "PrometheusRule groups equal files/prometheus-rules.yaml's, runbook links under monitoring.prometheusRule.runbookBaseUrl")
src_dash = {os.path.basename(f): json.load(open(f)) for f in glob.glob(f"{work}/chart/files/dashboards/*.json")}
shipped = {k: json.loads(v) for d in dash for k, v in d["data"].items()}
check(shipped == src_dash, f"dashboard ConfigMaps equal files/dashboards/*.json ({sorted(src_dash)})")

# The Dockerfile against the chart: binary path, ports, numeric user.
dockerfile = open(f"{repo}/Dockerfile").read()
runtime = dockerfile.split("AS runtime", 1)[1]
check(re.search(r"cargo build --release --locked --bin marina", dockerfile), "Dockerfile: builds --release --bin marina")
entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", runtime, re.M).group(1))
check(entry == ["/usr/local/bin/marina"] and "COPY --from=build /out/marina /usr/local/bin/marina" in runtime,
      "Dockerfile: ENTRYPOINT is the copied binary")
dep = next(d for d in full if d["kind"] == "Deployment")
check(dep["spec"]["template"]["spec"]["containers"][0]["args"][0] == "serve" and "command" not in dep["spec"]["template"]["spec"]["containers"][0],
      "chart: runs the image's ENTRYPOINT with `serve`")
exposed = sorted(int(p) for p in re.search(r"^EXPOSE (.+)$", runtime, re.M).group(1).split())
check(exposed == sorted(values["containerPorts"].values()), f"Dockerfile EXPOSE {exposed} = chart containerPorts")
user = re.search(r"^USER (\d+):(\d+)$", runtime, re.M)
check(user and int(user.group(1)) == values["podSecurityContext"]["runAsUser"]
      and int(user.group(2)) == values["podSecurityContext"]["runAsGroup"], "Dockerfile USER = chart runAsUser:runAsGroup")
check(not re.search(r"(?i)^(ENV|ARG)\s+\S*(SECRET|PASSWORD|TOKEN|REDIS_URL)", dockerfile, re.M), "Dockerfile: no secret in ENV/ARG")
check(not re.search(r"^ENV\s+.*MARINA__", dockerfile, re.M),
      "Dockerfile: no MARINA__ environment (it would override the chart's configuration file)")
cmd = json.loads(re.search(r"^CMD (.+)$", runtime, re.M).group(1))
check(cmd[0] == "serve" and f"0.0.0.0:{values['containerPorts']['mcp']}" in cmd,
      f"Dockerfile: CMD serves MCP on 0.0.0.0:{values['containerPorts']['mcp']} ({cmd})")
# The build context after .dockerignore (its patterns here: paths and **/name, no negation):
# every workspace member's manifest and targets, and every file the sources include_str!, are in
# it; .git and target are not.
import fnmatch, os, subprocess, tomllib
patterns = [l.strip() for l in open(f"{repo}/.dockerignore") if l.strip() and not l.startswith("#")]
check(not any(p.startswith("!") for p in patterns), ".dockerignore: no negated patterns (this check does not model them)")
def ignored(path):
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for p in patterns:
        for pre in prefixes:
            if fnmatch.fnmatchcase(pre, p) or (p.startswith("**/") and fnmatch.fnmatchcase(pre.split("/")[-1], p[3:])):
                return True
    return False
tracked = subprocess.run(["git", "-C", repo, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
context = {f for f in tracked if not ignored(f)}
check(ignored(".git/config") and ignored("target/release/marina") and ignored("tests/peers/node/node_modules/x"),
      ".dockerignore keeps .git, target and node_modules out of the context")
ws = tomllib.load(open(f"{repo}/Cargo.toml", "rb"))["workspace"]
need = {"Cargo.toml", "Cargo.lock"}
for m in ws["members"]:
    man = tomllib.load(open(f"{repo}/{m}/Cargo.toml", "rb"))
    need.add(f"{m}/Cargo.toml")
    for t in [man.get("lib", {})] + man.get("bin", []) + man.get("test", []):
        if "path" in t:
            need.add(os.path.normpath(f"{m}/{t['path']}"))
    if not man.get("lib") and os.path.exists(f"{repo}/{m}/src/lib.rs"):
        need.add(f"{m}/src/lib.rs")
for f in tracked:
    if f.endswith(".rs") and f.split("/")[0] in ("services", "actors"):
        for inc in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', open(f"{repo}/{f}").read()):
            need.add(os.path.normpath(os.path.join(os.path.dirname(f), inc)))
missing = sorted(need - context)
check(not missing, f"Docker build context holds the workspace manifests, targets and included files ({len(need)}): missing {missing}")

if problems:
    for p in problems:
        print("FAIL:", p, file=sys.stderr)
    sys.exit(1)
EOF
then :; else fail "properties"; fi
passed=$((passed + $(grep -c '^ok:' "$WORK/properties.log" || true)))
cat "$WORK/properties.log"

echo
echo "helm: $passed passed, $failures failed"
[[ $failures -eq 0 ]]
