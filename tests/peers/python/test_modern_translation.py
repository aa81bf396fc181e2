"""Clients of one era in front of upstreams of the other, through a two-node Marina cluster.

The official Python SDK (2.3, default `auto` mode) speaks MCP 2026-07-28 to Marina (`server.stateless_era`
on); Marina translates to the upstreams, which speak only the sessionful era: the test upstream
(`tests/peers/upstream/server.mjs`) and `@modelcontextprotocol/server-everything`. An upstream's
question during a call (sampling, elicitation) reaches the SDK as `input_required`; its callback
answers and the SDK retries — through the *other* node (the transport of `test_upstream_relay`
alternates `tools/call` between A and B), which hands the answer to the node where the upstream
call waits, parked. Progress of such a call reaches the request that follows it.

The other way round: the TypeScript SDK v2 upstream (`tests/peers/upstream-v2`, probed as
2026-07-28) asks for input with `input_required`. A sessionful client (`mode="legacy"`) gets its
questions as requests on the call's stream, answers them through the other node, and Marina
retries the upstream with the answers; a 2026-07-28 client gets the upstream's own questions,
keys and all, with the upstream's state sealed inside Marina's. Every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import types

from conftest import REPO_ROOT, _start_marina, _stop
from test_upstream_relay import (
    ROOTS,
    Tap,
    wait_until,
    assert_answered_through_other_node,
    CALL_TIMEOUT_S,
    SAMPLING_ANSWER,
    Asked,
    Cluster,
    _start_conf_upstream,
    _start_upstream_at,
    _start_everything,
    callbacks,
    connect,
    new_transport,
    texts,
)

pytestmark = pytest.mark.anyio

MODE = "auto"  # the SDK's default: `server/discover` first, 2026-07-28 when the server speaks it
TENANT = "translation"  # its own (the Redis store is shared with other modules' clusters)


def _two_nodes(log_dir: Path, redis_url: str, upstreams: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> Cluster:
    """Two nodes sharing `redis_url`, the stateless era on, tenant TENANT with the mcp
    `upstreams` (name -> URL); their processes are added to `procs`."""
    config = log_dir / "marina.yaml"
    config.write_text(
        "server: {stateless_era: true}\negress:\n  allow_loopback: true\ntenants:\n"
        f"  {TENANT}:\n    upstreams:\n"
        + "".join(f'      - {{kind: mcp, name: {name}, url: "{url}"}}\n' for name, url in upstreams.items())
    )
    nodes = []
    for node in ("A", "B"):
        nodes.append(_start_marina(log_dir, "redis", redis_url, node_id=f"{log_dir.name}-{node}", config=config, tenant=TENANT))
        procs.append(nodes[-1].proc)
    return Cluster(a=nodes[0], b=nodes[1])


@pytest.fixture(scope="module")
def modern_cluster(tmp_root: Path, redis_url: str) -> Iterator[Cluster]:
    log_dir = tmp_root / "modern-translation"
    log_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf, conf_url = _start_conf_upstream(log_dir / "conf-upstream.log")
        procs.append(conf)
        ev, ev_url = _start_everything(log_dir)
        procs.append(ev)
        yield _two_nodes(log_dir, redis_url, {"conf": conf_url, "ev": ev_url}, procs)
    finally:
        for p in reversed(procs):
            _stop(p)


def retried_on_the_other_node(t: object, count: int) -> None:
    """`count` calls were answered `input_required` and retried on the other node: every
    `tools/call` of the test alternates nodes, so a call and its retry never share one."""
    calls = [h for h in t.hops if h.mcp_method == "tools/call"]  # type: ignore[attr-defined]
    assert len(calls) >= 2 * count, calls
    assert all(h.status == 200 for h in calls), calls
    assert all(x.node != y.node for x, y in zip(calls, calls[1:])), calls
    assert not any(h.answer_to is not None for h in t.hops), "no server-initiated requests in 2026-07-28"  # type: ignore[attr-defined]


async def test_the_sdk_speaks_2026_07_28_to_the_translating_gateway(modern_cluster: Cluster) -> None:
    t = new_transport(modern_cluster)
    async with connect(modern_cluster, MODE, t, **callbacks(Asked())) as c:
        assert c.protocol_version == "2026-07-28"
        with anyio.fail_after(CALL_TIMEOUT_S):
            names = {tool.name for tool in (await c.list_tools()).tools}
            echo = await c.call_tool("ev.echo", {"message": "stateless via A and B"})
            simple = await c.call_tool("conf.test_simple_text", {})
    assert {"conf.test_sampling", "conf.test_elicitation", "ev.trigger-sampling-request"} <= names, names
    assert texts(echo) == "Echo: stateless via A and B"
    assert texts(simple) == "This is a simple text response for testing."
    assert {h.node for h in t.hops if h.mcp_method == "tools/call"} == {"A", "B"}


async def test_upstream_sampling_becomes_input_required_answered_on_the_other_node(modern_cluster: Cluster) -> None:
    t = new_transport(modern_cluster)
    asked = Asked()
    async with connect(modern_cluster, MODE, t, **callbacks(asked)) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_sampling", {"prompt": "What is 2+2?"})
        with anyio.fail_after(CALL_TIMEOUT_S):
            ev = await c.call_tool("ev.trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 20})
    assert texts(conf) == f"LLM response: {SAMPLING_ANSWER} #1"
    assert f"{SAMPLING_ANSWER} #2" in texts(ev), texts(ev)
    assert [p.messages[0].content.text for p in asked.sampling][0] == "What is 2+2?"  # type: ignore[union-attr]
    assert asked.sampling[1].max_tokens == 20
    retried_on_the_other_node(t, 2)


async def test_upstream_elicitation_becomes_input_required_answered_on_the_other_node(
    modern_cluster: Cluster,
) -> None:
    t = new_transport(modern_cluster)
    asked = Asked()
    async with connect(modern_cluster, MODE, t, **callbacks(asked)) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_elicitation", {"message": "Who are you?"})
        with anyio.fail_after(CALL_TIMEOUT_S):
            ev = await c.call_tool("ev.trigger-elicitation-request", {})
    conf_text = texts(conf)
    prefix = "User response: action=accept, content="
    assert conf_text.startswith(prefix), conf_text
    assert json.loads(conf_text[len(prefix) :]) == {"username": "ada", "email": "ada@example.com"}
    ev_text = texts(ev)
    assert "- Name: Ada Lovelace" in ev_text and "- Favorite Integer: 7" in ev_text, ev_text
    assert [p.message for p in asked.elicitation][0] == "Who are you?"
    retried_on_the_other_node(t, 2)


async def test_progress_of_a_translated_call_reaches_its_request(modern_cluster: Cluster) -> None:
    t = new_transport(modern_cluster)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(modern_cluster, MODE, t, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_tool_with_progress", {}, progress_callback=on_progress)
    assert texts(conf) == "Tool with progress executed successfully"
    assert seen == [(0.0, 100.0, "step 1 of 3"), (50.0, 100.0, "step 2 of 3"), (100.0, 100.0, "step 3 of 3")]


V2_DIR = REPO_ROOT / "tests" / "peers" / "upstream-v2"


@pytest.fixture(scope="module")
def v2_cluster(tmp_root: Path, redis_url: str) -> Iterator[Cluster]:
    log_dir = tmp_root / "modern-upstream"
    log_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        v2, v2_url = _start_upstream_at(V2_DIR, log_dir / "v2-upstream.log")
        procs.append(v2)
        yield _two_nodes(log_dir, redis_url, {"v2": v2_url}, procs)
    finally:
        for p in reversed(procs):
            _stop(p)


MULTIPLE = "v2.test_input_required_result_multiple_inputs"


async def test_a_sessionful_client_answers_a_modern_upstreams_questions_through_the_other_node(
    v2_cluster: Cluster,
) -> None:
    t = new_transport(v2_cluster)
    asked = Asked()
    async with connect(v2_cluster, "legacy", t, **callbacks(asked)) as c:
        assert c.protocol_version == "2025-11-25"
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool(MULTIPLE, {})
    # One round of three questions, each put to the client on the call's stream.
    assert texts(res) == f"{SAMPLING_ANSWER} #1 Ada Lovelace - {len(ROOTS)} root(s) visible", texts(res)
    assert [p.message for p in asked.elicitation] == ["What is your name?"]
    assert len(asked.sampling) == 1 and asked.roots == 1
    for method in ("elicitation/create", "sampling/createMessage", "roots/list"):
        assert_answered_through_other_node(t, method, 1)


async def test_a_modern_client_gets_a_modern_upstreams_own_questions(v2_cluster: Cluster) -> None:
    t = new_transport(v2_cluster)
    asked = Asked()
    async with connect(v2_cluster, MODE, t, **callbacks(asked)) as c:
        assert c.protocol_version == "2026-07-28"
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool(MULTIPLE, {})
            hello = await c.call_tool("v2.test_input_required_result_elicitation", {})
    assert texts(res) == f"{SAMPLING_ANSWER} #1 Ada Lovelace - {len(ROOTS)} root(s) visible", texts(res)
    assert texts(hello) == "Hello, Ada Lovelace!", texts(hello)
    assert len(asked.elicitation) == 2 and len(asked.sampling) == 1 and asked.roots == 1
    retried_on_the_other_node(t, 2)


@pytest.fixture(scope="module")
def tapped_node(tmp_root: Path) -> Iterator[tuple[str, Tap]]:
    """One node (memory store) whose requestStates live 1.5 s, in front of the sessionful test
    upstream behind a Tap (what Marina sends it is recorded)."""
    log_dir = tmp_root / "modern-tapped"
    log_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    tap = None
    try:
        conf, conf_url = _start_conf_upstream(log_dir / "conf-upstream.log")
        procs.append(conf)
        tap = Tap(httpx2.URL(conf_url).port)  # type: ignore[arg-type]
        config = log_dir / "marina.yaml"
        config.write_text(
            "server: {stateless_era: true, request_state_ttl_ms: 1500}\n"
            "egress: {allow_loopback: true}\n"
            f"tenants:\n  tapped:\n    upstreams:\n"
            f'      - {{kind: mcp, name: conf, url: "http://127.0.0.1:{tap.port}/mcp"}}\n'
        )
        m = _start_marina(log_dir, "memory", None, node_id="modern-tap", config=config, tenant="tapped")
        procs.append(m.proc)
        yield m.mcp_url, tap
    finally:
        for p in reversed(procs):
            _stop(p)
        if tap is not None:
            tap.close()


async def test_a_parked_call_nobody_resumes_is_cancelled_upstream(tapped_node: tuple[str, Tap]) -> None:
    url, tap = tapped_node
    t0 = time.monotonic()
    tool = "conf.test_elicitation"
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "marina-tests", "version": "0"},
    }
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {"message": "Anyone?"}, "_meta": meta},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    async with httpx2.AsyncClient(timeout=10) as http:
        r = await http.post(url, json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["resultType"] == "input_required", r.text
    # Nobody answers: once the state has expired, Marina gives the call up upstream.
    up_call = tap.request("tools/call", "test_elicitation", since=t0)
    await wait_until(
        lambda: bool(tap.cancels_of(up_call["id"], since=t0)),
        f"notifications/cancelled upstream (sent: {tap.sent})",
        timeout=15,
    )
    assert tap.cancels_of(up_call["id"], since=t0)[0] - t0 >= 1.5, "not before the state expired"
