"""Fixtures that run a real `marina serve` (and optionally a real redis-server) on loopback.

Every process started here is put in its own process group and torn down in a `finally`,
and every wait is bounded, so a hung or crashed Marina fails the test instead of the run.

Environment:
    MARINA_BIN         path of the marina binary (default: <repo>/target/debug/marina)
    MARINA_PEER_STORES comma-separated stores to run the suite against (default: "memory,redis")
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_MARINA_BIN = REPO_ROOT / "target" / "debug" / "marina"
TENANT = "demo"

STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Marina:
    """A running marina instance."""

    base_url: str  # http://127.0.0.1:PORT
    store: str  # "memory" or "redis"
    log_path: Path
    proc: subprocess.Popen[bytes]
    tenant: str = TENANT

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/t/{self.tenant}/mcp"

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-n:])


def free_port() -> int:
    """A port that was free a moment ago (the caller retries if it loses the race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the process group, escalate to SIGKILL after `timeout`; return the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)
        return None  # did not stop on SIGTERM


def _marina_bin() -> Path:
    path = Path(os.environ.get("MARINA_BIN", DEFAULT_MARINA_BIN))
    if not os.access(path, os.X_OK):
        # Deliberately a failure, not a skip: a missing binary must not look like a green run.
        pytest.fail(f"marina binary not found or not executable at {path} (build it, or set MARINA_BIN)")
    return path


def _wait_redis(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait until redis answers PING on loopback (bounded by `deadline`)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"redis-server on port {port} did not answer PING in time")


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="marina-peers-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_root: Path) -> Iterator[str]:
    """A throwaway redis-server (no persistence) on a free loopback port."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server not installed (run scripts/install-test-deps.sh as root)")
    data_dir = tmp_root / "redis"
    data_dir.mkdir()
    last_err: Exception | None = None
    for _attempt in range(3):  # a port race with another process is retried, bounded
        port = free_port()
        with open(data_dir / f"redis-{port}.log", "wb") as log:
            proc = subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(data_dir), "--protected-mode", "yes"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        try:
            _wait_redis(port, proc, time.monotonic() + 10)
        except (RuntimeError, TimeoutError) as e:
            last_err = e
            _stop(proc)
            continue
        try:
            yield f"redis://127.0.0.1:{port}/"
        finally:
            _stop(proc)
        return
    pytest.fail(f"could not start redis-server: {last_err}")


def _start_marina(
    tmp_root: Path,
    store: str,
    redis: str | None,
    node_id: str,
    config: Path | None = None,
    tenant: str = TENANT,
    public_url: str | None = None,
    stateless_era: bool | None = None,
) -> Marina:
    """Start a node; `public_url` sets `server.public_url` ("self": the node's own base URL);
    `stateless_era` sets `server.stateless_era` (default: the node's own default, on)."""
    exe = _marina_bin()
    last_err = ""
    for attempt in range(3):  # bounded retry only for the free-port race
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp_root / f"marina-{store}-{port}-{attempt}.log"
        args = [str(exe), "serve", "--bind", f"127.0.0.1:{port}", "--admin-bind", "127.0.0.1:0", "--node-id", node_id]
        if redis is not None:
            args += ["--redis-url", redis]
        if config is not None:
            args += ["--config", str(config)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={
                    **os.environ,
                    "RUST_BACKTRACE": "1",
                    # No balancer to wait for on SIGTERM.
                    "MARINA__SERVER__SHUTDOWN_DELAY_MS": "0",
                    **({"MARINA__SERVER__PUBLIC_URL": base if public_url == "self" else public_url} if public_url else {}),
                    **(
                        {"MARINA__SERVER__STATELESS_ERA": "true" if stateless_era else "false"}
                        if stateless_era is not None
                        else {}
                    ),
                },
            )
        marina = Marina(base_url=base, store=store, log_path=log_path, proc=proc, tenant=tenant)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:  # ready, not just alive
                    if r.status == 200:
                        return marina
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        rc = _stop(proc)
        last_err = f"marina did not become ready (exit code {rc}); log tail:\n{marina.log_tail()}"
    pytest.fail(last_err)


def stores() -> list[str]:
    return [s.strip() for s in os.environ.get("MARINA_PEER_STORES", "memory,redis").split(",") if s.strip()]


@pytest.fixture(scope="session")
def start_marina(request: pytest.FixtureRequest, tmp_root: Path) -> Iterator[Callable[[str], Marina]]:
    """Factory: start a marina for a store kind ("memory" / "redis"). Whatever it started is
    stopped at the end of the session (SIGTERM, then SIGKILL); tests that care about the exit
    code stop their instance themselves with `stop_marina`."""
    started: list[Marina] = []

    def start(store: str) -> Marina:
        redis = request.getfixturevalue("redis_url") if store == "redis" else None
        # These nodes test the sessionful era, and the fallback of dual-era clients to it: with
        # the stateless era off, as an operator may run them.
        m = _start_marina(tmp_root, store, redis, node_id=f"pytest-{store}-{len(started)}", stateless_era=False)
        started.append(m)
        return m

    try:
        yield start
    finally:
        for m in started:
            _stop(m.proc)


def stop_marina(m: Marina) -> tuple[int | None, float]:
    """SIGTERM `m`; return (exit code or None if it had to be SIGKILLed, seconds taken)."""
    t0 = time.monotonic()
    rc = _stop(m.proc)
    return rc, time.monotonic() - t0


@pytest.fixture(scope="module", params=stores())
def marina(request: pytest.FixtureRequest, start_marina: Callable[[str], Marina]) -> Iterator[Marina]:
    """A marina serving tenant `demo`, once per store kind (memory / redis) per test module."""
    m = start_marina(request.param)
    try:
        yield m
    finally:
        # The clean-shutdown contract is asserted by test_sigterm_*; here we only clean up.
        _stop(m.proc)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
