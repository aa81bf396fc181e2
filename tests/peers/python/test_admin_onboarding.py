"""Onboarding a tenant through the control plane, end to end with the official Python MCP SDK.

    redis-server  <-  marina A, marina B   (one Redis store; no tenant configured at start)
    upstream: tests/peers/upstream/server.mjs (conformance naming contract)

Through node A's admin API: create tenant `onboard` with that upstream, then an API key for it.
Within a second an SDK client connects through node B with that key and calls the upstream's
tool. Revoking the key refuses the next connection on both nodes within a second. Every wait is
bounded.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from conftest import Marina, _start_marina, _stop
from test_upstream_relay import _start_conf_upstream

pytestmark = pytest.mark.anyio

TENANT = "onboard"
PROPAGATION_S = 1.0  # the control plane's promise: every node applies a change within a second


@dataclass
class Cluster:
    a: Marina
    b: Marina
    admin_key: str
    upstream_url: str


def admin_url(m: Marina, timeout: float = 10) -> str:
    """The node's admin API base (`…/admin/v1`), from the line it prints at start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"admin API listening on (\S+)", m.log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    pytest.fail(f"no admin API line in the log of {m.base_url}:\n{m.log_tail()}")


def admin(m: Marina, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One admin API request; (status, JSON body or None)."""
    req = urllib.request.Request(
        admin_url(m) + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def cluster(tmp_root: Path, redis_url: str) -> Iterator[Cluster]:
    admin_key = "mk_" + secrets.token_urlsafe(32)
    config = tmp_root / "onboard.yaml"
    config.write_text(
        "egress: {allow_loopback: true}\n"
        f"admin:\n  api_keys:\n    - {{subject: ops, sha256: {hashlib.sha256(admin_key.encode()).hexdigest()}}}\n"
    )
    upstream, url = _start_conf_upstream(tmp_root / "onboard-upstream.log")
    started: list[Marina] = []
    try:
        for node in ("onboard-a", "onboard-b"):
            started.append(_start_marina(tmp_root, "redis", redis_url, node_id=node, config=config, tenant=TENANT))
        yield Cluster(a=started[0], b=started[1], admin_key=admin_key, upstream_url=url)
    finally:
        for m in started:
            _stop(m.proc)
        _stop(upstream)


async def connect_and_call(url: str, key: str) -> tuple[list[str], str]:
    """Connect with the SDK (API key as a bearer token), list the tools, call `conf.test_simple_text`."""
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(10, read=30)) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            tools = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("conf.test_simple_text", {})
            assert not result.is_error, result.content
            return tools, result.content[0].text  # type: ignore[union-attr]


def initialize_status(url: str, key: str) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "0"}}})  # fmt: skip
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def within(seconds: float, probe: Any, what: str) -> float:
    """Poll `probe` until true; fail unless that took at most `seconds` (bounded at 10 s)."""
    start = time.monotonic()
    while not probe():
        assert time.monotonic() - start < 10, f"{what}: never happened"
        time.sleep(0.01)
    took = time.monotonic() - start
    assert took <= seconds, f"{what}: took {took:.3f} s, more than {seconds} s"
    return took


async def test_a_tenant_onboarded_on_node_a_serves_an_sdk_client_on_node_b(cluster: Cluster) -> None:
    a, b, key = cluster.a, cluster.b, cluster.admin_key
    doc = {
        "auth": {"api_keys": []},
        "rbac": {"policy": "p, operator, tool:*, call, allow"},
        "upstreams": [{"kind": "mcp", "name": "conf", "url": cluster.upstream_url}],
    }
    status, _ = admin(a, key, "PUT", f"/tenants/{TENANT}", doc)
    assert status == 201
    status, created = admin(a, key, "POST", f"/tenants/{TENANT}/api-keys", {"subject": "ci-bot", "roles": ["operator"]})
    assert status == 201, created
    tenant_key = created["key"]

    # Through node B, within a second of the key's creation on node A.
    within(PROPAGATION_S, lambda: initialize_status(b.mcp_url, tenant_key) == 200, "key usable on node B")
    tools, text = await connect_and_call(b.mcp_url, tenant_key)
    assert "conf.test_simple_text" in tools
    assert text  # the upstream's answer, relayed

    # Revoked through node B: refused on both nodes within a second.
    status, _ = admin(b, key, "DELETE", f"/tenants/{TENANT}/api-keys/{created['id']}")
    assert status == 204
    for m in (a, b):
        within(PROPAGATION_S, lambda m=m: initialize_status(m.mcp_url, tenant_key) == 401, f"key refused on {m.base_url}")
    with pytest.raises(Exception):
        await connect_and_call(a.mcp_url, tenant_key)
