//! Every error of the MCP endpoint gets the right HTTP status and a JSON-RPC error body.

use marina_tests::{Mcp, spawn_app};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn body(resp: reqwest::Response) -> Value {
    let text = resp.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no JSON-RPC error in {v}"))
}

#[actix_rt::test]
async fn unknown_tenant_is_404_with_a_json_rpc_error() {
    let app = spawn_app(&[]).await;
    let c = Mcp::new(&app.endpoint("nope"));
    let r = c.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body(r).await["error"]["message"].is_string());
}

#[actix_rt::test]
async fn accept_must_list_both_types() {
    let app = spawn_app(&[]).await;
    let c = Mcp::new(&app.endpoint("demo"));
    for accept in ["application/json", "text/event-stream", "text/html"] {
        let r = c
            .http
            .post(&c.url)
            .header("Accept", accept)
            .header("Content-Type", "application/json")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE, "{accept}");
        assert_eq!(error_code(&body(r).await), -32600);
    }
    let s = Mcp::connect(&c.url, "2025-11-25", json!({})).await;
    let r = s
        .http
        .get(&s.url)
        .header("Accept", "application/json")
        .header("MCP-Session-Id", s.session.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
}

#[actix_rt::test]
async fn content_type_must_be_json() {
    let app = spawn_app(&[]).await;
    let c = Mcp::new(&app.endpoint("demo"));
    let r = c
        .request(Method::POST)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error_code(&body(r).await), -32600);
}

#[actix_rt::test]
async fn oversized_body_is_413() {
    let app = spawn_app(&[("tenants.demo.limits.max_body_bytes", "1000")]).await;
    let c = Mcp::new(&app.endpoint("demo"));
    let big = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"x".repeat(2000)}});
    let r = c.post(&big).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body(r).await["error"].is_object());
}

#[actix_rt::test]
async fn malformed_json_is_parse_error_without_id() {
    let app = spawn_app(&[]).await;
    let c = Mcp::new(&app.endpoint("demo"));
    let r = c
        .request(Method::POST)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let b = body(r).await;
    assert_eq!(error_code(&b), -32700);
    assert!(b.get("id").is_none_or(Value::is_null));
}

#[actix_rt::test]
async fn invalid_requests_are_32600() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    for bad in [
        json!({"jsonrpc":"2.0","id":null,"method":"ping"}),
        json!({"jsonrpc":"1.0","id":1,"method":"ping"}),
        json!({"id":1,"method":"ping"}),
        json!({"jsonrpc":"2.0","id":1,"method":5}),
        json!("just a string"),
        json!({"jsonrpc":"2.0","id":1,"method":"ping","params":7}),
    ] {
        let r = s.post(&bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(error_code(&body(r).await), -32600, "{bad}");
    }
}

#[actix_rt::test]
async fn unknown_method_is_32601_and_bad_params_32602() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let r = s.rpc(7, "no/such", json!({})).await;
    assert_eq!(r["id"], 7);
    assert_eq!(error_code(&r), -32601);
    // Undeclared capabilities are "method not found" too.
    assert_eq!(error_code(&s.rpc(8, "resources/list", json!({})).await), -32601);
    assert_eq!(
        error_code(&s.rpc(9, "tools/call", json!({"name": "does_not_exist"})).await),
        -32602
    );
    assert_eq!(error_code(&s.rpc(10, "tools/call", json!({})).await), -32602);
    assert_eq!(
        error_code(
            &s.rpc(11, "tools/call", json!({"name": "echo", "arguments": [1]}))
                .await
        ),
        -32602
    );
    assert_eq!(
        error_code(&s.rpc(12, "tools/list", json!({"cursor": "garbage"})).await),
        -32602
    );
    assert_eq!(
        error_code(&s.rpc(13, "logging/setLevel", json!({"level": "verbose"})).await),
        -32602
    );
    let init = Mcp::new(&s.url)
        .rpc(14, "initialize", json!({"capabilities": {}}))
        .await;
    assert_eq!(error_code(&init), -32602);
    // Schema-invalid arguments are a tool error (SEP-1303), not a protocol error.
    let r = s
        .rpc(
            15,
            "tools/call",
            json!({"name": "add", "arguments": {"a": "one", "b": 2}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], true);
}

#[actix_rt::test]
async fn sessions_missing_unknown_and_deleted() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let mut c = Mcp::new(&url);
    c.version = Some("2025-11-25".into());
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "missing session header");
    assert!(body(r).await["error"].is_object());
    for sid in [
        "e0c7cd1f-2f9d-4a11-9e6e-3c1e8b1e6a10",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        c.session = Some(sid.into());
        let r = c
            .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
            .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{sid}");
    }
    let s = Mcp::connect(&url, "2025-11-25", json!({})).await;
    assert_eq!(s.delete().await.status(), StatusCode::OK);
    let r = s
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get(None).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.delete().await.status(), StatusCode::NOT_FOUND);
    let mut anon = Mcp::new(&url);
    anon.version = Some("2025-11-25".into());
    assert_eq!(anon.delete().await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(anon.get(None).await.status(), StatusCode::BAD_REQUEST);
}

#[actix_rt::test]
async fn protocol_version_header_rules() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    let mut pre = Mcp::new(&url);
    for v in ["invalid-protocol-version", "2000-01-01", "2099-01-01"] {
        pre.version = Some(v.into());
        let r = pre.post(&init).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{v} before init");
        assert!(body(r).await["error"].is_object());
    }
    let mut s = Mcp::connect(&url, "2025-11-25", json!({})).await;
    for v in [
        "invalid-protocol-version",
        "2000-01-01",
        "2099-01-01",
        "2025-06-18",
    ] {
        s.version = Some(v.into());
        let r = s
            .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{v} after init");
    }
    // 2025-03-26, the spec's assumed default, counts as "unspecified" (the conformance suite sends
    // it on 2025-11-25 sessions); absent: the session's negotiated version applies.
    s.version = Some("2025-03-26".into());
    let r = s
        .post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    s.version = None;
    let r = s
        .post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body(r).await["result"]["tools"].is_array());
}

#[actix_rt::test]
async fn origin_and_host_are_checked() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let c = Mcp::new(&url);
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}});
    let send = |origin: Option<&'static str>, host: Option<&'static str>| {
        let mut r = c
            .request(Method::POST)
            .header("Content-Type", "application/json")
            .body(init.to_string());
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        r.send()
    };
    let r = send(Some("https://evil.example"), None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let b = body(r).await;
    assert!(b["error"].is_object() && b.get("id").is_none(), "{b}");
    assert_eq!(
        send(None, Some("evil.example.com")).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(Some("http://localhost:3000"), None).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(send(None, None).await.unwrap().status(), StatusCode::OK);

    // Tenants widen the lists.
    let wide = spawn_app(&[
        ("tenants.acme.allowed_origins", "https://app.acme.example"),
        ("tenants.acme.allowed_hosts", "mcp.acme.example"),
    ])
    .await;
    let c = Mcp::new(&wide.endpoint("acme"));
    let r = c
        .request(Method::POST)
        .header("Content-Type", "application/json")
        .header("Origin", "https://app.acme.example")
        .header("Host", "mcp.acme.example")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[actix_rt::test]
async fn batches_only_on_2025_03_26_sessions() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let batch =
        json!([{"jsonrpc":"2.0","id":901,"method":"ping"},{"jsonrpc":"2.0","id":902,"method":"ping"}]);
    for v in ["2025-11-25", "2025-06-18"] {
        let s = Mcp::connect(&url, v, json!({})).await;
        let r = s.post(&batch).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{v}");
        let b = body(r).await;
        assert!(
            b.is_object() && b["error"].is_object(),
            "one error object, not an array: {b}"
        );
    }
    let old = Mcp::connect(&url, "2025-03-26", json!({})).await;
    let r = old.post(&batch).await;
    assert_eq!(r.status(), StatusCode::OK);
    let b = body(r).await;
    let ids: Vec<i64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![901, 902]);
    let only_notes = json!([{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"x"}}]);
    assert_eq!(old.post(&only_notes).await.status(), StatusCode::ACCEPTED);
    let with_call = json!([{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"b"}}}]);
    let b = body(old.post(&with_call).await).await;
    assert_eq!(b[0]["result"]["content"][0]["text"], "b");
}

#[actix_rt::test]
async fn notifications_and_unknown_responses_are_accepted() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let r = s
        .post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"nope"}}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(r.text().await.unwrap().is_empty());
    let r = s
        .post(&json!({"jsonrpc":"2.0","id":"never-asked","result":{}}))
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[actix_rt::test]
async fn server_discover_gets_a_plain_4xx_so_clients_fall_back() {
    let app = spawn_app(&[]).await;
    let c = Mcp::new(&app.endpoint("demo"));
    let r = c
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}))
        .await;
    assert!(r.status().is_client_error());
    let code = error_code(&body(r).await);
    assert!(
        !(-32022..=-32020).contains(&code),
        "{code} would stop the fallback"
    );
    // As the Python SDK sends it: with the 2026-07-28 version header.
    let mut c2 = Mcp::new(&app.endpoint("demo"));
    c2.version = Some("2026-07-28".into());
    let r = c2
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}))
        .await;
    assert!(r.status().is_client_error());
    let code = error_code(&body(r).await);
    assert!(!(-32022..=-32020).contains(&code));
}

#[actix_rt::test]
async fn other_methods_get_405_and_probes_answer() {
    let app = spawn_app(&[]).await;
    let http = reqwest::Client::new();
    let r = http.put(app.endpoint("demo")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        http.get(format!("{}/healthz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// MCP answers — JSON, SSE and errors alike — are never sniffed or cached.
#[actix_rt::test]
async fn mcp_answers_carry_nosniff_and_no_store() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let json_answer = s.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await;
    let sse_answer = s
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}}))
        .await;
    let error = Mcp::new(&app.endpoint("demo"))
        .post(&json!({"jsonrpc":"2.0","id":3,"method":"ping"}))
        .await;
    for (what, r) in [("json", &json_answer), ("sse", &sse_answer), ("error", &error)] {
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{what}");
    }
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}
