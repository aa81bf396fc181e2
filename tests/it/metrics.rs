//! Metrics: real traffic through two nodes sharing Redis — sessionful and stateless calls, a
//! denied call, an authentication failure, a limit refusal, an upstream call, a forwarded
//! request — shows up on each node's `/metrics` (admin listener only) with the labels of
//! docs/operations.md, and nothing identifying a session or a principal is ever in a scrape.

use std::time::{Duration, Instant};

use marina_auth::{digest, generate_key};
use marina_tests::{MarinaProc, Mcp, RedisServer, UpstreamPeer};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `GET /metrics` on a node's admin listener: content type and text.
async fn scrape(node: &MarinaProc) -> (String, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{}/metrics", node.admin_port))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (ct, r.text().await.unwrap())
}

/// The value of the first sample line whose name and labels contain every part of `parts`.
fn sample(text: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrape `node` until every expectation holds (bounded): streams close and counters move
/// when the response has been written, which may be just after the client read it.
async fn scrape_until(node: &MarinaProc, expected: &[&[&str]]) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = scrape(node).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|parts| sample(&text, parts).is_none_or(|v| v < 1.0))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `promtool check metrics` on the scrape, when promtool is installed (Debian's `prometheus`).
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed: `promtool check metrics` skipped");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A stateless (2026-07-28) `tools/call` of `tool`.
async fn stateless_call(url: &str, key: &str, tool: &str, args: Value) -> Value {
    let msg = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
    "name": tool, "arguments": args, "_meta": {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "marina-tests", "version": "0"},
    }}});
    let r = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {key}"))
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&msg)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .chain(std::iter::once(text.as_str()))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|m| m.get("id") == Some(&json!(7)))
        .unwrap_or_else(|| panic!("no response in {text}"))
}

#[tokio::test]
async fn traffic_through_two_nodes_shows_on_each_nodes_metrics_and_nowhere_else() {
    let upstream = UpstreamPeer::start();
    let redis = RedisServer::start();
    let key = generate_key();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            r#"egress: {{allow_loopback: true}}
tenants:
  acme:
    auth:
      api_keys: [{{subject: rita-the-principal, sha256: {}, roles: [caller]}}]
    rbac:
      policy: |
        p, caller, tool:echo, call, allow
        p, caller, tool:conf.*, call, allow
    limits: {{rate: {{tools: {{"add": "1/min"}}}}}}
    upstreams:
      - {{kind: builtin, tools: [echo, add]}}
      - {{kind: mcp, name: conf, url: "{}", timeout_ms: 10000}}
"#,
            digest(&key),
            upstream.url
        ),
    )
    .unwrap();
    let a = MarinaProc::start_with_config(&redis.url(), "a", &[], &config);
    let b = MarinaProc::start_with_config(&redis.url(), "b", &[], &config);
    let endpoint = |n: &MarinaProc| format!("{}/t/acme/mcp", n.base());

    // Sessionful, on node a: a list, a call, an upstream call, a denied call, a limited call.
    let s = Mcp::new(&endpoint(&a))
        .bearer(&key)
        .open("2025-11-25", json!({}))
        .await;
    let session = s.session.clone().expect("a session id");
    assert!(s.tool_names(1).await.iter().any(|n| n == "conf.test_simple_text"));
    assert_eq!(s.call_text(2, "echo", json!({"text": "hi"})).await, "hi");
    assert_eq!(
        s.call_text(3, "conf.test_simple_text", json!({})).await,
        "This is a simple text response for testing."
    );
    let denied = s
        .rpc(
            4,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(denied["error"]["code"], -32602, "{denied}");
    let limited = s
        .post(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}))
        .await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    // An authentication failure.
    let refused = Mcp::new(&endpoint(&a))
        .bearer("mk_not_a_key_of_this_tenant")
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // The same session through node b (forwarded to a), and a stateless call on b.
    assert_eq!(
        s.at(&endpoint(&b))
            .call_text(6, "echo", json!({"text": "via b"}))
            .await,
        "via b"
    );
    let modern = stateless_call(&endpoint(&b), &key, "echo", json!({"text": "stateless"})).await;
    assert_eq!(modern["result"]["content"][0]["text"], "stateless", "{modern}");

    // Node a: what it served.
    let ok_call = [
        "mcp_server_operation_duration_seconds_count{",
        r#"error_type="""#,
        r#"gen_ai_tool_name="echo""#,
        r#"mcp_method_name="tools/call""#,
        r#"mcp_protocol_version="2025-11-25""#,
        r#"tenant="acme""#,
    ];
    let text_a = scrape_until(
        &a,
        &[
            &ok_call,
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"gen_ai_tool_name="conf.test_simple_text""#,
            ],
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"error_type="-32602""#,
                r#"gen_ai_tool_name="_OTHER""#,
            ],
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"error_type="-32005""#,
                r#"mcp_method_name="tools/call""#,
            ],
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"mcp_method_name="initialize""#,
            ],
            &[
                "mcp_client_operation_duration_seconds_count{",
                r#"error_type="""#,
                r#"mcp_method_name="tools/call""#,
                r#"tenant="acme""#,
                r#"upstream="conf""#,
            ],
            &["marina_request_processing_seconds_count{", r#"tenant="acme""#],
            &[
                "http_server_request_duration_seconds_count{",
                r#"http_request_method="POST""#,
                r#"http_response_status_class="2xx""#,
                r#"http_route="/t/{tenant}/mcp""#,
            ],
            &[
                "marina_auth_failures_total{",
                r#"reason="invalid_key""#,
                r#"tenant="acme""#,
            ],
            &[
                "marina_authz_decisions_total{",
                r#"action="call""#,
                r#"decision="deny""#,
            ],
            &[
                "marina_authz_decisions_total{",
                r#"action="call""#,
                r#"decision="allow""#,
            ],
            &[
                "marina_limit_decisions_total{",
                r#"decision="deny""#,
                r#"scope="tool_rate""#,
            ],
            &["marina_sessions_active{", r#"tenant="acme""#],
            &["marina_sessions_started_total{", r#"tenant="acme""#],
            &[
                "marina_sse_streams_closed_total{",
                r#"kind="post""#,
                r#"reason="complete""#,
            ],
            &["marina_sse_events_sent_total{", r#"kind="post""#],
            &[
                "marina_store_operation_duration_seconds_count{",
                r#"db_system_name="redis""#,
                r#"operation="create_session""#,
            ],
            &["marina_upstream_up{", r#"upstream="conf""#],
            &[
                "marina_upstream_list_items{",
                r#"kind="tools""#,
                r#"upstream="conf""#,
            ],
            &["marina_tenants "],
            &["marina_sse_streams_max "],
            &["marina_build_info{"],
            &["process_resident_memory_bytes "],
        ],
    )
    .await;
    assert_eq!(sample(&text_a, &["marina_sse_streams_max "]), Some(10_000.0));
    assert_eq!(sample(&text_a, &["marina_draining "]), Some(0.0));

    // Node b: the forward, the stateless call.
    let text_b = scrape_until(
        &b,
        &[
            &["marina_forwards_total{", r#"kind="session""#, r#"outcome="ok""#],
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"error_type="""#,
                r#"gen_ai_tool_name="echo""#,
                r#"mcp_protocol_version="2026-07-28""#,
            ],
        ],
    )
    .await;
    // Node b served no session: it forwarded, and the holder (a) counts the forwarded call.
    assert!(
        sample(&text_b, &["marina_sessions_started_total{"]).is_none(),
        "{text_b}"
    );
    assert!(
        sample(
            &text_b,
            &[
                "mcp_server_operation_duration_seconds_count{",
                r#"mcp_protocol_version="2025-11-25""#
            ]
        )
        .is_none(),
        "a forwarded operation is counted by its holder only:\n{text_b}"
    );
    assert_eq!(
        sample(&text_a, &ok_call),
        Some(2.0),
        "a counts its own call and b's forward"
    );

    let (ct, _) = scrape(&a).await;
    assert_eq!(ct, "text/plain; version=0.0.4");
    for text in [&text_a, &text_b] {
        assert!(!text.contains(&session), "a session id in the scrape");
        assert!(!text.contains(&session[..8]), "a session tag in the scrape");
        assert!(!text.contains("rita-the-principal"), "a principal in the scrape");
        assert!(!text.contains(&key), "a credential in the scrape");
        promtool_accepts(text);
    }

    // Never on the public listener.
    let public = reqwest::get(format!("{}/metrics", a.base())).await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let (_, after) = scrape(&a).await;
    assert!(
        sample(
            &after,
            &[
                "http_server_request_duration_seconds_count{",
                r#"http_response_status_class="4xx""#,
                r#"http_route="_OTHER""#,
            ]
        )
        .is_some(),
        "unknown paths are counted under _OTHER"
    );
}

/// The sum of the values of every sample line containing every part of `parts`.
fn total(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn marinas_own_time_leaves_out_the_upstreams() {
    let upstream = UpstreamPeer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            "egress: {{allow_loopback: true}}\ntenants:\n  acme:\n    upstreams:\n      - {{kind: mcp, name: conf, url: \"{}\", timeout_ms: 10000}}\n",
            upstream.url
        ),
    )
    .unwrap();
    let node = MarinaProc::start_with_config("", "solo", &[], &config);
    let s = Mcp::connect(&format!("{}/t/acme/mcp", node.base()), "2025-06-18", json!({})).await;
    // A tool that waits on its upstream (~100 ms: progress steps).
    let r = s
        .rpc(
            1,
            "tools/call",
            json!({"name": "conf.test_tool_with_progress", "arguments": {}}),
        )
        .await;
    assert!(r.get("result").is_some(), "{r}");
    let call = ["tools/call", r#"tenant="acme""#];
    let text = scrape_until(
        &node,
        &[&[&["marina_request_processing_seconds_count{"][..], &call[..]].concat()],
    )
    .await;
    let whole = total(
        &text,
        &[&["mcp_server_operation_duration_seconds_sum{"][..], &call[..]].concat(),
    );
    let own = total(
        &text,
        &[&["marina_request_processing_seconds_sum{"][..], &call[..]].concat(),
    );
    let upstream_side = total(
        &text,
        &[
            "mcp_client_operation_duration_seconds_sum{",
            r#"mcp_method_name="tools/call""#,
        ],
    );
    assert!(
        upstream_side > 0.0 && whole >= upstream_side,
        "{whole} {upstream_side}"
    );
    assert!(
        own < whole - upstream_side * 0.9,
        "own {own}, whole {whole}, upstream {upstream_side}"
    );
}

#[tokio::test]
async fn a_node_refuses_streams_past_server_max_open_streams() {
    let node = MarinaProc::start("", "capped", &[("MARINA__SERVER__MAX_OPEN_STREAMS", "1")]);
    let s = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    let first = s.get(None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = s.get(None).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(second.headers().contains_key("retry-after"));
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000, "{body}");
    let text = scrape_until(
        &node,
        &[
            &[
                "marina_sse_streams_closed_total{",
                r#"kind="get""#,
                r#"reason="refused_cap""#,
            ],
            &["marina_sse_streams_open{", r#"kind="get""#],
        ],
    )
    .await;
    assert_eq!(sample(&text, &["marina_sse_streams_max "]), Some(1.0));
    // The session ends: its stream closes, and there is room again. (A client that merely goes
    // away is noticed at the stream's next write, its keep-alive within 15 s.)
    assert_eq!(s.delete().await.status(), StatusCode::OK);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, text) = scrape(&node).await;
        if sample(&text, &["marina_sse_streams_open{", r#"kind="get""#]) == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the stream never closed:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    assert_eq!(again.get(None).await.status(), StatusCode::OK);
}
