"""OAuth end to end with the official Python SDK: a real authorization server (oidc-provider,
tests/peers/oidc), a two-node Marina cluster on one Redis, and the SDK's
`ClientCredentialsOAuthProvider` doing the whole discovery on its own:

    POST /t/secure/mcp -> 401 + WWW-Authenticate resource_metadata=...
    GET  /.well-known/oauth-protected-resource/t/secure/mcp   (Marina)
    GET  /.well-known/oauth-authorization-server               (the issuer)
    POST /token (client credentials, RFC 8707 resource)        (the issuer)
    ... the MCP requests again, with the bearer token

The client's requests to Marina alternate between the two nodes (the token is checked by the
node that receives a request, and again by the session's holder when it is forwarded), in the
legacy (`initialize`) and auto (`server/discover` first) modes. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from conftest import REPO_ROOT, Marina, _start_marina, _stop, free_port

pytestmark = pytest.mark.anyio

TENANT = "secure"
OIDC_DIR = REPO_ROOT / "tests" / "peers" / "oidc"
TEST_TIMEOUT_S = 60
ISSUER_START_TIMEOUT_S = 30


@dataclass
class Setup:
    a: Marina
    b: Marina
    issuer: str


def _start_issuer(port: int, resources: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["node", "issuer.mjs"],
            cwd=OIDC_DIR,
            stdout=subprocess.PIPE,
            stderr=out,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PORT": str(port), "RESOURCES": ",".join(resources)},
        )
    assert proc.stdout is not None
    deadline = time.monotonic() + ISSUER_START_TIMEOUT_S
    line = b""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.rstrip().endswith(b" ready"):
            return proc
    _stop(proc)
    pytest.fail(f"the OAuth issuer did not start: {line!r} / {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture(scope="module")
def setup(tmp_root: Path, redis_url: str) -> Iterator[Setup]:
    log_dir = tmp_root / "oauth"
    log_dir.mkdir(exist_ok=True)
    issuer_port = free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    config = log_dir / "marina.yaml"
    config.write_text(
        "egress: {allow_loopback: true}\n"
        "tenants:\n"
        f"  {TENANT}:\n"
        "    auth:\n"
        f'      oauth: {{issuer: "{issuer}", required_scopes: ["mcp:tools"]}}\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Both nodes present one public URL (A's, as a balancer would): the protected resource
        # the client asks the issuer for, and the audience of its tokens.
        a = _start_marina(log_dir, "redis", redis_url, node_id="oauth-A", config=config, tenant=TENANT, public_url="self")
        procs.append(a.proc)
        b = _start_marina(log_dir, "redis", redis_url, node_id="oauth-B", config=config, tenant=TENANT, public_url=a.base_url)
        procs.append(b.proc)
        procs.append(_start_issuer(issuer_port, [a.mcp_url], log_dir / "issuer.log"))
        yield Setup(a=a, b=b, issuer=issuer)
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(params=["legacy", "auto"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@dataclass
class Hop:
    node: str
    method: str
    path: str
    status: int | None = None


@dataclass
class TwoNodes(httpx2.AsyncBaseTransport):
    """Sends every request for Marina to node A or B in turn (requests to the issuer go where
    they are addressed)."""

    a_port: int
    b_port: int
    hops: list[Hop] = field(default_factory=list)
    _inner: httpx2.AsyncHTTPTransport = field(default_factory=httpx2.AsyncHTTPTransport)
    _turn: int = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        node = "issuer"
        if request.url.port == self.a_port:
            node = "AB"[self._turn % 2]
            self._turn += 1
            port = self.a_port if node == "A" else self.b_port
            request.url = request.url.copy_with(port=port)
            request.headers["host"] = f"127.0.0.1:{port}"
        hop = Hop(node=node, method=request.method, path=request.url.path)
        self.hops.append(hop)
        resp = await self._inner.handle_async_request(request)
        hop.status = resp.status_code
        return resp

    async def aclose(self) -> None:
        await self._inner.aclose()


class MemStorage:
    def __init__(self) -> None:
        self.tokens = None
        self.client = None

    async def get_tokens(self):  # type: ignore[no-untyped-def]
        return self.tokens

    async def set_tokens(self, tokens) -> None:  # type: ignore[no-untyped-def]
        self.tokens = tokens

    async def get_client_info(self):  # type: ignore[no-untyped-def]
        return self.client

    async def set_client_info(self, info) -> None:  # type: ignore[no-untyped-def]
        self.client = info


@asynccontextmanager
async def connect(s: Setup, mode: str, transport: TwoNodes, client_id: str = "gw-test") -> AsyncIterator[Client]:
    auth = ClientCredentialsOAuthProvider(
        server_url=s.a.mcp_url,
        storage=MemStorage(),
        client_id=client_id,
        client_secret="gw-secret",
        scope="mcp:tools",
        issuer=s.issuer,
    )
    with anyio.fail_after(TEST_TIMEOUT_S):
        async with (
            httpx2.AsyncClient(auth=auth, transport=transport, timeout=httpx2.Timeout(10, read=60)) as http,
            Client(streamable_http_client(s.a.mcp_url, http_client=http), mode=mode) as client,
        ):
            yield client


def new_transport(s: Setup) -> TwoNodes:
    return TwoNodes(a_port=httpx2.URL(s.a.base_url).port, b_port=httpx2.URL(s.b.base_url).port)  # type: ignore[arg-type]


async def test_client_credentials_discovery_and_calls_through_both_nodes(setup: Setup, mode: str) -> None:
    t = new_transport(setup)
    async with connect(setup, mode, t) as c:
        names = [tool.name for tool in (await c.list_tools()).tools]
        assert "add" in names, names
        for i in range(4):
            r = await c.call_tool("add", {"a": 20, "b": i})
            assert not r.is_error
            assert r.content[0].text == str(20 + i)  # type: ignore[union-attr]
    # The SDK found everything by itself, starting from Marina's 401.
    mcp_hops = [h for h in t.hops if h.path.endswith(f"/t/{TENANT}/mcp")]
    assert mcp_hops[0].status == 401, t.hops
    assert any(h.path == f"/.well-known/oauth-protected-resource/t/{TENANT}/mcp" and h.status == 200 for h in t.hops), t.hops
    assert any(h.node == "issuer" and h.path == "/token" and h.status == 200 for h in t.hops), t.hops
    # Authenticated requests were served by both nodes.
    served = {h.node for h in mcp_hops if h.status in (200, 202)}
    assert served == {"A", "B"}, t.hops
