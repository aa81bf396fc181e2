//! Traces: two `marina` nodes sharing one Redis export OTLP/HTTP to a receiver written here; a
//! `tools/call` sent to the node that does not hold the session, with the client's trace context
//! in `_meta`, gives SERVER spans in the client's trace on both nodes and a CLIENT span for the
//! upstream call, whose context the upstream (also written here) receives in its headers and in
//! `_meta`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use marina_tests::{MarinaProc, Mcp, RedisServer, SseEvent, read_events};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// One HTTP request as the tiny servers below see it.
struct Request {
    method: String,
    /// The request target (path and query).
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server on a free loopback port: one request per connection (bodies with a
/// Content-Length, which both the OTLP exporter and Marina's upstream client send), answered by
/// `handle` as (status, content type, body) and closed. Its base URL.
async fn serve<F>(handle: F) -> String
where
    F: Fn(Request) -> (u16, &'static str, Vec<u8>) + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut conn).await else {
                    return;
                };
                let (status, content_type, body) = handle(req);
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    url
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// A span as received: its resource's instance, and what the assertions look at.
#[derive(Debug, Clone)]
struct Received {
    instance: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    links: Vec<String>,
    attributes: Vec<(String, String)>,
    /// The status code (`ERROR` is 2).
    status: i32,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

/// The OTLP/HTTP receiver: every span exported to it.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let url = serve(move |req| {
        let Ok(export) = ExportTraceServiceRequest::decode(req.body.as_slice()) else {
            return (400, "text/plain", b"not an ExportTraceServiceRequest".to_vec());
        };
        let mut spans = store.lock().unwrap();
        for rs in export.resource_spans {
            let resource = rs.resource.map(|r| pairs(&r.attributes)).unwrap_or_default();
            let instance = resource
                .iter()
                .find(|(k, _)| k == "service.instance.id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Received {
                        instance: instance.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        links: s.links.iter().map(|l| hex(&l.trace_id)).collect(),
                        attributes: pairs(&s.attributes),
                        status: s.status.as_ref().map_or(0, |s| s.code),
                    });
                }
            }
        }
        // An empty ExportTraceServiceResponse.
        (200, "application/x-protobuf", Vec::new())
    })
    .await;
    (url, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A minimal MCP server (2025-06-18, JSON answers) with one tool, `echo`; every request it got
/// (its `traceparent` header and its JSON body).
async fn mcp_upstream() -> (String, Arc<Mutex<Vec<(Option<String>, Value)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let url = serve(move |req| {
        if req.method != "POST" {
            return (405, "text/plain", Vec::new());
        }
        let Ok(msg) = serde_json::from_slice::<Value>(&req.body) else {
            return (400, "text/plain", Vec::new());
        };
        store
            .lock()
            .unwrap()
            .push((req.header("traceparent").map(str::to_owned), msg.clone()));
        let Some(id) = msg.get("id") else {
            return (202, "text/plain", Vec::new());
        };
        let result = match msg["method"].as_str() {
            Some("initialize") => json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "trace-upstream", "version": "0"},
            }),
            Some("tools/list") => json!({"tools": [{
                "name": "echo",
                "description": "echoes",
                "inputSchema": {"type": "object"},
            }]}),
            Some("tools/call") => json!({"content": [{"type": "text", "text": "echoed"}]}),
            _ => {
                let e = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}});
                return (200, "application/json", e.to_string().into_bytes());
            }
        };
        let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
        (200, "application/json", body.to_string().into_bytes())
    })
    .await;
    (format!("{url}/mcp"), seen)
}

/// Poll `check` until it gives something, for at most `within`.
async fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
/// A span's status `ERROR`.
const ERROR: i32 = 2;

#[tokio::test]
async fn a_call_is_traced_across_nodes_and_to_the_upstream() {
    let (collector, spans) = otlp_receiver().await;
    let (upstream, seen) = mcp_upstream().await;
    let (dir, config) = marina_tests::config_file(&format!(
        "egress:\n  allow_loopback: true\ntenants:\n  demo:\n    upstreams:\n      - {{kind: builtin, tools: [echo]}}\n      - {{kind: mcp, name: up, url: \"{upstream}\", protocol: \"2025-06-18\"}}\n"
    ));
    let env = [
        ("MARINA__SESSIONS__LEASE_TTL_MS", "1500"),
        ("MARINA__CLUSTER__SECRET", "cluster-tests-secret-0123456789"),
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        // The batch processor sends every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let redis = RedisServer::start();
    let a = MarinaProc::start_with_config(&redis.url(), "A", &env, &config);
    // B's log, in JSON: its lines of the traced request name the trace.
    let log = dir.path().join("b.log");
    let logged = [
        &env[..],
        &[
            ("MARINA__SERVER__LOG_FORMAT", "json"),
            ("MARINA__SERVER__LOG_FILTER", "info"),
        ],
    ]
    .concat();
    let b = MarinaProc::start_logged_with_config(&redis.url(), "B", &logged, &log, &config);

    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let session = on_a.session.clone().unwrap();
    let on_b = on_a.at(&b.endpoint());
    let (status, msgs) = on_b
        .exchange(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "up.echo", "arguments": {},
                "_meta": {"traceparent": CLIENT_TRACEPARENT, "tracestate": "client=1"},
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = msgs.iter().find(|m| m["id"] == 7).expect("a response");
    assert_eq!(response["result"]["content"][0]["text"], "echoed", "{response}");

    // Node B (which forwarded the call) and node A (which holds the session) each export a
    // SERVER span in the client's trace; A also the CLIENT span of the upstream call.
    let found = eventually(Duration::from_secs(20), || {
        let spans = spans.lock().unwrap();
        let server = |node: &str| {
            spans
                .iter()
                .find(|s| s.kind == SERVER && s.instance == node && s.name == "tools/call up.echo")
                .cloned()
        };
        let client = spans
            .iter()
            .find(|s| s.kind == CLIENT && s.name == "tools/call echo")
            .cloned();
        Some((server("A")?, server("B")?, client?))
    })
    .await;
    let Some((server_a, server_b, client)) = found else {
        panic!("spans missing: {:#?}", spans.lock().unwrap());
    };
    // B's span is the client's child; A's continues B's (the forwarded request carries it).
    assert_eq!(server_b.parent_span_id, "b7ad6b7169203331", "{server_b:#?}");
    assert_eq!(server_a.parent_span_id, server_b.span_id, "{server_a:#?}");
    for s in [&server_a, &server_b] {
        assert_eq!(s.trace_id, CLIENT_TRACE, "{s:#?}");
        assert_eq!(s.attr("mcp.method.name"), Some("tools/call"), "{s:#?}");
        assert_eq!(s.attr("gen_ai.tool.name"), Some("up.echo"), "{s:#?}");
        assert_eq!(s.attr("jsonrpc.request.id"), Some("7"), "{s:#?}");
        assert_eq!(s.attr("mcp.protocol.version"), Some("2025-11-25"), "{s:#?}");
        assert_eq!(s.attr("marina.tenant"), Some("demo"), "{s:#?}");
        assert_eq!(s.attr("mcp.session.id"), Some(&session[..8]), "{s:#?}");
        assert_eq!(s.attr("error.type"), None, "{s:#?}");
    }
    // The upstream call: a child of A's server span, tagged with the upstream.
    assert_eq!(client.instance, "A");
    assert_eq!(client.trace_id, CLIENT_TRACE);
    assert_eq!(client.parent_span_id, server_a.span_id, "{client:#?}");
    assert_eq!(client.attr("marina.upstream"), Some("up"));
    assert_eq!(client.attr("gen_ai.tool.name"), Some("echo"));
    assert_eq!(client.attr("mcp.method.name"), Some("tools/call"));

    // The upstream saw the gateway's CLIENT span as the parent, in the header and in `_meta`.
    let expected = format!("00-{CLIENT_TRACE}-{}-01", client.span_id);
    let seen = seen.lock().unwrap().clone();
    let call = seen
        .iter()
        .find(|(_, m)| m["method"] == "tools/call")
        .expect("the upstream got the call");
    assert_eq!(call.0.as_deref(), Some(expected.as_str()), "{call:?}");
    assert_eq!(call.1["params"]["_meta"]["traceparent"], expected, "{call:?}");

    // B's access log line of the call carries its trace and its server span.
    let line = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["span"]["trace_id"] == CLIENT_TRACE)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no log line names the trace: {}",
            std::fs::read_to_string(&log).unwrap()
        )
    });
    assert_eq!(line["span"]["span_id"], server_b.span_id.as_str(), "{line}");
    assert_eq!(line["span"]["session"], &session[..8], "{line}");

    // No raw session id anywhere in what was exported.
    let spans = spans.lock().unwrap().clone();
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(!v.contains(&session), "{k} carries the session id: {s:#?}");
        }
    }
    assert!(spans.iter().all(|s| s.links.is_empty()));
}

#[tokio::test]
async fn in_link_mode_a_client_cannot_choose_the_trace() {
    let (collector, spans) = otlp_receiver().await;
    let (upstream, seen) = mcp_upstream().await;
    let (_dir, config) = marina_tests::config_file(&format!(
        "egress:\n  allow_loopback: true\ntenants:\n  demo:\n    upstreams:\n      - {{kind: mcp, name: up, url: \"{upstream}\", protocol: \"2025-06-18\"}}\n"
    ));
    let env = [
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        ("MARINA__TELEMETRY__CLIENT_CONTEXT", "link"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let node = MarinaProc::start_with_config("", "L", &env, &config);
    // The client's context in the header this time, and baggage in `_meta`.
    let client = Mcp::connect(&node.endpoint(), "2025-11-25", json!({}))
        .await
        .with_header("traceparent", CLIENT_TRACEPARENT)
        .with_header("tracestate", "client=1");
    let (status, _) = client
        .exchange(
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                "name": "up.echo", "arguments": {}, "_meta": {"baggage": "tenant=other"},
            }}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let found = eventually(Duration::from_secs(20), || {
        let spans = spans.lock().unwrap();
        let server = spans
            .iter()
            .find(|s| s.kind == SERVER && s.name == "tools/call up.echo")
            .cloned()?;
        let client = spans
            .iter()
            .find(|s| s.kind == CLIENT && s.name == "tools/call echo")
            .cloned()?;
        Some((server, client))
    })
    .await;
    let Some((server, upstream_call)) = found else {
        panic!("spans missing: {:#?}", spans.lock().unwrap());
    };
    // A trace of Marina's own, linked to the client's span.
    assert_ne!(server.trace_id, CLIENT_TRACE, "{server:#?}");
    assert_eq!(server.parent_span_id, "", "{server:#?}");
    assert_eq!(server.links, vec![CLIENT_TRACE.to_owned()], "{server:#?}");
    assert_eq!(upstream_call.trace_id, server.trace_id);
    // The upstream sees Marina's trace only: no client trace id, tracestate or baggage.
    let seen = seen.lock().unwrap().clone();
    let call = seen
        .iter()
        .find(|(_, m)| m["method"] == "tools/call")
        .expect("the upstream got the call");
    let expected = format!("00-{}-{}-01", server.trace_id, upstream_call.span_id);
    assert_eq!(call.0.as_deref(), Some(expected.as_str()), "{call:?}");
    let meta = &call.1["params"]["_meta"];
    assert_eq!(meta["traceparent"], expected, "{call:?}");
    assert!(
        meta.get("tracestate").is_none() && meta.get("baggage").is_none(),
        "{call:?}"
    );
}

// Two workers: the receiver must answer the exporter while this test waits (blocking) for the
// node to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_buffered_are_exported_at_exit() {
    let (collector, spans) = otlp_receiver().await;
    let env = [
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        // Nothing is sent on schedule during this test: only the flush at exit can send it.
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let mut node = MarinaProc::start("", "X", &env);
    let client = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    assert_eq!(client.call_text(1, "add", json!({"a": 1, "b": 2})).await, "3");
    assert!(spans.lock().unwrap().is_empty());
    node.sigterm();
    assert_eq!(node.wait_exit(Duration::from_secs(20)), Some(0));
    let exported = eventually(Duration::from_secs(5), || {
        spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.name == "tools/call add" && s.instance == "X")
            .then_some(())
    })
    .await;
    assert!(exported.is_some(), "{:#?}", spans.lock().unwrap());
}

/// The count of the first `mcp_server_operation_duration_seconds` series on `node`'s admin
/// listener whose labels contain every part of `labels`.
async fn operations(node: &MarinaProc, labels: &[&str]) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", node.admin_port))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .filter(|l| l.starts_with("mcp_server_operation_duration_seconds_count{"))
        .find(|l| labels.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// No attribute or name of any exported span contains any of `secrets`.
fn nothing_exported_contains(spans: &[Received], secrets: &[&str]) {
    for s in spans {
        for secret in secrets {
            assert!(!s.name.contains(secret), "the name carries {secret}: {s:#?}");
            for (k, v) in &s.attributes {
                assert!(!v.contains(secret), "{k} carries {secret}: {s:#?}");
            }
        }
    }
}

#[tokio::test]
async fn each_request_of_a_batch_is_an_operation_with_its_own_span() {
    let (collector, spans) = otlp_receiver().await;
    let (upstream, seen) = mcp_upstream().await;
    let (_dir, config) = marina_tests::config_file(&format!(
        "egress:\n  allow_loopback: true\ntenants:\n  demo:\n    upstreams:\n      - {{kind: mcp, name: up, url: \"{upstream}\", protocol: \"2025-06-18\"}}\n"
    ));
    let env = [
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let node = MarinaProc::start_with_config("", "N", &env, &config);
    // Batches exist on 2025-03-26 sessions only.
    let old = Mcp::connect(&node.endpoint(), "2025-03-26", json!({})).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "up.echo", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "up.echo", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "nothing"}},
    ]);
    let r = old.post(&batch).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answers: Value = r.json().await.unwrap();
    let answers = answers.as_array().expect("an array of responses");
    assert_eq!(answers.len(), 2, "{answers:?}");
    for a in answers {
        assert_eq!(a["result"]["content"][0]["text"], "echoed", "{a}");
    }

    // Each item is counted as an operation, with its own outcome.
    let call = [
        r#"mcp_method_name="tools/call""#,
        r#"gen_ai_tool_name="up.echo""#,
        r#"error_type="""#,
        r#"mcp_protocol_version="2025-03-26""#,
        r#"tenant="demo""#,
    ];
    let note = [r#"mcp_method_name="notifications/cancelled""#, r#"error_type="""#];
    let counted = eventually_async(Duration::from_secs(10), || async {
        let calls = operations(&node, &call).await?;
        let notes = operations(&node, &note).await?;
        (calls >= 2.0 && notes >= 1.0).then_some((calls, notes))
    })
    .await;
    assert_eq!(counted, Some((2.0, 1.0)));

    // Each request has its SERVER span, with its upstream call as its CLIENT child.
    let found = eventually(Duration::from_secs(20), || {
        let spans = spans.lock().unwrap();
        let pair = |id: &str| {
            let server = spans
                .iter()
                .find(|s| {
                    s.kind == SERVER
                        && s.name == "tools/call up.echo"
                        && s.attr("jsonrpc.request.id") == Some(id)
                })?
                .clone();
            // (The first call also starts the upstream's session: more CLIENT children.)
            let client = spans
                .iter()
                .find(|s| {
                    s.kind == CLIENT && s.name == "tools/call echo" && s.parent_span_id == server.span_id
                })?
                .clone();
            Some((server, client))
        };
        let note = spans
            .iter()
            .find(|s| s.kind == SERVER && s.name == "notifications/cancelled")
            .cloned()?;
        Some((pair("1")?, pair("2")?, note))
    })
    .await;
    let Some(((server_1, client_1), (server_2, client_2), note)) = found else {
        panic!("spans missing: {:#?}", spans.lock().unwrap());
    };
    let session = old.session.clone().unwrap();
    for (server, client) in [(&server_1, &client_1), (&server_2, &client_2)] {
        assert_eq!(server.attr("mcp.method.name"), Some("tools/call"), "{server:#?}");
        assert_eq!(server.attr("mcp.session.id"), Some(&session[..8]), "{server:#?}");
        assert_eq!(server.attr("marina.tenant"), Some("demo"), "{server:#?}");
        assert_eq!(
            server.attr("mcp.protocol.version"),
            Some("2025-03-26"),
            "{server:#?}"
        );
        assert_eq!(server.attr("error.type"), None, "{server:#?}");
        assert_eq!(client.trace_id, server.trace_id, "{client:#?}");
        assert_eq!(client.attr("marina.upstream"), Some("up"), "{client:#?}");
    }
    assert_ne!(server_1.span_id, server_2.span_id);
    assert_ne!(client_1.span_id, client_2.span_id);
    assert_eq!(note.attr("mcp.session.id"), Some(&session[..8]), "{note:#?}");
    assert_eq!(note.attr("error.type"), None, "{note:#?}");
    // The upstream got each call with its own CLIENT span as the parent.
    let mut got: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m["method"] == "tools/call")
        .filter_map(|(tp, _)| tp.clone())
        .collect();
    got.sort();
    let mut expected: Vec<String> = [&client_1, &client_2]
        .iter()
        .map(|c| format!("00-{}-{}-01", c.trace_id, c.span_id))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    nothing_exported_contains(&spans.lock().unwrap(), &[&session]);
}

/// Like [`eventually`], for a check that awaits.
async fn eventually_async<T, F, Fut>(within: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn get_and_delete_are_http_server_spans_and_a_forwarded_get_continues_across_nodes() {
    let (collector, spans) = otlp_receiver().await;
    let (_dir, config) = marina_tests::config_file(
        "tenants:\n  demo:\n    upstreams:\n      - {kind: builtin, tools: [echo]}\n",
    );
    let env = [
        ("MARINA__SESSIONS__LEASE_TTL_MS", "1500"),
        ("MARINA__CLUSTER__SECRET", "cluster-tests-secret-0123456789"),
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let redis = RedisServer::start();
    let a = MarinaProc::start_with_config(&redis.url(), "A", &env, &config);
    let b = MarinaProc::start_with_config(&redis.url(), "B", &env, &config);
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let session = on_a.session.clone().unwrap();
    let tag = &session[..8];

    // A call answered on a stream (its first event, the priming one, has an id)...
    let resp = on_a
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hi"}}}))
        .await;
    let (events, _) = read_events(resp, Duration::from_secs(10), |_| false).await;
    let priming = events
        .first()
        .and_then(|e| e.id.clone())
        .expect("a priming event");
    // ...resumed after it through B, which forwards the GET to A: A replays the response.
    let resumed = on_a
        .at(&b.endpoint())
        .with_header("traceparent", CLIENT_TRACEPARENT)
        .get(Some(&priming))
        .await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let (replayed, _) = read_events(resumed, Duration::from_secs(10), |ev| {
        ev.iter().filter_map(SseEvent::json).any(|m| m["id"] == 1)
    })
    .await;
    let answer = replayed
        .iter()
        .filter_map(SseEvent::json)
        .find(|m| m["id"] == 1)
        .expect("the response, replayed");
    assert_eq!(answer["result"]["content"][0]["text"], "hi", "{answer}");
    // The session ends; ending it again is refused (404).
    assert_eq!(on_a.delete().await.status(), StatusCode::OK);
    assert_eq!(on_a.delete().await.status(), StatusCode::NOT_FOUND);

    const GET: &str = "GET /t/{tenant}/mcp";
    const DELETE: &str = "DELETE /t/{tenant}/mcp";
    let found = eventually(Duration::from_secs(20), || {
        let spans = spans.lock().unwrap();
        let find = |node: &str, name: &str, status: &str| {
            spans
                .iter()
                .find(|s| {
                    s.kind == SERVER
                        && s.instance == node
                        && s.name == name
                        && s.attr("http.response.status_code") == Some(status)
                })
                .cloned()
        };
        Some((
            find("B", GET, "200")?,
            find("A", GET, "200")?,
            find("A", DELETE, "200")?,
            find("A", DELETE, "404")?,
        ))
    })
    .await;
    let Some((get_b, get_a, deleted, refused)) = found else {
        panic!("spans missing: {:#?}", spans.lock().unwrap());
    };
    // B's GET continues the client's trace; A's continues B's (the forwarded request carries it).
    assert_eq!(get_b.trace_id, CLIENT_TRACE, "{get_b:#?}");
    assert_eq!(get_b.parent_span_id, "b7ad6b7169203331", "{get_b:#?}");
    assert_eq!(get_a.trace_id, CLIENT_TRACE, "{get_a:#?}");
    assert_eq!(get_a.parent_span_id, get_b.span_id, "{get_a:#?}");
    for (s, method) in [
        (&get_b, "GET"),
        (&get_a, "GET"),
        (&deleted, "DELETE"),
        (&refused, "DELETE"),
    ] {
        assert_eq!(s.attr("http.request.method"), Some(method), "{s:#?}");
        assert_eq!(s.attr("http.route"), Some("/t/{tenant}/mcp"), "{s:#?}");
        assert_eq!(s.attr("marina.tenant"), Some("demo"), "{s:#?}");
        assert_eq!(s.attr("mcp.session.id"), Some(tag), "{s:#?}");
    }
    for s in [&get_b, &get_a, &deleted] {
        assert_eq!(s.attr("error.type"), None, "{s:#?}");
        assert_ne!(s.status, ERROR, "{s:#?}");
    }
    // A resumption; the node that holds the session knows how much it replayed.
    assert_eq!(get_b.attr("marina.stream.resumed"), Some("true"), "{get_b:#?}");
    assert_eq!(get_b.attr("marina.stream.replayed"), None, "{get_b:#?}");
    assert_eq!(get_a.attr("marina.stream.resumed"), Some("true"), "{get_a:#?}");
    assert_eq!(get_a.attr("marina.stream.replayed"), Some("1"), "{get_a:#?}");
    // The refused DELETE failed, with its status as the error type.
    assert_eq!(refused.attr("error.type"), Some("404"), "{refused:#?}");
    assert_eq!(refused.status, ERROR, "{refused:#?}");
    nothing_exported_contains(&spans.lock().unwrap(), &[&session]);
}

#[tokio::test]
async fn a_request_to_an_http_tool_is_a_client_span_whose_context_the_endpoint_gets() {
    let (collector, spans) = otlp_receiver().await;
    // The tool's endpoint: every request's target, `traceparent` and `tracestate`.
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    let endpoint = serve(move |req| {
        store.lock().unwrap().push((
            req.path.clone(),
            req.header("traceparent").map(str::to_owned),
            req.header("tracestate").map(str::to_owned),
        ));
        if req.path.starts_with("/weather") {
            (200, "application/json", br#"{"temp": 21}"#.to_vec())
        } else {
            (500, "text/plain", b"down".to_vec())
        }
    })
    .await;
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    // Credentials in the URL's user info and in its query: neither may reach a span.
    let (_dir, config) = marina_tests::config_file(&format!(
        r#"egress: {{allow_loopback: true}}
tenants:
  demo:
    upstreams:
      - kind: http
        name: weather
        method: GET
        url: "http://tooluser:toolpass@127.0.0.1:{port}/weather?key=s3cret"
        input_schema: {{type: object, properties: {{city: {{type: string}}}}}}
      - {{kind: http, name: failing, url: "http://127.0.0.1:{port}/fail", input_schema: {{type: object}}}}
"#
    ));
    let env = [
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let node = MarinaProc::start_with_config("", "H", &env, &config);
    let client = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    let meta = json!({"traceparent": CLIENT_TRACEPARENT, "tracestate": "client=1"});
    let ok = client
        .rpc(
            1,
            "tools/call",
            json!({"name": "weather", "arguments": {"city": "Paris"}, "_meta": meta}),
        )
        .await;
    assert_eq!(ok["result"]["structuredContent"]["temp"], 21, "{ok}");
    let failed = client
        .rpc(2, "tools/call", json!({"name": "failing", "arguments": {}}))
        .await;
    assert_eq!(failed["result"]["isError"], true, "{failed}");

    let found = eventually(Duration::from_secs(20), || {
        let spans = spans.lock().unwrap();
        let pair = |tool: &str, method: &str| {
            let server = spans
                .iter()
                .find(|s| s.kind == SERVER && s.name == format!("tools/call {tool}"))?
                .clone();
            let client = spans
                .iter()
                .find(|s| s.kind == CLIENT && s.name == method && s.parent_span_id == server.span_id)?
                .clone();
            Some((server, client))
        };
        Some((pair("weather", "GET")?, pair("failing", "POST")?))
    })
    .await;
    let Some(((server, call), (failed_server, failed_call))) = found else {
        panic!("spans missing: {:#?}", spans.lock().unwrap());
    };
    // The CLIENT span is in the call's trace (the client's, in `parent` mode), under its SERVER
    // span, and the endpoint got its context.
    assert_eq!(server.trace_id, CLIENT_TRACE, "{server:#?}");
    assert_eq!(call.trace_id, CLIENT_TRACE, "{call:#?}");
    let got = got.lock().unwrap().clone();
    let weather = got
        .iter()
        .find(|(path, _, _)| path.starts_with("/weather"))
        .expect("the endpoint got the call");
    let expected = format!("00-{}-{}-01", call.trace_id, call.span_id);
    assert_eq!(weather.1.as_deref(), Some(expected.as_str()), "{weather:?}");
    assert_eq!(weather.2.as_deref(), Some("client=1"), "{weather:?}");
    // The query still carries the arguments to the endpoint (only the span leaves them out).
    assert!(weather.0.contains("city=Paris"), "{weather:?}");
    assert_eq!(call.attr("http.request.method"), Some("GET"), "{call:#?}");
    assert_eq!(call.attr("server.address"), Some("127.0.0.1"), "{call:#?}");
    assert_eq!(call.attr("server.port"), Some(port.as_str()), "{call:#?}");
    assert_eq!(
        call.attr("url.full"),
        Some(format!("http://127.0.0.1:{port}/weather").as_str()),
        "{call:#?}"
    );
    assert_eq!(call.attr("gen_ai.tool.name"), Some("weather"), "{call:#?}");
    assert_eq!(call.attr("marina.tenant"), Some("demo"), "{call:#?}");
    assert_eq!(call.attr("http.response.status_code"), Some("200"), "{call:#?}");
    assert_eq!(call.attr("error.type"), None, "{call:#?}");
    assert_ne!(call.status, ERROR, "{call:#?}");
    // A failed request: the status is its error type; the call's SERVER span is a tool error.
    let fail = got
        .iter()
        .find(|(path, _, _)| path == "/fail")
        .expect("the endpoint got the failing call");
    let expected = format!("00-{}-{}-01", failed_call.trace_id, failed_call.span_id);
    assert_eq!(fail.1.as_deref(), Some(expected.as_str()), "{fail:?}");
    assert_eq!(failed_call.attr("http.response.status_code"), Some("500"));
    assert_eq!(failed_call.attr("error.type"), Some("500"), "{failed_call:#?}");
    assert_eq!(failed_call.status, ERROR, "{failed_call:#?}");
    assert_eq!(
        failed_server.attr("error.type"),
        Some("tool_error"),
        "{failed_server:#?}"
    );
    nothing_exported_contains(
        &spans.lock().unwrap(),
        &["Paris", "s3cret", "toolpass", "tooluser"],
    );
}

#[tokio::test]
async fn the_instance_id_is_the_node_id_the_node_reports() {
    use marina_auth::{digest, generate_key};
    let (collector, spans) = otlp_receiver().await;
    let admin_key = generate_key();
    let (_dir, config) = marina_tests::config_file(&format!(
        "admin:\n  api_keys:\n    - {{subject: ops, sha256: {}}}\ntenants:\n  demo:\n    upstreams:\n      - {{kind: builtin, tools: [echo]}}\n",
        digest(&admin_key)
    ));
    let env = [
        ("MARINA__TELEMETRY__OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("HOSTNAME", "traced-host"),
    ];
    // No node id: the node derives it from the host name and the port it bound (port 0: a free
    // one, known only once bound).
    let node = MarinaProc::start_with_config("", "", &env, &config);
    let client = Mcp::connect(&node.endpoint(), "2025-11-25", json!({})).await;
    assert_eq!(client.call_text(1, "echo", json!({"text": "x"})).await, "x");
    let tag = &client.session.as_deref().unwrap()[..8];
    let detail: Value = reqwest::Client::new()
        .get(format!("{}/tenants/demo/sessions/{tag}", node.admin()))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let reported = detail["node"].as_str().unwrap_or_else(|| panic!("{detail}"));
    assert_eq!(reported, format!("traced-host-{}", node.port));
    let exported = eventually(Duration::from_secs(20), || {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.kind == SERVER && s.name == "tools/call echo")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("spans missing: {:#?}", spans.lock().unwrap()));
    assert_eq!(exported.instance, reported, "{exported:#?}");
}
