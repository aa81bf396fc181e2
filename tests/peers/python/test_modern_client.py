"""The official Python MCP SDK (2.3, default `auto` mode) speaking MCP 2026-07-28 to Marina.

With `server.stateless_era` on, the SDK's `server/discover` probe succeeds and every request goes
out statelessly: tools, a multi round-trip request (the built-in `confirm` asks a question through
`input_required`; the SDK's elicitation callback answers it and retries with the sealed state),
and `subscriptions/listen` hearing a policy change made through the admin API. Every wait is
bounded.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from conftest import Marina, _start_marina, _stop
from test_admin_onboarding import admin_url

pytestmark = pytest.mark.anyio

TENANT = "modern"
POLICY_ECHO = "p, anonymous, tool:echo, call, allow\np, anonymous, tool:confirm, call, allow\n"
POLICY_ALL = "p, anonymous, tool:*, call, allow\n"


def admin(m: Marina, method: str, path: str, body: Any, content_type: str = "application/json") -> int:
    req = urllib.request.Request(
        admin_url(m) + path, data=json.dumps(body).encode(), method=method, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


@pytest.fixture(scope="module")
def modern(tmp_root: Path) -> Iterator[Marina]:
    config = tmp_root / "modern.yaml"
    config.write_text("server: {stateless_era: true}\n")
    m = _start_marina(tmp_root, "memory", None, node_id="modern", config=config, tenant=TENANT)
    try:
        doc = {"auth": {"anonymous": True}, "upstreams": [{"kind": "builtin"}], "rbac": {"policy": POLICY_ECHO}}
        assert admin(m, "PUT", f"/tenants/{TENANT}", doc) == 201
        yield m
    finally:
        _stop(m.proc)


async def test_the_sdk_negotiates_2026_07_28_and_completes_a_multi_round_trip_call(modern: Marina) -> None:
    asked: list[str] = []

    async def on_elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"answer": "yes"})

    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=30)) as http,
            Client(streamable_http_client(modern.mcp_url, http_client=http), elicitation_callback=on_elicit) as client,
        ):
            assert client.protocol_version == "2026-07-28"
            names = [t.name for t in (await client.list_tools()).tools]
            assert names == ["confirm", "echo"], names  # filtered by the tenant's policy
            echoed = await client.call_tool("echo", {"text": "stateless"})
            assert echoed.content[0].text == "stateless"  # type: ignore[union-attr]
            confirmed = await client.call_tool("confirm", {"question": "Proceed?"})
            assert not confirmed.is_error, confirmed.content
            assert confirmed.content[0].text == "yes"  # type: ignore[union-attr]
            assert asked == ["Proceed?"]


async def test_a_listener_hears_a_policy_change(modern: Marina) -> None:
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(timeout=httpx2.Timeout(10, read=30)) as http,
            Client(streamable_http_client(modern.mcp_url, http_client=http)) as client,
        ):
            async with client.listen(tools_list_changed=True) as sub:
                status = admin(
                    modern,
                    "PATCH",
                    f"/tenants/{TENANT}",
                    {"rbac": {"policy": POLICY_ALL}},
                    "application/merge-patch+json",
                )
                assert status == 200
                async for _event in sub:
                    break  # a change was heard
            names = [t.name for t in (await client.list_tools()).tools]
            assert "add" in names, names
