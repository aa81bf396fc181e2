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
