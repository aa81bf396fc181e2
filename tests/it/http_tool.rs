//! Upstream kind `http`: schema validation, results, failures and the SSRF guard, against a real
//! local HTTP service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use marina_tests::{Mcp, spawn_app_with};
use serde_json::{Value, json};

/// The tenant's service: a few endpoints with known behaviour, counting the requests it gets.
async fn service(hits: Arc<AtomicUsize>) -> u16 {
    let server = HttpServer::new(move || {
        let hits = hits.clone();
        App::new()
            .wrap_fn(move |req, srv| {
                hits.fetch_add(1, Ordering::SeqCst);
                actix_web::dev::Service::call(srv, req)
            })
            .route(
                "/weather",
                web::post().to(|req: HttpRequest, body: web::Json<Value>| async move {
                    let auth = req
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let tenant = req
                        .headers()
                        .get("x-tenant")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    HttpResponse::Ok()
                        .json(json!({"city": body["city"], "temp": 21.5, "auth": auth, "tenant": tenant}))
                }),
            )
            .route(
                "/sum",
                web::get().to(
                    |q: web::Query<std::collections::HashMap<String, String>>| async move {
                        let n = |k: &str| q.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                        HttpResponse::Ok().json(json!({"sum": n("a") + n("b")}))
                    },
                ),
            )
            .route(
                "/fail",
                web::post()
                    .to(|| async { HttpResponse::InternalServerError().body("stack trace with secret-xyz") }),
            )
            .route(
                "/text",
                web::post().to(|| async { HttpResponse::Ok().body("plain words") }),
            )
            .route(
                "/array",
                web::post().to(|| async { HttpResponse::Ok().json(json!([1, 2, 3])) }),
            )
            .route(
                "/wrong-shape",
                web::post().to(|| async { HttpResponse::Ok().json(json!({"city": 5})) }),
            )
            .route(
                "/slow",
                web::post().to(|| async {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    HttpResponse::Ok().json(json!({}))
                }),
            )
            .route(
                "/big",
                web::post().to(|| async { HttpResponse::Ok().json(json!({"pad": "x".repeat(5000)})) }),
            )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    port
}

fn config(port: u16, token_file: &std::path::Path, allow_loopback: bool) -> String {
    let template = r#"
egress:
  allow_loopback: ALLOW
tenants:
  acme:
    upstreams:
      - kind: builtin
        tools: [echo]
      - kind: http
        name: weather
        title: Weather
        description: Current weather of a city
        url: http://127.0.0.1:PORT/weather
        bearer_file: TOKEN
        headers: {X-Tenant: acme}
        input_schema: {type: object, properties: {city: {type: string, minLength: 1}}, required: [city], additionalProperties: false}
        output_schema: {type: object, properties: {city: {type: string}, temp: {type: number}}, required: [city, temp]}
      - kind: http
        name: sum
        method: GET
        url: http://127.0.0.1:PORT/sum
        input_schema: {type: object, properties: {a: {type: integer}, b: {type: integer}}, required: [a, b]}
      - {kind: http, name: failing, url: "http://127.0.0.1:PORT/fail", input_schema: {type: object}}
      - {kind: http, name: texty, url: "http://127.0.0.1:PORT/text", input_schema: {type: object}}
      - {kind: http, name: listy, url: "http://127.0.0.1:PORT/array", input_schema: {type: object}}
      - kind: http
        name: wrong_shape
        url: http://127.0.0.1:PORT/wrong-shape
        input_schema: {type: object}
        output_schema: {type: object, properties: {city: {type: string}}}
      - {kind: http, name: slow, url: "http://127.0.0.1:PORT/slow", input_schema: {type: object}, timeout_ms: 300}
      - {kind: http, name: big, url: "http://127.0.0.1:PORT/big", input_schema: {type: object}, max_response_bytes: 1000}
      - {kind: http, name: metadata, url: "http://169.254.169.254/latest/meta-data", input_schema: {type: object}}
      - {kind: http, name: by_name, url: "http://localhost:PORT/array", input_schema: {type: object}}
"#;
    template
        .replace("ALLOW", &allow_loopback.to_string())
        .replace("PORT", &port.to_string())
        .replace("TOKEN", &token_file.display().to_string())
}

async fn setup(allow_loopback: bool) -> (marina_tests::TestApp, Mcp, Arc<AtomicUsize>, tempfile::TempDir) {
    let hits = Arc::new(AtomicUsize::new(0));
    let port = service(hits.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tenant-secret-123\n").unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(&file, config(port, &token, allow_loopback)).unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    (app, s, hits, dir)
}

async fn call(s: &Mcp, id: i64, tool: &str, args: Value) -> Value {
    s.rpc(id, "tools/call", json!({"name": tool, "arguments": args}))
        .await["result"]
        .clone()
}

#[actix_rt::test]
async fn http_tools_are_listed_validated_and_called() {
    let (_app, s, hits, _dir) = setup(true).await;
    let list = s.rpc(1, "tools/list", json!({})).await;
    let weather = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "weather")
        .unwrap()
        .clone();
    assert_eq!(weather["description"], "Current weather of a city");
    assert_eq!(weather["inputSchema"]["required"], json!(["city"]));
    assert_eq!(weather["outputSchema"]["required"], json!(["city", "temp"]));

    let r = call(&s, 2, "weather", json!({"city": "Oslo"})).await;
    assert_eq!(r["isError"], false, "{r}");
    assert_eq!(r["structuredContent"]["city"], "Oslo");
    assert_eq!(r["structuredContent"]["temp"], 21.5);
    assert_eq!(
        serde_json::from_str::<Value>(r["content"][0]["text"].as_str().unwrap()).unwrap(),
        r["structuredContent"]
    );
    // The tenant's credential and headers are sent; nothing of the client's request.
    assert_eq!(r["structuredContent"]["auth"], "Bearer tenant-secret-123");
    assert_eq!(r["structuredContent"]["tenant"], "acme");

    let r = call(&s, 3, "sum", json!({"a": 20, "b": 22})).await;
    assert_eq!(
        r["structuredContent"]["sum"], 42,
        "GET sends the arguments as a query: {r}"
    );

    // Schema-invalid arguments: a tool error naming the problem, and no request is made.
    let before = hits.load(Ordering::SeqCst);
    for bad in [
        json!({}),
        json!({"city": ""}),
        json!({"city": "Oslo", "extra": 1}),
        json!({"city": 7}),
    ] {
        let r = call(&s, 4, "weather", bad.clone()).await;
        assert_eq!(r["isError"], true, "{bad}: {r}");
        assert!(
            r["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("invalid arguments"),
            "{r}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "invalid arguments never reach the service"
    );
}

#[actix_rt::test]
async fn http_tool_failures_are_clear_tool_errors_that_leak_nothing() {
    let (_app, s, _hits, _dir) = setup(true).await;
    let cases = [
        ("failing", "HTTP 500"),
        ("texty", "did not answer with JSON"),
        ("wrong_shape", "does not match the tool's output schema"),
        ("slow", "did not answer within 300 ms"),
        ("big", "more than 1000 bytes"),
    ];
    for (i, (tool, expect)) in cases.into_iter().enumerate() {
        let started = std::time::Instant::now();
        let r = call(&s, i as i64 + 10, tool, json!({})).await;
        assert_eq!(r["isError"], true, "{tool}: {r}");
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(text.contains(expect), "{tool}: {text}");
        assert!(
            !text.contains("secret-xyz"),
            "the upstream's body is never relayed"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{tool} took {:?}",
            started.elapsed()
        );
    }
    // A JSON answer that is not an object is text only (structuredContent must be an object).
    let r = call(&s, 20, "listy", json!({})).await;
    assert_eq!(r["isError"], false);
    assert!(r.get("structuredContent").is_none());
    assert_eq!(r["content"][0]["text"], "[1,2,3]");
}

#[actix_rt::test]
async fn the_ssrf_guard_refuses_internal_addresses_unless_allowed() {
    // Loopback allowed (as in the tests above) — but never the metadata address.
    let (_app, s, _hits, _dir) = setup(true).await;
    let r = call(&s, 1, "metadata", json!({})).await;
    assert_eq!(r["isError"], true);
    assert!(
        r["content"][0]["text"].as_str().unwrap().contains("not allowed"),
        "{r}"
    );
    assert_eq!(
        call(&s, 2, "by_name", json!({})).await["isError"],
        false,
        "localhost resolves to an allowed address"
    );

    // The default policy refuses loopback, by literal address and by name.
    let (_app, s, hits, _dir) = setup(false).await;
    let r = call(&s, 3, "weather", json!({"city": "Oslo"})).await;
    assert_eq!(r["isError"], true);
    assert!(
        r["content"][0]["text"].as_str().unwrap().contains("not allowed"),
        "{r}"
    );
    let r = call(&s, 4, "by_name", json!({})).await;
    assert_eq!(r["isError"], true, "{r}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the service");
}
