"""Unit tests of check_live.py (the live Prometheus check) against a fake Prometheus HTTP API:
variable and macro substitution as Grafana does it, query kinds, and what is reported."""
from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import yaml

import check_live
import dashlib


# --- substitution ---------------------------------------------------------------------------

VARS = {
    "datasource": {"name": "datasource", "type": "datasource", "query": "prometheus"},
    "namespace": {"name": "namespace", "type": "query", "multi": True, "includeAll": True, "allValue": ".*"},
    "tenant": {"name": "tenant", "type": "query", "multi": True, "includeAll": True, "allValue": ".*"},
    "single": {"name": "single", "type": "custom", "multi": False, "includeAll": False},
}


@pytest.mark.parametrize("range_s,scrape_s,interval,rate_interval", [
    (3600, 15, "15s", "60s"),  # $__interval floors at the scrape interval; 4 x scrape wins
    (86400, 15, "87s", "102s"),            # 24h / 1000 points = 86.4 -> 87s; + scrape interval
    (3600, 30, "30s", "120s"),
    (7 * 86400, 15, "605s", "620s"),
])
def test_intervals(range_s, scrape_s, interval, rate_interval):
    macros = dashlib.Intervals(range_s=range_s, scrape_s=scrape_s).macros()
    assert macros["__interval"] == interval
    assert macros["__rate_interval"] == rate_interval
    assert macros["__range"] == f"{range_s}s"


def test_all_is_the_all_value_which_matches_missing_labels():
    expr = 'sum(rate(x{namespace=~"$namespace", tenant=~"${tenant}"}[$__rate_interval]))'
    got = dashlib.substitute(expr, VARS, {}, dashlib.Intervals())
    assert got == 'sum(rate(x{namespace=~".*", tenant=~".*"}[60s]))'


def test_values_are_regex_escaped_and_joined_like_grafana():
    got = dashlib.substitute('x{tenant=~"$tenant"}', VARS, {"tenant": ["acme"]})
    assert got == 'x{tenant=~"acme"}'
    got = dashlib.substitute('x{tenant=~"$tenant"}', VARS, {"tenant": ["a.b", "c"]})
    assert got == r'x{tenant=~"(a\\.b|c)"}'
    got = dashlib.substitute('x{tenant=~"[[tenant]]"}', VARS, {"tenant": ["a+b"]})
    assert got == r'x{tenant=~"a\\+b"}'
    # A single-valued variable without "All" is inserted as it is.
    assert dashlib.substitute('x{a="$single"}', VARS, {"single": ["v.1"]}) == 'x{a="v.1"}'
    # :raw skips the escaping.
    assert dashlib.substitute('x{a=~"${tenant:raw}"}', VARS, {"tenant": ["a.b", "c"]}) == 'x{a=~"a.b|c"}'


def test_unknown_variables_stay_so_the_query_fails_loudly():
    assert dashlib.substitute('x{a=~"$nope"}', VARS, {}) == 'x{a=~"$nope"}'


def test_every_committed_target_substitutes_completely():
    for d in dashlib.load_dashboards().values():
        variables = dashlib.dashboard_variables(d)
        for t in dashlib.targets(d):
            expr = dashlib.substitute(t.expr, variables, {"tenant": ["acme"]})
            assert "$" not in expr and "[[" not in expr, (t.id, expr)


def test_parse_vars_and_durations():
    assert check_live.parse_vars(["tenant=acme,beta", "pod=marina-0"]) == {
        "tenant": ["acme", "beta"], "pod": ["marina-0"]}
    with pytest.raises(ValueError):
        check_live.parse_vars(["tenant"])
    assert dashlib.parse_duration("1h30m") == 5400
    assert dashlib.parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        dashlib.parse_duration("5 minutes")


# --- against a fake Prometheus ----------------------------------------------------------------

class FakePrometheus:
    """Answers queries: `empty_metric` has no series, `broken_metric` is a bad query, anything
    else one series. Records every query it was sent."""

    def __init__(self, rules_loaded: dict | None = None):
        self.queries: list[tuple[str, dict]] = []
        self.rules_loaded = rules_loaded or {"groups": []}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict):
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                if self.path.startswith("/api/v1/rules"):
                    return self._answer(200, {"status": "success", "data": fake.rules_loaded})
                self._answer(404, {"status": "error", "error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                params = {k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(length).decode()).items()}
                path = self.path.split("?")[0]
                fake.queries.append((path, params))
                if path == "/api/v1/series":
                    return self._answer(200, {"status": "success", "data": [{"__name__": "x", "tenant": "acme"}]})
                q = params.get("query", "")
                if "broken_metric" in q:
                    return self._answer(400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
                if "empty_metric" in q:
                    kind = "matrix" if path.endswith("query_range") else "vector"
                    return self._answer(200, {"status": "success", "data": {"resultType": kind, "result": []}})
                if path.endswith("query_range"):
                    result = [{"metric": {}, "values": [[1, "1"], [2, "2"]]}]
                    return self._answer(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})
                return self._answer(200, {"status": "success", "data": {"resultType": "vector",
                                                                       "result": [{"metric": {}, "value": [1, "1"]}]}})

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = FakePrometheus()
    yield f
    f.close()


def dashboard(uid: str, targets: list[dict]) -> dict:
    return {"uid": uid, "templating": {"list": list(VARS.values()) + [
        {"name": "pod", "type": "query", "multi": True, "includeAll": True, "allValue": ".*",
         "query": 'label_values(marina_build_info{namespace=~"$namespace"}, pod)'}]},
        "panels": [{"type": "row", "title": "r", "panels": []},
                   {"type": "timeseries", "title": "p", "targets": targets}]}


def test_reports_no_data_and_errors_and_substitutes(fake):
    d = dashboard("d", [
        {"refId": "A", "expr": 'sum(rate(good_metric{tenant=~"$tenant"}[$__rate_interval]))'},
        {"refId": "B", "expr": 'sum(empty_metric{namespace=~"$namespace"})'},
        {"refId": "C", "expr": "broken_metric(", "instant": True},
    ])
    prom = check_live.Prometheus(fake.url)
    results = check_live.check_dashboards(prom, {"d": d}, {"tenant": ["acme"]},
                                          dashlib.Intervals(range_s=3600, scrape_s=15), end=10_000)
    by_id = {r.id: r for r in results}
    assert by_id["d / p / A"].status == "ok"
    assert by_id["d / p / B"].status == "no data"
    assert by_id["d / p / C"].status == "error" and "parse error" in by_id["d / p / C"].detail
    assert by_id["d / $pod"].kind == "variable"
    sent = {p.get("query"): (path, p) for path, p in fake.queries if "query" in p}
    path, params = sent['sum(rate(good_metric{tenant=~"acme"}[60s]))']
    assert path == "/api/v1/query_range" and params["step"] == "15"
    assert float(params["end"]) - float(params["start"]) == 3600
    assert sent['sum(empty_metric{namespace=~".*"})'][0] == "/api/v1/query_range"
    assert sent["broken_metric("][0] == "/api/v1/query"  # instant target
    series = [p for path, p in fake.queries if path == "/api/v1/series"]
    assert series[0]["match[]"] == 'marina_build_info{namespace=~".*"}'


def test_rules_alerts_may_be_silent_but_their_selectors_need_data(fake):
    doc = {"groups": [{"name": "g", "rules": [
        {"record": "a:good:rate5m", "expr": "sum(rate(good_metric[5m]))"},
        {"record": "a:empty:rate5m", "expr": "sum(rate(empty_metric[5m]))"},
        {"alert": "Quiet", "expr": "empty_metric > 1 and on () good_metric"},
        {"alert": "Firing", "expr": "good_metric > 0"},
        {"alert": "UsesRecorded", "expr": "a:good:rate5m > 1"},
    ]}]}
    fake.rules_loaded = {"groups": [{"name": "g", "rules": [
        {"name": "a:good:rate5m", "health": "ok"}, {"name": "a:empty:rate5m", "health": "ok"},
        {"name": "Quiet", "health": "err", "lastError": "boom"}, {"name": "Firing", "health": "ok"}]}]}
    results = check_live.check_rules(check_live.Prometheus(fake.url), doc, end=10_000)
    status = {(r.kind, r.id): r.status for r in results}
    assert status[("record", "g / a:good:rate5m")] == "ok"
    assert status[("record", "g / a:empty:rate5m")] == "no data"
    assert status[("alert", "g / Quiet")] == "ok"  # not firing is fine
    assert status[("alert", "g / Firing")] == "ok"
    assert status[("selector", "g / Quiet / empty_metric{}")] == "no data"
    assert status[("selector", "g / Quiet / good_metric{}")] == "ok"
    assert not any(k == "selector" and "a:good" in i for k, i in status)  # recorded: checked above
    assert status[("rules-api", "g / Quiet")] == "error"
    assert status[("rules-api", "g / UsesRecorded")] == "error"  # not loaded


def test_main_exit_status_and_allow_empty(fake, tmp_path, capsys):
    (tmp_path / "marina-x.json").write_text(json.dumps(dashboard("marina-x", [
        {"refId": "A", "expr": 'sum(good_metric{tenant=~"$tenant"})'},
        {"refId": "B", "expr": 'sum(empty_metric{tenant=~"$tenant"})'}])))
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "a:good:rate5m", "expr": "sum(good_metric)"}]}]}))
    common = ["--prometheus", fake.url, "--dashboards", str(tmp_path), "--rules", str(rules),
              "--no-loaded-rules", "--var", "tenant=acme"]
    assert check_live.main(common) == 1
    out = capsys.readouterr().out
    assert "NO DATA" in out and "marina-x / p / B" in out and "1 failing" in out
    assert check_live.main(common + ["--allow-empty", r"marina-x / p / B$"]) == 0
    assert check_live.main(["--prometheus", fake.url, "--range", "an hour"]) == 2


def test_unreachable_prometheus_is_an_error():
    prom = check_live.Prometheus("http://127.0.0.1:9", timeout=2)
    status, detail = check_live.judge(prom.query("up", 0))
    assert status == "error" and detail
