#!/usr/bin/env python3
"""Run every dashboard target and every rule expression against a live Prometheus scraping Marina.

    tests/dashboards/check_live.py --prometheus http://127.0.0.1:9090 [--var tenant=acme] ...

For every target of every panel of dashboards/marina-*.json, substitutes the template variables
(`--var name=value[,value…]`; a variable not given is "All") and Grafana's macros
($__rate_interval, $__interval, $__range…, computed from --range, --scrape-interval and
--max-points the way Grafana does), then runs it as a range query (an instant query for instant
targets) and reports any that fails or returns no series. For every rule of
dashboards/prometheus/marina-rules.yaml: a recording rule's expression must return data; an
alert's expression must evaluate without error (it returns nothing while the alert is not
firing), and each series selector inside it must match series — so a misspelt or missing metric
is caught. Finally, if the rules are loaded into that Prometheus, every rule of the marina groups
must report health "ok".

Exit status: 0 when everything passed, 1 otherwise, 2 on bad usage. Only the standard library
is needed besides promql-parser (to find the selectors of alert expressions) and PyYAML.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dashlib  # noqa: E402


@dataclass
class Result:
    kind: str  # "panel", "record", "alert", "selector", "rules-api", "variable"
    id: str
    query: str
    status: str  # "ok", "no data", "error"
    detail: str = ""


class Prometheus:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, params: dict | None = None, post: bool = True) -> dict:
        data = urllib.parse.urlencode(params or {}, doseq=True).encode()
        if post:
            req = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        else:
            req = urllib.request.Request(self.url + path + ("?" + data.decode() if data else ""))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # Prometheus answers 400/422 with a JSON error body
            try:
                body = json.loads(e.read())
            except Exception:  # noqa: BLE001
                return {"status": "error", "error": f"HTTP {e.code}"}
        except (urllib.error.URLError, OSError, ValueError) as e:
            return {"status": "error", "error": str(e)}
        return body

    def query(self, expr: str, at: float) -> dict:
        return self._call("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict:
        return self._call("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}",
                                                  "end": f"{end:.3f}", "step": f"{step:g}"})

    def series(self, match: str, start: float, end: float) -> dict:
        return self._call("/api/v1/series", {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})

    def rules(self) -> dict:
        return self._call("/api/v1/rules", post=False)


def judge(answer: dict) -> tuple[str, str]:
    """(status, detail) of a query answer."""
    if answer.get("status") != "success":
        return "error", f"{answer.get('errorType', '')} {answer.get('error', '')}".strip()
    data = answer.get("data", {})
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return "ok", ""
    if not result:
        return "no data", ""
    # A range query whose every series has only NaN values shows nothing in Grafana either.
    values = [v for s in result for v in (s.get("values") or [s.get("value")]) if v]
    if values and all(str(v[1]).lower() in ("nan", "+inf", "-inf", "inf") for v in values):
        return "no data", "only NaN/Inf values"
    return "ok", f"{len(result)} series"


def parse_vars(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--var {item!r}: expected name=value[,value...]")
        name, value = item.split("=", 1)
        out[name.strip()] = [v for v in value.split(",") if v != ""]
    return out


def check_dashboards(prom: Prometheus, dashboards: dict[str, dict], values: dict[str, list[str]],
                     intervals: dashlib.Intervals, end: float) -> list[Result]:
    results = []
    start = end - intervals.range_s
    step = intervals.interval_s
    for name, d in dashboards.items():
        variables = dashlib.dashboard_variables(d)
        for var in variables.values():
            if var.get("type") != "query":
                continue
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var.get("query", ""))
            if not m:
                continue
            selector = dashlib.substitute(m.group(1), variables, values, intervals)
            answer = prom.series(selector, start, end)
            status, detail = ("error", answer.get("error", "")) if answer.get("status") != "success" else ("ok", "")
            if status == "ok":
                found = sorted({s.get(m.group(2)) for s in answer.get("data", []) if s.get(m.group(2))})
                # Informational: a label the target has not got (no Kubernetes) leaves "All" only.
                detail = f"{len(found)} values" + (f": {', '.join(found[:5])}" if found else " (only All)")
            results.append(Result("variable", f"{name} / ${var['name']}", selector, status, detail))
        for t in dashlib.targets(d):
            expr = dashlib.substitute(t.expr, variables, values, intervals)
            if t.instant:
                answer = prom.query(expr, end)
            else:
                answer = prom.query_range(expr, start, end, step)
            status, detail = judge(answer)
            results.append(Result("panel", t.id, expr, status, detail))
    return results


def check_rules(prom: Prometheus, doc: dict, end: float, check_loaded: bool = True) -> list[Result]:
    import promql_parser as pp
    results = []
    recorded = {r["record"] for _, r in dashlib.rules(doc) if "record" in r}
    for group, rule in dashlib.rules(doc):
        if "record" in rule:
            status, detail = judge(prom.query(rule["expr"], end))
            results.append(Result("record", f"{group} / {rule['record']}", rule["expr"], status, detail))
            continue
        name = rule["alert"]
        answer = prom.query(rule["expr"], end)
        status, detail = judge(answer)
        if status == "no data":  # not firing: that is fine for an alert
            status, detail = "ok", "not firing"
        elif status == "ok":
            detail = "firing: " + detail
        results.append(Result("alert", f"{group} / {name}", rule["expr"], status, detail))
        try:
            selectors = dashlib.selectors(pp.parse(rule["expr"]))
        except Exception as e:  # noqa: BLE001
            results.append(Result("alert", f"{group} / {name}", rule["expr"], "error", f"parse: {e}"))
            continue
        seen = set()
        for s in selectors:
            text = str(s)
            if text in seen or s.name in ("up",):
                continue
            seen.add(text)
            if s.name in recorded:
                continue  # checked as a recording rule
            if name == "MarinaAbsent":
                continue  # absent() is meant to find nothing
            st, det = judge(prom.query(f"count({text})", end))
            results.append(Result("selector", f"{group} / {name} / {text}", text, st, det))
    if check_loaded:
        answer = prom.rules()
        if answer.get("status") != "success":
            results.append(Result("rules-api", "/api/v1/rules", "", "error", answer.get("error", "")))
        else:
            loaded = {}
            for g in answer["data"].get("groups", []):
                for r in g.get("rules", []):
                    loaded[(g["name"], r["name"])] = r
            for group, rule in dashlib.rules(doc):
                key = (group, rule.get("record") or rule.get("alert"))
                r = loaded.get(key)
                if r is None:
                    results.append(Result("rules-api", f"{key[0]} / {key[1]}", "", "error",
                                          "rule not loaded in this Prometheus"))
                elif r.get("health") not in ("ok", "unknown"):
                    results.append(Result("rules-api", f"{key[0]} / {key[1]}", "", "error",
                                          f"health {r.get('health')}: {r.get('lastError', '')}"))
                elif r.get("health") == "unknown":
                    results.append(Result("rules-api", f"{key[0]} / {key[1]}", "", "ok", "not evaluated yet"))
                else:
                    results.append(Result("rules-api", f"{key[0]} / {key[1]}", "", "ok", ""))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE[,VALUE]",
                    help="a template variable's value(s); not given = All")
    ap.add_argument("--range", default="1h", help="dashboard time range (default 1h)")
    ap.add_argument("--scrape-interval", default="15s", help="the data source's scrape interval (default 15s)")
    ap.add_argument("--max-points", type=int, default=1000, help="max data points per panel (default 1000)")
    ap.add_argument("--dashboards", type=Path, default=dashlib.DASHBOARD_DIR)
    ap.add_argument("--rules", type=Path, default=dashlib.RULES_FILE)
    ap.add_argument("--only", choices=["dashboards", "rules"], help="check only one of the two")
    ap.add_argument("--no-loaded-rules", action="store_true",
                    help="do not require the rules to be loaded in this Prometheus (/api/v1/rules)")
    ap.add_argument("--allow-empty", action="append", default=[], metavar="REGEX",
                    help="a check whose id matches may return no data (repeatable)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--verbose", "-v", action="store_true", help="list passing checks too")
    args = ap.parse_args(argv)
    try:
        values = parse_vars(args.var)
        intervals = dashlib.Intervals(range_s=dashlib.parse_duration(args.range),
                                      scrape_s=dashlib.parse_duration(args.scrape_interval),
                                      max_points=args.max_points)
    except ValueError as e:
        print(f"check_live: {e}", file=sys.stderr)
        return 2
    prom = Prometheus(args.prometheus, args.timeout)
    end = time.time()
    results: list[Result] = []
    if args.only != "rules":
        results += check_dashboards(prom, dashlib.load_dashboards(args.dashboards), values, intervals, end)
    if args.only != "dashboards":
        results += check_rules(prom, dashlib.load_rules(args.rules), end, not args.no_loaded_rules)
    allowed = [re.compile(r) for r in args.allow_empty]
    failed = 0
    for r in results:
        if r.status == "no data" and any(a.search(r.id) for a in allowed):
            r.status, r.detail = "ok", "no data (allowed)"
        bad = r.status != "ok" and r.kind != "variable"
        failed += bad
        if bad or args.verbose:
            line = f"{r.status.upper():8} {r.kind:9} {r.id}"
            if r.detail:
                line += f"  [{r.detail}]"
            print(line)
            if bad and r.query:
                print("         " + r.query.replace("\n", "\n         "))
    checked = sum(1 for r in results if r.kind != "variable")
    print(f"check_live: {checked - failed} of {checked} checks ok, {failed} failing "
          f"($__rate_interval={intervals.macros()['__rate_interval']}, range {args.range})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
