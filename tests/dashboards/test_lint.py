"""Dashboard lint: grafana/dashboard-linter's rules re-implemented (it is not installable from
the Go module proxy), plus Marina's conventions and the metrics contract.

  template-datasource-rule     a `datasource` variable of type prometheus; every query uses it
  template-label-promql-rule   variable queries are label_values(<valid selector>, <label>)
  panel-datasource-rule        every panel and target uses ${datasource}
  panel-title-description-rule every panel has a title and a description
  panel-units-rule             every panel has a valid unit
  target-promql-rule           every target parses as PromQL (variables substituted)
  target-rate-interval-rule    rate/irate/increase use $__rate_interval
  target-job-rule / target-instance-rule   no target matches a hard-coded job or instance
and: every selector filters on the namespace/pod (and, where the series has it, tenant)
variables with a regex matcher; every metric name is in docs/operations.md's metrics reference or
is a recording rule of dashboards/prometheus/marina-rules.yaml; every label matcher names a label
the metric has; uids are stable; links carry the variables and the time range.
"""
from __future__ import annotations

import re

import promql_parser as pp
import pytest

import dashlib

DASHBOARDS = dashlib.load_dashboards()
CONTRACT = dashlib.load_contract()
RULES = dashlib.load_rules()
RECORDED = {r["record"] for _, r in dashlib.rules(RULES) if "record" in r}

EXPECTED = {"marina-overview", "marina-tenants", "marina-sessions", "marina-upstreams",
            "marina-security", "marina-cluster", "marina-runtime"}
NODE_VARS = ("namespace", "pod")
# Sentinels substituted for the variables and macros, so a parsed query shows what they became.
RATE_INTERVAL_S = 7919
MACROS = {"__rate_interval": f"{RATE_INTERVAL_S}s", "__interval": "7907s", "__range": "7901s",
          "__interval_ms": "7907000", "__range_s": "7901", "__range_ms": "7901000"}
# Grafana unit ids these dashboards may use (from Grafana's valueFormats registry).
VALID_UNITS = {"short", "none", "percent", "percentunit", "s", "ms", "µs", "ns", "bytes",
               "decbytes", "reqps", "ops", "rps", "wps", "cps", "bps", "Bps", "dateTimeAsIso",
               "dtdurations", "locale"}


def sentinel(name: str) -> str:
    return f"VAR_{name}"


def substituted(dashboard: dict, expr: str) -> str:
    variables = dashlib.dashboard_variables(dashboard)
    values = {name: [sentinel(name)] for name in variables}
    return dashlib.substitute(expr, variables, values, macros=MACROS)


def all_targets():
    for name, d in DASHBOARDS.items():
        for t in dashlib.targets(d):
            yield d, t


def series_labels(name: str) -> set[str] | None:
    if name in RECORDED:
        level = name.split(":")[0]
        return set(level.split("_")) | dashlib.TARGET_LABELS
    labels = CONTRACT.labels(name)
    if labels is None:
        return set(dashlib.TARGET_LABELS) if CONTRACT.knows(name) else None
    return labels | dashlib.TARGET_LABELS


def known(name: str) -> bool:
    return CONTRACT.knows(name) or name in RECORDED


def test_the_seven_dashboards_with_stable_uids():
    assert set(DASHBOARDS) == EXPECTED
    for name, d in DASHBOARDS.items():
        assert d["uid"] == name, f"{name}.json has uid {d['uid']}"
        assert d["title"].startswith("Marina / ")
        assert d.get("description"), name
        assert "marina" in d.get("tags", [])
        assert d.get("schemaVersion", 0) >= 39
    assert len({d["title"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)


def test_helm_copies_equal_the_dashboards():
    helm = {p.name: p.read_text() for p in dashlib.HELM_DASHBOARD_DIR.glob("*.json")}
    ours = {p.name: p.read_text() for p in dashlib.DASHBOARD_DIR.glob("marina-*.json")}
    assert helm == ours


def test_template_datasource_rule():
    for name, d in DASHBOARDS.items():
        variables = dashlib.dashboard_variables(d)
        ds = variables.get("datasource")
        assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", name
        for v in variables.values():
            if v["type"] == "query":
                assert v["datasource"]["uid"] in ("${datasource}", "$datasource"), (name, v["name"])


def test_template_label_promql_rule_and_the_node_variables():
    for name, d in DASHBOARDS.items():
        variables = dashlib.dashboard_variables(d)
        for var in ("namespace", "pod", "tenant"):
            assert var in variables, f"{name}: no {var} variable"
            v = variables[var]
            # "All" must be `.*`, which also matches series that lack the label (a local set-up
            # without Kubernetes target labels), and never a list of the values seen.
            assert v["includeAll"] and v["multi"] and v["allValue"] == ".*", (name, var)
            assert v["refresh"] == 2, (name, var)
        assert "marina_build_info" in variables["namespace"]["query"]
        assert "marina_build_info" in variables["pod"]["query"]
        for v in variables.values():
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"])
            assert m, f"{name}: variable {v['name']}: not label_values(<selector>, <label>)"
            ast = pp.parse(substituted(d, m.group(1)))
            for s in dashlib.selectors(ast):
                assert known(s.name), f"{name}: variable {v['name']}: unknown metric {s.name}"
                assert m.group(2) in series_labels(s.name), f"{name}: {s.name} has no label {m.group(2)}"


def test_dashboard_links_carry_variables_and_time():
    for name, d in DASHBOARDS.items():
        links = [link for link in d.get("links", []) if link.get("type") == "dashboards"]
        assert links, name
        for link in links:
            assert link["includeVars"] and link["keepTime"], name
            assert "marina" in link["tags"], name


def test_panel_title_description_units_and_datasource_rules():
    problems = []
    for name, d in DASHBOARDS.items():
        ids = []
        for p in dashlib.panels(d):
            ids.append(p.get("id"))
            if p["type"] == "row":
                assert p.get("title"), name
                continue
            where = f"{name} / {p.get('title')!r}"
            if not p.get("title"):
                problems.append(f"{where}: no title")
            if not p.get("description"):
                problems.append(f"{where}: no description")
            unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit")
            if unit not in VALID_UNITS:
                problems.append(f"{where}: unit {unit!r}")
            if p.get("datasource", {}).get("uid") not in ("${datasource}", "$datasource"):
                problems.append(f"{where}: panel datasource {p.get('datasource')}")
            refs = [t.get("refId") for t in p.get("targets", [])]
            if not refs or len(set(refs)) != len(refs):
                problems.append(f"{where}: refIds {refs}")
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("uid") not in ("${datasource}", "$datasource"):
                    problems.append(f"{where}: target datasource {t.get('datasource')}")
            if p["type"] == "table" and not all(t.get("instant") for t in p.get("targets", [])):
                problems.append(f"{where}: a table's queries must be instant")
            gp = p.get("gridPos", {})
            if gp.get("x", 0) + gp.get("w", 0) > 24:
                problems.append(f"{where}: wider than the grid")
        if len(set(ids)) != len(ids) or None in ids:
            problems.append(f"{name}: panel ids not unique: {ids}")
    assert not problems, "\n".join(problems)


def target_problems(dashboard: dict, raw_expr: str) -> list[str]:
    """target-promql, target-rate-interval, target-job/instance rules; the variables; the
    contract's names and labels."""
    expr = substituted(dashboard, raw_expr)
    if "$" in expr:
        return [f"unknown variable left in {expr}"]
    try:
        ast = pp.parse(expr)  # target-promql-rule
    except Exception as e:  # noqa: BLE001 - the parser raises plain exceptions
        return [f"does not parse: {e}"]
    problems = []
    for func, seconds in dashlib.range_calls(ast):
        if func in ("rate", "irate", "increase", "delta", "idelta", "deriv") and seconds != RATE_INTERVAL_S:
            problems.append(f"{func}() without $__rate_interval")
    for s in dashlib.selectors(ast):
        if not known(s.name):
            problems.append(f"metric {s.name} is not in the metrics reference nor a recording rule")
            continue
        m = dashlib.matchers(s)
        if "job" in m or "instance" in m:
            problems.append(f"hard-coded job/instance: {s}")
        labels = series_labels(s.name)
        for label in m:
            if label not in labels:
                problems.append(f"{s.name} has no label {label!r} (contract: {sorted(labels)})")
        wanted = list(NODE_VARS) + (["tenant"] if "tenant" in labels else [])
        for var in wanted:
            if m.get(var) != ("=~", sentinel(var)):
                problems.append(f'{s} does not filter {var}=~"${var}"')
    return problems


@pytest.mark.parametrize("dashboard,target", [pytest.param(d, t, id=t.id) for d, t in all_targets()])
def test_target(dashboard, target):
    assert target_problems(dashboard, target.expr) == []


N = 'namespace=~"$namespace", pod=~"$pod"'
T = N + ', tenant=~"$tenant"'


@pytest.mark.parametrize("expr,problem", [
    (f"sum(rate(marina_sessions_started_total{{{T}}}[5m]))", "without $__rate_interval"),
    (f"sum(increase(marina_sessions_started_total{{{T}}}[1h]))", "without $__rate_interval"),
    (f"sum(rate(marina_session_started_total{{{T}}}[$__rate_interval]))", "not in the metrics reference"),
    (f'sum(marina_sse_streams_open{{{N}, job="marina"}})', "hard-coded job/instance"),
    (f'sum(marina_sse_streams_open{{{N}, instance="10.0.0.1:9090"}})', "hard-coded job/instance"),
    (f"sum(marina_sessions_active{{{N}}})", 'filter tenant'),
    ('sum(marina_sse_streams_open{namespace="prod", pod=~"$pod"})', "filter namespace"),
    (f'sum(marina_sse_streams_open{{{N}, tenant=~"$tenant"}})', "has no label 'tenant'"),
    (f'sum(rate(mcp_server_operation_duration_seconds_count{{{T}, error_typ!=""}}[$__rate_interval]))', "has no label"),
    (f"sum(rate(marina_sessions_started_total{{{T}}}[$__rate_interval])", "does not parse"),
    (f'sum(marina_sessions_active{{{T}, x=~"$nope"}})', "unknown variable"),
])
def test_lint_catches(expr, problem):
    problems = target_problems(DASHBOARDS["marina-overview"], expr)
    assert any(problem in p for p in problems), problems


def test_every_recording_rule_is_used_by_a_dashboard_or_an_alert():
    used = set()
    for d, t in all_targets():
        used |= {s.name for s in dashlib.selectors(pp.parse(substituted(d, t.expr)))}
    for _, rule in dashlib.rules(RULES):
        used |= {s.name for s in dashlib.selectors(pp.parse(rule["expr"]))}
    assert RECORDED - used == set(), "recording rules nothing reads"
