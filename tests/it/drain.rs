//! Graceful shutdown: the shutdown delay (readiness off, everything still served), the hand-off of
//! work a draining node cannot take to a live peer, and a rolling restart under load through
//! HAProxy that no client notices.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marina_tests::{MarinaProc, Mcp, RedisServer, SseEvent, free_port, read_events};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SECRET: (&str, &str) = ("MARINA__CLUSTER__SECRET", "drain-tests-secret-0123456789");

/// Poll `cond` every 20 ms until it holds; panic with `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn readyz(base: &str) -> Option<StatusCode> {
    reqwest::Client::new()
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()
        .map(|r| r.status())
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The instance holding session `sid`'s lease (`<node-id>/<nonce>`), empty when it is free.
fn lease_holder(redis: &RedisServer, sid: &str) -> String {
    let lease = redis_cli(redis, &["GET", &format!("mna:{{{sid}}}:l")]);
    lease.split('|').next().unwrap_or("").to_owned()
}

fn countdown(id: i64, steps: u64, interval_ms: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "countdown", "arguments": {"steps": steps, "interval_ms": interval_ms},
        "_meta": {"progressToken": id}}})
}

#[tokio::test]
async fn during_the_shutdown_delay_readiness_is_503_and_everything_is_still_served() {
    let mut a = MarinaProc::start("", "A", &[("MARINA__SERVER__SHUTDOWN_DELAY_MS", "60000")]);
    let before = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    assert_eq!(readyz(&a.base()).await, Some(StatusCode::OK));
    a.sigterm();
    wait_until("readiness turns 503", Duration::from_secs(10), async || {
        readyz(&a.base()).await == Some(StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    // New sessions, calls of existing ones, streamed calls: all served as before.
    let fresh = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    assert_eq!(fresh.call_text(1, "echo", json!({"text": "new"})).await, "new");
    assert_eq!(before.call_text(1, "echo", json!({"text": "old"})).await, "old");
    assert_eq!(
        before
            .call_text(2, "countdown", json!({"steps": 2, "interval_ms": 10}))
            .await,
        "done: 2 steps"
    );
    assert_eq!(readyz(&a.base()).await, Some(StatusCode::SERVICE_UNAVAILABLE));
    // A second signal skips the rest of the (one minute) delay.
    a.sigterm();
    assert_eq!(
        a.wait_exit(Duration::from_secs(20)),
        Some(0),
        "exits 0 well before the delay ends"
    );
}

/// Node `name` on `redis`: no shutdown delay (it drains at once on SIGTERM), a long drain budget.
fn draining_node(redis: &RedisServer, name: &str) -> MarinaProc {
    MarinaProc::start(
        &redis.url(),
        name,
        &[
            SECRET,
            ("MARINA__SERVER__SHUTDOWN_DELAY_MS", "0"),
            ("MARINA__SERVER__DRAIN_TIMEOUT_MS", "30000"),
        ],
    )
}

/// SIGTERM `a` while a long call runs on it (so it stays draining), once `idle` — a session it
/// holds with nothing in flight — has been drained: its lease is free.
async fn drain_with_a_call_running(
    redis: &RedisServer,
    a: &MarinaProc,
    idle: &Mcp,
) -> tokio::task::JoinHandle<()> {
    let busy = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let resp = busy.post(&countdown(1, 60, 250)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let reader = tokio::spawn(async move {
        let _ = read_events(resp, Duration::from_secs(30), |_| false).await;
    });
    a.sigterm();
    let sid = idle.session.clone().unwrap();
    wait_until(
        "the idle session's lease is released",
        Duration::from_secs(10),
        async || {
            readyz(&a.base()).await == Some(StatusCode::SERVICE_UNAVAILABLE)
                && lease_holder(redis, &sid).is_empty()
        },
    )
    .await;
    reader
}

#[tokio::test]
async fn a_draining_node_hands_new_sessions_and_free_leases_to_a_live_peer() {
    let redis = RedisServer::start();
    let a = draining_node(&redis, "A");
    let b = draining_node(&redis, "B");
    let idle = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    assert!(lease_holder(&redis, idle.session.as_deref().unwrap()).starts_with("A/"));
    let _reader = drain_with_a_call_running(&redis, &a, &idle).await;

    // An initialize sent straight to the draining node: the session is made on B.
    let fresh = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let sid = fresh.session.clone().unwrap();
    assert!(
        lease_holder(&redis, &sid).starts_with("B/"),
        "created on the live peer"
    );
    assert_eq!(
        fresh.call_text(1, "echo", json!({"text": "fresh"})).await,
        "fresh"
    );

    // A request for a session whose lease is free, sent straight to the draining node: B takes
    // the lease and serves it (a streamed call too).
    assert_eq!(
        idle.call_text(7, "echo", json!({"text": "handed on"})).await,
        "handed on"
    );
    assert!(lease_holder(&redis, idle.session.as_deref().unwrap()).starts_with("B/"));
    assert_eq!(
        idle.call_text(8, "countdown", json!({"steps": 2, "interval_ms": 10}))
            .await,
        "done: 2 steps"
    );
    // B still answers directly, of course.
    assert_eq!(
        idle.at(&b.endpoint())
            .call_text(9, "echo", json!({"text": "B"}))
            .await,
        "B"
    );
}

#[tokio::test]
async fn with_no_live_peer_a_draining_node_refuses_with_503_retry_after_and_a_json_rpc_error() {
    let redis = RedisServer::start();
    let a = draining_node(&redis, "A");
    let idle = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let _reader = drain_with_a_call_running(&redis, &a, &idle).await;

    let check = |what: &str, status: StatusCode, retry_after: Option<&str>, body: &Value| {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
        assert_eq!(retry_after, Some("1"), "{what}: Retry-After");
        assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
        assert!(body["error"]["code"].is_i64(), "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("shutting down"),
            "{what}: {body}"
        );
    };
    let init = Mcp::new(&a.endpoint())
        .post(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "marina-tests", "version": "0"}}}),
        )
        .await;
    let (status, retry) = (init.status(), init.headers().get("retry-after").cloned());
    let body: Value = init.json().await.unwrap();
    check(
        "initialize",
        status,
        retry.as_ref().and_then(|v| v.to_str().ok()),
        &body,
    );

    let call = idle
        .post(
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "echo", "arguments": {"text": "x"}}}),
        )
        .await;
    let (status, retry) = (call.status(), call.headers().get("retry-after").cloned());
    let body: Value = call.json().await.unwrap();
    check(
        "free-lease session",
        status,
        retry.as_ref().and_then(|v| v.to_str().ok()),
        &body,
    );
}

// === the rolling restart under load ============================================================

/// HAProxy in front of the nodes: health checks on `/readyz` every 200 ms, `option redispatch`
/// with retries (a request whose connection to a dead node fails goes to the other), a new
/// balancing decision for every request (`http-server-close`, no stickiness).
struct Haproxy {
    child: Child,
    port: u16,
    socket: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, servers: &[(&str, u16)]) -> Self {
        let bin = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy", "/usr/bin/haproxy"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("haproxy");
        for _ in 0..3 {
            let port = free_port();
            let socket = dir.join("haproxy.sock");
            let backends: String = servers
                .iter()
                .map(|(name, p)| format!("  server {name} 127.0.0.1:{p} check\n"))
                .collect();
            let cfg = format!(
                "global
  maxconn 4096
  stats socket {socket} mode 600 level user

defaults
  mode http
  option http-server-close
  option redispatch 1
  retries 3
  timeout connect 1s
  timeout http-request 10s
  timeout client 60s
  timeout server 60s
  # A check may take up to 1 s (as Kubernetes probes may): without it the check times out
  # after `inter` (200 ms), and a loaded test machine took a node that was serving out.
  timeout check 1s

frontend lb
  bind 127.0.0.1:{port}
  default_backend marina

backend marina
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 200ms fall 2 rise 2
{backends}",
                socket = socket.display()
            );
            let path = dir.join("haproxy.cfg");
            std::fs::write(&path, cfg).unwrap();
            let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
            let child = Command::new(bin)
                .arg("-db")
                .arg("-f")
                .arg(&path)
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("haproxy not found: run scripts/install-test-deps.sh");
            let mut h = Self { child, port, socket };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !matches!(h.child.try_wait(), Ok(Some(_))) {
                if servers.iter().all(|(name, _)| h.status(name) == "UP") {
                    return h;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            h.stop();
        }
        panic!(
            "haproxy did not start (see {})",
            dir.join("haproxy.log").display()
        );
    }

    /// The server's check status as HAProxy sees it (`UP`, `DOWN`, `UP 1/2`, ...).
    fn status(&self, server: &str) -> String {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut out = String::new();
        if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut out).is_err() {
            return String::new();
        }
        out.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > 17 && f[0] == "marina" && f[1] == server)
            .map(|f| f[17].to_owned())
            .unwrap_or_default()
    }

    fn wait_status(&self, server: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.status(server);
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy never saw {server} {want} (last: {now:?})"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/t/demo/mcp", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One `tools/call` (a short countdown, answered as an SSE stream) as an MCP client makes it: a
/// stream the server closes early is resumed with `Last-Event-ID` after its `retry` hint, until
/// the response arrives. Any refusal, transport error or wrong result is an error; else how
/// often the stream was resumed.
async fn streamed_call(c: &Mcp, id: i64) -> Result<usize, String> {
    let resp = c
        .request(Method::POST)
        .header("Content-Type", "application/json")
        .body(countdown(id, 3, 50).to_string())
        .send()
        .await
        .map_err(|e| format!("call {id}: POST failed: {}", causes(e)))?;
    let mut resp = expect_ok(resp, id, "POST").await?;
    if !resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    {
        return Err(format!("call {id}: not an SSE answer"));
    }
    let (mut last_id, mut retry) = (None::<String>, 100u64);
    for resumed in 0..30 {
        let (events, ended) = read_events(resp, Duration::from_secs(30), |ev| {
            ev.iter().filter_map(SseEvent::json).any(|m| m["id"] == id)
        })
        .await;
        if let Some(m) = events.iter().filter_map(SseEvent::json).find(|m| m["id"] == id) {
            let text = &m["result"]["content"][0]["text"];
            return if text == "done: 3 steps" && m["result"]["isError"] != true {
                Ok(resumed)
            } else {
                Err(format!("call {id}: wrong result {m}"))
            };
        }
        if !ended {
            return Err(format!("call {id}: stream stalled"));
        }
        last_id = events.iter().rev().find_map(|e| e.id.clone()).or(last_id);
        retry = events.iter().rev().find_map(|e| e.retry).unwrap_or(retry);
        let Some(last) = &last_id else {
            return Err(format!("call {id}: stream ended with no event id to resume from"));
        };
        tokio::time::sleep(Duration::from_millis(retry)).await;
        // As the SDK clients do, a resumption that fails in transport is tried again (bounded):
        // a kept-alive connection the balancer closes just as the request goes out is a race of
        // HTTP keep-alive, not a refusal. Any answer other than 200 is still an error.
        let mut attempt = 0;
        let r = loop {
            match c.request(Method::GET).header("Last-Event-ID", last).send().await {
                Ok(r) => break r,
                Err(e) if attempt < 2 => {
                    attempt += 1;
                    eprintln!(
                        "call {id}: resuming GET failed in transport ({}); again",
                        causes(e)
                    );
                    tokio::time::sleep(Duration::from_millis(retry)).await;
                }
                Err(e) => return Err(format!("call {id}: resuming GET failed: {}", causes(e))),
            }
        };
        resp = expect_ok(r, id, "GET").await?;
    }
    Err(format!("call {id}: no result after 30 resumptions"))
}

/// An error with its causes (reqwest's own message names only the request).
fn causes(e: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

async fn expect_ok(resp: reqwest::Response, id: i64, what: &str) -> Result<reqwest::Response, String> {
    if resp.status() == StatusCode::OK {
        return Ok(resp);
    }
    let status = resp.status();
    Err(format!(
        "call {id}: {what} {status}: {}",
        resp.text().await.unwrap_or_default()
    ))
}

#[derive(Default)]
struct Tally {
    sessions: AtomicUsize,
    calls: AtomicUsize,
    resumed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

const SESSIONS: usize = 100;

fn node_env() -> Vec<(&'static str, &'static str)> {
    vec![
        SECRET,
        // Longer than HAProxy needs to see two failed checks (2 × 200 ms), with room for a
        // loaded machine.
        ("MARINA__SERVER__SHUTDOWN_DELAY_MS", "3000"),
        // Every lease is released by a drain, so a long TTL costs nothing here; a short one
        // would let a machine stalled for a few seconds lapse a node's liveness (a failover,
        // not what this test is about).
        ("MARINA__SESSIONS__LEASE_TTL_MS", "15000"),
        ("MARINA__SERVER__DRAIN_TIMEOUT_MS", "20000"),
        ("MARINA__SESSIONS__RETRY_MS", "100"),
        ("MARINA__SERVER__LOG_FILTER", "info,marina::access=off"),
    ]
}

/// SIGTERM `node` (served by HAProxy as `name`), check HAProxy takes it out while it still
/// serves, let it exit 0, start it again on its port and wait until HAProxy has it back.
fn restart(
    node: MarinaProc,
    name: &str,
    lb: &Haproxy,
    redis_url: &str,
    dir: &Path,
    round: usize,
) -> MarinaProc {
    let mut node = node;
    let port = node.port;
    node.sigterm();
    lb.wait_status(name, "DOWN", Duration::from_secs(10));
    assert!(
        !node.exited(),
        "{name} still runs (serving) when HAProxy takes it out"
    );
    assert_eq!(node.wait_exit(Duration::from_secs(40)), Some(0), "{name} exits 0");
    let log = dir.join(format!("marina-{name}-{round}.log"));
    let node = MarinaProc::start_logged_at(redis_url, name, &node_env(), &log, port);
    lb.wait_status(name, "UP", Duration::from_secs(20));
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_through_haproxy_loses_no_call() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let url = redis.url();
    let a = MarinaProc::start_logged(&url, "A", &node_env(), &d.join("marina-A-0.log"));
    let b = MarinaProc::start_logged(&url, "B", &node_env(), &d.join("marina-B-0.log"));
    let lb = Arc::new(Haproxy::start(&d, &[("A", a.port), ("B", b.port)]));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let (tally, stop, endpoint) = (tally.clone(), stop.clone(), lb.url());
            tokio::spawn(async move {
                let c = Mcp::connect(&endpoint, "2025-11-25", json!({})).await;
                tally.sessions.fetch_add(1, Ordering::SeqCst);
                let mut id = 1;
                while !stop.load(Ordering::SeqCst) {
                    match streamed_call(&c, id).await {
                        Ok(resumed) => {
                            tally.resumed.fetch_add(resumed, Ordering::SeqCst);
                            tally.calls.fetch_add(1, Ordering::SeqCst)
                        }
                        Err(e) => {
                            tally.errors.lock().unwrap().push(e);
                            0
                        }
                    };
                    id += 1;
                }
            })
        })
        .collect();
    let calls_reach = async |n: usize| {
        wait_until(
            &format!("{n} calls are done"),
            Duration::from_secs(60),
            async || tally.calls.load(Ordering::SeqCst) >= n || !tally.errors.lock().unwrap().is_empty(),
        )
        .await;
    };
    calls_reach(2 * SESSIONS).await;
    assert_eq!(tally.sessions.load(Ordering::SeqCst), SESSIONS);

    let (lb2, url2, d2) = (lb.clone(), url.clone(), d.clone());
    let (a, b) = tokio::task::spawn_blocking(move || {
        let a = restart(a, "A", &lb2, &url2, &d2, 1);
        let b = restart(b, "B", &lb2, &url2, &d2, 1);
        (a, b)
    })
    .await
    .unwrap();
    let after = tally.calls.load(Ordering::SeqCst);
    calls_reach(after + SESSIONS).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        if let Err(e) = c.await {
            tally
                .errors
                .lock()
                .unwrap()
                .push(format!("client task failed: {e}"));
        }
    }
    let errors = tally.errors.lock().unwrap().clone();
    let calls = tally.calls.load(Ordering::SeqCst);
    if !errors.is_empty() {
        let _ = dir.keep();
        panic!(
            "{} of {} calls failed (logs kept in {}): {:#?}",
            errors.len(),
            calls + errors.len(),
            d.display(),
            &errors[..errors.len().min(20)]
        );
    }
    let resumed = tally.resumed.load(Ordering::SeqCst);
    eprintln!(
        "rolling restart: {calls} calls through {SESSIONS} sessions ({resumed} stream resumptions), no error"
    );
    drop((a, b));
}
