#!/usr/bin/env python3
"""A stand-in for Marina's /metrics, for proving the dashboards and rules on a real Prometheus
before (and independently of) the Rust metrics: serves every metric of the metrics reference in
docs/operations.md, with the reference's label names and bucket boundaries, as two nodes on two
ports. Counters grow at fixed rates from the start, so every panel and rule has data after two
scrapes. Used by tests/dashboards/live_smoke.sh.

    synthetic_exporter.py PORT [PORT ...]     # one node per port; Ctrl-C or SIGTERM stops it
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MCP_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]
HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
PROC_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]
STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5]
REPLAY_BUCKETS = [1, 5, 10, 50, 100, 500, 1000]
CONTROL_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

START = time.time()


def labels(d: dict) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in d.items() if v != "")
    return "{" + inner + "}" if inner else ""


class Page:
    def __init__(self, node: int):
        self.node = node
        self.t = time.time() - START + 60  # as if the node had run a minute already
        self.families: dict[str, list[str]] = {}  # one block per metric family, as the format wants
        self.lines: list[str] = []

    def _type(self, name: str, kind: str):
        if name not in self.families:
            self.families[name] = [f"# HELP {name} synthetic", f"# TYPE {name} {kind}"]
        self.lines = self.families[name]

    def gauge(self, name: str, value: float, **lab):
        self._type(name, "gauge")
        self.lines.append(f"{name}{labels(lab)} {value:g}")

    def counter(self, name: str, per_second: float, **lab):
        self._type(name, "counter")
        self.lines.append(f"{name}{labels(lab)} {per_second * self.t * (1 + 0.1 * self.node):.6f}")

    def histogram(self, name: str, buckets: list[float], per_second: float, typical: float, **lab):
        """Observations at `per_second`; 80 % at most `typical`, the rest in the next buckets."""
        self._type(name, "histogram")
        count = per_second * self.t * (1 + 0.1 * self.node)
        cumulative = 0.0
        for i, le in enumerate(buckets):
            if le >= typical:
                cumulative = count * min(1.0, 0.8 + 0.1 * sum(1 for b in buckets[:i] if b >= typical))
            self.lines.append(f"{name}_bucket{labels({**lab, 'le': f'{le:g}'})} {cumulative:.6f}")
        self.lines.append(f"{name}_bucket{labels({**lab, 'le': '+Inf'})} {count:.6f}")
        self.lines.append(f"{name}_sum{labels(lab)} {count * typical:.6f}")
        self.lines.append(f"{name}_count{labels(lab)} {count:.6f}")


def render(node: int) -> str:
    p = Page(node)
    for tenant in ("acme", "beta"):
        for method, tool, err, rate in [("tools/call", "weather_now", "", 5), ("tools/call", "weather_now", "tool_error", 0.2),
                                        ("tools/call", "files_read", "-32603", 0.1), ("tools/list", "", "", 1),
                                        ("resources/read", "", "-32002", 0.3), ("prompts/get", "", "", 0.2)]:
            p.histogram("mcp_server_operation_duration_seconds", MCP_BUCKETS, rate, 0.05, tenant=tenant,
                        mcp_method_name=method, gen_ai_tool_name=tool,
                        gen_ai_prompt_name="greet" if method == "prompts/get" else "",
                        error_type=err, mcp_protocol_version="2025-11-25")
            p.histogram("marina_request_processing_seconds", PROC_BUCKETS, rate, 0.001, tenant=tenant,
                        mcp_method_name=method)
        for upstream, err, rate in [("weather", "", 4), ("weather", "-32603", 0.1), ("files", "_OTHER", 0.5)]:
            p.histogram("mcp_client_operation_duration_seconds", MCP_BUCKETS, rate, 0.05, tenant=tenant,
                        upstream=upstream, mcp_method_name="tools/call", error_type=err)
        p.histogram("mcp_server_session_duration_seconds", MCP_BUCKETS, 0.05, 60, tenant=tenant,
                    mcp_protocol_version="2025-11-25", error_type="")
        p.gauge("marina_sessions_active", 10 + node, tenant=tenant)
        p.counter("marina_sessions_started_total", 0.05, tenant=tenant)
        for reason in ("deleted", "expired"):
            p.counter("marina_sessions_ended_total", 0.02, tenant=tenant, reason=reason)
        p.gauge("marina_listen_streams_open", 2, tenant=tenant)
        for reason in ("invalid_key", "expired"):
            p.counter("marina_auth_failures_total", 0.1, tenant=tenant, reason=reason)
        for decision, rate in (("allow", 5), ("deny", 0.2)):
            p.counter("marina_authz_decisions_total", rate, tenant=tenant, decision=decision, action="call")
        for scope, decision, rate in (("tenant_rate", "allow", 5), ("tenant_rate", "deny", 0.3), ("sessions", "deny", 0.05)):
            p.counter("marina_limit_decisions_total", rate, tenant=tenant, scope=scope, decision=decision)
        for upstream, up in (("weather", 1), ("files", 0)):
            p.gauge("marina_upstream_up", up, tenant=tenant, upstream=upstream)
            p.counter("marina_upstream_backoffs_total", 0.01 * (1 - up) + 0.001, tenant=tenant, upstream=upstream)
            for kind in ("tools", "prompts", "resources"):
                p.gauge("marina_upstream_list_items", 3, tenant=tenant, upstream=upstream, kind=kind)
    for route, cls, rate in (("/t/{tenant}/mcp", "2xx", 10), ("/t/{tenant}/mcp", "4xx", 0.5), ("/t/{tenant}/mcp", "5xx", 0.1)):
        p.histogram("http_server_request_duration_seconds", HTTP_BUCKETS, rate, 0.05, http_route=route,
                    http_request_method="POST", http_response_status_class=cls)
    for kind, n in (("post", 20), ("get", 10), ("listen", 4)):
        p.gauge("marina_sse_streams_open", n, kind=kind)
        p.counter("marina_sse_events_sent_total", 3, kind=kind)
        p.counter("marina_sse_replays_total", 0.05, kind=kind)
        p.histogram("marina_sse_replayed_events", REPLAY_BUCKETS, 0.05, 5, kind=kind)
        for reason in ("complete", "client_gone"):
            p.counter("marina_sse_streams_closed_total", 0.5, kind=kind, reason=reason)
    p.gauge("marina_sse_streams_max", 1000)
    for op in ("load_session", "append_event", "acquire_lease"):
        p.histogram("marina_store_operation_duration_seconds", STORE_BUCKETS, 5, 0.001, operation=op, db_system_name="redis")
        p.counter("marina_store_errors_total", 0.01, operation=op, error_type="timeout")
    for reason in ("owner_gone", "lease_expired", "drain"):
        p.counter("marina_session_takeovers_total", 0.01, reason=reason)
    for kind in ("session", "parked_call"):
        for outcome in ("ok", "error"):
            p.counter("marina_forwards_total", 0.5 if outcome == "ok" else 0.01, kind=kind, outcome=outcome)
    p.gauge("marina_draining", 0)
    p.gauge("marina_drain_inflight", 0)
    p.histogram("marina_control_apply_seconds", CONTROL_BUCKETS, 0.01, 0.05)
    p.counter("marina_control_apply_errors_total", 0.001)
    p.gauge("marina_tenants", 2)
    p.gauge("marina_build_info", 1, version="0.1.0", commit="synthetic")
    p.counter("process_cpu_seconds_total", 0.2)
    p.gauge("process_resident_memory_bytes", 50e6 + node * 1e6)
    p.gauge("process_virtual_memory_bytes", 500e6)
    p.gauge("process_open_fds", 40 + node)
    p.gauge("process_max_fds", 1048576)
    p.gauge("process_start_time_seconds", START - 60)
    p.gauge("process_threads", 8)
    return "\n".join(line for family in p.families.values() for line in family) + "\n"


def serve(port: int, node: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_response(404)
                self.end_headers()
                return
            body = render(node).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> int:
    ports = [int(a) for a in sys.argv[1:]]
    if not ports:
        print(__doc__, file=sys.stderr)
        return 2
    servers = [serve(port, i) for i, port in enumerate(ports)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for s in servers:
        s.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
