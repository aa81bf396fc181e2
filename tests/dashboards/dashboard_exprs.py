#!/usr/bin/env python3
"""Print every dashboard target, its variables set to "All" and Grafana's macros substituted, as
a Prometheus rule file (one recording rule per target), so `promtool check rules` parses each
with Prometheus' own parser. Used by tests/dashboards/run.sh."""
from __future__ import annotations

import sys

import yaml

import dashlib


def main() -> int:
    rules = []
    for d in dashlib.load_dashboards().values():
        variables = dashlib.dashboard_variables(d)
        for i, t in enumerate(dashlib.targets(d)):
            expr = dashlib.substitute(t.expr, variables, {}, dashlib.Intervals())
            rules.append({"record": f"dashboard_target:{d['uid'].replace('-', '_')}:{i}",
                          "expr": expr, "labels": {"panel": t.id}})
    yaml.safe_dump({"groups": [{"name": "dashboard-targets", "rules": rules}]}, sys.stdout,
                   sort_keys=False, width=1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
