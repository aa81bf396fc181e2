"""Marina driven by the official Python MCP SDK (PyPI `mcp` 2.3.0) as a real client.

Each test runs twice per store: with `mode="legacy"` (plain initialize handshake) and with the
SDK default `mode="auto"` (which first probes `server/discover`, must get an error and then
falls back to initialize: these nodes run with the stateless era off, as an operator may;
`test_modern_client` covers it on). Every wait is bounded with `anyio.fail_after`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ClientMessageMetadata

from conftest import STOP_TIMEOUT_S, Marina, stop_marina, stores

pytestmark = pytest.mark.anyio

EXPECTED_TOOLS = {"echo", "add", "countdown", "log", "confirm"}
# The SDK offers its newest handshake-era version, which Marina supports, so it is negotiated.
EXPECTED_VERSION = "2025-11-25"
CALL_TIMEOUT_S = 15  # one request
TEST_TIMEOUT_S = 40  # one connected client, start to finish


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class Exchange:
    method: str
    mcp_method: str | None
    last_event_id: str | None
    status: int | None = None
    content_type: str | None = None


@dataclass
class WireLog:
    """Records every HTTP exchange the SDK makes, so tests can assert on the wire too."""

    exchanges: list[Exchange] = field(default_factory=list)
    session_id: str | None = None

    async def on_request(self, req: httpx2.Request) -> None:
        mcp_method = req.headers.get("mcp-method")
        if mcp_method is None and req.method == "POST":
            try:
                mcp_method = json.loads(req.content).get("method")
            except (ValueError, AttributeError):
                mcp_method = None
        req.extensions["wire_exchange"] = ex = Exchange(req.method, mcp_method, req.headers.get("last-event-id"))
        self.exchanges.append(ex)

    async def on_response(self, resp: httpx2.Response) -> None:
        ex = resp.request.extensions.get("wire_exchange")
        if ex is not None:
            ex.status = resp.status_code
            ex.content_type = resp.headers.get("content-type")
        self.session_id = resp.headers.get("mcp-session-id") or self.session_id


def http_client(wire: WireLog, headers: dict[str, str] | None = None) -> httpx2.AsyncClient:
    # Loopback only; the read timeout is generous because SSE streams stay open while tools run.
    return httpx2.AsyncClient(
        headers=headers or {},
        timeout=httpx2.Timeout(10, read=60),
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    )


@asynccontextmanager
async def connect(
    marina: Marina, mode: str, wire: WireLog | None = None, **client_kwargs: Any
) -> AsyncIterator[Client]:
    """A connected SDK Client; the whole `async with` block (connect, body, close) is bounded.

    The timeout scope is the outermost one so that it nests properly around the client's own
    task groups (anyio requires cancel scopes to be exited in LIFO order)."""
    wire = wire or WireLog()
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with (
            http_client(wire) as http,
            Client(streamable_http_client(marina.mcp_url, http_client=http), mode=mode, **client_kwargs) as client,
        ):
            yield client


def only_text(result: types.CallToolResult) -> str:
    assert not result.is_error, f"tool returned isError: {result.content}"
    assert len(result.content) == 1, result.content
    block = result.content[0]
    assert isinstance(block, types.TextContent), block
    return block.text


async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 5) -> None:
    """Callbacks run as spawned tasks in the SDK, so they may land just after the result."""
    try:
        with anyio.fail_after(timeout):
            while not pred():
                await anyio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# --------------------------------------------------------------------------------------------
# Handshake, discovery fallback, tools/list, simple calls
# --------------------------------------------------------------------------------------------


async def test_initialize_list_and_call(marina: Marina, mode: str) -> None:
    wire = WireLog()
    async with connect(marina, mode, wire) as c:
        assert c.protocol_version == EXPECTED_VERSION
        assert c.server_info is not None and c.server_info.name and c.server_info.version
        assert c.server_capabilities.tools is not None
        assert wire.session_id, "initialize response carried no MCP-Session-Id"

        with anyio.fail_after(CALL_TIMEOUT_S):
            tools = (await c.list_tools()).tools
        by_name = {t.name: t for t in tools}
        assert EXPECTED_TOOLS <= set(by_name), f"missing tools: {EXPECTED_TOOLS - set(by_name)}"
        for t in tools:
            assert t.input_schema.get("type") == "object", (t.name, t.input_schema)
        ann = by_name["countdown"].annotations
        assert ann is not None and ann.read_only_hint is True and ann.idempotent_hint is True

        with anyio.fail_after(CALL_TIMEOUT_S):
            assert only_text(await c.call_tool("echo", {"text": "héllo, marina"})) == "héllo, marina"
            assert only_text(await c.call_tool("add", {"a": 2, "b": 3})) == "5"
            assert float(only_text(await c.call_tool("add", {"a": 1.5, "b": -4}))) == -2.5

    posts = [e for e in wire.exchanges if e.method == "POST"]
    if mode == "auto":
        # The SDK's probe must be rejected (Marina answers 400) so the client falls back.
        assert posts[0].mcp_method == "server/discover", posts[0]
        assert posts[0].status == 400, posts[0]
        assert posts[1].mcp_method == "initialize", posts[1]
    else:
        assert posts[0].mcp_method == "initialize", posts[0]
        assert all(e.mcp_method != "server/discover" for e in posts)
    # tools/call answers with SSE, the other requests with JSON (Marina's documented contract).
    for e in posts:
        if e.mcp_method == "tools/call":
            assert e.status == 200 and e.content_type and e.content_type.startswith("text/event-stream"), e
        elif e.mcp_method == "tools/list":
            assert e.status == 200 and e.content_type and e.content_type.startswith("application/json"), e


async def test_unknown_tool_is_a_protocol_error(marina: Marina, mode: str) -> None:
    async with connect(marina, mode) as c:
        with anyio.fail_after(CALL_TIMEOUT_S), pytest.raises(MCPError) as exc:
            await c.call_tool("no_such_tool", {})
        # Spec: an unknown tool is a JSON-RPC error (-32602), not an isError result.
        assert exc.value.code == types.INVALID_PARAMS


# --------------------------------------------------------------------------------------------
# Progress, logging, elicitation
# --------------------------------------------------------------------------------------------


async def test_countdown_progress(marina: Marina, mode: str) -> None:
    steps = 5
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with connect(marina, mode) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool("countdown", {"steps": steps, "interval_ms": 30}, progress_callback=on_progress)
        assert only_text(res) == f"done: {steps} steps"
        await wait_until(lambda: len(seen) >= steps, f"{steps} progress notifications (got {seen})")
        await anyio.sleep(0.1)  # anything extra would show up now
    assert seen == [(float(i), float(steps)) for i in range(1, steps + 1)]


async def test_countdown_without_progress_token(marina: Marina, mode: str) -> None:
    async with connect(marina, mode) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool("countdown", {"steps": 3, "interval_ms": 10})
    assert only_text(res) == "done: 3 steps"


async def test_log_tool_and_set_level(marina: Marina, mode: str) -> None:
    received: list[types.LoggingMessageNotificationParams] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)

    async with connect(marina, mode, logging_callback=on_log) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool("log", {"level": "warning", "message": "first-message"})
        assert not res.is_error, res.content
        await wait_until(lambda: any("first-message" in json.dumps(p.data) for p in received), "the warning log")
        first = next(p for p in received if "first-message" in json.dumps(p.data))
        assert first.level == "warning"

        # After logging/setLevel error, an info message must be filtered and an error one delivered.
        # Both ride the same tools/call stream in order, so once the error one is here the info
        # one would have arrived before it.
        with anyio.fail_after(CALL_TIMEOUT_S):
            await c.session.set_logging_level("error")
            assert not (await c.call_tool("log", {"level": "info", "message": "filtered-message"})).is_error
            assert not (await c.call_tool("log", {"level": "error", "message": "third-message"})).is_error
        await wait_until(lambda: any("third-message" in json.dumps(p.data) for p in received), "the error log")
    assert [p.level for p in received if "third-message" in json.dumps(p.data)] == ["error"]
    assert not any("filtered-message" in json.dumps(p.data) for p in received), received


async def test_confirm_elicitation(marina: Marina, mode: str) -> None:
    asked: list[types.ElicitRequestFormParams] = []

    async def on_elicit(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        assert isinstance(params, types.ElicitRequestFormParams), params
        asked.append(params)
        return types.ElicitResult(action="accept", content={"answer": "forty-two"})

    async with connect(marina, mode, elicitation_callback=on_elicit) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            res = await c.call_tool("confirm", {"question": "What is the answer?"})
    assert only_text(res) == "forty-two"
    assert len(asked) == 1
    assert "What is the answer?" in asked[0].message
    schema = asked[0].requested_schema
    assert schema.get("type") == "object"
    assert schema["properties"]["answer"]["type"] == "string"


async def test_confirm_without_elicitation_capability(marina: Marina, mode: str) -> None:
    """Without the capability Marina must not ask; the call must still end (error or isError)."""
    async with connect(marina, mode) as c:
        with anyio.fail_after(CALL_TIMEOUT_S):
            try:
                res = await c.call_tool("confirm", {"question": "anyone there?"})
            except MCPError:
                return
    assert res.is_error, f"confirm answered without a client that can be asked: {res.content}"


# --------------------------------------------------------------------------------------------
# Resumption with an explicit resumption token (GET + Last-Event-ID), see peers.md §4.2
# --------------------------------------------------------------------------------------------


def countdown_request(steps: int, interval_ms: int) -> types.CallToolRequest:
    return types.CallToolRequest(
        params=types.CallToolRequestParams(name="countdown", arguments={"steps": steps, "interval_ms": interval_ms})
    )


@pytest.mark.parametrize("resume_delay_s", [0.0, 2.5], ids=["mid-flight", "after-completion"])
async def test_resume_with_resumption_token(marina: Marina, mode: str, resume_delay_s: float) -> None:
    steps, interval_ms = 6, 300
    tokens: list[str] = []
    got_two = anyio.Event()
    wire1 = WireLog()

    async def on_token(tok: str) -> None:
        tokens.append(tok)
        if len(tokens) >= 2:
            got_two.set()

    async def ignore_progress(progress: float, total: float | None, message: str | None) -> None:
        pass

    # Phase 1: start the call (with a progress token so events flow), then drop the POST SSE
    # stream after two event ids. A request that carries resumption hints is not cancelled
    # when abandoned, so Marina must keep the tool running.
    with anyio.fail_after(CALL_TIMEOUT_S):
        async with (
            http_client(wire1) as http,
            Client(streamable_http_client(marina.mcp_url, http_client=http, terminate_on_close=False), mode=mode) as c,
            anyio.create_task_group() as tg,
        ):
            version = c.protocol_version

            async def run() -> None:
                await c.session.send_request(
                    countdown_request(steps, interval_ms),
                    types.CallToolResult,
                    progress_callback=ignore_progress,
                    metadata=ClientMessageMetadata(on_resumption_token_update=on_token),
                )

            tg.start_soon(run)
            await got_two.wait()
            tg.cancel_scope.cancel()
    sid = wire1.session_id
    assert sid, "no session id seen"
    assert len(set(tokens)) == len(tokens), f"duplicate event ids: {tokens}"
    phase1_tokens = list(tokens)
    await anyio.sleep(resume_delay_s)

    # Phase 2: a fresh ClientSession on a fresh HTTP client, re-attached to the same session,
    # resumes with the last token. The transport sends GET + Last-Event-ID.
    wire2 = WireLog()
    resumed_tokens: list[str] = []

    async def on_token2(tok: str) -> None:
        resumed_tokens.append(tok)

    headers = {"mcp-session-id": sid, "mcp-protocol-version": version}
    with anyio.fail_after(CALL_TIMEOUT_S + steps * interval_ms / 1000):
        async with (
            http_client(wire2, headers) as http,
            streamable_http_client(marina.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as s,
        ):
            res = await s.send_request(
                countdown_request(steps, interval_ms),
                types.CallToolResult,
                metadata=ClientMessageMetadata(
                    resumption_token=phase1_tokens[-1], on_resumption_token_update=on_token2
                ),
            )
    assert only_text(res) == f"done: {steps} steps"

    gets = [e for e in wire2.exchanges if e.method == "GET" and e.last_event_id is not None]
    assert gets and gets[0].last_event_id == phase1_tokens[-1], wire2.exchanges
    assert gets[0].status == 200 and (gets[0].content_type or "").startswith("text/event-stream"), gets[0]
    # The resumption must not call the tool again: no tools/call POST in phase 2.
    assert not any(e.method == "POST" and e.mcp_method == "tools/call" for e in wire2.exchanges), wire2.exchanges
    # Replay starts after the given id: no event from phase 1 is delivered again.
    assert not set(resumed_tokens) & set(phase1_tokens), (phase1_tokens, resumed_tokens)
    assert resumed_tokens, "the resumed stream carried no event ids"


# --------------------------------------------------------------------------------------------
# Lifecycle: SIGTERM is a clean, prompt shutdown (exit code 0), also after serving sessions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store", stores())
async def test_sigterm_after_a_session_exits_zero_promptly(start_marina: Callable[[str], Marina], store: str) -> None:
    m = start_marina(store)
    async with connect(m, "legacy") as c:  # initialize, GET stream, tools/call, then DELETE
        assert only_text(await c.call_tool("echo", {"text": "bye"})) == "bye"
    rc, took = await anyio.to_thread.run_sync(stop_marina, m)
    assert rc == 0, (
        f"marina ({store}) did not exit 0 within {STOP_TIMEOUT_S:.0f} s of SIGTERM "
        f"(rc={rc}, {took:.1f} s); log tail:\n{m.log_tail()}"
    )
