//! `tools/call` arguments are checked against the tool's `inputSchema` by Marina, before any
//! tool or upstream sees them: a tool error naming the problems, so a model can correct itself.

use marina_tests::{Mcp, UpstreamPeer, spawn_app_with};
use serde_json::{Value, json};

async fn app(tenant_extra: &str, upstream: &str) -> (marina_tests::TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(
        &file,
        format!(
            "egress: {{allow_loopback: true}}\ntenants:\n  acme:\n{tenant_extra}    upstreams:\n      - {{kind: builtin}}\n{upstream}"
        ),
    )
    .unwrap();
    (spawn_app_with(Some(&file), &[]).await, dir)
}

async fn call(c: &Mcp, tool: &str, args: Value) -> (bool, String) {
    let r = c
        .rpc(1, "tools/call", json!({"name": tool, "arguments": args}))
        .await;
    (
        r["result"]["isError"].as_bool().unwrap_or(false),
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[actix_rt::test]
async fn arguments_are_checked_before_any_tool_or_upstream_sees_them() {
    let upstream = UpstreamPeer::start();
    let (app, _dir) = app(
        "",
        &format!(
            "      - {{kind: mcp, name: conf, url: \"{}\", timeout_ms: 10000}}\n",
            upstream.url
        ),
    )
    .await;
    let c = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let (err, text) = call(&c, "add", json!({"a": "one", "b": 2})).await;
    assert!(err && text.starts_with("invalid arguments: /a:"), "{text}");
    let (err, text) = call(&c, "echo", json!({"text": "x", "extra": true})).await;
    assert!(
        err && text.starts_with("invalid arguments:") && text.contains("extra"),
        "{text}"
    );
    let (err, text) = call(&c, "add", json!({})).await;
    assert!(err && text.contains("\"a\" is a required property"), "{text}");
    // An upstream's tool, by the schema it published: the upstream never gets the call (its own
    // answer would be a validation message of the SDK, or a sampling request).
    let (err, text) = call(&c, "conf.test_sampling", json!({"prompt": 42})).await;
    assert!(err && text.starts_with("invalid arguments: /prompt:"), "{text}");
    // Valid arguments pass.
    assert_eq!(
        call(&c, "add", json!({"a": 1, "b": 2})).await,
        (false, "3".to_owned())
    );
}

#[actix_rt::test]
async fn a_tenant_can_leave_the_check_to_its_tools() {
    let (app, _dir) = app("    validate_arguments: false\n", "").await;
    let c = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let (err, text) = call(&c, "add", json!({"a": "one", "b": 2})).await;
    assert!(
        err && !text.starts_with("invalid arguments:"),
        "the tool's own answer: {text}"
    );
}
