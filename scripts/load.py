#!/usr/bin/env python3
"""Traffic for a local cluster (scripts/cluster.sh up) that gives every dashboard panel data.

    python3 scripts/load.py [--dir $MARINA_CLUSTER_DIR] [--seconds 60] [--no-disruptions]

Reads the cluster's URLs and keys from $DIR/cluster.env and sends, through HAProxy:

- sessions (both tenants) that list tools and call them with resumable SSE answers, resume one
  of their streams (replays), hold a GET stream open, and end (DELETE) or stay open;
- stateless (2026-07-28) requests: server/discover, tools/call, subscriptions/listen;
- client errors (unknown tools, bad JSON), authentication failures (a wrong and a missing key),
  RBAC denials (acme's viewer calling `add`), rate-limit denials (acme's `add` is 5/s);
- acme's upstream MCP server, then an upstream outage (`cluster.sh stop-upstream`) and back;
- a control-plane change (a tenant created and deleted through the admin API), a Redis stall
  (CLIENT PAUSE past the store timeout: store errors), a node killed with SIGKILL and started
  again (takeovers), and a node drained with SIGTERM and started again.

Every phase is bounded in time; errors the phases provoke are expected and counted, anything
else is printed. Exit status 0 when the traffic ran, 1 when the cluster could not be reached.
Only the standard library is used.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTOCOL = "2025-11-25"
MODERN = "2026-07-28"


def read_env(directory: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (directory / "cluster.env").read_text().splitlines():
        for item in line.split():
            if "=" in item:
                k, v = item.split("=", 1)
                env[k] = v
    return env


class Client:
    """One HTTP/1.1 connection to the balancer (reopened when it breaks)."""

    def __init__(self, base: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body=None, headers=None, retry=True):
        """(status, headers, body text); status 0 when the connection failed (or a stream was
        still open at the timeout: streams are read until then, and not retried)."""
        data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        hdrs = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        hdrs.update(headers or {})
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                resp = self.conn.getresponse()
                text = resp.read().decode(errors="replace")
                return resp.status, dict(resp.getheaders()), text
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt or not retry:
                    return 0, {}, ""
        return 0, {}, ""


def sse_messages(text: str) -> list[tuple[str, dict]]:
    """(event id, message) of each SSE event with JSON data."""
    out, event_id = [], ""
    for line in text.splitlines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            try:
                out.append((event_id, json.loads(line[5:])))
            except ValueError:
                pass
    return out


class Load:
    def __init__(self, env: dict[str, str], directory: Path, seconds: float):
        self.env, self.dir, self.seconds = env, directory, seconds
        self.base = env["LB_URL"]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    # -- sessionful clients ------------------------------------------------------------------

    def tenant_headers(self, tenant: str, key: str | None = None) -> dict[str, str]:
        if tenant == "acme":
            return {"X-API-Key": key or self.env["ACME_OPERATOR_KEY"]}
        return {}

    def session(self, c: Client, tenant: str, headers: dict[str, str]) -> str | None:
        path = f"/t/{tenant}/mcp"
        status, h, _ = c.request("POST", path, {
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "marina-load", "version": "1"}}}, headers)
        sid = {k.lower(): v for k, v in h.items()}.get("mcp-session-id")
        if status != 200 or not sid:
            self.count(f"initialize failed ({status})")
            return None
        headers = {**headers, "Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}
        c.request("POST", path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        return sid

    def sessions(self, worker: int) -> None:
        c = Client(self.base)
        rnd = random.Random(worker)
        while not self.stop.is_set():
            tenant = "acme" if worker % 2 else "demo"
            base_headers = self.tenant_headers(tenant)
            sid = self.session(c, tenant, base_headers)
            if sid is None:
                time.sleep(0.2)
                continue
            self.count("sessions")
            path = f"/t/{tenant}/mcp"
            headers = {**base_headers, "Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}
            c.request("POST", path, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers)
            last_event = ""
            for i in range(rnd.randint(5, 15)):
                if self.stop.is_set():
                    break
                tool, args = ("echo", {"message": f"hi {i}"})
                if tenant == "acme" and i % 3 == 0:
                    tool, args = ("up.test_simple_text", {})
                status, _, text = c.request("POST", path, {
                    "jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
                    "params": {"name": tool, "arguments": args}}, headers)
                self.count(f"tools/call {status}")
                events = sse_messages(text)
                if events and events[0][0]:
                    last_event = events[0][0]
                if status == 404:  # the session is gone (its node died and nobody took it yet)
                    break
                if i == 2:  # a client error
                    c.request("POST", path, {"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                                             "params": {"name": "no_such_tool", "arguments": {}}},
                              headers)
                time.sleep(rnd.uniform(0.02, 0.1))
            if last_event:  # resume a finished stream: its events are replayed
                status, _, _ = c.request("GET", path, None,
                                         {**headers, "Accept": "text/event-stream",
                                          "Last-Event-ID": last_event})
                self.count(f"resume {status}")
            if rnd.random() < 0.7:
                c.request("DELETE", path, None, headers)
            else:
                self.count("left open")

    def listener(self) -> None:
        """A session's GET stream, held a few seconds at a time."""
        c = Client(self.base, timeout=3)
        while not self.stop.is_set():
            sid = self.session(c, "demo", {})
            if not sid:
                time.sleep(0.5)
                continue
            c.request("GET", "/t/demo/mcp", None, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL,
                                                   "Accept": "text/event-stream"}, retry=False)
            self.count("get stream")
            c.request("DELETE", "/t/demo/mcp", None, {"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL})

    # -- the stateless era -------------------------------------------------------------------

    def stateless(self) -> None:
        c = Client(self.base, timeout=3)
        meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "marina-load", "version": "1"}}
        n = 0
        while not self.stop.is_set():
            n += 1
            tenant = "acme" if n % 2 else "demo"
            path = f"/t/{tenant}/mcp"
            headers = {"MCP-Protocol-Version": MODERN, **self.tenant_headers(tenant)}
            c.request("POST", path, {"jsonrpc": "2.0", "id": n, "method": "server/discover",
                                     "params": {"_meta": meta}},
                      {**headers, "Mcp-Method": "server/discover"})
            status, _, _ = c.request("POST", path, {
                "jsonrpc": "2.0", "id": n, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "stateless"}, "_meta": meta}},
                {**headers, "Mcp-Method": "tools/call", "Mcp-Name": "echo"})
            self.count(f"stateless tools/call {status}")
            if n % 20 in (0, 1):  # a listen stream (each tenant), held until the client's timeout
                c.request("POST", path, {
                    "jsonrpc": "2.0", "id": n, "method": "subscriptions/listen",
                    "params": {"notifications": {"toolsListChanged": True}, "_meta": meta}},
                    {**headers, "Mcp-Method": "subscriptions/listen"}, retry=False)
                self.count("listen")
            time.sleep(0.05)

    # -- refusals ----------------------------------------------------------------------------

    def refusals(self) -> None:
        c = Client(self.base)
        while not self.stop.is_set():
            c.request("POST", "/t/acme/mcp", {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                              "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                                                         "clientInfo": {"name": "x", "version": "1"}}},
                      {"X-API-Key": "mk_wrong"})
            c.request("POST", "/t/acme/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            c.request("POST", "/t/demo/mcp", b"{not json", {})
            self.count("auth failures")
            viewer = self.tenant_headers("acme", self.env["ACME_VIEWER_KEY"])
            sid = self.session(c, "acme", viewer)
            if sid:
                headers = {**viewer, "Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}
                c.request("POST", "/t/acme/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                                  "params": {"name": "add", "arguments": {"a": 1, "b": 2}}},
                          headers)
                self.count("denials")
                c.request("DELETE", "/t/acme/mcp", None, headers)
            op = self.tenant_headers("acme")
            sid = self.session(c, "acme", op)
            if sid:  # past acme's 5/s for `add`
                headers = {**op, "Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL}
                for i in range(10):
                    c.request("POST", "/t/acme/mcp", {"jsonrpc": "2.0", "id": 3 + i, "method": "tools/call",
                                                      "params": {"name": "add", "arguments": {"a": i, "b": 1}}},
                              headers)
                self.count("limit bursts")
                c.request("DELETE", "/t/acme/mcp", None, headers)
            self.stop.wait(1.0)

    # -- disruptions -------------------------------------------------------------------------

    def cluster(self, *args: str) -> None:
        env = dict(os.environ, MARINA_CLUSTER_DIR=str(self.dir))
        r = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), *args], env=env,
                           capture_output=True, text=True, timeout=120)
        self.count(f"cluster.sh {' '.join(args)} -> {r.returncode}")
        if r.returncode:
            print(f"load: cluster.sh {' '.join(args)} failed: {r.stderr.strip()}", file=sys.stderr)

    def admin(self, method: str, path: str, body=None) -> int:
        c = Client(f"http://127.0.0.1:{self.env['NODE1_ADMIN_PORT']}")
        status, _, _ = c.request(method, "/admin/v1" + path, body)
        return status

    def redis(self, *args: str) -> None:
        subprocess.run(["redis-cli", "-p", self.env["REDIS_PORT"], *args], capture_output=True, timeout=10)

    def kill_and_take_over(self, node: int) -> None:
        """SIGKILL `node` while it holds sessions, and use them through the balancer until the
        survivors have taken each over (bounded): a takeover is certain, not left to chance."""
        direct = Client(f"http://127.0.0.1:{self.env[f'NODE{node}_PORT']}")
        held = {sid for sid in (self.session(direct, "demo", {}) for _ in range(3)) if sid}
        self.cluster("kill-node", str(node))
        c = Client(self.base, timeout=5)
        deadline = time.monotonic() + 40
        while held and time.monotonic() < deadline:
            for sid in sorted(held):
                status, _, _ = c.request("POST", "/t/demo/mcp", {
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"message": "after the kill"}}},
                    {"Mcp-Session-Id": sid, "MCP-Protocol-Version": PROTOCOL})
                if status == 200:
                    held.discard(sid)
                    self.count("sessions taken over after the kill")
            time.sleep(0.3)
        if held:
            print(f"load: {len(held)} sessions of the killed node were not taken over", file=sys.stderr)
        self.cluster("start-node", str(node))

    def disruptions(self) -> None:
        nodes = int(self.env["NODES"])
        # In this order because a restarted node starts its counters again: the drain comes
        # first, the kill's takeovers are counted by a node that then stays up, and the Redis
        # stall's errors come last, on nodes that stay up.
        steps = [
            ("control plane", lambda: (self.admin("PUT", "/tenants/loadgen", {"upstreams": [{"kind": "builtin"}]}),
                                       self.stop.wait(3), self.admin("DELETE", "/tenants/loadgen"))),
            ("node drained", lambda: (self.cluster("stop-node", "1"), self.cluster("start-node", "1"))),
            ("upstream outage", lambda: (self.cluster("stop-upstream"), self.stop.wait(6),
                                         self.cluster("start-upstream"))),
            ("node killed", lambda: self.kill_and_take_over(nodes)),
            # Longer than the store's per-command timeout: commands in the pause fail.
            ("redis stall", lambda: (self.redis("CLIENT", "PAUSE", "3000", "ALL"), self.stop.wait(5))),
        ]
        gap = max(2.0, self.seconds / (len(steps) + 1))
        for name, step in steps:
            if self.stop.wait(gap):
                return
            print(f"load: {name}", flush=True)
            step()

    def run(self) -> int:
        probe = Client(self.base).request("GET", "/readyz")[0]
        if probe != 200:
            print(f"load: the balancer at {self.base} is not ready ({probe})", file=sys.stderr)
            return 1
        threads = [threading.Thread(target=self.sessions, args=(w,), daemon=True) for w in range(4)]
        threads += [threading.Thread(target=f, daemon=True) for f in (self.listener, self.stateless, self.refusals)]
        for t in threads:
            t.start()
        disrupt = None
        if not self.no_disruptions:
            disrupt = threading.Thread(target=self.disruptions, daemon=True)
            disrupt.start()
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.5)
        # Disruptions finish (a node must not stay down) before the clients stop.
        if disrupt is not None:
            disrupt.join(timeout=180)
        self.stop.set()
        for t in threads:
            t.join(timeout=15)
        for k in sorted(self.counts):
            print(f"load: {k}: {self.counts[k]}")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path,
                    default=Path(os.environ.get("MARINA_CLUSTER_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                                  "marina-cluster"))))
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (default 60)")
    ap.add_argument("--no-disruptions", action="store_true",
                    help="no upstream outage, Redis stall, node kill or drain")
    args = ap.parse_args()
    try:
        env = read_env(args.dir)
    except OSError as e:
        print(f"load: no cluster in {args.dir} ({e}); run scripts/cluster.sh up", file=sys.stderr)
        return 1
    load = Load(env, args.dir, args.seconds)
    load.no_disruptions = args.no_disruptions
    return load.run()


if __name__ == "__main__":
    sys.exit(main())
