//! Browsers and proxies: CORS preflights and grants per tenant, and `X-Forwarded-Host` believed
//! only from the tenant's trusted proxies.

use marina_auth::{digest, generate_key};
use marina_tests::{Mcp, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn initialize() -> serde_json::Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
}

async fn app() -> (marina_tests::TestApp, tempfile::TempDir, String) {
    let key = generate_key();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(
        &file,
        format!(
            r#"tenants:
  acme:
    allowed_origins: [https://app.acme.example]
    auth:
      api_keys: [{{subject: web, sha256: {}}}]
  behind:
    allowed_hosts: [mcp.example.com]
    trusted_proxies: [127.0.0.0/8]
  direct:
    allowed_hosts: [mcp.example.com]
"#,
            digest(&key)
        ),
    )
    .unwrap();
    (spawn_app_with(Some(&file), &[]).await, dir, key)
}

#[actix_rt::test]
async fn cors_preflights_and_grants_follow_the_tenants_origins() {
    let (app, _dir, key) = app().await;
    let url = app.endpoint("acme");
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(Method::OPTIONS, &url)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, mcp-session-id",
            )
            .send()
    };
    for origin in ["https://app.acme.example", "http://localhost:5173"] {
        let r = preflight(origin).await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{origin}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        let methods = h["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST") && methods.contains("GET") && methods.contains("DELETE"));
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for needed in [
            "authorization",
            "content-type",
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
        ] {
            assert!(allowed.contains(needed), "{needed} in {allowed}");
        }
        let exposed = h["access-control-expose-headers"].to_str().unwrap();
        for needed in ["mcp-session-id", "mcp-protocol-version", "www-authenticate"] {
            assert!(exposed.contains(needed), "{needed} in {exposed}");
        }
    }
    let r = preflight("https://evil.example").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.headers().contains_key("access-control-allow-origin"));

    // Real requests: an allowed origin can read the answer (and the 401's challenge) …
    let c = Mcp::new(&url).with_header("Origin", "https://app.acme.example");
    let r = c.post(&initialize()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.acme.example"
    );
    let r = c
        .clone()
        .bearer(&key)
        .with_header("Origin", "https://app.acme.example")
        .post(&initialize())
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.acme.example"
    );
    assert!(
        r.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("mcp-session-id")
    );
    // … a disallowed one gets 403 and no grant.
    let r = Mcp::new(&url)
        .bearer(&key)
        .with_header("Origin", "https://evil.example")
        .post(&initialize())
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    // The protected-resource metadata is public: any origin may read it.
    let r = http
        .get(format!(
            "{}/.well-known/oauth-protected-resource/t/acme/mcp",
            app.base
        ))
        .header("Origin", "https://elsewhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "acme has no OAuth");
}

#[actix_rt::test]
async fn forwarded_host_is_believed_only_from_trusted_proxies() {
    let (app, _dir, _) = app().await;
    let post = |tenant: &str, host: &str, forwarded: Option<&str>| {
        let mut c = Mcp::new(&app.endpoint(tenant)).with_header("Host", host);
        if let Some(f) = forwarded {
            c = c.with_header("X-Forwarded-Host", f);
        }
        async move { c.post(&initialize()).await.status() }
    };
    // The test client connects from 127.0.0.1, a trusted proxy of `behind` only.
    assert_eq!(
        post("behind", "internal.svc", Some("mcp.example.com")).await,
        StatusCode::OK
    );
    assert_eq!(
        post("behind", "mcp.example.com", Some("evil.example")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("direct", "internal.svc", Some("mcp.example.com")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("direct", "mcp.example.com", Some("evil.example")).await,
        StatusCode::OK
    );
}
