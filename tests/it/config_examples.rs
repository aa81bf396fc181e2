//! Every configuration example in docs/ loads (so the documentation stays true).

use std::collections::HashMap;
use std::path::PathBuf;

#[test]
fn the_documented_example_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/marina.yaml");
    let s = marina_core::settings::load(Some(&path), Some(HashMap::new()), &[])
        .expect("docs/examples/marina.yaml");
    assert_eq!(s.tenants.len(), 2);
    assert_eq!(s.tenants["acme"].allowed_origins, ["https://app.acme.example"]);
    assert_eq!(s.tenants["acme"].limits.max_body_bytes, 262_144);
    assert_eq!(s.tenants["acme"].upstreams.len(), 2);
    assert_eq!(s.sessions.lease_ttl_ms, 3000);
    assert_eq!(s.server.public_url, "https://mcp.example.com");
    let keys = &s.tenants["acme"]
        .auth
        .as_ref()
        .expect("acme authenticates")
        .api_keys;
    assert_eq!(keys[0].subject, "ci-bot");
    assert_eq!(keys[0].roles, ["operator"]);
    assert!(keys[0].expires.is_some());
    // Its bind is public, so every tenant must authenticate: the example must pass that check.
    marina_gateway::startup::check_open_tenants(&s).expect("no open tenant on a public bind");
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"))
            .unwrap();
    let example = std::fs::read_to_string(&path).unwrap();
    assert!(
        doc.contains(&example),
        "docs/configuration.md and docs/examples/marina.yaml differ"
    );
}

#[test]
fn malformed_api_keys_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.yaml");
    for (yaml, expect) in [
        ("{subject: a, sha256: abc}", "64 hex digits"),
        (
            "{subject: '', sha256: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}",
            "subject",
        ),
        (
            "{subject: a, sha256: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', expires: tomorrow}",
            "RFC 3339",
        ),
        (
            "{subject: a, sha256: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', role: [x]}",
            "role",
        ),
    ] {
        std::fs::write(
            &f,
            format!("tenants:\n  a:\n    auth:\n      api_keys:\n        - {yaml}\n"),
        )
        .unwrap();
        let err = marina_core::settings::load(Some(&f), Some(HashMap::new()), &[]).unwrap_err();
        assert!(err.to_string().contains(expect), "{yaml}: {err}");
    }
    for (oauth, expect) in [
        ("{issuer: 'http://idp.example.com'}", "https"),
        ("{issuer: 'https://idp.example.com?x=1'}", "without query"),
        (
            "{issuer: 'https://idp.example.com', required_scopes: ['a b']}",
            "scope tokens",
        ),
        ("{issuer: 'https://idp.example.com', jwks: x}", "jwks"),
    ] {
        std::fs::write(&f, format!("tenants:\n  a:\n    auth:\n      oauth: {oauth}\n")).unwrap();
        let err = marina_core::settings::load(Some(&f), Some(HashMap::new()), &[]).unwrap_err();
        assert!(err.to_string().contains(expect), "{oauth}: {err}");
    }
    std::fs::write(
        &f,
        "tenants:\n  a:\n    trusted_proxies: [10.0.0.0/8, nonsense]\n",
    )
    .unwrap();
    let err = marina_core::settings::load(Some(&f), Some(HashMap::new()), &[]).unwrap_err();
    assert!(err.to_string().contains("\"nonsense\" is not a CIDR"), "{err}");
    std::fs::write(&f, "tenants:\n  a:\n    auth: {anonymus: true}\n").unwrap();
    let err = marina_core::settings::load(Some(&f), Some(HashMap::new()), &[]).unwrap_err();
    assert!(err.to_string().contains("anonymus"), "typos are refused: {err}");
}

#[test]
fn upstream_typos_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.yaml");
    std::fs::write(
        &f,
        "tenants:\n  a:\n    upstreams:\n      - {kind: http, name: t, url: 'http://x.example', input_schema: {type: object}, timout_ms: 5}\n",
    )
    .unwrap();
    let err = marina_core::settings::load(Some(&f), Some(HashMap::new()), &[]).unwrap_err();
    assert!(err.to_string().contains("timout_ms"), "{err}");
}

#[actix_rt::test]
async fn invalid_upstreams_stop_the_node_before_it_binds() {
    let dir = tempfile::tempdir().unwrap();
    for (case, yaml) in [
        (
            "duplicate names",
            "- {kind: builtin, tools: [echo]}\n      - {kind: http, name: echo, url: 'http://x.example', input_schema: {type: object}}",
        ),
        (
            "bad tool name",
            "- {kind: http, name: 'has space', url: 'http://x.example', input_schema: {type: object}}",
        ),
        (
            "schema not an object",
            "- {kind: http, name: t, url: 'http://x.example', input_schema: {type: string}}",
        ),
        (
            "invalid schema",
            "- {kind: http, name: t, url: 'http://x.example', input_schema: {type: object, minProperties: -1}}",
        ),
        (
            "bad url",
            "- {kind: http, name: t, url: 'ftp://x.example', input_schema: {type: object}}",
        ),
        (
            "missing secret",
            "- {kind: http, name: t, url: 'http://x.example', input_schema: {type: object}, bearer_file: /nonexistent/token}",
        ),
    ] {
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, format!("tenants:\n  a:\n    upstreams:\n      {yaml}\n")).unwrap();
        let s = marina_core::settings::load(
            Some(&f),
            Some(HashMap::new()),
            &[("server.bind", "127.0.0.1:0".into())],
        )
        .unwrap();
        assert!(
            marina_gateway::Application::build(s).await.is_err(),
            "{case} must be refused"
        );
    }
}

#[test]
fn the_binary_exits_64_on_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(&f, "tenants:\n  a:\n    upstreams:\n      - {kind: http, name: 'bad name', url: 'http://x.example', input_schema: {type: object}}\n").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(marina_tests::marina_bin())
            .args(args)
            .output()
            .expect("run marina")
    };
    let out = run(&["serve", "--bind", "127.0.0.1:0", "--config", f.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad name"));
    let out = run(&["serve", "--bind", "not-an-address"]);
    assert_eq!(out.status.code(), Some(64));
}
