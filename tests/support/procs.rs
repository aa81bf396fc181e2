//! Processes and in-process apps for tests.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use marina_gateway::Application;
use tokio::sync::oneshot;

/// A free loopback port (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Does the Marina node on loopback `port` answer `GET /readyz` with 200 — bound, announced in
/// the cluster, store reachable? (An open port only says the socket is bound.)
fn is_ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut status = [0u8; 12];
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut status).is_ok()
        && &status == b"HTTP/1.1 200"
}

/// The process id of the Redis server answering on loopback `port` (`INFO server`), if one does.
fn redis_pid(port: u16) -> Option<u32> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // The reply is a few hundred bytes; read until the field shows up (bounded by the timeout).
    for _ in 0..16 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split("process_id:").nth(1)
            && let Some(line) = rest.split("\r\n").next()
            && rest.contains("\r\n")
        {
            return line.trim().parse().ok();
        }
    }
    None
}

fn wait_for_ready(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if is_ready(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The first line of `child`'s stdout that `pick` accepts, within `timeout` (later lines are
/// drained in the background so the child never blocks on a full pipe).
fn first_line<T: Send + 'static>(
    child: &mut Child,
    timeout: Duration,
    mut pick: impl FnMut(&str) -> Option<T> + Send + 'static,
) -> Option<T> {
    use std::io::BufRead as _;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(v) = pick(&line) {
                let _ = tx.send(v);
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

/// A throwaway `redis-server` (no persistence) on a free port.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one; panics with a hint if `redis-server` is not installed.
    pub fn start() -> Self {
        // Redis cannot report a port it picked itself, so a free port is chosen here and may be
        // taken by another test's process before Redis binds it: then Redis exits, and another
        // port is tried (bounded). Whose port answers is checked by process id, never assumed.
        for _ in 0..5 {
            if let Some(r) = Self::try_start_on(free_port()) {
                return r;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Start one on a given port (used to bring Redis back after an outage).
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on(port).unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    fn try_start_on(port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/install-test-deps.sh");
        let mut server = Self {
            child: Some(child),
            port,
            _dir: dir,
        };
        let pid = server.child.as_ref().map(Child::id);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if redis_pid(port) == pid {
                return Some(server);
            }
            if let Some(c) = server.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                break; // it lost the port
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server.stop();
        None
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kill it now (simulated outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Marina running inside the test process.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// Its admin API: `http://127.0.0.1:<admin port>/admin/v1` (empty when it serves none).
    pub admin: String,
    /// The node (to observe its actors).
    pub node: std::sync::Arc<marina_actors::Node>,
    shutdown: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl TestApp {
    /// The MCP endpoint of `tenant`.
    pub fn endpoint(&self, tenant: &str) -> String {
        format!("{}/t/{tenant}/mcp", self.base)
    }

    /// Trigger the SIGTERM path (shutdown delay, then drain) without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Trigger the SIGTERM path (drain) and wait for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rx) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Build and start Marina in-process on a free port. `overrides` are `section.key` settings
/// (e.g. `("sessions.retry_ms", "50")`); must run inside an actix System (`#[actix_rt::test]`).
pub async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_with(None, overrides).await
}

/// Like [`spawn_app`], with a configuration file under the overrides.
pub async fn spawn_app_with(file: Option<&std::path::Path>, overrides: &[(&str, &str)]) -> TestApp {
    let mut all: Vec<(&str, String)> = vec![
        ("server.bind", "127.0.0.1:0".into()),
        ("admin.bind", "127.0.0.1:0".into()),
        ("server.drain_timeout_ms", "5000".into()),
        // No balancer to wait for (tests that want the delay set it).
        ("server.shutdown_delay_ms", "0".into()),
    ];
    all.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let settings = marina_core::settings::load(file, Some(HashMap::new()), &all).expect("test settings");
    let app = Application::build(settings).await.expect("build app");
    let base = app.base_url();
    let admin = app
        .admin_addr()
        .map(|a| format!("http://{a}/admin/v1"))
        .unwrap_or_default();
    let node = app.node();
    let (tx, rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    actix_rt::spawn(async move {
        let _ = app
            .run_until_stopped(async move {
                let _ = rx.await;
            })
            .await;
        let _ = done_tx.send(());
    });
    // Ready, not just bound: announced in the cluster with its store reachable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_ready_async(&base).await {
        assert!(Instant::now() < deadline, "marina did not become ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    TestApp {
        base,
        admin,
        node,
        shutdown: Some(tx),
        done: Some(done_rx),
    }
}

async fn is_ready_async(base: &str) -> bool {
    // The probe only asks whether the node is up; a test's own TLS checks verify certificates.
    let client = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
}

/// Where the `marina` binary is: `$MARINA_BIN`, else `<target dir>/debug/marina`.
pub fn marina_bin() -> PathBuf {
    if let Ok(p) = std::env::var("MARINA_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/marina");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin marina` first",
        bin.display()
    );
    bin
}

/// A `marina serve` process.
#[derive(Debug)]
pub struct MarinaProc {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Its admin API's port.
    pub admin_port: u16,
}

impl MarinaProc {
    /// Start a node on a free port with the given store and extra `MARINA__*` environment.
    pub fn start(redis_url: &str, node_id: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(redis_url, node_id, env, Stdio::inherit())
    }

    /// Like [`Self::start`], with a configuration file.
    pub fn start_with_config(
        redis_url: &str,
        node_id: &str,
        env: &[(&str, &str)],
        config: &std::path::Path,
    ) -> Self {
        Self::spawn_with(redis_url, node_id, env, Stdio::inherit(), Some(config))
    }

    /// Like [`Self::start`], with the node's log (stderr) written to `log`.
    pub fn start_logged(redis_url: &str, node_id: &str, env: &[(&str, &str)], log: &std::path::Path) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(redis_url, node_id, env, Stdio::from(file))
    }

    /// Like [`Self::start_logged`], with a configuration file.
    pub fn start_logged_with_config(
        redis_url: &str,
        node_id: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
        config: &std::path::Path,
    ) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn_with(redis_url, node_id, env, Stdio::from(file), Some(config))
    }

    /// Like [`Self::start_logged`], bound to `port` — a node restarted where its balancer
    /// expects it.
    pub fn start_logged_at(
        redis_url: &str,
        node_id: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
        port: u16,
    ) -> Self {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn_at(redis_url, node_id, env, Stdio::from(file), None, port)
    }

    fn spawn(redis_url: &str, node_id: &str, env: &[(&str, &str)], stderr: Stdio) -> Self {
        Self::spawn_with(redis_url, node_id, env, stderr, None)
    }

    fn spawn_with(
        redis_url: &str,
        node_id: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
        config: Option<&std::path::Path>,
    ) -> Self {
        Self::spawn_at(redis_url, node_id, env, stderr, config, 0)
    }

    fn spawn_at(
        redis_url: &str,
        node_id: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
        config: Option<&std::path::Path>,
        port: u16,
    ) -> Self {
        let bind = format!("127.0.0.1:{port}");
        // Port 0 for both listeners, read back from the node's stdout: a port picked by the test
        // and bound later by the node could be taken in between by any other test's process.
        let mut cmd = Command::new(marina_bin());
        cmd.args([
            "serve",
            "--bind",
            &bind,
            "--admin-bind",
            "127.0.0.1:0",
            "--node-id",
            node_id,
        ]);
        if !redis_url.is_empty() {
            cmd.args(["--redis-url", redis_url]);
        }
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.env("MARINA__SERVER__LOG_FILTER", "warn");
        // No balancer to wait for on SIGTERM (tests that want the delay set it in `env`).
        cmd.env("MARINA__SERVER__SHUTDOWN_DELAY_MS", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn marina");
        let mut admin_port = None;
        let ports = first_line(&mut child, Duration::from_secs(20), move |line| {
            let port_of = |url: &str| {
                url.rsplit(':')
                    .next()?
                    .split(['/', ' '])
                    .next()?
                    .parse::<u16>()
                    .ok()
            };
            if let Some(url) = line.strip_prefix("admin API listening on http://") {
                admin_port = port_of(url);
                return None;
            }
            let rest = line.strip_prefix("marina listening on ")?;
            let port = port_of(rest.split(' ').next()?)?;
            Some((port, admin_port.unwrap_or(0)))
        });
        let Some((port, admin_port)) = ports else {
            let mut child = child;
            let _ = child.kill();
            let status = child.wait().ok();
            panic!("marina did not start listening ({status:?})");
        };
        assert!(
            wait_for_ready(port, Duration::from_secs(20)),
            "marina did not become ready"
        );
        Self {
            child: Some(child),
            port,
            admin_port,
        }
    }

    /// The MCP endpoint of tenant `demo`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/t/demo/mcp", self.port)
    }

    /// Base URL.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Base URL of its admin API (`…/admin/v1`).
    pub fn admin(&self) -> String {
        format!("http://127.0.0.1:{}/admin/v1", self.admin_port)
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Send SIGTERM (without waiting).
    pub fn sigterm(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
    }

    /// Wait for the process to exit (bounded); its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for MarinaProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The upstream MCP server of `tests/peers/upstream` (TypeScript SDK, conformance naming contract),
/// on a free loopback port. Needs `scripts/install-test-deps.sh` (its node_modules).
#[derive(Debug)]
pub struct UpstreamPeer {
    child: Option<Child>,
    /// Its MCP endpoint.
    pub url: String,
}

impl UpstreamPeer {
    /// Start it and wait (bounded) for its "listening" line.
    pub fn start() -> Self {
        Self::start_env(&[])
    }

    /// Like [`Self::start`], with extra environment (`WATCH_INTERVAL_MS`, ...: see its README).
    pub fn start_env(env: &[(&str, &str)]) -> Self {
        Self::start_peer("upstream", env)
    }

    /// The upstream of `tests/peers/upstream-v2` instead: the TypeScript SDK v2, speaking
    /// 2026-07-28 (stateless, `input_required`) and 2025-11-25 on one URL.
    pub fn start_v2() -> Self {
        Self::start_peer("upstream-v2", &[])
    }

    /// `tests/peers/<dir>/server.mjs` on a free port, waited for (bounded) by its "listening" line.
    fn start_peer(dir: &str, env: &[(&str, &str)]) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers").join(dir);
        assert!(
            path.join("node_modules").exists(),
            "tests/peers/{dir}/node_modules is missing: run scripts/install-test-deps.sh"
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&path)
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node not found");
        let url = first_line(&mut child, Duration::from_secs(20), |l| {
            l.strip_prefix("upstream listening on ")
                .map(|u| u.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("the {dir} peer did not start"));
        Self {
            child: Some(child),
            url,
        }
    }

    /// `@modelcontextprotocol/server-everything` (npm, installed next to the peer) instead: a
    /// second, independent upstream implementation.
    pub fn start_everything() -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/upstream");
        let entry = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        assert!(
            entry.exists(),
            "server-everything is missing: run scripts/install-test-deps.sh"
        );
        let port = free_port();
        let child = Command::new("node")
            .arg(entry)
            .arg("streamableHttp")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node not found");
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "server-everything did not start"
        );
        Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// Kill it now (a dead upstream).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for UpstreamPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real OAuth authorization server: `tests/peers/oidc/issuer.mjs` (oidc-provider) on a free
/// loopback port, issuing RS256 JWT access tokens for `resources`. Its signing key is written to a
/// temporary directory so tests can forge tokens with it. Needs `scripts/install-test-deps.sh`.
#[derive(Debug)]
pub struct OidcIssuer {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>` — the issuer identifier.
    pub url: String,
    keys: tempfile::TempDir,
}

impl OidcIssuer {
    /// Start one whose tokens may name any of `resources` as audience.
    pub fn start(resources: &[&str]) -> Self {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/oidc");
        assert!(
            dir.join("node_modules").exists(),
            "tests/peers/oidc/node_modules is missing: run scripts/install-test-deps.sh"
        );
        let keys = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut child = Command::new("node")
            .arg("issuer.mjs")
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("RESOURCES", resources.join(","))
            .env("KEYS_DIR", keys.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node not found");
        first_line(&mut child, Duration::from_secs(30), |l| {
            l.ends_with(" ready").then_some(())
        })
        .expect("the OAuth issuer did not start");
        Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            keys,
        }
    }

    /// A client-credentials access token of `client` (`gw-test`: roles [operator]; `gw-other`:
    /// roles [viewer]) for `resource` with `scope`.
    pub async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.url))
            .basic_auth(client, Some("gw-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("resource", resource)
                    .append_pair("scope", scope)
                    .finish(),
            )
            .send()
            .await
            .expect("token request");
        assert!(r.status().is_success(), "token request: {}", r.status());
        let body: serde_json::Value = r.json().await.expect("token JSON");
        body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// The issuer's signing key (PKCS#8 PEM) and its `kid`, to forge tokens in tests.
    pub fn signing_key(&self) -> (Vec<u8>, String) {
        (
            std::fs::read(self.keys.path().join("private.pem")).expect("private.pem"),
            std::fs::read_to_string(self.keys.path().join("kid")).expect("kid"),
        )
    }
}

impl Drop for OidcIssuer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
