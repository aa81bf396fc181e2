//! Upstream MCP servers that misbehave — slow, 5xx, malformed, oversized, a stream that dies —
//! give clear tool errors, leak nothing of what they sent, and never hold up the tenant's other
//! upstreams. The misbehaving server is a small fake (a real SDK server cannot be made to fail on
//! demand); the well-behaved one is the real TypeScript peer.

use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use marina_tests::{Mcp, UpstreamPeer, spawn_app_with};
use serde_json::{Value, json};

/// Answers initialize and tools/list like a proper MCP server; `tools/call` fails the way the
/// path's first segment says.
async fn faulty(req: HttpRequest, body: web::Json<Value>) -> HttpResponse {
    let mode = req
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let id = body.get("id").cloned().unwrap_or(Value::Null);
    let ok = |result: Value| {
        HttpResponse::Ok()
            .insert_header(("mcp-session-id", "fake-session"))
            .json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
    };
    match body["method"].as_str().unwrap_or_default() {
        "initialize" => ok(json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "faulty", "version": "0"}})),
        "notifications/initialized" => HttpResponse::Accepted().finish(),
        "tools/list" => ok(json!({"tools": [{"name": "t", "inputSchema": {"type": "object"}}]})),
        "tools/call" => match mode.as_str() {
            "slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                ok(json!({"content": []}))
            }
            "err500" => HttpResponse::InternalServerError().body("database password is hunter2"),
            "garbage" => HttpResponse::Ok().content_type("application/json").body("{not json, secret=hunter2"),
            "huge" => ok(json!({"content": [{"type": "text", "text": "x".repeat(10_000)}]})),
            // An SSE answer that stops after a progress event, with no event ids to resume from.
            "dies" => HttpResponse::Ok().content_type("text/event-stream").body(
                "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"x\",\"progress\":1}}\n\n",
            ),
            _ => HttpResponse::NotFound().finish(),
        },
        _ => HttpResponse::Accepted().finish(),
    }
}

async fn start_faulty() -> u16 {
    let server = HttpServer::new(|| App::new().default_service(web::post().to(faulty)))
        .workers(2)
        .bind(("127.0.0.1", 0))
        .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    port
}

#[actix_rt::test]
async fn misbehaving_upstreams_give_clear_tool_errors_and_block_nothing() {
    let good = UpstreamPeer::start();
    let port = start_faulty().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    let bad = |name: &str, extra: &str| {
        format!(
            "      - {{kind: mcp, name: {name}, url: \"http://127.0.0.1:{port}/{name}/mcp\", timeout_ms: 500{extra}}}\n"
        )
    };
    let yaml = format!(
        "egress:\n  allow_loopback: true\ntenants:\n  acme:\n    upstreams:\n      - {{kind: mcp, name: good, url: \"{}\"}}\n{}{}{}{}{}",
        good.url,
        bad("slow", ""),
        bad("err500", ""),
        bad("garbage", ""),
        bad("huge", ", max_response_bytes: 2000"),
        bad("dies", ""),
    );
    std::fs::write(&file, yaml).unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let names = s.tool_names(1).await;
    for expected in [
        "good.test_simple_text",
        "slow.t",
        "err500.t",
        "garbage.t",
        "huge.t",
        "dies.t",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }

    // A slow upstream does not hold up a call to another upstream of the same session.
    let slow = {
        let s = s.clone();
        tokio::spawn(async move {
            s.rpc(2, "tools/call", json!({"name": "slow.t", "arguments": {}}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(
        s.call_text(3, "good.test_simple_text", json!({})).await,
        "This is a simple text response for testing."
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the good upstream waited for the slow one"
    );
    let r = slow.await.unwrap();
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("did not answer within 500 ms"),
        "{r}"
    );

    for (i, (tool, expect)) in [
        ("err500.t", "HTTP 500"),
        ("garbage.t", "malformed"),
        ("huge.t", "too much data"),
        ("dies.t", "ended without an answer"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = s
            .rpc(
                10 + i as i64,
                "tools/call",
                json!({"name": tool, "arguments": {}}),
            )
            .await;
        assert_eq!(r["result"]["isError"], true, "{tool}: {r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(expect), "{tool}: {text}");
        assert!(
            !r.to_string().contains("hunter2"),
            "{tool} leaked the upstream's body"
        );
    }
}
