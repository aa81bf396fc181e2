//! Authentication with API keys, and sessions bound to the principal that opened them: every
//! failure is a 401 with a `WWW-Authenticate` challenge; another principal's requests with a
//! session's id — on every verb, on resumption, in a batch, through another node — are answered
//! exactly like an unknown session.

use std::path::Path;
use std::time::{Duration, SystemTime};

use marina_auth::{digest, generate_key};
use marina_tests::{MarinaProc, Mcp, RedisServer, TestApp, read_events, spawn_app_with};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// Keys of the test tenants.
struct Keys {
    alice: String,
    bob: String,
    expired: String,
    other_tenant: String,
}

impl Keys {
    fn new() -> Self {
        Self {
            alice: generate_key(),
            bob: generate_key(),
            expired: generate_key(),
            other_tenant: generate_key(),
        }
    }

    /// `acme` (alice, bob, an expired key, and `extra` lines), `beta` (its own key), and
    /// `open-house` (anonymous access).
    fn config(&self, extra: &str) -> String {
        format!(
            r#"tenants:
  acme:
    auth:
      api_keys:
        - {{subject: alice, sha256: {}, roles: [viewer]}}
        - {{subject: bob, sha256: {}}}
        - {{subject: retired, sha256: {}, expires: "2020-01-01T00:00:00Z"}}
{extra}
  beta:
    auth:
      api_keys:
        - {{subject: alice, sha256: {}}}
  open-house:
    auth: {{anonymous: true}}
"#,
            digest(&self.alice),
            digest(&self.bob),
            digest(&self.expired),
            digest(&self.other_tenant),
        )
    }
}

async fn app_with(config: &str) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(&file, config).unwrap();
    (spawn_app_with(Some(&file), &[]).await, dir)
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
}

/// Assert a 401 whose challenge is `Bearer` plus `error` (if any), with a JSON-RPC error body.
async fn assert_401(r: Response, error: Option<&str>) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    match error {
        Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{challenge}"),
        None => assert!(
            !challenge.contains("error="),
            "no error without a credential: {challenge}"
        ),
    }
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["error"]["code"], -32004, "{body}");
}

#[actix_rt::test]
async fn api_keys_authenticate_and_every_failure_is_a_401_with_a_challenge() {
    let keys = Keys::new();
    let (app, _dir) = app_with(&keys.config("")).await;
    let acme = app.endpoint("acme");
    let c = Mcp::new(&acme);

    assert_401(c.post(&initialize()).await, None).await;
    assert_401(
        c.bearer(&generate_key()).post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
    assert_401(
        c.bearer(&keys.expired).post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
    assert_401(
        c.bearer("eyJhbGciOi.not.a-key").post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
    assert_401(
        c.bearer(&keys.other_tenant).post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
    let basic = c
        .clone()
        .with_header("Authorization", &format!("Basic {}", keys.alice));
    assert_401(basic.post(&initialize()).await, Some("invalid_request")).await;
    // A credential in the URL is refused, even a valid one, even next to a valid header.
    let query = Mcp::new(&format!("{acme}?access_token={}", keys.alice));
    assert_401(query.post(&initialize()).await, Some("invalid_request")).await;
    assert_401(
        query.bearer(&keys.alice).post(&initialize()).await,
        Some("invalid_request"),
    )
    .await;

    let by_bearer = c.bearer(&keys.alice).open("2025-11-25", json!({})).await;
    assert_eq!(by_bearer.call_text(2, "echo", json!({"text": "hi"})).await, "hi");
    let by_header = c
        .clone()
        .with_header("X-API-Key", &keys.alice)
        .open("2025-11-25", json!({}))
        .await;
    assert_eq!(by_header.call_text(2, "add", json!({"a": 1, "b": 2})).await, "3");
    // The same principal, whichever header carries the key.
    assert_eq!(
        by_bearer
            .anonymous()
            .with_header("X-API-Key", &keys.alice)
            .call_text(3, "echo", json!({"text": "same"}))
            .await,
        "same"
    );
    // Sessions are no credential: every request of a session must authenticate.
    let (status, _) = by_bearer
        .anonymous()
        .exchange(&json!({"jsonrpc":"2.0","id":4,"method":"ping"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_401(by_bearer.anonymous().get(None).await, None).await;
    assert_401(by_bearer.anonymous().delete().await, None).await;

    // A key of tenant beta is not a key of acme, and the other way round.
    let beta = Mcp::new(&app.endpoint("beta"));
    assert_401(
        beta.bearer(&keys.alice).post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
    let on_beta = beta
        .bearer(&keys.other_tenant)
        .open("2025-11-25", json!({}))
        .await;
    assert_eq!(
        on_beta.call_text(2, "echo", json!({"text": "beta"})).await,
        "beta"
    );

    // Anonymous access, where the tenant allows it; a wrong credential is still refused there.
    let open = Mcp::new(&app.endpoint("open-house"));
    let anon = open.clone().open("2025-11-25", json!({})).await;
    assert_eq!(anon.call_text(2, "echo", json!({"text": "anon"})).await, "anon");
    assert_401(
        open.bearer(&generate_key()).post(&initialize()).await,
        Some("invalid_token"),
    )
    .await;
}

/// Every way `intruder` could touch `victim`'s session is answered 404, revealing nothing.
async fn assert_locked_out(victim: &Mcp, intruder: &Mcp, stream_id: &str) {
    let sid = victim.session.clone().unwrap();
    let not_found = |what: &'static str| {
        let sid = sid.clone();
        move |r: Response| async move {
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{what}");
            let text = r.text().await.unwrap();
            assert!(!text.contains(&sid), "{what}: {text}");
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["error"]["message"], "session not found", "{what}");
        }
    };
    not_found("tools/call")(
        intruder
            .post(&json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}))
            .await,
    )
    .await;
    not_found("ping")(
        intruder
            .post(&json!({"jsonrpc":"2.0","id":9,"method":"ping"}))
            .await,
    )
    .await;
    not_found("a response to a server request")(
        intruder
            .post(&json!({"jsonrpc":"2.0","id":"marina-1-1","result":{"action":"accept","content":{}}}))
            .await,
    )
    .await;
    not_found("a notification")(
        intruder
            .post(&json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await,
    )
    .await;
    not_found("GET")(intruder.get(None).await).await;
    not_found("resumption")(intruder.get(Some(stream_id)).await).await;
    not_found("DELETE")(intruder.delete().await).await;
    // A wrong version header must not tell an intruder anything either (it would be 400 for the
    // owner).
    let mut other_version = intruder.clone();
    other_version.version = Some("2025-06-18".into());
    not_found("version mismatch")(
        other_version
            .post(&json!({"jsonrpc":"2.0","id":9,"method":"ping"}))
            .await,
    )
    .await;
}

#[actix_rt::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let keys = Keys::new();
    let (app, _dir) = app_with(&keys.config("")).await;
    let c = Mcp::new(&app.endpoint("acme"));
    let alice = c.bearer(&keys.alice).open("2025-11-25", json!({})).await;
    let (status, msgs) = alice
        .exchange(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"secret of alice"}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(msgs.iter().any(|m| m["id"] == 2));

    assert_locked_out(&alice, &alice.bearer(&keys.bob), "1_0-0").await;
    // Alice's session is untouched by all that (bob's DELETE deleted nothing).
    assert_eq!(
        alice.call_text(3, "echo", json!({"text": "still mine"})).await,
        "still mine"
    );
    let (events, _) = read_events(alice.get(Some("1_0-0")).await, Duration::from_secs(5), |_| false).await;
    assert!(events.iter().any(|e| e.data.contains("secret of alice")));

    // Batches (2025-03-26 sessions): an intruder's batch is a 404 too, not a "batches are not
    // supported" that would tell the session's version.
    let old = c.bearer(&keys.alice).open("2025-03-26", json!({})).await;
    let mut intruder = old.bearer(&keys.bob);
    intruder.version = None;
    let r = intruder
        .post(&json!([{"jsonrpc":"2.0","id":1,"method":"ping"}]))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = old.post(&json!([{"jsonrpc":"2.0","id":1,"method":"ping"}])).await;
    assert_eq!(r.status(), StatusCode::OK, "the owner's batch is served");

    // An anonymous session is no way into a keyed one, nor the other way round: credentials
    // are checked against the tenant first (alice's key is no key of open-house).
    let anon = Mcp::new(&app.endpoint("open-house"))
        .open("2025-11-25", json!({}))
        .await;
    let r = anon
        .clone()
        .with_header("X-API-Key", &keys.alice)
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"ping"}))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "alice's key is not open-house's"
    );
}

#[actix_rt::test]
async fn streams_end_and_requests_are_refused_when_the_key_expires() {
    let keys = Keys::new();
    let soon = generate_key();
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(4)).to_string();
    let extra = format!(
        "        - {{subject: temp, sha256: {}, expires: \"{expires}\"}}",
        digest(&soon)
    );
    let (app, _dir) = app_with(&keys.config(&extra)).await;
    let temp = Mcp::new(&app.endpoint("acme"))
        .bearer(&soon)
        .open("2025-11-25", json!({}))
        .await;
    let (events, ended) = read_events(temp.get(None).await, Duration::from_secs(20), |_| false).await;
    assert!(ended, "the GET stream ends when its credential expires");
    assert!(
        events.last().and_then(|e| e.retry).is_some(),
        "with a retry hint: {events:?}"
    );
    assert!(SystemTime::now() + Duration::from_millis(100) >= humantime::parse_rfc3339(&expires).unwrap());
    let r = temp.post(&json!({"jsonrpc":"2.0","id":2,"method":"ping"})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let file = dir.join("marina.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[tokio::test]
async fn requests_forwarded_between_nodes_are_authenticated_by_the_holder() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &keys.config(""));
    let redis = RedisServer::start();
    let secret = [("MARINA__CLUSTER__SECRET", "auth-tests-cluster-secret-0123")];
    let a = MarinaProc::start_with_config(&redis.url(), "A", &secret, &config);
    let b = MarinaProc::start_with_config(&redis.url(), "B", &secret, &config);
    let on_a = Mcp::new(&format!("{}/t/acme/mcp", a.base()))
        .bearer(&keys.alice)
        .open("2025-11-25", json!({}))
        .await;
    assert_eq!(on_a.call_text(2, "echo", json!({"text": "on A"})).await, "on A");
    // Through B (which forwards to the holder, A): alice is served, bob is not.
    let b_url = format!("{}/t/acme/mcp", b.base());
    assert_eq!(
        on_a.at(&b_url)
            .call_text(3, "echo", json!({"text": "via B"}))
            .await,
        "via B"
    );
    assert_locked_out(&on_a.at(&b_url), &on_a.at(&b_url).bearer(&keys.bob), "1_0-0").await;
    assert_401(on_a.at(&b_url).anonymous().get(None).await, None).await;
    assert_eq!(on_a.call_text(4, "echo", json!({"text": "still"})).await, "still");
}

#[test]
fn a_tenant_without_auth_is_refused_on_a_public_bind() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "tenants:\n  careless:\n    upstreams: [{kind: builtin}]\n",
    );
    // Refused before anything is bound, so the wildcard address is never listened on.
    let out = std::process::Command::new(marina_tests::marina_bin())
        .args(["serve", "--bind", "0.0.0.0:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tenant careless has no `auth` section"),
        "{stderr}"
    );
}

/// An upstream MCP server that answers `whoami` with the `Authorization` header it received.
async fn recorder(req: actix_web::HttpRequest, body: actix_web::web::Json<Value>) -> actix_web::HttpResponse {
    let seen = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let ok = |result: Value| {
        actix_web::HttpResponse::Ok()
            .insert_header(("mcp-session-id", "recorder"))
            .json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    };
    match body["method"].as_str().unwrap_or_default() {
        "initialize" => ok(
            json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "recorder", "version": "0"}}),
        ),
        "tools/list" => ok(json!({"tools": [{"name": "whoami", "inputSchema": {"type": "object"}}]})),
        "tools/call" => ok(json!({"content": [{"type": "text", "text": seen}]})),
        _ => actix_web::HttpResponse::Accepted().finish(),
    }
}

/// No token passthrough: an upstream gets the tenant's credential for it, never the client's.
#[actix_rt::test]
async fn upstreams_never_see_the_clients_credential() {
    let server = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::post().to(recorder))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    let keys = Keys::new();
    let extra = "";
    let config = keys.config(extra).replace(
        "  beta:",
        &format!(
            "    upstreams:\n      - {{kind: mcp, name: up, url: \"http://127.0.0.1:{port}/mcp\", headers: {{Authorization: \"Bearer tenant-credential-for-up\"}}}}\n  beta:"
        ),
    );
    let (app, _dir) = app_with(&format!("egress: {{allow_loopback: true}}\n{config}")).await;
    let c = Mcp::new(&app.endpoint("acme"))
        .bearer(&keys.alice)
        .open("2025-11-25", json!({}))
        .await;
    let seen = c.call_text(2, "up.whoami", json!({})).await;
    assert_eq!(seen, "Bearer tenant-credential-for-up");
    assert!(!seen.contains(&keys.alice));
}
