"""Upstream relays through a two-node Marina cluster, driven by the official Python MCP SDK.

Topology (all on loopback, started and stopped by this module):

    redis-server  <-  marina A, marina B   (one Redis store, tenant `relay`)
    tenant `relay` upstreams:  conf = tests/peers/upstream/server.mjs (conformance naming contract)
                               ev   = @modelcontextprotocol/server-everything (streamableHttp)

One SDK `Client` (one MCP session) talks to *both* nodes: an httpx2 transport rewrites every
request's port, alternating A/B, except that the client's answer to a server->client request
(sampling/createMessage, elicitation/create, roots/list) always goes to the node *other* than the
one whose SSE stream carried the request. So every relayed request is answered through the node
that did not deliver it, and Marina must forward the answer to the node holding the session.

Each test runs with `mode="legacy"` (initialize handshake) and the SDK default `mode="auto"`
(`server/discover` probe, rejected, then initialize: the nodes run with the stateless era off, as
an operator may; `test_modern_translation` covers the era on). Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client

from conftest import REPO_ROOT, Marina, _start_marina, _stop, free_port

pytestmark = pytest.mark.anyio

TENANT = "relay"
UPSTREAM_DIR = REPO_ROOT / "tests" / "peers" / "upstream"
EVERYTHING_ENTRY = UPSTREAM_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CALL_TIMEOUT_S = 20  # one request (the long-running operation takes 2 s)
TEST_TIMEOUT_S = 60  # one connected client, start to finish
UPSTREAM_START_TIMEOUT_S = 20

ROOTS = [types.Root(uri="file:///work/marina-relay-root", name="marina-relay-root")]
SAMPLING_ANSWER = "sampled-through-the-other-node"


# --------------------------------------------------------------------------------------------
# Cluster: two upstreams, redis, two marina nodes
# --------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    a: Marina
    b: Marina


def _node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.fail("node not found (need Node >= 20; see scripts/install-test-deps.sh)")
    return exe


def _start_conf_upstream(log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """server.mjs on PORT=0; its URL comes from its first stdout line (bounded wait)."""
    return _start_upstream_at(UPSTREAM_DIR, log_path)


def _start_upstream_at(directory: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`directory`/server.mjs (a test upstream) on PORT=0; its URL from its first stdout line."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [_node(), str(directory / "server.mjs")],
            cwd=directory,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PORT": "0"},
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + UPSTREAM_START_TIMEOUT_S
    buf = b""
    while time.monotonic() < deadline and b"\n" not in buf:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break  # exited
            buf += chunk
    m = re.search(rb"upstream listening on (http://127\.0\.0\.1:\d+/mcp)", buf)
    if m is None:
        _stop(proc)
        pytest.fail(f"test upstream did not start (stdout: {buf!r}, log: {log_path.read_text(errors='replace')})")
    return proc, m.group(1).decode()


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _start_everything(log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """server-everything (streamableHttp, /mcp) on a free port; bounded retry for the port race."""
    if not EVERYTHING_ENTRY.exists():
        pytest.fail(f"server-everything missing at {EVERYTHING_ENTRY} (run scripts/install-test-deps.sh)")
    last = ""
    for _attempt in range(3):
        port = free_port()
        log_path = log_dir / f"everything-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [_node(), str(EVERYTHING_ENTRY), "streamableHttp"],
                cwd=UPSTREAM_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PORT": str(port)},
            )
        if _wait_port(port, proc, UPSTREAM_START_TIMEOUT_S):
            return proc, f"http://127.0.0.1:{port}/mcp"
        _stop(proc)
        last = log_path.read_text(errors="replace")[-2000:]
    pytest.fail(f"server-everything did not start; log tail:\n{last}")


@pytest.fixture(scope="module")
def cluster(tmp_root: Path, redis_url: str) -> Iterator[Cluster]:
    log_dir = tmp_root / "relay"
    log_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf, conf_url = _start_conf_upstream(log_dir / "conf-upstream.log")
        procs.append(conf)
        ev, ev_url = _start_everything(log_dir)
        procs.append(ev)
        config = log_dir / "marina.yaml"
        config.write_text(
            "egress:\n"
            "  allow_loopback: true\n"
            "tenants:\n"
            f"  {TENANT}:\n"
            "    upstreams:\n"
            f'      - {{kind: mcp, name: conf, url: "{conf_url}"}}\n'
            f'      - {{kind: mcp, name: ev, url: "{ev_url}"}}\n'
        )
        a = _start_marina(log_dir, "redis", redis_url, node_id="relay-A", config=config, tenant=TENANT, stateless_era=False)
        procs.append(a.proc)
        b = _start_marina(log_dir, "redis", redis_url, node_id="relay-B", config=config, tenant=TENANT, stateless_era=False)
        procs.append(b.proc)
        yield Cluster(a=a, b=b)
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# --------------------------------------------------------------------------------------------
# A transport that alternates nodes and sends answers to the other node
# --------------------------------------------------------------------------------------------


@dataclass
class Hop:
    node: str  # "A" / "B"
    http_method: str
    mcp_method: str | None  # JSON-RPC method of a POSTed request/notification
    answer_to: Any = None  # JSON-RPC id when the POST is the client's answer to a server request
    answered_method: str | None = None  # the server request it answers
    carried_by: str | None = None  # node whose stream delivered that server request
    status: int | None = None


@dataclass
class AlternatingTransport(httpx2.AsyncBaseTransport):
    """Rewrites every request to node A or B. Requests of each kind (JSON-RPC method, or HTTP
    method for GET/DELETE) alternate A, B, A, ..., so consecutive tool calls land on different
    nodes and so do the SDK's GET streams; a POSTed JSON-RPC response goes to the node other than the one whose SSE stream carried the server request
    (recorded while the SDK reads the stream, before it can answer)."""

    ports: dict[str, int]
    hops: list[Hop] = field(default_factory=list)
    # server request id -> (node whose stream carried it, its method)
    carried: dict[str, tuple[str, str]] = field(default_factory=dict)
    _inner: httpx2.AsyncHTTPTransport = field(default_factory=httpx2.AsyncHTTPTransport)
    _turns: dict[str, int] = field(default_factory=dict)

    def other(self, node: str) -> str:
        return "B" if node == "A" else "A"

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body: Any = None
        if request.method == "POST":
            try:
                body = json.loads(await request.aread())
            except ValueError:
                body = None
        hop = Hop(node="", http_method=request.method, mcp_method=None)
        if isinstance(body, dict) and "method" in body:
            hop.mcp_method = body["method"]
        if isinstance(body, dict) and "method" not in body and "id" in body:
            key = json.dumps(body["id"])
            carrier = self.carried.get(key)
            hop.answer_to = body["id"]
            if carrier is not None:
                hop.carried_by, hop.answered_method = carrier
                hop.node = self.other(carrier[0])
        if not hop.node:
            kind = hop.mcp_method or hop.http_method
            turn = self._turns.get(kind, 0)
            self._turns[kind] = turn + 1
            hop.node = "AB"[turn % 2]
        port = self.ports[hop.node]
        request.url = request.url.copy_with(port=port)
        request.headers["host"] = f"127.0.0.1:{port}"
        self.hops.append(hop)
        resp = await self._inner.handle_async_request(request)
        hop.status = resp.status_code
        if resp.headers.get("content-type", "").startswith("text/event-stream"):
            resp.stream = _ScanningStream(resp.stream, hop.node, self.carried)  # type: ignore[arg-type]
        return resp

    async def aclose(self) -> None:
        await self._inner.aclose()

    def answers(self) -> list[Hop]:
        return [h for h in self.hops if h.answer_to is not None]


class _ScanningStream(httpx2.AsyncByteStream):
    """Passes an SSE body through unchanged, noting which node carried each server request."""

    def __init__(self, inner: Any, node: str, carried: dict[str, tuple[str, str]]) -> None:
        self._inner = inner
        self._node = node
        self._carried = carried
        self._buf = b""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    try:
                        msg = json.loads(line[5:])
                    except ValueError:
                        continue
                    if isinstance(msg, dict) and "method" in msg and "id" in msg:
                        self._carried[json.dumps(msg["id"])] = (self._node, msg["method"])
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def connect(cluster: Cluster, mode: str, transport: AlternatingTransport, **kwargs: Any) -> AsyncIterator[Client]:
    """A connected SDK Client whose requests alternate between the nodes; bounded as a whole."""
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(10, read=60)) as http,
            Client(streamable_http_client(cluster.a.mcp_url, http_client=http), mode=mode, **kwargs) as client,
        ):
            yield client


def new_transport(cluster: Cluster) -> AlternatingTransport:
    ports = {"A": httpx2.URL(cluster.a.base_url).port, "B": httpx2.URL(cluster.b.base_url).port}
    return AlternatingTransport(ports=ports)  # type: ignore[arg-type]


def texts(result: types.CallToolResult) -> str:
    assert not result.is_error, f"tool returned isError: {result.content}"
    out = []
    for block in result.content:
        assert isinstance(block, types.TextContent), block
        out.append(block.text)
    return "\n".join(out)


async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Callbacks may run as spawned tasks in the SDK, so they can land just after the result."""
    try:
        with anyio.fail_after(timeout):
            while not pred():
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def assert_calls_on_both_nodes(t: AlternatingTransport) -> None:
    nodes = {h.node for h in t.hops if h.mcp_method == "tools/call"}
    assert nodes == {"A", "B"}, f"hops: {[(h.node, h.http_method, h.mcp_method, h.status) for h in t.hops]}"


def assert_answered_through_other_node(t: AlternatingTransport, method: str, count: int) -> None:
    """`count` answers to `method` were POSTed, each to the node that did not carry the request,
    and each was accepted (202). (The call result comes only after the answer reached the
    upstream, so Marina has answered each of those POSTs by then.)"""
    answers = [h for h in t.answers() if h.answered_method == method]
    assert len(answers) >= count, f"answers to {method}: {answers} (all hops: {t.hops})"
    for h in answers:
        assert h.carried_by in ("A", "B") and h.node != h.carried_by, h
        assert h.status == 202, h


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------


@dataclass
class Asked:
    sampling: list[types.CreateMessageRequestParams] = field(default_factory=list)
    elicitation: list[types.ElicitRequestParams] = field(default_factory=list)
    roots: int = 0


def callbacks(asked: Asked) -> dict[str, Any]:
    async def on_sampling(ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.sampling.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"{SAMPLING_ANSWER} #{len(asked.sampling)}"),
            model="marina-relay-test-model",
            stop_reason="endTurn",
        )

    async def on_elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.elicitation.append(params)
        assert isinstance(params, types.ElicitRequestFormParams), params
        props = params.requested_schema.get("properties", {})
        if "username" in props:  # conf.test_elicitation
            return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})
        # ev.trigger-elicitation-request
        return types.ElicitResult(
            action="accept",
            content={"name": "Ada Lovelace", "check": True, "email": "ada@example.com", "integer": 7},
        )

    async def on_roots(ctx: Any) -> types.ListRootsResult:
        asked.roots += 1
        return types.ListRootsResult(roots=ROOTS)

    return {"sampling_callback": on_sampling, "elicitation_callback": on_elicit, "list_roots_callback": on_roots}


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_tools_of_both_upstreams_are_listed(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    async with connect(cluster, mode, t, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            names = {tool.name for tool in (await c.list_tools()).tools}
            echo = await c.call_tool("ev.echo", {"message": "hi via A and B"})
            simple = await c.call_tool("conf.test_simple_text", {})
    for n in (
        "conf.test_sampling",
        "conf.test_elicitation",
        "conf.test_tool_with_progress",
        "conf.test_tool_with_logging",
        "ev.trigger-sampling-request",
        "ev.trigger-elicitation-request",
        "ev.get-roots-list",
        "ev.trigger-long-running-operation",
    ):
        assert n in names, f"{n} not listed: {sorted(names)}"
    assert texts(echo) == "Echo: hi via A and B"
    assert texts(simple) == "This is a simple text response for testing."
    assert_calls_on_both_nodes(t)


async def test_sampling_relayed_and_answered_through_other_node(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    asked = Asked()
    async with connect(cluster, mode, t, **callbacks(asked)) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_sampling", {"prompt": "What is 2+2?"})
        with anyio.fail_after(CALL_TIMEOUT_S):
            ev = await c.call_tool("ev.trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 20})
    assert texts(conf) == f"LLM response: {SAMPLING_ANSWER} #1"
    assert f"{SAMPLING_ANSWER} #2" in texts(ev), texts(ev)
    assert "marina-relay-test-model" in texts(ev)
    assert len(asked.sampling) == 2
    first, second = asked.sampling
    assert first.messages[0].content.text == "What is 2+2?"  # type: ignore[union-attr]
    assert "Say hi" in second.messages[0].content.text  # type: ignore[union-attr]
    assert second.max_tokens == 20
    assert_answered_through_other_node(t, "sampling/createMessage", 2)
    assert_calls_on_both_nodes(t)


async def test_elicitation_relayed_and_answered_through_other_node(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    asked = Asked()
    async with connect(cluster, mode, t, **callbacks(asked)) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_elicitation", {"message": "Who are you?"})
        with anyio.fail_after(CALL_TIMEOUT_S):
            ev = await c.call_tool("ev.trigger-elicitation-request", {})
    conf_text = texts(conf)
    prefix = "User response: action=accept, content="
    assert conf_text.startswith(prefix), conf_text
    assert json.loads(conf_text[len(prefix) :]) == {"username": "ada", "email": "ada@example.com"}, conf_text
    ev_text = texts(ev)
    assert "User provided the requested information" in ev_text, ev_text
    assert "- Name: Ada Lovelace" in ev_text and "- Email: ada@example.com" in ev_text, ev_text
    assert "- Favorite Integer: 7" in ev_text, ev_text
    assert len(asked.elicitation) == 2
    assert asked.elicitation[0].message == "Who are you?"
    assert_answered_through_other_node(t, "elicitation/create", 2)
    assert_calls_on_both_nodes(t)


# Marina opens an upstream session's GET stream before using the session, so it is open well
# within this after the first call.
FOLLOWER_SETTLE_S = 2.0


async def test_roots_relayed_and_answered_through_other_node(cluster: Cluster, mode: str) -> None:
    """server-everything asks `roots/list` outside any call: 350 ms after its session starts, and
    from `get-roots-list` while it has no answer yet. Neither has a related request, so both go
    on the upstream's standalone GET stream, which the session's node follows onto the client's
    GET stream; the client answers through the other node. Here the upstream session is started
    first (ev.echo) and Marina given time to open its upstream GET stream; then `get-roots-list`
    must report the client's roots, and the upstream's log message about them (also sent on its
    GET stream) must reach the client."""
    t = new_transport(cluster)
    asked = Asked()
    logs: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params)

    async with connect(cluster, mode, t, logging_callback=on_log, **callbacks(asked)) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            assert texts(await c.call_tool("ev.echo", {"message": "start the upstream session"}))
        await anyio.sleep(FOLLOWER_SETTLE_S)
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool("ev.get-roots-list", {})
        await wait_until(
            lambda: any("Roots updated: 1 root(s)" in str(p.data) for p in logs),
            f"server-everything's 'Roots updated' log on the GET stream (got {logs})",
        )
    text = texts(res)
    assert "Current MCP Roots (1 total)" in text, text
    assert "file:///work/marina-relay-root" in text and "marina-relay-root" in text, text
    assert asked.roots >= 1
    assert_answered_through_other_node(t, "roots/list", 1)
    get_nodes = {h.node for h in t.hops if h.http_method == "GET"}
    assert get_nodes, "the SDK opened no GET stream"


# When get-roots-list is the session's first upstream call, server-everything sends its roots/list
# on its GET stream (not the call's stream) at once, while handling the call. It must reach the
# client: Marina opens the upstream session's GET stream before it sends the session's next
# request (a message sent while no GET stream is open is lost; see FollowerLink in
# services/gateway/src/upstream/mcp.rs).
async def test_roots_on_the_first_upstream_call(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    asked = Asked()
    async with connect(cluster, mode, t, **callbacks(asked)) as c:
        with anyio.fail_after(8):  # short: the failure mode is a hang
            res = await c.call_tool("ev.get-roots-list", {})
    assert "Current MCP Roots (1 total)" in texts(res), texts(res)
    assert asked.roots >= 1


async def test_progress_relayed(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    ev_seen: list[tuple[float, float | None]] = []
    conf_seen: list[tuple[float, float | None, str | None]] = []

    async def on_ev(progress: float, total: float | None, message: str | None) -> None:
        ev_seen.append((progress, total))

    async def on_conf(progress: float, total: float | None, message: str | None) -> None:
        conf_seen.append((progress, total, message))

    async with connect(cluster, mode, t, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            ev = await c.call_tool(
                "ev.trigger-long-running-operation", {"duration": 2, "steps": 4}, progress_callback=on_ev
            )
        with anyio.fail_after(CALL_TIMEOUT_S):
            conf = await c.call_tool("conf.test_tool_with_progress", {}, progress_callback=on_conf)
        await wait_until(lambda: len(ev_seen) >= 4 and len(conf_seen) >= 3, f"progress (ev {ev_seen}, conf {conf_seen})")
        await anyio.sleep(0.1)  # anything extra would show up now
    assert texts(ev) == "Long running operation completed. Duration: 2 seconds, Steps: 4."
    assert texts(conf) == "Tool with progress executed successfully"
    assert ev_seen == [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)]
    assert conf_seen == [(0.0, 100.0, "step 1 of 3"), (50.0, 100.0, "step 2 of 3"), (100.0, 100.0, "step 3 of 3")]
    assert_calls_on_both_nodes(t)


async def test_logging_relayed(cluster: Cluster, mode: str) -> None:
    t = new_transport(cluster)
    received: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)

    expected = ["Tool execution started", "Tool processing data", "Tool execution completed"]

    def from_tool() -> list[types.LoggingMessageNotificationParams]:
        return [p for p in received if p.logger == "test_tool_with_logging"]

    async with connect(cluster, mode, t, logging_callback=on_log, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            first = await c.call_tool("conf.test_tool_with_logging", {})
            second = await c.call_tool("conf.test_tool_with_logging", {})
        await wait_until(lambda: len(from_tool()) >= 6, f"6 log messages (got {received})")
    assert texts(first) == texts(second) == "Tool with logging executed successfully"
    logs = from_tool()
    assert [p.data for p in logs] == expected * 2, logs
    assert all(p.level == "info" for p in logs), logs
    assert_calls_on_both_nodes(t)


# --------------------------------------------------------------------------------------------
# Cancellation, subscriptions, logging/setLevel, list_changed, roots/list_changed
# --------------------------------------------------------------------------------------------

WATCHED = "test://watched-resource"
WATCH_INTERVAL_S = 1.0  # server.mjs's default WATCH_INTERVAL_MS (the fixture does not set it)
NEW_ROOT = types.Root(uri="file:///work/marina-relay-root-2", name="marina-relay-root-2")


async def test_cancelled_call_is_cancelled_upstream(tapped: Tapped, mode: str) -> None:
    """The client cancels a running `ev.trigger-long-running-operation` the SDK's way (cancelling
    the scope around `call_tool`, so the SDK POSTs `notifications/cancelled`). Marina accepts it,
    tells the upstream (`notifications/cancelled` naming the call's upstream request id) and closes
    the call's upstream stream: the upstream's progress (one per 0.5 s) stops reaching Marina, and
    neither progress nor a result of the call reaches the client. The session still works."""
    t = wire_transport(tapped)
    progressed: list[float] = []
    results: list[types.CallToolResult] = []
    scope = anyio.CancelScope()
    t0 = time.monotonic()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.append(progress)

    async def long_call(c: Client) -> None:
        with scope:
            args = {"duration": 30, "steps": 60}
            results.append(await c.call_tool("ev.trigger-long-running-operation", args, progress_callback=on_progress))

    async with connect(tapped, mode, t, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):  # so the long call is the 2nd: node B
            echoes = [texts(await c.call_tool("ev.echo", {"message": "before"}))]
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_call, c)
            await wait_until(lambda: len(progressed) >= 2, "progress of the long call", timeout=CALL_TIMEOUT_S)
            scope.cancel()
        call = t.request("tools/call", "ev.trigger-long-running-operation")
        await wait_until(lambda: any(h.mcp_method == "notifications/cancelled" and h.status for h in t.hops), "cancel POST")
        up_call = tapped.ev.request("tools/call", "trigger-long-running-operation", since=t0)
        cancelled_upstream = lambda: tapped.ev.cancels_of(up_call["id"], since=t0)  # noqa: E731
        await wait_until(lambda: bool(cancelled_upstream()), f"notifications/cancelled upstream (sent: {tapped.ev.sent})")
        with anyio.fail_after(CALL_TIMEOUT_S):
            echoes += [texts(await c.call_tool("ev.echo", {"message": f"after {i}"})) for i in range(2)]
        await anyio.sleep(QUIET_S)  # proving an absence: 4 of the upstream's progress intervals
    assert results == [] and echoes == ["Echo: before", "Echo: after 0", "Echo: after 1"]
    assert [(h.node, h.status) for h in t.hops if h.mcp_method == "notifications/cancelled"] == [("A", 202)]
    assert [h.node for h in t.hops if h.mcp_method == "tools/call"] == ["A", "B", "A", "B"]  # cancel: other node
    t_up = cancelled_upstream()[0]
    up_progress = [at for at, m in tapped.ev.notified if m == "notifications/progress" and at > t0]
    assert len(up_progress) >= 2 and max(up_progress) < t_up + GRACE_S, (t_up, up_progress)
    t_cancel = next(at for at, m in t.sent if m.get("method") == "notifications/cancelled")
    down = [(at, m["params"]["progressToken"]) for at, m in t.received if m.get("method") == "notifications/progress"]
    assert {token for _, token in down} == {call["params"]["_meta"]["progressToken"]}, down
    assert len(down) >= 2 and max(at for at, _ in down) < t_cancel + GRACE_S, (t_cancel, down)
    assert not [m for _, m in t.received if m.get("id") == call["id"]], "the cancelled call was answered"


async def test_resource_subscription_relayed(cluster: Cluster, mode: str) -> None:
    """`resources/subscribe` to conf's watched resource: its `notifications/resources/updated`
    (sent on the upstream's GET stream, once a second) reach the client's message handler, and the
    resource really changes between reads (through different nodes); after `resources/unsubscribe`
    they stop."""
    t = new_transport(cluster)
    updates: list[float] = []

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ResourceUpdatedNotification) and msg.params.uri == WATCHED:
            updates.append(time.monotonic())

    async with connect(cluster, mode, t, message_handler=on_message, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            first = watched_version(await c.read_resource(WATCHED))
            await c.subscribe_resource(WATCHED)
        await wait_until(lambda: len(updates) >= 2, "2 resources/updated", timeout=5 * WATCH_INTERVAL_S)
        with anyio.fail_after(CALL_TIMEOUT_S):
            later = watched_version(await c.read_resource(WATCHED))
            await c.unsubscribe_resource(WATCHED)
        unsubscribed = time.monotonic()
        await anyio.sleep(3 * WATCH_INTERVAL_S)  # proving an absence: three update periods
    assert later >= first + 2, (first, later)
    assert max(updates) < unsubscribed + GRACE_S, (unsubscribed, updates)
    read_nodes = {h.node for h in t.hops if h.mcp_method == "resources/read"}
    assert read_nodes == {"A", "B"}, t.hops


async def test_set_logging_level_reaches_the_upstream(tapped: Tapped, mode: str) -> None:
    """conf.test_tool_with_logging logs at info unless its session's level is above it (the
    upstream filters: `isMessageIgnored`). Marina filters relayed logs again, so the client alone
    cannot tell where they were dropped; the tap shows each `logging/setLevel` passed on to the
    started conf upstream session and that the upstream itself sent nothing while at "error"."""
    t = new_transport(tapped)
    received: list[types.LoggingMessageNotificationParams] = []
    t0 = time.monotonic()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with connect(tapped, mode, t, logging_callback=on_log, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            results = [await c.call_tool("conf.test_tool_with_logging", {})]  # no level set yet
            await c.set_logging_level("error")
            results.append(await c.call_tool("conf.test_tool_with_logging", {}))
            await c.set_logging_level("debug")
            results.append(await c.call_tool("conf.test_tool_with_logging", {}))
        await wait_until(lambda: len(tool_logs(received)) >= 6, f"6 log messages (got {received})")
        await anyio.sleep(0.1)  # anything extra would show up now
    assert {texts(r) for r in results} == {"Tool with logging executed successfully"}
    # A call's logs come before its result on its stream, so the second call's would sit between.
    assert tool_logs(received) == ["Tool execution started", "Tool processing data", "Tool execution completed"] * 2
    assert levels_sent(tapped.conf, t0) == ["error", "debug"]
    up_logs = [at for at, m in tapped.conf.notified if at > t0 and m == "notifications/message"]
    assert len(up_logs) == 6, up_logs  # none from the call at "error"
    assert {h.node for h in t.hops if h.mcp_method == "logging/setLevel"} == {"A", "B"}


async def test_log_level_set_before_the_upstream_session_starts(tapped: Tapped, mode: str) -> None:
    t = new_transport(tapped)
    received: list[types.LoggingMessageNotificationParams] = []
    t0 = time.monotonic()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with connect(tapped, mode, t, logging_callback=on_log, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await c.set_logging_level("error")  # no upstream session exists yet
            assert texts(await c.call_tool("conf.test_tool_with_logging", {}))
    assert tool_logs(received) == []  # Marina's own filter: holds today
    assert levels_sent(tapped.conf, t0) == ["error"]
    assert not [at for at, m in tapped.conf.notified if at > t0 and m == "notifications/message"]


async def test_resource_list_changed_relayed(cluster: Cluster, mode: str) -> None:
    """`ev.gzip-file-as-resource` registers a session resource, and server-everything's McpServer
    sends `notifications/resources/list_changed` (on its GET stream). The client receives it;
    the new resource is readable at once (through the other node) and in the aggregated list.
    (Neither upstream can be made to send tools/ or prompts/list_changed after initialization.)"""
    t = new_transport(cluster)
    name = f"relay-{mode}-{time.monotonic_ns()}.txt.gz"  # server-everything keys these per process
    uri = f"demo://resource/session/{name}"
    changed: list[Any] = []

    async def on_message(msg: Any) -> None:
        if isinstance(msg, types.ResourceListChangedNotification):
            changed.append(msg)

    async with connect(cluster, mode, t, message_handler=on_message, **callbacks(Asked())) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            before = await all_resource_uris(c)
            args = {"name": name, "data": "data:text/plain;base64,bWFyaW5h", "outputType": "resourceLink"}
            res = await c.call_tool("ev.gzip-file-as-resource", args)
        await wait_until(lambda: bool(changed), "notifications/resources/list_changed")
        with anyio.fail_after(CALL_TIMEOUT_S):
            read = await c.read_resource(uri)
            after = await all_resource_uris(c)
    assert not res.is_error and isinstance(res.content[0], types.ResourceLink), res
    assert str(res.content[0].uri) == uri, res
    assert uri not in before and uri in after, sorted(after - before)
    assert WATCHED in after  # the conf upstream's resources are still there
    assert isinstance(read.contents[0], types.BlobResourceContents), read
    assert {h.node for h in t.hops if h.mcp_method == "resources/list"} == {"A", "B"}


async def test_roots_list_changed_reaches_the_upstream(cluster: Cluster, mode: str) -> None:
    """After server-everything has the client's roots (get-roots-list answered with one root),
    the client's list changes and it sends `notifications/roots/list_changed`. Marina passes it
    to the upstream session, which asks roots/list again (on its GET stream; answered through the
    other node) and then reports both roots."""
    t = new_transport(cluster)
    logs: list[str] = []
    current = list(ROOTS)

    async def on_roots(ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=list(current))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    cbs = {**callbacks(Asked()), "list_roots_callback": on_roots}
    async with connect(cluster, mode, t, logging_callback=on_log, **cbs) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            first = texts(await c.call_tool("ev.get-roots-list", {}))
        current.append(NEW_ROOT)
        with anyio.fail_after(CALL_TIMEOUT_S):
            await c.send_roots_list_changed()
        await wait_until(lambda: any("Roots updated: 2 root(s)" in m for m in logs), f"the 2-root update (logs {logs})")
        with anyio.fail_after(CALL_TIMEOUT_S):
            second = texts(await c.call_tool("ev.get-roots-list", {}))
    assert "Current MCP Roots (1 total)" in first and str(NEW_ROOT.uri) not in first, first
    assert "Current MCP Roots (2 total)" in second and str(NEW_ROOT.uri) in second, second
    assert [h.status for h in t.hops if h.mcp_method == "notifications/roots/list_changed"] == [202]
    assert_answered_through_other_node(t, "roots/list", 2)


# --------------------------------------------------------------------------------------------
# Helpers of the tests above: a tapped cluster, a transport that keeps what it carried
# --------------------------------------------------------------------------------------------

QUIET_S = 2.0  # a bounded window in which something must NOT happen
GRACE_S = 0.3  # what was already on its way when the stop took effect


def watched_version(res: types.ReadResourceResult) -> int:
    text = res.contents[0].text  # type: ignore[union-attr]
    m = re.fullmatch(r"Watched resource content, version (\d+)", text)
    assert m, text
    return int(m.group(1))


def tool_logs(received: list[types.LoggingMessageNotificationParams]) -> list[Any]:
    return [p.data for p in received if p.logger == "test_tool_with_logging"]


def levels_sent(tap: Tap, since: float) -> list[str]:
    """The levels of the `logging/setLevel` requests Marina sent through `tap` after `since`."""
    return [m["params"]["level"] for at, m in tap.sent if at > since and m.get("method") == "logging/setLevel"]


async def all_resource_uris(c: Client) -> set[str]:
    uris: set[str] = set()
    cursor: str | None = None
    for _page in range(50):
        page = await c.list_resources(cursor=cursor)
        uris |= {str(r.uri) for r in page.resources}
        cursor = page.next_cursor
        if cursor is None:
            return uris
    raise AssertionError("resources/list did not end within 50 pages")


class Tap:
    """A TCP relay in front of an upstream (threads, module lifetime) that keeps, with arrival
    times, each JSON-RPC message Marina POSTs there (`sent`; HTTP/1.1 bodies with a
    Content-Length) and the method of each notification the upstream sends back (`notified`)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self._threading = threading
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.notified: list[tuple[float, str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def request(self, method: str, tool: str, since: float) -> dict[str, Any]:
        found = [m for at, m in self.sent if at > since and m.get("method") == method and m["params"].get("name") == tool]
        assert len(found) == 1, self.sent
        return found[0]

    def cancels_of(self, request_id: Any, since: float) -> list[float]:
        return [
            at
            for at, m in self.sent
            if at > since and m.get("method") == "notifications/cancelled" and m["params"].get("requestId") == request_id
        ]

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                up = socket.create_connection(("127.0.0.1", self._target), timeout=5)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            for src, dst, scan in ((down, up, self._scan_requests), (up, down, self._scan_answers)):
                self._threading.Thread(target=self._pump, args=(src, dst, scan), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, scan: Callable[[dict[str, Any], bytes], None]) -> None:
        state: dict[str, Any] = {"buf": b"", "done": 0}
        try:
            while chunk := src.recv(65536):
                scan(state, chunk)  # before passing it on, so the record is never late
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _scan_requests(self, st: dict[str, Any], chunk: bytes) -> None:
        buf = st["buf"] + chunk
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", buf[:end])
            size = int(m.group(1)) if m else 0
            if len(buf) < end + 4 + size:
                break
            body, buf = buf[end + 4 : end + 4 + size], buf[end + 4 + size :]
            try:
                msg = json.loads(body) if body else None
            except ValueError:
                msg = None
            if isinstance(msg, dict):
                self.sent.append((time.monotonic(), msg))
        st["buf"] = buf

    def _scan_answers(self, st: dict[str, Any], chunk: bytes) -> None:
        buf = st["buf"] + chunk
        last = 0
        for m in re.finditer(rb'"method":"(notifications/[A-Za-z_/]+)"', buf):
            self.notified.append((time.monotonic(), m.group(1).decode()))
            last = m.end()
        st["buf"] = buf[max(last, len(buf) - 100) :]  # a tail for a match split across reads


@dataclass
class Tapped(Cluster):
    conf: Tap
    ev: Tap


@pytest.fixture(scope="module")
def tapped(tmp_root: Path, redis_url: str) -> Iterator[Tapped]:
    """Like `cluster` (own upstreams, tenant `relaytap`), but Marina reaches each upstream
    through a Tap, so a test can see what reached the upstream and what it sent back."""
    log_dir = tmp_root / "relay-tapped"
    log_dir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    taps: list[Tap] = []
    try:
        conf, conf_url = _start_conf_upstream(log_dir / "conf-upstream.log")
        procs.append(conf)
        ev, ev_url = _start_everything(log_dir)
        procs.append(ev)
        taps = [Tap(httpx2.URL(conf_url).port), Tap(httpx2.URL(ev_url).port)]  # type: ignore[arg-type]
        config = log_dir / "marina.yaml"
        config.write_text(
            "egress:\n  allow_loopback: true\ntenants:\n  relaytap:\n    upstreams:\n"
            f'      - {{kind: mcp, name: conf, url: "http://127.0.0.1:{taps[0].port}/mcp"}}\n'
            f'      - {{kind: mcp, name: ev, url: "http://127.0.0.1:{taps[1].port}/mcp"}}\n'
        )
        nodes = []
        for node_id in ("tap-A", "tap-B"):
            nodes.append(_start_marina(log_dir, "redis", redis_url, node_id=node_id, config=config, tenant="relaytap", stateless_era=False))
            procs.append(nodes[-1].proc)
        yield Tapped(a=nodes[0], b=nodes[1], conf=taps[0], ev=taps[1])
    finally:
        for p in reversed(procs):
            _stop(p)
        for tap in taps:
            tap.close()


@dataclass
class WireTransport(AlternatingTransport):
    """An AlternatingTransport that also keeps, with times, every JSON-RPC message the client
    POSTed (`sent`) and every one it received in a response body, SSE or JSON (`received`)."""

    sent: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST":
            try:
                msg = json.loads(await request.aread())
            except ValueError:
                msg = None
            if isinstance(msg, dict):
                self.sent.append((time.monotonic(), msg))
        resp = await super().handle_async_request(request)
        sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        resp.stream = _RecordingStream(resp.stream, sse, self.received)  # type: ignore[arg-type]
        return resp

    def request(self, method: str, tool: str) -> dict[str, Any]:
        found = [m for _, m in self.sent if m.get("method") == method and m["params"].get("name") == tool]
        assert len(found) == 1, self.sent
        return found[0]


class _RecordingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, sse: bool, sink: list[tuple[float, dict[str, Any]]]) -> None:
        self._inner, self._sse, self._sink = inner, sse, sink

    def _keep(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
        except ValueError:
            return
        if isinstance(msg, dict):
            self._sink.append((time.monotonic(), msg))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        buf = b""
        async for chunk in self._inner:
            buf += chunk
            if self._sse:
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"data:"):
                        self._keep(line[5:])
            yield chunk
        if not self._sse and buf:
            self._keep(buf)

    async def aclose(self) -> None:
        await self._inner.aclose()


def wire_transport(cluster: Cluster) -> WireTransport:
    ports = {"A": httpx2.URL(cluster.a.base_url).port, "B": httpx2.URL(cluster.b.base_url).port}
    return WireTransport(ports=ports)  # type: ignore[arg-type]
