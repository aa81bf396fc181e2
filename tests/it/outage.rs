//! A Redis outage: 503 with a JSON-RPC error while it is down, automatic recovery, no crash.

use std::time::Duration;

use marina_tests::{Mcp, RedisServer, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[actix_rt::test]
async fn redis_down_gives_503_and_the_node_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let app = spawn_app(&[
        ("store.redis_url", &url),
        ("store.timeout_ms", "500"),
        ("sessions.lease_ttl_ms", "1000"),
    ])
    .await;
    let endpoint = app.endpoint("demo");
    let s = Mcp::connect(&endpoint, "2025-11-25", json!({})).await;
    assert_eq!(s.call_text(1, "echo", json!({"text": "up"})).await, "up");
    assert_eq!(app.node.live_sessions(), 1);

    redis.stop();
    let r = s.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"down"}}})).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_i64());
    let fresh = Mcp::new(&endpoint)
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}))
        .await;
    assert_eq!(fresh.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reqwest::get(format!("{}/readyz", app.base))
            .await
            .unwrap()
            .status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        reqwest::get(format!("{}/healthz", app.base))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // The node could not renew its liveness for a whole lease TTL: another node may have taken its
    // sessions over, so it has stopped every local actor.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.node.live_sessions(),
        0,
        "actors stopped once the node's liveness lapsed"
    );

    let _back = RedisServer::start_on(port);
    let mut ready = false;
    for _ in 0..100 {
        if reqwest::get(format!("{}/readyz", app.base))
            .await
            .unwrap()
            .status()
            == StatusCode::OK
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "ready again once Redis is back");
    let s2 = Mcp::connect(&endpoint, "2025-11-25", json!({})).await;
    assert_eq!(s2.call_text(1, "echo", json!({"text": "again"})).await, "again");
}
