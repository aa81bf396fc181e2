#!/usr/bin/env python3
"""Marina's Grafana dashboards, as code (grafana-foundation-sdk, pinned in requirements.txt).

Writes dashboards/<name>.json and the same files to helm/marina/files/dashboards/ (the chart
ships them as ConfigMaps for the Grafana sidecar).

    python3 dashboards/generate.py           # write
    python3 dashboards/generate.py --check   # exit 1 if a committed file differs from a fresh render

Conventions (checked by tests/dashboards/lint.py):
- every dashboard has the variables datasource, namespace, pod and tenant; namespace and pod come
  from marina_build_info, which carries the Prometheus target labels in Kubernetes. Their "All"
  is `.*`, which also matches series without the label (a local set-up with static targets);
- every query filters on them, and rate()/increase() use $__rate_interval (the recording rules of
  dashboards/rules.py are already 5-minute rates);
- every panel has a title, a description and a unit; uids are stable;
- the dashboard links carry the variables and the time range.
Metric names are those of the metrics reference in docs/operations.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prom_m

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rules import LATENCY_THRESHOLD, SERVER_ERROR  # noqa: E402  (one definition of an error)

REPO = Path(__file__).resolve().parent.parent
OUT_DIRS = [REPO / "dashboards", REPO / "helm" / "marina" / "files" / "dashboards"]
TAG = "marina"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters. NODE: the node variables; T: plus the tenant.
NODE = 'namespace=~"$namespace", pod=~"$pod"'
T = NODE + ', tenant=~"$tenant"'
RI = "$__rate_interval"
HAS_ERR = 'error_type!=""'
TOOLS_CALL = 'mcp_method_name="tools/call"'
DENY = 'decision="deny"'
CLASS_4XX_5XX = 'http_response_status_class=~"4xx|5xx"'


def sel(metric: str, *extra: str, tenant: bool = True) -> str:
    matchers = ", ".join([T if tenant else NODE, *extra])
    return f"{metric}{{{matchers}}}"


def rate(metric: str, *extra: str, tenant: bool = True) -> str:
    return f"rate({sel(metric, *extra, tenant=tenant)}[{RI}])"


def quantile(q: float, metric: str, by: str = "", *extra: str, tenant: bool = True) -> str:
    by_labels = ", ".join([x for x in [by, "le"] if x])
    return f"histogram_quantile({q}, sum by ({by_labels}) ({rate(metric + '_bucket', *extra, tenant=tenant)}))"


def node_join(expr: str) -> str:
    """Restrict a process_* series to Marina's targets (and the node variables)."""
    return f"{expr}\n  * on (job, instance) group_left (version) {sel('marina_build_info', tenant=False)}"


# --- panel helpers --------------------------------------------------------------------------

class Panels:
    """Collects panels and lays them out left to right, 24 columns per line."""

    def __init__(self):
        self.items = []

    def add(self, builder, w: int, h: int):
        self.items.append((builder, w, h))
        return self


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           table: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    else:
        q = q.range()
    if table:
        q = q.format(prom_m.PromQueryFormat.TABLE)
    return q


def timeseries(title: str, desc: str, unit: str, targets: list, stack: bool = False):
    p = (ts_b.Panel().title(title).description(desc).unit(unit).datasource(DS)
         .fill_opacity(10).line_width(1)
         .legend(common_b.VizLegendOptions().display_mode(common_m.LegendDisplayMode.TABLE)
                 .placement(common_m.LegendPlacement.BOTTOM).show_legend(True)
                 .calcs(["mean", "max", "lastNotNull"]))
         .tooltip(common_b.VizTooltipOptions().mode(common_m.TooltipDisplayMode.MULTI)
                  .sort(common_m.SortOrder.DESCENDING)))
    if stack:
        p = p.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    for i, t in enumerate(targets):
        p = p.with_target(t if isinstance(t, prom.Dataquery) else target(*t, ref=chr(65 + i)))
    return p


def stat(title: str, desc: str, unit: str, expr: str, decimals: int | None = None,
         steps: list[tuple[float | None, str]] | None = None):
    p = (stat_b.Panel().title(title).description(desc).unit(unit).datasource(DS)
         .graph_mode(common_m.BigValueGraphMode.AREA)
         .color_mode(common_m.BigValueColorMode.VALUE)
         .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .with_target(target(expr, instant=False)))
    if decimals is not None:
        p = p.decimals(decimals)
    if steps:
        p = p.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                         .steps([dm.Threshold(value=v, color=c) for v, c in steps]))
    return p


# Opens the Tenants dashboard on the clicked row's tenant, keeping the other variables and the time.
TENANT_LINK = (db.DashboardLink("Open tenant ${__data.fields.tenant}").type(dm.DashboardLinkType.LINK)
               .url("/d/marina-tenants/marina-tenants?${datasource:queryparam}&${namespace:queryparam}"
                    "&${pod:queryparam}&var-tenant=${__data.fields.tenant}&${__url_time_range}"))


def table(title: str, desc: str, unit: str, expr: str, value_name: str, tenant_link: bool = False,
          ascending: bool = False):
    """An instant top-N table: one row per series, the value column named `value_name`."""
    p = (table_b.Panel().title(title).description(desc).unit(unit).datasource(DS)
            .with_target(target(expr, instant=True, table=True))
            .with_transformation(dm.DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True},
                         "renameByName": {"Value": value_name}}))
            .with_transformation(dm.DataTransformerConfig(
                id_val="sortBy", options={"sort": [{"field": value_name, "desc": not ascending}]})))
    if tenant_link:
        p = p.data_links([TENANT_LINK])
    return p


# --- dashboards -----------------------------------------------------------------------------

def base(uid: str, title: str, desc: str) -> db.Dashboard:
    d = (db.Dashboard(title).uid(uid).description(desc).tags([TAG])
         .editable().timezone("browser").time("now-3h", "now").refresh("30s")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .link(db.DashboardLink("Marina").type(dm.DashboardLinkType.DASHBOARDS).tags([TAG])
               .as_dropdown(True).include_vars(True).keep_time(True).target_blank(False)
               .tooltip("Marina dashboards (keeps the variables and time range)").icon("external link"))
         .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
         .with_variable(db.QueryVariable("namespace").label("Namespace").datasource(DS)
                        .query("label_values(marina_build_info, namespace)")
                        .multi(True).include_all(True).all_value(".*")
                        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
         .with_variable(db.QueryVariable("pod").label("Pod").datasource(DS)
                        .query('label_values(marina_build_info{namespace=~"$namespace"}, pod)')
                        .multi(True).include_all(True).all_value(".*")
                        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
         .with_variable(db.QueryVariable("tenant").label("Tenant").datasource(DS)
                        .query('label_values(mcp_server_operation_duration_seconds_count'
                               '{namespace=~"$namespace", pod=~"$pod"}, tenant)')
                        .multi(True).include_all(True).all_value(".*")
                        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)))
    return d


def rows(d: db.Dashboard, sections: list[tuple[str, list[tuple[object, int, int]]]]) -> db.Dashboard:
    for title, panels in sections:
        d = d.with_row(db.Row(title))
        for p, w, h in panels:
            d = d.with_panel(p.span(w).height(h))
    return d


ERR = f"sum({rate('mcp_server_operation_duration_seconds_count', SERVER_ERROR)})"
ALL = f"sum({rate('mcp_server_operation_duration_seconds_count')})"


def overview() -> db.Dashboard:
    d = base("marina-overview", "Marina / Overview",
             "The fleet at a glance: MCP traffic, errors and latency (RED), sessions and SSE streams.")
    return rows(d, [
        ("Service level", [
            (stat("Request rate", "MCP requests (and notifications) per second received by the selected nodes for the selected tenants.",
                  "reqps", ALL), 4, 4),
            (stat("Error ratio", "Share of MCP requests ending in a server-side error. JSON-RPC -32700, -32600, -32601, -32602 and -32002 are the client's and do not count.",
                  "percentunit", f"{ERR}\n/\n{ALL}", 2,
                  steps=[(None, "green"), (0.001, "yellow"), (0.01, "red")]), 4, 4),
            (stat("p95 latency", "95th percentile of MCP request duration, receipt to result (upstream time included).",
                  "s", quantile(0.95, "mcp_server_operation_duration_seconds")), 4, 4),
            (stat("Active sessions", "Sessionful-era sessions whose actor lives on the selected nodes.",
                  "short", f"sum({sel('marina_sessions_active')})"), 4, 4),
            (stat("Open SSE streams", "Open SSE response streams (POST, GET and listen) on the selected nodes.",
                  "short", f"sum({sel('marina_sse_streams_open', tenant=False)})"), 4, 4),
            (stat("Nodes", "Marina nodes reporting metrics (marina_build_info).",
                  "short", f"count({sel('marina_build_info', tenant=False)})"), 4, 4),
        ]),
        ("Requests", [
            (timeseries("Requests by method", "MCP requests per second by mcp_method_name.", "reqps",
                        [(f"sum by (mcp_method_name) ({rate('mcp_server_operation_duration_seconds_count')})",
                          "{{mcp_method_name}}")], stack=True), 12, 8),
            (timeseries("Error ratio", "Server-side error ratio (the availability SLI; client-fault codes excluded), overall and by method.",
                        "percentunit",
                        [(f"{ERR}\n/\n{ALL}", "all"),
                         (f"sum by (mcp_method_name) ({rate('mcp_server_operation_duration_seconds_count', SERVER_ERROR)})\n/\n"
                          f"sum by (mcp_method_name) ({rate('mcp_server_operation_duration_seconds_count')})",
                          "{{mcp_method_name}}")]), 12, 8),
            (timeseries("Errors by type", "MCP requests per second answered with an error, by error_type (JSON-RPC code, tool_error or _OTHER); includes the client-fault codes.",
                        "reqps",
                        [(f"sum by (error_type) ({rate('mcp_server_operation_duration_seconds_count', HAS_ERR)})",
                          "{{error_type}}")], stack=True), 12, 8),
            (timeseries("Latency", "MCP request duration percentiles (upstream time included).", "s",
                        [(quantile(q, "mcp_server_operation_duration_seconds"), f"p{int(q * 100)}")
                         for q in (0.5, 0.95, 0.99)]), 12, 8),
            (timeseries("Marina's own time", "Marina's own time per MCP request (whole duration minus upstream and client waits): p50, p95, p99. The latency SLO counts requests above %s s." % LATENCY_THRESHOLD,
                        "s",
                        [(quantile(q, "marina_request_processing_seconds"), f"p{int(q * 100)}")
                         for q in (0.5, 0.95, 0.99)]), 12, 8),
            (timeseries("HTTP requests by status class", "Requests per second on the public listener by response status class.",
                        "reqps",
                        [(f"sum by (http_response_status_class) ({rate('http_server_request_duration_seconds_count', tenant=False)})",
                          "{{http_response_status_class}}")], stack=True), 12, 8),
        ]),
        ("Sessions and streams", [
            (timeseries("Active sessions by node", "Sessionful-era sessions per node (actors live on one node at a time).",
                        "short", [(f"sum by (pod, instance) ({sel('marina_sessions_active')})", "{{pod}} {{instance}}")],
                        stack=True), 12, 8),
            (timeseries("Open SSE streams by kind", "Open SSE response streams by kind (post, get, listen).",
                        "short", [(f"sum by (kind) ({sel('marina_sse_streams_open', tenant=False)})", "{{kind}}")],
                        stack=True), 12, 8),
        ]),
    ])


REC_OPS = "namespace_pod_tenant:mcp_server_operations:rate5m"
REC_ERR = "namespace_pod_tenant:mcp_server_operation_errors:rate5m"
REC_LE = "namespace_pod_tenant_le:mcp_server_operation_duration_seconds_bucket:rate5m"


def tenants() -> db.Dashboard:
    d = base("marina-tenants", "Marina / Tenants",
             "Per-tenant traffic, errors and latency: top-N tables over the recording rules, and "
             "the selected tenants' methods and tools.")
    top = lambda e: f"topk(10, {e})"  # noqa: E731
    return rows(d, [
        ("Top tenants (last 5 minutes)", [
            (table("Top tenants by request rate", "The 10 busiest of the selected tenants (recording rule, 5-minute rate).",
                   "reqps", top(f"sum by (tenant) ({REC_OPS}{{{T}}})"), "requests/s", tenant_link=True), 8, 9),
            (table("Top tenants by error ratio", "The 10 selected tenants with the highest server-side error ratio (5-minute).",
                   "percentunit", top(f"sum by (tenant) ({REC_ERR}{{{T}}})\n/\nsum by (tenant) ({REC_OPS}{{{T}}})"),
                   "error ratio", tenant_link=True), 8, 9),
            (table("Slowest tenants (p95)", "The 10 selected tenants with the highest p95 MCP request duration (5-minute).",
                   "s", top(f"histogram_quantile(0.95, sum by (tenant, le) ({REC_LE}{{{T}}}))"), "p95", tenant_link=True), 8, 9),
        ]),
        ("Over time", [
            (timeseries("Request rate by tenant", "MCP requests per second per tenant (recording rule, 5-minute rate).",
                        "reqps", [(f"sum by (tenant) ({REC_OPS}{{{T}}})", "{{tenant}}")], stack=True), 8, 8),
            (timeseries("Error ratio by tenant", "Server-side error ratio per tenant (recording rules).",
                        "percentunit", [(f"sum by (tenant) ({REC_ERR}{{{T}}})\n/\nsum by (tenant) ({REC_OPS}{{{T}}})",
                                         "{{tenant}}")]), 8, 8),
            (timeseries("p95 latency by tenant", "p95 MCP request duration per tenant (recording rule).",
                        "s", [(f"histogram_quantile(0.95, sum by (tenant, le) ({REC_LE}{{{T}}}))", "{{tenant}}")]), 8, 8),
            (timeseries("Active sessions by tenant", "Sessionful-era sessions per tenant across the selected nodes.",
                        "short", [(f"sum by (tenant) ({sel('marina_sessions_active')})", "{{tenant}}")], stack=True), 12, 8),
            (timeseries("Limit and authorization denials by tenant", "Requests per second refused by a limit or by RBAC, per tenant (recording rules).",
                        "reqps", [(f"sum by (tenant) (namespace_pod_tenant:marina_limit_denials:rate5m{{{T}}})", "{{tenant}} limits"),
                                  (f"sum by (tenant) (namespace_pod_tenant:marina_authz_denials:rate5m{{{T}}})", "{{tenant}} rbac")]), 12, 8),
        ]),
        ("Selected tenants: methods and tools", [
            (timeseries("Requests by method", "MCP requests per second by tenant and method.", "reqps",
                        [(f"sum by (tenant, mcp_method_name) ({rate('mcp_server_operation_duration_seconds_count')})",
                          "{{tenant}} {{mcp_method_name}}")]), 12, 8),
            (timeseries("Tool calls by tool", "tools/call per second by tenant and tool (unknown or unpublished tools are _OTHER).",
                        "reqps", [(f"sum by (tenant, gen_ai_tool_name) ({rate('mcp_server_operation_duration_seconds_count', TOOLS_CALL)})",
                                   "{{tenant}} {{gen_ai_tool_name}}")]), 12, 8),
            (timeseries("Tool p95 latency", "p95 tools/call duration by tenant and tool (upstream time included).", "s",
                        [(quantile(0.95, "mcp_server_operation_duration_seconds", "tenant, gen_ai_tool_name", 'mcp_method_name="tools/call"'),
                          "{{tenant}} {{gen_ai_tool_name}}")]), 12, 8),
            (timeseries("Tool errors by tool", "tools/call errors per second by tenant, tool and error_type.", "reqps",
                        [(f"sum by (tenant, gen_ai_tool_name, error_type) ({rate('mcp_server_operation_duration_seconds_count', TOOLS_CALL, HAS_ERR)})",
                          "{{tenant}} {{gen_ai_tool_name}} {{error_type}}")]), 12, 8),
        ]),
    ])


def sessions() -> db.Dashboard:
    d = base("marina-sessions", "Marina / Sessions & streams",
             "Session lifecycle, SSE streams, events, replays and subscriptions/listen streams.")
    return rows(d, [
        ("Sessions", [
            (timeseries("Active sessions by tenant", "Sessionful-era sessions whose actor lives on the selected nodes.",
                        "short", [(f"sum by (tenant) ({sel('marina_sessions_active')})", "{{tenant}}")], stack=True), 8, 8),
            (timeseries("Sessions started and ended", "Sessions started per second, and ended per second by reason (deleted, expired, evicted, refused).",
                        "ops", [(f"sum({rate('marina_sessions_started_total')})", "started"),
                                (f"sum by (reason) ({rate('marina_sessions_ended_total')})", "ended {{reason}}")]), 8, 8),
            (timeseries("Session duration", "Lifetime of ended sessions: p50, p95, p99.", "s",
                        [(quantile(q, "mcp_server_session_duration_seconds"), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]), 8, 8),
        ]),
        ("SSE streams", [
            (timeseries("Open streams by kind", "Open SSE response streams by kind.", "short",
                        [(f"sum by (kind) ({sel('marina_sse_streams_open', tenant=False)})", "{{kind}}")], stack=True), 8, 8),
            (timeseries("Stream cap utilisation", "Open streams over server.max_open_streams per node; the MarinaStreamsNearCap alert fires above 90 %.",
                        "percentunit", [(f"sum by (namespace, pod, instance) ({sel('marina_sse_streams_open', tenant=False)})\n"
                                         f"/ on (namespace, pod, instance)\nsum by (namespace, pod, instance) ({sel('marina_sse_streams_max', tenant=False)})",
                                         "{{pod}} {{instance}}")]), 8, 8),
            (timeseries("Events sent by kind", "SSE data events written per second (keep-alives excluded).", "ops",
                        [(f"sum by (kind) ({rate('marina_sse_events_sent_total', tenant=False)})", "{{kind}}")], stack=True), 8, 8),
            (timeseries("Streams closed by reason", "SSE streams ended per second by reason.", "ops",
                        [(f"sum by (reason) ({rate('marina_sse_streams_closed_total', tenant=False)})", "{{reason}}")], stack=True), 8, 8),
            (timeseries("Replays", "Resumptions with Last-Event-ID per second by kind.", "ops",
                        [(f"sum by (kind) ({rate('marina_sse_replays_total', tenant=False)})", "{{kind}}")]), 8, 8),
            (timeseries("Events replayed per resumption", "Stored events each resumption replayed: p50 and p95.", "short",
                        [(quantile(q, "marina_sse_replayed_events", tenant=False), f"p{int(q * 100)}") for q in (0.5, 0.95)]), 8, 8),
        ]),
        ("Subscriptions", [
            (timeseries("Listen streams by tenant", "Open subscriptions/listen streams (2026-07-28 era) per tenant.", "short",
                        [(f"sum by (tenant) ({sel('marina_listen_streams_open')})", "{{tenant}}")], stack=True), 24, 8),
        ]),
    ])


def upstreams() -> db.Dashboard:
    d = base("marina-upstreams", "Marina / Upstreams",
             "Tenants' upstream MCP servers: health, traffic, errors, latency, back-offs and list sizes.")
    by = "tenant, upstream"
    return rows(d, [
        ("Health", [
            (table("Upstream health", "Every upstream of the selected tenants: down when no selected node reaches it (marina_upstream_up is 0 on every node; MarinaUpstreamDown after 5 minutes). Down ones first.",
                   "short", f"max by ({by}) ({sel('marina_upstream_up')})", "state", ascending=True)
             .mappings([dm.ValueMap(options={
                 "0": dm.ValueMappingResult(text="down", color="red", index=0),
                 "1": dm.ValueMappingResult(text="up", color="green", index=1)})]), 8, 8),
            (timeseries("Upstream up (nodes reaching it)", "Nodes whose last contact with the upstream succeeded.", "short",
                        [(f"sum by ({by}) ({sel('marina_upstream_up')})", "{{tenant}}/{{upstream}}")]), 16, 8),
        ]),
        ("Calls", [
            (timeseries("Calls by upstream", "Requests per second from Marina to each upstream.", "reqps",
                        [(f"sum by ({by}) ({rate('mcp_client_operation_duration_seconds_count')})", "{{tenant}}/{{upstream}}")], stack=True), 12, 8),
            (timeseries("Error ratio by upstream", "Share of upstream requests that failed (client side, every error code counts).",
                        "percentunit",
                        [(f"sum by ({by}) ({rate('mcp_client_operation_duration_seconds_count', HAS_ERR)})\n/\n"
                          f"sum by ({by}) ({rate('mcp_client_operation_duration_seconds_count')})", "{{tenant}}/{{upstream}}")]), 12, 8),
            (timeseries("p95 latency by upstream", "p95 duration of a request to the upstream, send to answer.", "s",
                        [(quantile(0.95, "mcp_client_operation_duration_seconds", by), "{{tenant}}/{{upstream}}")]), 12, 8),
            (timeseries("Errors by upstream and type", "Failed upstream requests per second by error_type.", "reqps",
                        [(f"sum by ({by}, error_type) ({rate('mcp_client_operation_duration_seconds_count', HAS_ERR)})",
                          "{{tenant}}/{{upstream}} {{error_type}}")]), 12, 8),
        ]),
        ("Back-offs and lists", [
            (timeseries("Back-offs", "Times per second a node started backing off an upstream.", "ops",
                        [(f"sum by ({by}) ({rate('marina_upstream_backoffs_total')})", "{{tenant}}/{{upstream}}")]), 12, 8),
            (timeseries("List sizes", "Items in the upstream's last tools/prompts/resources list (largest across nodes).", "short",
                        [(f"max by ({by}, kind) ({sel('marina_upstream_list_items')})", "{{tenant}}/{{upstream}} {{kind}}")]), 12, 8),
        ]),
    ])


def security() -> db.Dashboard:
    d = base("marina-security", "Marina / Security",
             "Authentication failures, authorization (RBAC) denials and limit decisions.")
    return rows(d, [
        ("Authentication", [
            (timeseries("Auth failures by reason", "Refused authentications per second by reason.", "reqps",
                        [(f"sum by (reason) ({rate('marina_auth_failures_total')})", "{{reason}}")], stack=True), 12, 8),
            (timeseries("Auth failures by tenant", "Refused authentications per second by tenant; MarinaAuthFailureSurge fires above 1/s for 10 minutes.",
                        "reqps", [(f"sum by (tenant) ({rate('marina_auth_failures_total')})", "{{tenant}}")]), 12, 8),
            (table("Top tenants by auth failures", "The 10 selected tenants with the most refused authentications (recording rule, 5-minute rate).",
                   "reqps", f"topk(10, sum by (tenant) (namespace_pod_tenant:marina_auth_failures:rate5m{{{T}}}))", "failures/s", tenant_link=True), 24, 7),
        ]),
        ("Authorization", [
            (timeseries("RBAC denials by action", "Denied authorization decisions per second by tenant and action.", "reqps",
                        [(f"sum by (tenant, action) ({rate('marina_authz_decisions_total', DENY)})", "{{tenant}} {{action}}")]), 12, 8),
            (timeseries("RBAC deny ratio", "Share of authorization decisions that denied, per tenant.", "percentunit",
                        [(f"sum by (tenant) ({rate('marina_authz_decisions_total', DENY)})\n/\n"
                          f"sum by (tenant) ({rate('marina_authz_decisions_total')})", "{{tenant}}")]), 12, 8),
        ]),
        ("Limits", [
            (timeseries("Limit denials by scope", "Requests per second refused by a limit, by scope.", "reqps",
                        [(f"sum by (scope) ({rate('marina_limit_decisions_total', DENY)})", "{{scope}}")], stack=True), 12, 8),
            (timeseries("Limit denials by tenant and scope", "Refused requests per second by tenant and scope; MarinaLimitDenialSurge fires above 1/s for 10 minutes.",
                        "reqps", [(f"sum by (tenant, scope) ({rate('marina_limit_decisions_total', DENY)})", "{{tenant}} {{scope}}")]), 12, 8),
            (timeseries("HTTP 4xx and 5xx", "Public-listener responses per second with status 4xx (refusals, 401, 403, 404, 429) and 5xx.", "reqps",
                        [(f"sum by (http_response_status_class) ({rate('http_server_request_duration_seconds_count', CLASS_4XX_5XX, tenant=False)})",
                          "{{http_response_status_class}}")]), 24, 8),
        ]),
    ])


def cluster() -> db.Dashboard:
    d = base("marina-cluster", "Marina / Redis & cluster",
             "The shared store (Redis): latency and errors; sessions moving between nodes: takeovers, forwards, drains; control-plane propagation.")
    store_t = dict(tenant=False)
    return rows(d, [
        ("Store (Redis)", [
            (timeseries("Store latency p99 by operation", "p99 duration of one store call (a Redis round trip, pipeline or script) by operation.", "s",
                        [(quantile(0.99, "marina_store_operation_duration_seconds", "operation", **store_t), "{{operation}}")]), 12, 8),
            (timeseries("Store calls by operation", "Store calls per second by operation.", "ops",
                        [(f"sum by (operation) ({rate('marina_store_operation_duration_seconds_count', **store_t)})", "{{operation}}")], stack=True), 12, 8),
            (timeseries("Store errors", "Failed store calls per second by operation and error_type (timeout, io, response, other).", "ops",
                        [(f"sum by (operation, error_type) ({rate('marina_store_errors_total', **store_t)})", "{{operation}} {{error_type}}")]), 12, 8),
            (timeseries("Store error ratio by node", "Failed over all store calls per node; MarinaStoreErrors fires above 1 % for 5 minutes.", "percentunit",
                        [(f"sum by (namespace, pod, instance) ({rate('marina_store_errors_total', **store_t)})\n/ on (namespace, pod, instance)\n"
                          f"sum by (namespace, pod, instance) ({rate('marina_store_operation_duration_seconds_count', **store_t)})", "{{pod}} {{instance}}")]), 12, 8),
        ]),
        ("Takeovers, forwards, drains", [
            (timeseries("Session takeovers by reason", "Sessions per second a node took over from another (owner_gone, lease_expired, drain).", "ops",
                        [(f"sum by (reason) ({rate('marina_session_takeovers_total', **store_t)})", "{{reason}}")], stack=True), 8, 8),
            (timeseries("Forwards by kind and outcome", "Requests per second forwarded to the node holding a session or a parked call.", "reqps",
                        [(f"sum by (kind, outcome) ({rate('marina_forwards_total', **store_t)})", "{{kind}} {{outcome}}")]), 8, 8),
            (timeseries("Draining nodes and their in-flight work", "1 while a node drains after SIGTERM; calls and streams it still waits for.", "short",
                        [(f"sum by (pod, instance) ({sel('marina_draining', tenant=False)})", "draining {{pod}} {{instance}}"),
                         (f"sum by (pod, instance) ({sel('marina_drain_inflight', tenant=False)})", "in flight {{pod}} {{instance}}")]), 8, 8),
        ]),
        ("Control plane", [
            (timeseries("Propagation delay", "Delay from a control-plane change being written to a node applying it: p50, p99.", "s",
                        [(quantile(q, "marina_control_apply_seconds", tenant=False), f"p{int(q * 100)}") for q in (0.5, 0.99)]), 8, 8),
            (timeseries("Apply errors", "Tenant documents nodes failed to apply, per second.", "ops",
                        [(f"sum by (pod, instance) ({rate('marina_control_apply_errors_total', tenant=False)})", "{{pod}} {{instance}}")]), 8, 8),
            (timeseries("Tenants per node", "Tenants each node serves.", "short",
                        [(f"sum by (pod, instance) ({sel('marina_tenants', tenant=False)})", "{{pod}} {{instance}}")]), 8, 8),
        ]),
    ])


def runtime() -> db.Dashboard:
    d = base("marina-runtime", "Marina / Runtime",
             "Process CPU, memory and file descriptors of each node, and the versions running.")
    proc = lambda m: sel(m, tenant=False)  # noqa: E731
    return rows(d, [
        ("Process", [
            (timeseries("CPU", "CPU seconds per second used by each Marina process.", "percentunit",
                        [(node_join(f"rate({proc('process_cpu_seconds_total')}[{RI}])"), "{{pod}} {{instance}}")]), 12, 8),
            (timeseries("Resident memory", "Resident set size of each Marina process.", "bytes",
                        [(node_join(proc("process_resident_memory_bytes")), "{{pod}} {{instance}}")]), 12, 8),
            (timeseries("Open file descriptors", "Open file descriptors of each Marina process (connections, streams, Redis).", "short",
                        [(node_join(proc("process_open_fds")), "{{pod}} {{instance}}")]), 12, 8),
            (timeseries("File descriptor use", "Open over the maximum file descriptors of each Marina process.", "percentunit",
                        [(node_join(f"{proc('process_open_fds')}\n/ on (job, instance)\n{proc('process_max_fds')}"), "{{pod}} {{instance}}")]), 12, 8),
            (timeseries("Uptime", "Time since each Marina process started.", "s",
                        [(node_join(f"time() - {proc('process_start_time_seconds')}"), "{{pod}} {{instance}}")]), 12, 8),
            (timeseries("Threads", "OS threads of each Marina process.", "short",
                        [(node_join(proc("process_threads")), "{{pod}} {{instance}}")]), 12, 8),
        ]),
        ("Versions", [
            (table("Build versions", "Nodes per Marina version and commit (marina_build_info).", "short",
                   f"count by (version, commit) ({sel('marina_build_info', tenant=False)})", "nodes"), 12, 7),
            (table("Nodes", "Every node reporting metrics, with its version.", "short",
                   f"max by (namespace, pod, instance, version, commit) ({sel('marina_build_info', tenant=False)})", "up"), 12, 7),
        ]),
    ])


DASHBOARDS = {
    "marina-overview": overview,
    "marina-tenants": tenants,
    "marina-sessions": sessions,
    "marina-upstreams": upstreams,
    "marina-security": security,
    "marina-cluster": cluster,
    "marina-runtime": runtime,
}


def render(name: str) -> str:
    model = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    # Stable panel ids in layout order (rows included), so diffs stay small.
    for i, panel in enumerate(model.get("panels", []), start=1):
        panel["id"] = i
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    stale = []
    for name in DASHBOARDS:
        text = render(name)
        for out_dir in OUT_DIRS:
            out = out_dir / f"{name}.json"
            if args.check:
                if not out.exists() or out.read_text() != text:
                    stale.append(out.relative_to(REPO))
            else:
                out_dir.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
    if args.check:
        expected = {f"{n}.json" for n in DASHBOARDS}
        for out_dir in OUT_DIRS:
            for extra in sorted(p.name for p in out_dir.glob("marina-*.json")):
                if extra not in expected:
                    stale.append((out_dir / extra).relative_to(REPO))
    if stale:
        print("out of date (run python3 dashboards/generate.py): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
