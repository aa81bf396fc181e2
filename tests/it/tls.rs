//! TLS served by Marina itself (rustls), for deployments without a TLS proxy: HTTPS with the
//! configured certificate, `Strict-Transport-Security` on every answer, nothing in plain HTTP.

use marina_tests::spawn_app;
use reqwest::StatusCode;
use serde_json::json;

#[actix_rt::test]
async fn marina_serves_https_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let app = spawn_app(&[
        ("server.tls.cert_file", cert_file.to_str().unwrap()),
        ("server.tls.key_file", key_file.to_str().unwrap()),
    ])
    .await;
    assert!(app.base.starts_with("https://"), "{}", app.base);
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = client
        .post(app.endpoint("demo"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert!(r.headers().contains_key("mcp-session-id"));
    // A client that does not trust the certificate gets nowhere; plain HTTP gets no answer.
    assert!(reqwest::get(format!("{}/healthz", app.base)).await.is_err());
    let plain = app.base.replacen("https://", "http://", 1);
    let r = reqwest::get(format!("{plain}/healthz")).await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
}

#[test]
fn a_certificate_without_its_key_is_a_configuration_error() {
    let out = std::process::Command::new(marina_tests::marina_bin())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("MARINA__SERVER__TLS__CERT_FILE", "/nonexistent/cert.pem")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("go together"));
}
