//! Structured logs: JSON lines carrying the request id, tenant and session tag — never a token
//! or a full session id.

use std::time::Duration;

use marina_tests::{MarinaProc, Mcp};
use serde_json::{Value, json};

#[tokio::test]
async fn json_logs_carry_request_context_and_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("marina.log");
    let env = [
        ("MARINA__SERVER__LOG_FORMAT", "json"),
        ("MARINA__SERVER__LOG_FILTER", "info"),
    ];
    let mut node = MarinaProc::start_logged("", "logs", &env, &log);
    let s = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    let secret = "SECRET-TOKEN-4242";
    let r = s
        .request(reqwest::Method::POST)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {secret}"))
        .header("X-Request-Id", "req-from-client-1")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "req-from-client-1",
        "the request id is echoed back"
    );
    let _ = r.text().await;
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    let sid = s.session.clone().unwrap();
    assert!(!text.contains(secret), "a token reached the log");
    assert!(!text.contains(&sid), "a full session id reached the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let done: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .collect();
    assert!(done.len() >= 3, "{text}");
    for l in &done {
        assert!(l["span"]["request_id"].is_string(), "{l}");
        // Probes (the readiness wait of the test harness) belong to no tenant.
        if l["span"]["path"].as_str().is_some_and(|p| p.starts_with("/t/")) {
            assert_eq!(l["span"]["tenant"], "demo");
        }
    }
    let call = done
        .iter()
        .find(|l| l["span"]["request_id"] == "req-from-client-1")
        .expect("the client's request id");
    assert_eq!(
        call["span"]["session"],
        &sid[..8],
        "the session appears as its 8-character tag"
    );
}

/// Every authentication failure and every denial is one audit event with a stable name and
/// reason, the tenant, the subject where known and the request id — never the credential.
#[tokio::test]
async fn audit_events_name_failures_and_denials_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("marina.log");
    let key = marina_auth::generate_key();
    let unknown = marina_auth::generate_key();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            "tenants:\n  acme:\n    auth:\n      api_keys: [{{subject: vera, sha256: {}, roles: [viewer]}}]\n    rbac:\n      policy: |\n        p, viewer, tool:echo, call, allow\n",
            marina_auth::digest(&key)
        ),
    )
    .unwrap();
    let env = [
        ("MARINA__SERVER__LOG_FORMAT", "json"),
        ("MARINA__SERVER__LOG_FILTER", "warn,marina::audit=info"),
    ];
    let mut node = MarinaProc::start_logged_with_config("", "audit", &env, &log, &config);
    let url = format!("{}/t/acme/mcp", node.base());
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    let r = Mcp::new(&url)
        .with_header("X-Request-Id", "req-missing")
        .post(&init)
        .await;
    assert_eq!(r.status(), 401);
    let r = Mcp::new(&url)
        .bearer(&unknown)
        .with_header("X-Request-Id", "req-unknown")
        .post(&init)
        .await;
    assert_eq!(r.status(), 401);
    let s = Mcp::new(&url).bearer(&key).open("2025-11-25", json!({})).await;
    let denied = s
        .clone()
        .with_header("X-Request-Id", "req-denied")
        .rpc(
            2,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(denied["error"]["code"], -32602);
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(15)), Some(0));

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(&key) && !text.contains(&unknown),
        "a key reached the log"
    );
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "marina::audit")
        .collect();
    let find = |request_id: &str| {
        events
            .iter()
            .find(|e| e["fields"]["request_id"] == request_id || e["span"]["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no audit event for {request_id}: {events:#?}"))
            .clone()
    };
    let e = find("req-missing");
    assert_eq!(e["fields"]["event"], "auth_failed");
    assert_eq!(e["fields"]["reason"], "missing");
    assert_eq!(e["fields"]["tenant"], "acme");
    let e = find("req-unknown");
    assert_eq!(e["fields"]["event"], "auth_failed");
    assert_eq!(e["fields"]["reason"], "unknown_key");
    let e = find("req-denied");
    assert_eq!(e["fields"]["event"], "access_denied");
    assert_eq!(e["fields"]["subject"], "vera");
    assert_eq!(e["fields"]["object"], "tool:add");
    assert_eq!(e["fields"]["tenant"], "acme");
}
