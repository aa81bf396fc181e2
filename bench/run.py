#!/usr/bin/env python3
"""Marina benchmark (stdlib only): throughput, latency, persistence, resume latency and memory.

Layout on a 2-core machine (as in ../shared/research/perf-peers.md): marina with 1 worker pinned to
CPU 0; redis-server and the load generator (wrk -t1) on CPU 1. Every figure is the median of
`--repeats` runs of `--duration` seconds after a 2 s warm-up.

    cargo build --release --bin marina
    python3 bench/run.py --marina target/release/marina          # prints a Markdown report

Needs redis-server and wrk on PATH (scripts/install-test-deps.sh installs redis; apt install wrk).
"""
import argparse, http.client, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
H = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Redis:
    def __init__(self):
        self.port = free_port(); self.dir = tempfile.mkdtemp()
        self.p = subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(self.port), "--save", "",
                                   "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL)
        wait_port(self.port)

    def cli(self, *args):
        return subprocess.check_output(["redis-cli", "-p", str(self.port), *args], text=True)

    def info(self, section):
        out = {}
        for line in self.cli("info", section).splitlines():
            if ":" in line:
                k, v = line.split(":", 1); out[k] = v.strip()
        return out

    def stop(self):
        self.p.kill(); self.p.wait()


class Marina:
    def __init__(self, binary, redis_url, env, config=None, stderr=None, admin=False):
        self.port = free_port()
        e = dict(os.environ, MARINA__SERVER__WORKERS="1", MARINA__SERVER__LOG_FILTER="warn")
        e.update(env)
        extra = ["--config", config] if config else []
        admin_port = free_port() if admin else None
        admin_bind = f"127.0.0.1:{admin_port}" if admin else ""
        self.p = subprocess.Popen(["taskset", "-c", "0", binary, "serve", "--bind", f"127.0.0.1:{self.port}", "--admin-bind", admin_bind,
                                   "--redis-url", redis_url, *extra], env=e, stdout=subprocess.DEVNULL, stderr=stderr)
        wait_port(self.port)
        self.admin = f"http://127.0.0.1:{admin_port}/admin/v1" if admin else None
        self.url = f"http://127.0.0.1:{self.port}/t/demo/mcp"

    def rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def cpu_s(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def open_sessions(port, n, version="2025-11-25", path="/t/demo/mcp", auth=None):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    h = dict(H, **({"Authorization": auth} if auth else {}))
    sids = []
    for i in range(n):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}})
        conn.request("POST", path, body, h); r = conn.getresponse(); r.read()
        sid = r.getheader("mcp-session-id"); sids.append(sid)
        if sid is None:
            raise RuntimeError(f"initialize on {path} failed: {r.status}")
        conn.request("POST", path, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                     dict(h, **{"MCP-Session-Id": sid, "MCP-Protocol-Version": version}))
        r = conn.getresponse(); r.read()
    conn.close()
    return sids


def wrk(url, conns, duration, env):
    e = dict(os.environ, **env)
    p = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
                        "-s", os.path.join(HERE, "mcp_call.lua"), url], env=e, capture_output=True, text=True)
    out = p.stdout
    m = re.search(r"MCPRESULT ok=(\d+) bad=(\d+) calls_per_s=(\d+) p50_ms=([\d.]+) p99_ms=([\d.]+)", out)
    if not m:
        raise RuntimeError("wrk failed: " + out)
    errors = re.findall(r"(?:Socket errors|Non-2xx or 3xx responses):.*", out) + re.findall(r"BAD .*", p.stderr)
    return {"ok": int(m[1]), "bad": int(m[2]), "rate": int(m[3]), "p50": float(m[4]), "p99": float(m[5]), "errors": errors}


def measured(m, url, conns, args, env):
    """Warm up, then `args.repeats` wrk runs; the median run, with the CPU of process `m` (any object with cpu_s())."""
    wrk(url, conns, 2, env)  # warm-up
    runs = []
    for _ in range(args.repeats):
        c0 = m.cpu_s(); runs.append(wrk(url, conns, args.duration, env)); runs[-1]["cpu"] = (m.cpu_s() - c0) / args.duration
    med = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    med["runs"] = [r["rate"] for r in runs]
    med["failed"] = sum(r["bad"] for r in runs)
    return med


def resume_latency(m, samples):
    sid = open_sessions(m.port, 1)[0]
    hdr = dict(H, **{"MCP-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"})
    conn = http.client.HTTPConnection("127.0.0.1", m.port)
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "countdown", "arguments": {"steps": 3, "interval_ms": 0}, "_meta": {"progressToken": 1}}}
    conn.request("POST", "/t/demo/mcp", json.dumps(call), hdr); conn.getresponse().read(); conn.close()
    req = (f"GET /t/demo/mcp HTTP/1.1\r\nHost: 127.0.0.1:{m.port}\r\nAccept: text/event-stream\r\n"
           f"MCP-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\nLast-Event-ID: 1_0-0\r\n\r\n").encode()
    lat = []
    for _ in range(samples):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", m.port)); s.sendall(req)
        buf = b""
        while b"\ndata: {" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        lat.append((time.perf_counter() - t0) * 1000); s.close()
    lat.sort()
    return {"p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99) - 1]}


class Proc:
    """A process pinned to `cpu`, waited for on `port`."""
    def __init__(self, args, cpu, port, env=None):
        self.p = subprocess.Popen(["taskset", "-c", str(cpu), *args], env=dict(os.environ, **(env or {})),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def cpu_s(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def upstream_tenant_config(url):
    """A configuration file: tenant `bench` publishing the MCP upstream at `url` unprefixed."""
    cfg = os.path.join(tempfile.mkdtemp(), "marina.yaml")
    with open(cfg, "w") as f:
        f.write(f"egress:\n  allow_loopback: true\ntenants:\n  bench:\n    upstreams:\n"
                f"      - {{kind: mcp, name: up, prefix: \"\", url: \"{url}\"}}\n")
    return cfg


def overhead(args):
    """Gateway overhead: tools/call echo straight to rmcp-echo vs through Marina (JSON mode)."""
    echo_args = {"MCP_TOOL": "echo", "MCP_ARGS": '{"message":"hello"}'}
    rows = []
    up_port = free_port()
    url = f"http://127.0.0.1:{up_port}/mcp"
    up_env = {"ADDR": f"127.0.0.1:{up_port}", "THREADS": "1"}
    # direct: upstream alone on CPU 0 (wrk on CPU 1)
    up = Proc([args.echo], 0, up_port, up_env)
    r = measured(up, url, 8, args, echo_args); rows.append(("direct: rmcp-echo on CPU 0", 8, r))
    up.stop()
    # ceiling: upstream shares CPU 1 with wrk — exactly its placement in the gateway run
    up = Proc([args.echo], 1, up_port, up_env)
    for c in (1, 8, 32):
        r = measured(up, url, c, args, echo_args); rows.append(("ceiling: rmcp-echo on CPU 1 with wrk", c, r))
    redis = Redis()
    cfg = upstream_tenant_config(url)
    try:
        m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/", {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": "json"}, cfg)
        sids = ",".join(open_sessions(m.port, 8, path="/t/bench/mcp"))
        murl = f"http://127.0.0.1:{m.port}/t/bench/mcp"
        for c in (1, 8, 32):
            r = measured(m, murl, c, args, dict(echo_args, MCP_SESSIONS=sids))
            rows.append(("through Marina (CPU 0) to rmcp-echo (CPU 1)", c, r))
        m.stop()
    finally:
        redis.stop()
        up.stop()
    print("| measurement | C | calls/s (median) | runs | p50 ms | p99 ms | CPU of the measured process |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, c, r in rows:
        print(f"| {name} | {c} | {r['rate']:,} | {', '.join(f'{x:,}' for x in r['runs'])} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu']:.2f} |")


OTLP_SINK = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the exporter's connection open, as a collector does
    requests = 0
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        H.requests += 1
        self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):  # the count of export requests received
        body = str(H.requests).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def telemetry(args):
    """The price of telemetry: tools/call through Marina to rmcp-echo (the --overhead layout, one
    session, JSON answers) with metrics on (the default), metrics off, and traces sampled at 100 %
    to an OTLP/HTTP sink on CPU 1; the three nodes measured in interleaved rounds."""
    echo_args = {"MCP_TOOL": "echo", "MCP_ARGS": '{"message":"hello"}'}
    up_port, sink_port = free_port(), free_port()
    url = f"http://127.0.0.1:{up_port}/mcp"
    up = Proc([args.echo], 1, up_port, {"ADDR": f"127.0.0.1:{up_port}", "THREADS": "1"})
    sink = Proc([sys.executable, "-c", OTLP_SINK, str(sink_port)], 1, sink_port)
    redis = Redis()
    cfg = upstream_tenant_config(url)
    variants = [
        ("metrics on (default)", {}),
        ("metrics off", {"MARINA__TELEMETRY__METRICS": "false"}),
        ("metrics on, traces 100 %", {"MARINA__TELEMETRY__OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                                      "MARINA__TELEMETRY__SAMPLING_RATIO": "1.0"}),
    ]
    results = {}
    exports = 0
    try:
        for rnd in range(args.repeats):
            for name, env in variants:
                m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/",
                           dict(env, MARINA__SESSIONS__TOOLS_CALL_RESPONSE="json"), cfg)
                sids = ",".join(open_sessions(m.port, 8, path="/t/bench/mcp"))
                murl = f"http://127.0.0.1:{m.port}/t/bench/mcp"
                for c in (8, 32):
                    wrk(murl, c, 2, dict(echo_args, MCP_SESSIONS=sids))  # warm-up
                    c0 = m.cpu_s()
                    r = wrk(murl, c, args.duration, dict(echo_args, MCP_SESSIONS=sids))
                    r["us"] = (m.cpu_s() - c0) / max(r["ok"], 1) * 1e6
                    results.setdefault((name, c), []).append(r)
                m.stop()
                redis.cli("flushall")
        conn = http.client.HTTPConnection("127.0.0.1", sink_port)
        conn.request("GET", "/"); exports = int(conn.getresponse().read())
    finally:
        sink.stop(); redis.stop(); up.stop()
    print("| node | C | calls/s (median) | runs | p50 ms | p99 ms | Marina CPU µs per call | failed | vs metrics off |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for c in (8, 32):
        off = statistics.median(r["rate"] for r in results[("metrics off", c)])
        for name, _ in variants:
            runs = results[(name, c)]
            med = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
            us = statistics.median(r["us"] for r in runs)
            rates = ", ".join(f"{r['rate']:,}" for r in runs)
            print(f"| {name} | {c} | {med['rate']:,} | {rates} | {med['p50']:.2f} | "
                  f"{med['p99']:.2f} | {us:.0f} | {sum(r['bad'] for r in runs)} | {100 * med['rate'] / off:.1f} % |")
    print(f"\nOTLP export requests the sink received (traces variant): {exports}")


def stateless_call(port, path, tool, arguments, rid=1):
    """One stateless (MCP 2026-07-28) tools/call by hand: (HTTP status, JSON answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": arguments, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"}}}}
    conn.request("POST", path, json.dumps(body), dict(H, **{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call",
                                                          "Mcp-Name": tool}))
    r = conn.getresponse(); raw = r.read(); conn.close()
    return r.status, json.loads(raw)


class CountingProxy:
    """A reverse proxy in this process (threads) counting the HTTP requests it forwards to
    `upstream` (host:port), by HTTP method and JSON-RPC method. For counting, not for timing."""
    def __init__(self, upstream):
        import collections, threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.counts = collections.Counter(); self.lock = threading.Lock()
        host, up_port = upstream.split(":"); proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                try:
                    msg = json.loads(body) if body else None
                except ValueError:
                    msg = None
                methods = [m.get("method", "(response)") for m in (msg if isinstance(msg, list) else [msg]) if isinstance(m, dict)]
                with proxy.lock:
                    proxy.counts[f"{self.command} {'+'.join(methods) or '-'}"] += 1
                if not hasattr(self, "up"):
                    self.up = http.client.HTTPConnection(host, int(up_port))
                hdrs = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")}
                self.up.request(self.command, self.path, body, hdrs)
                r = self.up.getresponse()
                stream = r.getheader("Content-Length") is None and "text/event-stream" in (r.getheader("Content-Type") or "")
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                if not stream:
                    data = r.read()
                    self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
                    return
                self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
                while True:  # an SSE stream: pass it on as it comes
                    chunk = r.read1(65536)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)); self.wfile.flush()
                    if not chunk:
                        return

            do_GET = do_POST = do_DELETE = forward

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self):
        """The counts since the last take, and their total."""
        with self.lock:
            c = dict(self.counts); self.counts.clear()
        return c, sum(c.values())

    def stop(self):
        self.server.shutdown(); self.server.server_close()


def redis_commands(redis):
    """Commands Redis has executed (all kinds)."""
    return sum(int(v.split("calls=")[1].split(",")[0]) for k, v in redis.info("commandstats").items() if k.startswith("cmdstat_"))


def stateless(args):
    """The stateless era (MCP 2026-07-28): tools/call echo through Marina to rmcp-echo without a
    session, beside the sessionful era on the same node (one session, as in --overhead), against
    the harness ceiling (rmcp-echo sharing CPU 1 with wrk). One tenant per upstream revision in
    `--protocols` (`auto`: rmcp-echo answers server/discover with 2026-07-28, so it is spoken to
    statelessly; `2025-11-25`: pinned sessionful, so a stateless call is translated onto the
    principal's upstream session kept in the store); all (tenant, client era) pairs in interleaved
    rounds. Then, in a short separate run through a counting proxy, the upstream HTTP requests per
    call once the upstream session (if any) exists."""
    echo_args = {"MCP_TOOL": "echo", "MCP_ARGS": '{"message":"hello"}'}
    levels = (1, 8, 32)
    protocols = args.protocols.split(",")
    tenant = lambda proto: "up-" + proto.replace(".", "-")
    up_port = free_port()
    url = f"http://127.0.0.1:{up_port}/mcp"
    up_env = {"ADDR": f"127.0.0.1:{up_port}", "THREADS": "1"}
    rows, ceiling, eras = [], {}, {}
    # direct: upstream alone on CPU 0 (wrk on CPU 1)
    up = Proc([args.echo], 0, up_port, up_env)
    try:
        rows.append(("direct: rmcp-echo on CPU 0", 8, measured(up, url, 8, args, echo_args)))
    finally:
        up.stop()
    # ceiling: upstream shares CPU 1 with wrk — exactly its placement in the gateway runs
    up = Proc([args.echo], 1, up_port, up_env)
    redis = m = proxy = None

    def config(upstream_url):
        d = tempfile.mkdtemp()
        cfg = os.path.join(d, "marina.yaml")
        with open(cfg, "w") as f:
            f.write("server: {stateless_era: true}\negress:\n  allow_loopback: true\ntenants:\n")
            for proto in protocols:
                f.write(f"  {tenant(proto)}:\n    upstreams:\n      - {{kind: mcp, name: up, prefix: \"\", url: \"{upstream_url}\", protocol: \"{proto}\"}}\n")
        return cfg

    def check(port, path):
        status, ans = stateless_call(port, path, "echo", {"message": "hello"})
        if status != 200 or ans.get("result", {}).get("content", [{}])[0].get("text") != "hello" \
                or ans["result"].get("resultType") != "complete":
            raise RuntimeError(f"stateless tools/call on {path} failed: {status} {ans}")
    json_mode = {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": "json"}
    counted = []
    try:
        for c in levels:
            ceiling[c] = measured(up, url, c, args, echo_args)
            rows.append(("ceiling: rmcp-echo on CPU 1 with wrk", c, ceiling[c]))
        redis = Redis()
        m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/", json_mode, config(url))
        plans = []
        for proto in protocols:
            path = f"/t/{tenant(proto)}/mcp"
            check(m.port, path)  # also makes the principal's upstream session, if the upstream needs one
            sids = ",".join(open_sessions(m.port, 8, path=path))
            plans.append(((proto, "sessionful"), f"http://127.0.0.1:{m.port}{path}", dict(echo_args, MCP_SESSIONS=sids)))
            plans.append(((proto, "stateless"), f"http://127.0.0.1:{m.port}{path}", dict(echo_args, MCP_STATELESS="1")))
        for c in levels:
            print(f"C={c}: {len(plans)} (upstream revision, client era) pairs, {args.repeats} interleaved rounds", file=sys.stderr)
            for _, murl, env in plans:
                wrk(murl, c, 2, env)  # warm-up
            runs = {key: [] for key, _, _ in plans}
            cmds = {key: 0 for key, _, _ in plans}
            for _ in range(args.repeats):  # interleaved: a slower spell of the host hits every pair alike
                for key, murl, env in plans:
                    c0, k0 = m.cpu_s(), redis_commands(redis)
                    r = wrk(murl, c, args.duration, env)
                    r["cpu"] = (m.cpu_s() - c0) / args.duration
                    for e in r["errors"]:
                        print(f"  {key}, C={c}: {e}", file=sys.stderr)
                    cmds[key] += redis_commands(redis) - k0 - 1  # less the INFO that read the count
                    runs[key].append(r)
            for key, _, _ in plans:
                med = dict(sorted(runs[key], key=lambda r: r["rate"])[len(runs[key]) // 2])
                med["runs"] = [r["rate"] for r in runs[key]]
                med["failed"] = sum(r["bad"] for r in runs[key])
                med["redis_per_call"] = cmds[key] / max(1, sum(r["ok"] + r["bad"] for r in runs[key]))
                eras[(key, c)] = med
        m.stop(); m = None
        # Upstream requests per call: Marina -> counting proxy -> rmcp-echo, a node of its own on
        # an empty store (so the principal's upstream session, if any, is made here).
        redis.cli("flushall")
        proxy = CountingProxy(f"127.0.0.1:{up_port}")
        m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/", json_mode, config(f"http://127.0.0.1:{proxy.port}/mcp"))
        time.sleep(0.5)
        start = proxy.take()
        for proto in protocols:
            path = f"/t/{tenant(proto)}/mcp"
            status, _ = stateless_call(m.port, path, "echo", {"message": "hello"})
            first = proxy.take()
            ok = 0
            for i in range(args.count_calls):
                st, ans = stateless_call(m.port, path, "echo", {"message": f"m{i}"}, rid=i + 2)
                ok += st == 200 and ans.get("result", {}).get("content", [{}])[0].get("text") == f"m{i}"
            seq = proxy.take()
            cr = wrk(f"http://127.0.0.1:{m.port}{path}", 8, 2, dict(echo_args, MCP_STATELESS="1"))
            time.sleep(0.2)
            conc = proxy.take()
            # The sessionful era for comparison: its session (and upstream session), then calls.
            sids = ",".join(open_sessions(m.port, 1, path=path))
            opened = proxy.take()
            sr = wrk(f"http://127.0.0.1:{m.port}{path}", 8, 2, dict(echo_args, MCP_SESSIONS=sids))
            time.sleep(0.2)
            counted.append((proto, status, first, ok, seq, cr, conc, opened, sr, proxy.take()))
        m.stop(); m = None
    finally:
        if m:
            m.stop()
        if proxy:
            proxy.stop()
        if redis:
            redis.stop()
        up.stop()
    label = lambda proto, era: (f"through Marina (CPU 0), {era} client, upstream "
                                + ("2026-07-28 (`protocol: auto`, probed)" if proto == "auto" else f"pinned `{proto}`"))
    for c in levels:
        for proto in protocols:
            for era in ("sessionful", "stateless"):
                rows.append((label(proto, era), c, eras[((proto, era), c)]))
    print("| measurement | C | calls/s (median) | runs | p50 ms | p99 ms | CPU of the measured process | failed | Redis commands per call |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name, c, r in rows:
        per = f"{r['redis_per_call']:.2f}" if "redis_per_call" in r else "-"
        print(f"| {name} | {c} | {r['rate']:,} | {', '.join(f'{x:,}' for x in r['runs'])} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['cpu']:.2f} | {r['failed']} | {per} |")
    print()
    print("| upstream | C | ceiling calls/s | sessionful client | share of ceiling | stateless client | share of ceiling | "
          "stateless / sessionful | stateless added p50 / p99 (vs ceiling) | Marina CPU µs per call, sessionful / stateless |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for proto in protocols:
        for c in levels:
            ce, a, b = ceiling[c], eras[((proto, "sessionful"), c)], eras[((proto, "stateless"), c)]
            print(f"| {proto} | {c} | {ce['rate']:,} | {a['rate']:,} | {a['rate'] / ce['rate']:.1%} | {b['rate']:,} | "
                  f"{b['rate'] / ce['rate']:.1%} | {b['rate'] / a['rate']:.1%} | +{b['p50'] - ce['p50']:.2f} / +{b['p99'] - ce['p99']:.2f} ms | "
                  f"{a['cpu'] * 1e6 / a['rate']:.0f} / {b['cpu'] * 1e6 / b['rate']:.0f} |")
    print()
    fmt = lambda c: ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"
    print(f"Upstream HTTP requests through a counting proxy, at the node's start: {start[1]} ({fmt(start[0])})")
    # Per call: per upstream tools/call (wrk stops with up to C calls in flight, which its count leaves out).
    per = lambda c: c[1] / max(1, c[0].get("POST tools/call", 0))
    for proto, status, first, ok, seq, cr, conc, opened, sr, sconc in counted:
        print(f"- upstream `{proto}`, stateless client: the first call ({status}): {first[1]} ({fmt(first[0])}); "
              f"then {args.count_calls} sequential calls ({ok} ok): {seq[1]} ({fmt(seq[0])}) = **{per(seq):.3f} per call**; "
              f"then wrk C=8 for 2 s ({cr['ok']} ok, {cr['bad']} failed): {conc[1]} ({fmt(conc[0])}) = {per(conc):.3f} per call")
        print(f"- upstream `{proto}`, sessionful client: initialize + initialized: {opened[1]} ({fmt(opened[0])}); "
              f"then wrk C=8 for 2 s ({sr['ok']} ok, {sr['bad']} failed): {sconc[1]} ({fmt(sconc[0])}) = {per(sconc):.3f} per call")


def security(args):
    """The price of multi-tenant security: tools/call echo (JSON mode) on a tenant with OAuth (JWT
    from a real oidc-provider), a 100-line 3-level casbin policy and all three rate limits, against
    the same tools on a tenant with none of them; tools/list of 1,000 tools filtered by the policy;
    Redis round trips per call."""
    oidc = os.path.join(HERE, "..", "tests", "peers", "oidc")
    public = "http://bench.local"
    iss_port = free_port()
    issuer = f"http://127.0.0.1:{iss_port}"
    # 100 policy lines, three levels (admin > operator > viewer), the caller an operator.
    lines = ["p, viewer, tool:echo, call, allow", "g, operator, viewer", "g, admin, operator"]
    lines += [f"p, viewer, tool:v{i}_*, call, allow" for i in range(30)]
    lines += [f"p, operator, tool:o{i}_*, call, allow" for i in range(30)]
    lines += [f"p, admin, tool:a{i}_*, call, deny" for i in range(20)]
    lines += [f"g, user{i}, operator" for i in range(17)]
    assert len(lines) == 100
    policy = "".join(f"        {l}\n" for l in lines)
    listing_policy = "        p, operator, tool:t*, call, allow\n        p, operator, tool:t9*, call, deny\n"
    tools = "".join(f"      - {{kind: http, name: t{i}, url: 'http://127.0.0.1:9/x', input_schema: {{type: object}}}}\n"
                    for i in range(1000))
    oauth = f'      oauth: {{issuer: "{issuer}", required_scopes: [mcp:tools]}}\n'
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "marina.yaml")
    with open(cfg, "w") as f:
        f.write(f"server: {{public_url: \"{public}\"}}\negress: {{allow_loopback: true}}\ntenants:\n"
                f"  open:\n    upstreams: [{{kind: builtin}}]\n"
                f"  auth-only:\n    upstreams: [{{kind: builtin}}]\n    auth:\n{oauth}"
                f"  auth-policy:\n    upstreams: [{{kind: builtin}}]\n    auth:\n{oauth}    rbac:\n      policy: |\n{policy}"
                f"  secure:\n    upstreams: [{{kind: builtin}}]\n    auth:\n{oauth}"
                f"    rbac:\n      policy: |\n{policy}"
                f"    limits: {{rate: {{tenant: '1000000/s', principal: '1000000/s', tools: {{'*': '1000000/s'}}}}}}\n"
                f"  many:\n    auth:\n{oauth}    rbac:\n      policy: |\n{listing_policy}    upstreams:\n{tools}")
    resources = ",".join(f"{public}/t/{t}/mcp" for t in ("secure", "many", "auth-only", "auth-policy"))
    iss = subprocess.Popen(["taskset", "-c", "1", "node", "issuer.mjs"], cwd=oidc, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env=dict(os.environ, PORT=str(iss_port), RESOURCES=resources))
    wait_port(iss_port)

    def token(resource):
        import base64, urllib.request, urllib.parse
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "resource": resource, "scope": "mcp:tools"}).encode()
        req = urllib.request.Request(f"{issuer}/token", body, {"Authorization": "Basic " + base64.b64encode(b"gw-test:gw-secret").decode(),
                                                               "Content-Type": "application/x-www-form-urlencoded"})
        return json.load(urllib.request.urlopen(req))["access_token"]

    redis = Redis()
    rows = []
    try:
        m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/", {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": args.mode}, cfg)
        evals = lambda: int(redis.info("commandstats").get("cmdstat_evalsha", "calls=0").split("calls=")[1].split(",")[0])
        tenants = [("open", None), ("secure", "Bearer " + token(f"{public}/t/secure/mcp"))]
        if args.breakdown:
            tenants += [(t, "Bearer " + token(f"{public}/t/{t}/mcp")) for t in ("auth-only", "auth-policy")]
        if args.only:
            tenants = [t for t in tenants if t[0] in args.only.split(",")]
        # Interleaved: each round measures every tenant once, so that a slower spell of the host
        # hits all of them alike; the ratio to `open` is taken per round, then the median.
        plans = []
        for tenant, auth in tenants:
            path = f"/t/{tenant}/mcp"
            env = {"MCP_SESSIONS": ",".join(open_sessions(m.port, 8, path=path, auth=auth))}
            if auth:
                env["MCP_AUTH"] = auth
            url = f"http://127.0.0.1:{m.port}{path}"
            wrk(url, 32, 2, env)  # warm-up
            plans.append((tenant, url, env, []))
        evals_by = {}
        for _ in range(args.repeats):
            for tenant, url, env, runs in plans:
                c0, before = m.cpu_s(), evals()
                r = wrk(url, 32, args.duration, env)
                r["cpu"] = (m.cpu_s() - c0) / args.duration
                evals_by[tenant] = evals_by.get(tenant, 0) + evals() - before
                runs.append(r)
        for tenant, url, env, runs in plans:
            med = dict(sorted(runs, key=lambda r: r["rate"])[len(runs) // 2])
            med["runs"] = [r["rate"] for r in runs]
            med["all"] = runs
            med["evals_per_call"] = evals_by[tenant] / max(1, sum(r["rate"] * args.duration for r in runs))
            rows.append((f"tools/call echo, {args.mode.upper()} mode, tenant `{tenant}`", 32, med))
        m.stop()
        if not args.only or "many" in args.only.split(","):
            # Its own node, with the access log on (JSON, to a file): each request's time in the
            # gateway (from the parsed request to the response ready, `elapsed_us`) is read from
            # it, apart from the client's and the loopback's share.
            log = tempfile.NamedTemporaryFile(prefix="marina-access-", suffix=".log", delete=False)
            m = Marina(args.marina, f"redis://127.0.0.1:{redis.port}/",
                       {"MARINA__SERVER__LOG_FILTER": "warn,marina::access=info", "MARINA__SERVER__LOG_FORMAT": "json"},
                       cfg, stderr=log)
            auth = "Bearer " + token(f"{public}/t/many/mcp")
            env = {"MCP_SESSIONS": ",".join(open_sessions(m.port, 1, path="/t/many/mcp", auth=auth)),
                   "MCP_AUTH": auth, "MCP_METHOD": "list"}
            r = measured(m, f"http://127.0.0.1:{m.port}/t/many/mcp", 1, args, env)
            m.stop()
            log.close()
            us = sorted(gateway_us(log.name))
            os.unlink(log.name)
            rows.append(("tools/list, 1,000 tools filtered by the policy (first page)", 1, r))
            if us:
                print(f"tools/list in the gateway ({len(us):,} requests): p50 {us[len(us) // 2] / 1000:.3f} ms, "
                      f"p99 {us[int(len(us) * 0.99)] / 1000:.3f} ms, max {us[-1] / 1000:.3f} ms")
    finally:
        redis.stop()
        iss.terminate()
    print("| measurement | C | calls/s (median) | runs | p50 ms | p99 ms | marina CPU |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, c, r in rows:
        print(f"| {name} | {c} | {r['rate']:,} | {', '.join(f'{x:,}' for x in r['runs'])} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu']:.2f} |")
    if len(rows) < 2 or not rows[0][0].endswith("`open`"):
        return
    base = rows[0][2]["all"]
    for name, _, r in rows[1:]:
        if "all" not in r:
            continue
        ratios = sorted(x["rate"] / b["rate"] for x, b in zip(r["all"], base))
        print(f"\n{name} / open, per round: {', '.join(f'{x:.1%}' for x in ratios)} (median {ratios[len(ratios) // 2]:.1%}); "
              f"Redis scripts per call {r['evals_per_call']:.3f} (open {rows[0][2]['evals_per_call']:.3f})")


def limiter(args):
    """Limiter accuracy and Redis cost under load: three nodes on one Redis, each driven by its own
    wrk (8 connections) well past the limit, for two buckets — a busy tenant rate (tokens lent to
    the nodes ahead) and a slow tool rate (every request decided in Redis). Admitted = calls
    answered with a result; the GCRA bound over the run is rate x seconds + the burst (rate/10)."""
    cases = [("tenant rate 3,000/s (busy: tokens lent ahead)", "{rate: {tenant: '3000/s'}}", 3000, "echo", '{"text":"hello"}'),
             ("tool rate 50/s (slow: decided per request)", "{rate: {tools: {add: '50/s'}}}", 50, "add", '{"a":1,"b":2}')]
    print("| bucket | nodes | requests | admitted | GCRA bound | admitted / bound | Redis scripts per request |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, limits, rate, tool, targs in cases:
        d = tempfile.mkdtemp()
        cfg = os.path.join(d, "marina.yaml")
        with open(cfg, "w") as f:
            f.write(f"tenants:\n  lim:\n    upstreams: [{{kind: builtin}}]\n    limits: {limits}\n")
        redis = Redis()
        nodes = []
        try:
            nodes = [Marina(args.marina, f"redis://127.0.0.1:{redis.port}/", {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": "json"}, cfg)
                     for _ in range(3)]
            envs = [{"MCP_SESSIONS": ",".join(open_sessions(m.port, 4, path="/t/lim/mcp")), "MCP_TOOL": tool, "MCP_ARGS": targs}
                    for m in nodes]
            time.sleep(1.5)  # let the buckets refill after the sessions were opened
            evals = lambda: sum(int(redis.info("commandstats").get(c, "calls=0").split("calls=")[1].split(",")[0])
                                for c in ("cmdstat_evalsha", "cmdstat_eval"))
            e0, t0 = evals(), time.time()
            procs = [subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c8", f"-d{args.duration}s", "-s",
                                       os.path.join(HERE, "mcp_call.lua"), f"http://127.0.0.1:{m.port}/t/lim/mcp"],
                                      env=dict(os.environ, **env), stdout=subprocess.PIPE, text=True)
                     for m, env in zip(nodes, envs)]
            outs = [p.communicate()[0] for p in procs]
            elapsed, scripts = time.time() - t0, evals() - e0
            ok = bad = 0
            for out in outs:
                m = re.search(r"MCPRESULT ok=(\d+) bad=(\d+)", out)
                if not m:
                    raise RuntimeError("wrk failed: " + out)
                ok, bad = ok + int(m[1]), bad + int(m[2])
            bound = rate * elapsed + max(1, rate // 10)
            print(f"| {name} | 3 | {ok + bad:,} | {ok:,} | {bound:,.0f} | {ok / bound:.1%} | {scripts / max(1, ok + bad):.3f} |")
        finally:
            for m in nodes:
                m.stop()
            redis.stop()


def gateway_us(path):
    """Each request's time in the gateway (µs) from Marina's JSON access log (the node serves the
    one measured tenant: the few session-opening requests are noise under 0.1 %)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            fields = ev.get("fields", {})
            if "elapsed_us" in fields and fields.get("status") == 200:
                out.append(int(fields["elapsed_us"]))
    return out


def admin_call(m, method, path, doc, content_type="application/json"):
    """One admin API request to node `m`; (status, JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(m.admin.split(":")[2].split("/")[0]))
    conn.request(method, "/admin/v1" + path, json.dumps(doc) if doc is not None else None, {"Content-Type": content_type})
    r = conn.getresponse(); body = r.read(); conn.close()
    return r.status, (json.loads(body) if body else None)


def list_changed_listener(port, path, sid):
    """Open the session's GET stream; a queue receiving the arrival time of every
    notifications/tools/list_changed on it."""
    import queue, threading
    q = queue.Queue()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
               f"MCP-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n").encode())

    def read():
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:  # closed by the benchmark
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(b"data: ") and b"notifications/tools/list_changed" in line:
                    q.put(time.perf_counter())
    threading.Thread(target=read, daemon=True).start()
    return q, s


def propagation(args):
    """Control-plane propagation between two nodes sharing Redis: a policy change written through
    node A's admin API until an open session on node B receives notifications/tools/list_changed
    (`--changes` changes); and the request path's price of live configuration: tools/call on a
    tenant stored through the admin API against the same tenant from the configuration file, on
    one node, interleaved rounds."""
    d = tempfile.mkdtemp()
    cfg = os.path.join(d, "marina.yaml")
    with open(cfg, "w") as f:
        f.write("tenants:\n  filed:\n    upstreams: [{kind: builtin, tools: [echo, add]}]\n")
    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}/"
    try:
        json_mode = {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": "json"}
        a = Marina(args.marina, url, json_mode, cfg, admin=True)
        b = Marina(args.marina, url, json_mode, cfg, admin=True)
        policies = ["p, anonymous, tool:echo, call, allow", "p, anonymous, tool:*, call, allow"]
        doc = {"auth": {"anonymous": True}, "upstreams": [{"kind": "builtin", "tools": ["echo", "add"]}],
               "rbac": {"policy": policies[0]}}
        status, _ = admin_call(a, "PUT", "/tenants/live", doc)
        assert status == 201, status
        end = time.time() + 5
        while True:  # B serves it
            try:
                open_sessions(b.port, 1, path="/t/live/mcp"); break
            except RuntimeError:
                if time.time() > end:
                    raise
                time.sleep(0.01)
        sid = open_sessions(b.port, 1, path="/t/live/mcp")[0]
        q, sock = list_changed_listener(b.port, "/t/live/mcp", sid)
        time.sleep(0.2)  # the stream is open
        delays, writes = [], []
        for i in range(args.changes):
            t0 = time.perf_counter()
            status, _ = admin_call(a, "PATCH", "/tenants/live", {"rbac": {"policy": policies[(i + 1) % 2]}},
                                   "application/merge-patch+json")
            t1 = time.perf_counter()
            assert status == 200, status
            t2 = q.get(timeout=5)
            writes.append((t1 - t0) * 1000); delays.append((t2 - t0) * 1000)
            while not q.empty():
                q.get_nowait()
        sock.close()
        pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]
        print(f"Propagation over {args.changes} policy changes (write on node A → list_changed on node B's open stream): "
              f"p50 {pct(delays, 0.5):.1f} ms, p99 {pct(delays, 0.99):.1f} ms, max {max(delays):.1f} ms; "
              f"the write itself (validate, store, audit, apply on A): p50 {pct(writes, 0.5):.1f} ms, p99 {pct(writes, 0.99):.1f} ms")
        a.stop()
        # The request path: the same tenant from the file and from the store, on node B.
        status, _ = admin_call(b, "PUT", "/tenants/live", {"upstreams": [{"kind": "builtin", "tools": ["echo", "add"]}]})
        assert status == 200, status
        time.sleep(0.5)
        plans = [(t, ",".join(open_sessions(b.port, 8, path=f"/t/{t}/mcp"))) for t in ("filed", "live")]
        rates = {t: [] for t, _ in plans}
        for t, sids in plans:
            wrk(f"http://127.0.0.1:{b.port}/t/{t}/mcp", 32, 2, {"MCP_SESSIONS": sids})  # warm-up
        for _ in range(args.repeats):
            for t, sids in plans:
                rates[t].append(wrk(f"http://127.0.0.1:{b.port}/t/{t}/mcp", 32, args.duration, {"MCP_SESSIONS": sids})["rate"])
        ratios = [l / f for f, l in zip(rates["filed"], rates["live"])]
        print(f"tools/call echo (JSON mode), C=32, {args.repeats} interleaved rounds of {args.duration} s: "
              f"file tenant {statistics.median(rates['filed']):,.0f}/s (runs {rates['filed']}), "
              f"stored tenant {statistics.median(rates['live']):,.0f}/s (runs {rates['live']}); "
              f"stored/file per round median {statistics.median(ratios) * 100:.1f} %")
        b.stop()
    finally:
        redis.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--marina", default="target/release/marina")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--overhead", action="store_true", help="measure gateway overhead against rmcp-echo instead")
    ap.add_argument("--security", action="store_true", help="measure the price of auth, policy and rate limits instead")
    ap.add_argument("--breakdown", action="store_true", help="with --security: also auth alone and auth + policy")
    ap.add_argument("--limiter", action="store_true", help="measure the rate limiter's accuracy and Redis cost across three nodes instead")
    ap.add_argument("--mode", default="json", choices=["json", "sse"], help="with --security: how tools/call is answered (sse: the default, events persisted in Redis)")
    ap.add_argument("--only", help="with --security: only these tenants (comma-separated: open, secure, auth-only, auth-policy, many)")
    ap.add_argument("--propagation", action="store_true", help="measure control-plane propagation between two nodes and the request-path price of live configuration instead")
    ap.add_argument("--changes", type=int, default=100, help="with --propagation: policy changes to time")
    ap.add_argument("--stateless", action="store_true", help="measure stateless-era (MCP 2026-07-28) tools/call against rmcp-echo beside the sessionful era, and the upstream requests per translated call, instead")
    ap.add_argument("--count-calls", type=int, default=500, help="with --stateless: sequential calls through the counting proxy")
    ap.add_argument("--protocols", default="2025-11-25,auto", help="with --stateless: the upstream revisions to measure (`protocol` of the upstream; comma-separated)")
    ap.add_argument("--telemetry", action="store_true", help="measure the price of metrics and of traces sampled at 100 %% (against rmcp-echo) instead")
    ap.add_argument("--echo", default="/tmp/rmcp-echo-target/release/rmcp-echo", help="the rmcp-echo binary (bench/rmcp-echo)")
    args = ap.parse_args()
    if args.overhead:
        return overhead(args)
    if args.telemetry:
        return telemetry(args)
    if args.stateless:
        return stateless(args)
    if args.security:
        return security(args)
    if args.limiter:
        return limiter(args)
    if args.propagation:
        return propagation(args)
    rows = []
    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}/"
    try:
        # 1. initialize/s
        m = Marina(args.marina, url, {})
        r = measured(m, m.url, 8, args, {"MCP_METHOD": "initialize"})
        rows.append(("initialize (new session: record + lease + actor)", 8, r))
        m.stop()
        redis.cli("flushall")
        # 2. tools/call echo, JSON and SSE
        for mode in ("json", "sse"):
            m = Marina(args.marina, url, {"MARINA__SESSIONS__TOOLS_CALL_RESPONSE": mode})
            sids = ",".join(open_sessions(m.port, 8))
            for c in (8, 32):
                x0 = int(redis.info("commandstats").get("cmdstat_xadd", "calls=0").split("calls=")[1].split(",")[0])
                r = measured(m, m.url, c, args, {"MCP_SESSIONS": sids})
                x1 = int(redis.info("commandstats").get("cmdstat_xadd", "calls=0").split("calls=")[1].split(",")[0])
                total_s = args.duration * args.repeats + 2
                r["events_per_s"] = (x1 - x0) / total_s
                rows.append((f"tools/call echo, {mode.upper()} mode", c, r))
            if mode == "sse":
                res = resume_latency(m, 300)
            m.stop()
            redis.cli("flushall")
        # 3. memory per session
        m = Marina(args.marina, url, {"MARINA__SESSIONS__PASSIVATE_AFTER_SECS": "3"})
        time.sleep(0.5)
        rss0, mem0 = m.rss_kib(), int(redis.info("memory")["used_memory"])
        open_sessions(m.port, args.sessions)
        rss_live, mem1 = m.rss_kib(), int(redis.info("memory")["used_memory"])
        time.sleep(6)
        rss_pass = m.rss_kib()
        m.stop()
    finally:
        redis.stop()

    print("| measurement | C | calls/s (median) | runs | p50 ms | p99 ms | marina CPU | events persisted/s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, c, r in rows:
        ev = f"{r['events_per_s']:.0f}" if "events_per_s" in r else "-"
        print(f"| {name} | {c} | {r['rate']:,} | {', '.join(f'{x:,}' for x in r['runs'])} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu']:.2f} | {ev} |")
    print()
    print(f"Resume latency (GET + Last-Event-ID → first replayed event, new TCP connection, 300 samples): p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms")
    n = args.sessions
    print(f"Memory, {n} sessions: node RSS {(rss_live - rss0) * 1024 / n:.0f} B per live session "
          f"(RSS {rss0} → {rss_live} KiB); after passivation RSS {rss_pass} KiB "
          f"({(rss_pass - rss0) * 1024 / n:.0f} B per passivated session); Redis {(mem1 - mem0) / n:.0f} B per idle session")


if __name__ == "__main__":
    main()
