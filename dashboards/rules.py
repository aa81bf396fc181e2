#!/usr/bin/env python3
"""Marina's Prometheus recording and alerting rules: the one source.

Renders the same `groups:` document to

  dashboards/prometheus/marina-rules.yaml      a Prometheus rule file (rule_files:)
  helm/marina/files/prometheus-rules.yaml      the chart wraps it in a PrometheusRule

    python3 dashboards/rules.py           # write both files
    python3 dashboards/rules.py --check   # exit 1 if a committed file differs from a fresh render

Every metric used here is in the metrics reference of docs/operations.md (the contract), and
every alert has a runbook section there whose heading is the alert's name.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = [
    REPO / "dashboards" / "prometheus" / "marina-rules.yaml",
    REPO / "helm" / "marina" / "files" / "prometheus-rules.yaml",
]

# Where the runbooks are published. Each alert's runbook_url is this plus `#<alertname lowercased>`,
# the anchor of its heading under "Alert runbooks" in docs/operations.md. The committed files carry
# a placeholder under `.invalid` (RFC 2606: it never resolves), because only a deployment knows
# where its operators read the docs: the chart replaces it with
# `monitoring.prometheusRule.runbookBaseUrl` (required with the PrometheusRule), and
# `--runbook-base URL --out FILE` renders a plain rule file with it.
RUNBOOK_PLACEHOLDER = "https://marina.invalid/docs/operations.md"
RUNBOOK_BASE_URL = RUNBOOK_PLACEHOLDER

# Server-side JSON-RPC codes that are the client's fault and so not errors of the service (OTel MCP
# conventions: -32700 parse error, -32600 invalid request, -32601 method not found, -32602 invalid
# params, -32002 resource not found). The empty alternative is success (no error_type label).
NOT_ERRORS = ["", "-32700", "-32600", "-32601", "-32602", "-32002"]
SERVER_ERROR = 'error_type!~"%s"' % "|".join(NOT_ERRORS)

# Service-level objectives (per tenant, over 30 days).
AVAILABILITY_SLO = 0.999  # 99.9 % of MCP requests end without a server-side error
LATENCY_SLO = 0.99  # 99 % of MCP requests take Marina itself (not upstreams) at most ...
LATENCY_THRESHOLD = "0.025"  # ... 25 ms: a bucket boundary of marina_request_processing_seconds

# Multi-window, multi-burn-rate alerts (Google SRE workbook, "Alerting on SLOs", table 5-8):
# (long window, short window, burn-rate factor), grouped into a fast (page) and a slow (ticket) alert.
FAST_BURN = [("1h", "5m", 14.4), ("6h", "30m", 6)]
SLOW_BURN = [("1d", "2h", 3), ("3d", "6h", 1)]
SLO_WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]

# A Marina node in both set-ups: Kubernetes (namespace/pod target labels) and a plain static config.
NODE = "namespace, pod, instance"
# A node's name in an alert: its pod in Kubernetes, else its scrape address.
NODE_NAME = "{{ if $labels.pod }}{{ $labels.pod }}{{ else }}{{ $labels.instance }}{{ end }}"


def runbook(alert: str) -> str:
    return f"{RUNBOOK_BASE_URL}#{alert.lower()}"


def record(name: str, expr: str) -> dict:
    return {"record": name, "expr": expr}


def alert(name: str, expr: str, *, for_: str, severity: str, summary: str, description: str,
          labels: dict | None = None) -> dict:
    rule = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity, **(labels or {})}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": runbook(name),
    }
    return rule


# --- recording rules ------------------------------------------------------------------------

def dashboard_rules() -> list[dict]:
    """Per-tenant 5-minute rates that keep the Tenants and Security dashboards cheap. They keep
    `namespace` and `pod` so the dashboards' variables still filter them."""
    by = "sum by (namespace, pod, tenant)"
    return [
        record("namespace_pod_tenant:mcp_server_operations:rate5m",
               f"{by} (rate(mcp_server_operation_duration_seconds_count[5m]))"),
        record("namespace_pod_tenant:mcp_server_operation_errors:rate5m",
               f"{by} (rate(mcp_server_operation_duration_seconds_count{{{SERVER_ERROR}}}[5m]))"),
        record("namespace_pod_tenant_le:mcp_server_operation_duration_seconds_bucket:rate5m",
               "sum by (namespace, pod, tenant, le) "
               "(rate(mcp_server_operation_duration_seconds_bucket[5m]))"),
        record("namespace_pod_tenant:marina_auth_failures:rate5m",
               f"{by} (rate(marina_auth_failures_total[5m]))"),
        record("namespace_pod_tenant:marina_authz_denials:rate5m",
               f'{by} (rate(marina_authz_decisions_total{{decision="deny"}}[5m]))'),
        record("namespace_pod_tenant:marina_limit_denials:rate5m",
               f'{by} (rate(marina_limit_decisions_total{{decision="deny"}}[5m]))'),
    ]


def slo_rules() -> list[dict]:
    """Per-tenant error and slow ratios over every window the burn-rate alerts use."""
    rules = []
    by = "sum by (namespace, tenant)"
    for w in SLO_WINDOWS:
        rules += [
            record(f"namespace_tenant:mcp_server_operations:rate{w}",
                   f"{by} (rate(mcp_server_operation_duration_seconds_count[{w}]))"),
            record(f"namespace_tenant:mcp_server_operation_errors:rate{w}",
                   f"{by} (rate(mcp_server_operation_duration_seconds_count{{{SERVER_ERROR}}}[{w}]))"),
            record(f"namespace_tenant:mcp_server_operation_errors:ratio_rate{w}",
                   f"namespace_tenant:mcp_server_operation_errors:rate{w}\n"
                   f"  / namespace_tenant:mcp_server_operations:rate{w}"),
            record(f"namespace_tenant:marina_request_processing_slow:ratio_rate{w}",
                   f"1 - (\n"
                   f'  {by} (rate(marina_request_processing_seconds_bucket{{le="{LATENCY_THRESHOLD}"}}[{w}]))\n'
                   f"  / {by} (rate(marina_request_processing_seconds_count[{w}]))\n"
                   f")"),
        ]
    return rules


# --- alerts -------------------------------------------------------------------------------

def burn_expr(ratio: str, budget: float, windows: list[tuple[str, str, float]]) -> str:
    parts = []
    for long_w, short_w, factor in windows:
        threshold = f"({factor} * {budget:g})"
        parts.append(f"(\n  {ratio}{long_w} > {threshold}\n"
                     f"  and {ratio}{short_w} > {threshold}\n)")
    return "\nor\n".join(parts)


def slo_alerts() -> list[dict]:
    err_budget = round(1 - AVAILABILITY_SLO, 6)
    lat_budget = round(1 - LATENCY_SLO, 6)
    err_ratio = "namespace_tenant:mcp_server_operation_errors:ratio_rate"
    slow_ratio = "namespace_tenant:marina_request_processing_slow:ratio_rate"

    def windows(ws):
        return " or ".join(f"{l} and {s} above {f:g}x" for l, s, f in ws)

    out = []
    for speed, ws, severity, horizon in [("Fast", FAST_BURN, "critical", "in 2 to 5 days"),
                                         ("Slow", SLOW_BURN, "warning", "in 10 to 30 days")]:
        out.append(alert(
            f"MarinaErrorBudgetBurn{speed}", burn_expr(err_ratio, err_budget, ws),
            for_="2m" if speed == "Fast" else "15m", severity=severity,
            labels={"slo": "availability"},
            summary="Tenant {{ $labels.tenant }} burns its error budget %s" % (
                "fast" if speed == "Fast" else "slowly"),
            description=(
                "Tenant {{ $labels.tenant }} (namespace {{ $labels.namespace }}): "
                "{{ $value | humanizePercentage }} of MCP requests end in a server-side error "
                "(JSON-RPC codes other than -32700, -32600, -32601, -32602 and -32002, or a tool "
                "error); that burns the %g%% availability SLO's error budget %s (burn rate windows "
                "%s); at this pace the 30-day budget is gone %s."
                % (AVAILABILITY_SLO * 100, "fast" if speed == "Fast" else "steadily", windows(ws), horizon)),
        ))
        out.append(alert(
            f"MarinaLatencyBudgetBurn{speed}", burn_expr(slow_ratio, lat_budget, ws),
            for_="2m" if speed == "Fast" else "15m", severity=severity,
            labels={"slo": "latency"},
            summary="Tenant {{ $labels.tenant }}: Marina's own latency burns its SLO budget %s" % (
                "fast" if speed == "Fast" else "slowly"),
            description=(
                "Tenant {{ $labels.tenant }} (namespace {{ $labels.namespace }}): "
                "{{ $value | humanizePercentage }} of MCP requests take Marina itself (time spent "
                "waiting on upstreams excluded) more than %s s; that burns the %g%% latency SLO's "
                "budget %s (burn rate windows %s); at this pace it is gone %s."
                % (LATENCY_THRESHOLD, LATENCY_SLO * 100, "fast" if speed == "Fast" else "steadily",
                   windows(ws), horizon)),
        ))
    return out


def component_alerts() -> list[dict]:
    return [
        alert(
            "MarinaStoreErrors",
            f"sum by ({NODE}) (rate(marina_store_errors_total[5m]))\n"
            f"  / sum by ({NODE}) (rate(marina_store_operation_duration_seconds_count[5m]))\n"
            f"> 0.01",
            for_="5m", severity="critical",
            summary="Marina node " + NODE_NAME + " fails store (Redis) calls",
            description=(
                "{{ $value | humanizePercentage }} of this node's store calls (Redis round trips) "
                "failed over the last 5 minutes. Sessions, leases, event logs and limits live in "
                "Redis; clients get 503s while it fails."),
        ),
        alert(
            "MarinaSessionTakeoverSpike",
            'sum by (namespace) (increase(marina_session_takeovers_total{reason!="drain"}[10m])) > 25',
            for_="0m", severity="warning",
            summary="Marina nodes take over many sessions outside drains",
            description=(
                "{{ $value | humanize }} sessions were taken over from another node in the last 10 "
                "minutes in namespace {{ $labels.namespace }} without a drain (owner gone or lease "
                "expired): nodes are dying, or leases expire because Redis or a node is too slow."),
        ),
        alert(
            "MarinaAuthFailureSurge",
            "sum by (namespace, tenant) (rate(marina_auth_failures_total[5m])) > 1",
            for_="10m", severity="warning",
            summary="Authentication failures surge for tenant {{ $labels.tenant }}",
            description=(
                "Tenant {{ $labels.tenant }} refuses {{ $value | humanize }} authentications per "
                "second (over 1/s for 10 minutes): an expired or rotated credential in a client "
                "fleet, a misconfigured issuer or audience, or credential stuffing."),
        ),
        alert(
            "MarinaLimitDenialSurge",
            'sum by (namespace, tenant, scope) (rate(marina_limit_decisions_total{decision="deny"}[5m])) > 1',
            for_="10m", severity="warning",
            summary="Tenant {{ $labels.tenant }} hits its {{ $labels.scope }} limit",
            description=(
                "Tenant {{ $labels.tenant }} has {{ $value | humanize }} requests per second refused "
                "by its {{ $labels.scope }} limit (over 1/s for 10 minutes): clients get 429s or "
                "MCP errors."),
        ),
        alert(
            "MarinaUpstreamDown",
            "max by (namespace, tenant, upstream) (marina_upstream_up) == 0",
            for_="5m", severity="warning",
            summary="Upstream {{ $labels.upstream }} of tenant {{ $labels.tenant }} is down",
            description=(
                "No Marina node has reached upstream {{ $labels.upstream }} of tenant "
                "{{ $labels.tenant }} for 5 minutes; its tools, resources and prompts fail or "
                "are missing from lists."),
        ),
        alert(
            "MarinaNodeDown",
            "up == 0\nand on (job, instance)\n  max_over_time(marina_build_info[1h])",
            for_="2m", severity="warning",
            summary="Marina node " + NODE_NAME + " is not scraped",
            description=(
                "Prometheus has failed to scrape the Marina node {{ $labels.instance }} "
                "(job {{ $labels.job }}) for 2 minutes, though it served metrics within the last "
                "hour: the node is down, hung, or its admin listener is unreachable."),
        ),
        alert(
            "MarinaAbsent",
            "absent(marina_build_info)",
            for_="10m", severity="critical",
            summary="No Marina node reports metrics",
            description=(
                "Prometheus has had no marina_build_info series for 10 minutes: every node is down, "
                "or scraping is broken (ServiceMonitor/PodMonitor, network policy, admin port)."),
        ),
        alert(
            "MarinaStreamsNearCap",
            "sum without (kind) (marina_sse_streams_open)\n"
            "  / (marina_sse_streams_max > 0)\n> 0.9",
            for_="5m", severity="warning",
            summary="Marina node " + NODE_NAME + " is near its SSE stream cap",
            description=(
                "{{ $value | humanizePercentage }} of this node's server.max_open_streams are open; "
                "past the cap new streams are refused (reason refused_cap)."),
        ),
    ]


def groups() -> dict:
    return {"groups": [
        {"name": "marina-dashboards.rules", "interval": "1m", "rules": dashboard_rules()},
        {"name": "marina-slo.rules", "interval": "1m", "rules": slo_rules()},
        {"name": "marina-slo.alerts", "rules": slo_alerts()},
        {"name": "marina.alerts", "rules": component_alerts()},
    ]}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)

HEADER = ("# Generated by dashboards/rules.py -- do not edit; edit the generator and run it.\n"
          "# Runbooks: docs/operations.md, \"Alert runbooks\".\n")


def render() -> str:
    return HEADER + yaml.dump(groups(), Dumper=_Dumper, sort_keys=False, width=1000,
                              default_flow_style=False, allow_unicode=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--runbook-base", metavar="URL",
                    help="where docs/operations.md is served (with --out; default: the placeholder)")
    ap.add_argument("--out", metavar="FILE", type=Path,
                    help="write one rule file here instead of the committed ones")
    args = ap.parse_args()
    global RUNBOOK_BASE_URL
    if args.runbook_base:
        if not args.out:
            ap.error("--runbook-base needs --out: the committed files keep the placeholder")
        RUNBOOK_BASE_URL = args.runbook_base.rstrip("#")
    text = render()
    if args.out:
        args.out.write_text(text)
        return 0
    stale = []
    for out in OUTPUTS:
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(out.relative_to(REPO))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
    if stale:
        print("out of date (run python3 dashboards/rules.py): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
