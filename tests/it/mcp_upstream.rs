//! Upstream kind `mcp`: a real MCP server (TypeScript SDK, tests/peers/upstream) behind a tenant's
//! endpoint — tools published under a prefix, calls relayed with their progress, logs and
//! elicitations, failures turned into clear errors.

use std::time::Duration;

use marina_tests::{Mcp, SseEvent, UpstreamPeer, read_events, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn start_app(url: &str, allow_loopback: bool) -> (marina_tests::TestApp, tempfile::TempDir) {
    let upstreams = format!(
        "      - {{kind: builtin, tools: [echo]}}\n      - {{kind: mcp, name: conf, url: \"{url}\", exclude: [json_schema_*], timeout_ms: 10000}}\n"
    );
    start_tenant(&upstreams, allow_loopback).await
}

/// An in-process app with tenant `acme` and these `upstreams` (YAML list items, 6-space indent).
async fn start_tenant(upstreams: &str, allow_loopback: bool) -> (marina_tests::TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    let config = format!(
        "egress:\n  allow_loopback: {allow_loopback}\ntenants:\n  acme:\n    upstreams:\n{upstreams}"
    );
    std::fs::write(&file, config).unwrap();
    (spawn_app_with(Some(&file), &[]).await, dir)
}

fn messages(events: &[SseEvent]) -> Vec<Value> {
    events.iter().filter_map(SseEvent::json).collect()
}

/// Field `field` of every item of list `key` (`resources`, `prompts`, ...) in a list response.
fn listed(response: &Value, key: &str, field: &str) -> Vec<String> {
    response["result"][key]
        .as_array()
        .unwrap_or_else(|| panic!("{response}"))
        .iter()
        .map(|item| item[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Subscribe to `uri` (request id `id`) with the session's GET stream open; the first
/// `notifications/resources/updated` that arrives there.
async fn first_update(s: &Mcp, id: i64, uri: &str) -> Value {
    let stream = s.get(None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(15), |ev| {
        messages(ev)
            .iter()
            .any(|m| m["method"] == "notifications/resources/updated")
    }));
    let r = s.rpc(id, "resources/subscribe", json!({"uri": uri})).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let (events, _) = reader.await.unwrap();
    messages(&events)
        .into_iter()
        .find(|m| m["method"] == "notifications/resources/updated")
        .expect("an update")
}

#[actix_rt::test]
async fn upstream_tools_are_published_called_and_relayed() {
    let upstream = UpstreamPeer::start();
    let (app, _dir) = start_app(&upstream.url, true).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({"elicitation": {}})).await;

    let names = s.tool_names(1).await;
    assert!(
        names.iter().any(|n| n == "echo") && names.iter().any(|n| n == "conf.test_simple_text"),
        "{names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("conf.")).count() >= 10,
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.contains("json_schema")),
        "exclude filter: {names:?}"
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "deterministic order");

    assert_eq!(
        s.call_text(2, "conf.test_simple_text", json!({})).await,
        "This is a simple text response for testing."
    );
    assert_eq!(
        s.call_text(3, "echo", json!({"text": "built-ins still work"}))
            .await,
        "built-ins still work"
    );

    // Progress: relayed on the call's own stream, with the client's token, before the result.
    let (_, msgs) = s
        .exchange(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"conf.test_tool_with_progress","arguments":{},"_meta":{"progressToken":"up-1"}}}))
        .await;
    let progress: Vec<(Value, f64)> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            (
                m["params"]["progressToken"].clone(),
                m["params"]["progress"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        progress,
        [
            (json!("up-1"), 0.0),
            (json!("up-1"), 50.0),
            (json!("up-1"), 100.0)
        ]
    );
    assert_eq!(msgs.last().unwrap()["id"], 4);

    // Logs: relayed as notifications/message.
    let (_, msgs) = s.exchange(&json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"conf.test_tool_with_logging","arguments":{}}})).await;
    let logs: Vec<&Value> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/message")
        .map(|m| &m["params"]["data"])
        .collect();
    assert_eq!(
        logs,
        [
            &json!("Tool execution started"),
            &json!("Tool processing data"),
            &json!("Tool execution completed")
        ]
    );

    // An upstream tool error stays a tool error.
    let r = s
        .rpc(
            6,
            "tools/call",
            json!({"name": "conf.test_error_handling", "arguments": {}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], true, "{r}");

    // Elicitation: the upstream's request reaches the client; the client's answer reaches the upstream.
    let resp = s.post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"conf.test_elicitation","arguments":{"message":"Who are you?"}}})).await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(15), |ev| {
        messages(ev).iter().any(|m| m["id"] == 7)
    }));
    let ask = s
        .wait_for_message("6_0-0", |m| m["method"] == "elicitation/create")
        .await
        .expect("relayed elicitation");
    assert_eq!(ask["params"]["message"], "Who are you?");
    let answer = json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"accept","content":{"username":"ada","email":"ada@example.com"}}});
    assert_eq!(s.post(&answer).await.status(), StatusCode::ACCEPTED);
    let _ = reader.await;
    let result = s
        .wait_for_message("6_0-0", |m| m["id"] == 7)
        .await
        .expect("result");
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("accept") && text.contains("ada@example.com"),
        "{text}"
    );

    let r = s
        .rpc(
            8,
            "tools/call",
            json!({"name": "conf.no_such_tool", "arguments": {}}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602);

    // An upstream that closes its answer stream mid-call (SEP-1699) is resumed with Last-Event-ID.
    let text = s.call_text(11, "conf.test_reconnection", json!({})).await;
    assert!(text.contains("closed mid-call"), "{text}");

    // logging/setLevel applies to upstream logs too (passed on to the upstream session).
    assert_eq!(
        s.rpc(9, "logging/setLevel", json!({"level": "error"})).await["result"],
        json!({})
    );
    let call = json!({"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"conf.test_tool_with_logging","arguments":{}}});
    let (_, msgs) = s.exchange(&call).await;
    assert!(
        msgs.iter().all(|m| m["method"] != "notifications/message"),
        "{msgs:?}"
    );
    let last = msgs.last().unwrap();
    assert!(last["id"] == 10 && last["result"]["content"].is_array(), "{last}");
}

#[actix_rt::test]
async fn a_dead_or_forbidden_upstream_is_a_clear_error_and_hides_nothing_else() {
    let mut upstream = UpstreamPeer::start();
    let (app, _dir) = start_app(&upstream.url, true).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    assert_eq!(
        s.call_text(1, "conf.test_simple_text", json!({})).await,
        "This is a simple text response for testing."
    );
    upstream.stop();
    let r = s
        .rpc(
            2,
            "tools/call",
            json!({"name": "conf.test_simple_text", "arguments": {}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{r}"
    );
    // After repeated failures the upstream is given a rest: calls fail at once, saying so.
    for id in 20..22 {
        s.rpc(
            id,
            "tools/call",
            json!({"name": "conf.test_simple_text", "arguments": {}}),
        )
        .await;
    }
    let r = s
        .rpc(
            22,
            "tools/call",
            json!({"name": "conf.test_simple_text", "arguments": {}}),
        )
        .await;
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("keeps failing"), "{r}");
    assert_eq!(s.call_text(3, "echo", json!({"text": "ok"})).await, "ok");

    // An upstream that is down from the start contributes no tools; the others are listed.
    let fresh = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let started = std::time::Instant::now();
    let names = fresh.tool_names(1).await;
    assert_eq!(names, ["echo"]);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The SSRF guard applies to MCP upstreams too.
    let upstream = UpstreamPeer::start();
    let (app, _dir2) = start_app(&upstream.url, false).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let list = s.rpc(1, "tools/list", json!({})).await;
    assert_eq!(list["result"]["tools"].as_array().unwrap().len(), 1, "{list}");
}

/// Two upstreams of one tenant (the conformance peer and `server-everything`) on a two-node
/// cluster: the upstreams' sampling and elicitation requests reach the client through node A,
/// the client answers through node B, and the answers reach the right upstream.
#[tokio::test]
async fn server_requests_are_relayed_and_answered_through_another_node() {
    let redis = marina_tests::RedisServer::start();
    let conf = UpstreamPeer::start();
    let everything = UpstreamPeer::start_everything();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            "egress:\n  allow_loopback: true\ntenants:\n  demo:\n    upstreams:\n      - {{kind: mcp, name: conf, url: \"{}\"}}\n      - {{kind: mcp, name: ev, url: \"{}\"}}\n",
            conf.url, everything.url
        ),
    )
    .unwrap();
    let a = marina_tests::MarinaProc::start_with_config(&redis.url(), "A", &[], &config);
    let b = marina_tests::MarinaProc::start_with_config(&redis.url(), "B", &[], &config);
    let caps = json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}});
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", caps).await;
    let on_b = on_a.at(&b.endpoint());

    let names = on_b.tool_names(1).await;
    assert!(
        names.iter().any(|n| n == "conf.test_sampling") && names.iter().any(|n| n == "ev.echo"),
        "{names:?}"
    );
    assert_eq!(
        on_a.rpc(
            2,
            "tools/call",
            json!({"name": "ev.echo", "arguments": {"message": "hi"}})
        )
        .await["result"]["content"][0]["text"],
        "Echo: hi"
    );

    // Each upstream asks the client something during a call; the client answers through node B.
    let cases = [
        (
            "conf.test_sampling",
            json!({"prompt": "2+2?"}),
            "sampling/createMessage",
            json!({"role": "assistant", "content": {"type": "text", "text": "four"}, "model": "test-model", "stopReason": "endTurn"}),
            "four",
        ),
        (
            "conf.test_elicitation",
            json!({"message": "Name?"}),
            "elicitation/create",
            json!({"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}),
            "ada@example.com",
        ),
        (
            "ev.trigger-elicitation-request",
            json!({}),
            "elicitation/create",
            json!({"action": "decline"}),
            "declined",
        ),
    ];
    for (i, (tool, args, method, answer, expect)) in cases.into_iter().enumerate() {
        let id = 10 + i as i64;
        let stream = format!("{}_0-0", i + 2); // streams 1 (ev.echo) and up
        let resp = on_a.post(&json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":args}})).await;
        let reader = tokio::spawn(read_events(resp, Duration::from_secs(20), move |ev| {
            messages(ev).iter().any(|m| m["id"] == id)
        }));
        let ask = on_a
            .wait_for_message(&stream, |m| m["method"] == method)
            .await
            .unwrap_or_else(|| panic!("{tool}: no {method}"));
        let reply = json!({"jsonrpc":"2.0","id":ask["id"],"result":answer});
        assert_eq!(on_b.post(&reply).await.status(), StatusCode::ACCEPTED);
        let _ = reader.await;
        let result = on_b
            .wait_for_message(&stream, |m| m["id"] == id)
            .await
            .unwrap_or_else(|| panic!("{tool}: no result"));
        let text = result["result"]["content"].to_string();
        assert!(text.contains(expect), "{tool}: {result}");
    }
}

/// Server-initiated messages of an upstream (its GET stream, held by the session's node) reach the
/// client's GET stream: resource updates after `resources/subscribe`.
#[actix_rt::test]
async fn subscribed_resource_updates_reach_the_client() {
    let upstream = UpstreamPeer::start();
    let (app, _dir) = start_app(&upstream.url, true).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let update = first_update(&s, 1, "test://watched-resource").await;
    assert_eq!(update["params"]["uri"], "test://watched-resource");
    let read = s
        .rpc(2, "resources/read", json!({"uri": "test://watched-resource"}))
        .await;
    assert!(
        read["result"]["contents"][0]["text"]
            .as_str()
            .unwrap()
            .contains("version"),
        "{read}"
    );
    assert_eq!(
        s.rpc(
            3,
            "resources/unsubscribe",
            json!({"uri": "test://watched-resource"})
        )
        .await["result"],
        json!({})
    );
}

/// Two upstreams publishing the same resource URIs: the first (in configuration order) keeps them,
/// the other's are listed as `marina://<upstream>/<uri>`; everything listed is readable, reads
/// reach the upstream named, and results carry the URI the client used.
#[actix_rt::test]
async fn colliding_resource_uris_are_namespaced_and_reach_their_owner() {
    let upstream = UpstreamPeer::start();
    let url = &upstream.url;
    let (app, _dir) = start_tenant(
        &format!(
            "      - {{kind: builtin, tools: [echo]}}\n      - {{kind: mcp, name: conf, url: \"{url}\"}}\n      - {{kind: mcp, name: twin, url: \"{url}\"}}\n      - {{kind: mcp, name: gone, url: \"http://127.0.0.1:1/mcp\", timeout_ms: 2000}}\n"
        ),
        true,
    )
    .await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;

    let uris = listed(&s.rpc(1, "resources/list", json!({})).await, "resources", "uri");
    assert!(uris.contains(&"test://static-text".to_owned()), "{uris:?}");
    assert!(
        uris.contains(&"marina://twin/test://static-text".to_owned()),
        "{uris:?}"
    );
    let mut unique = uris.clone();
    unique.dedup();
    assert_eq!(unique.len(), uris.len(), "no URI listed twice: {uris:?}");

    // Every listed URI is readable, and the contents name it as listed.
    for (i, uri) in uris.iter().enumerate() {
        let r = s.rpc(10 + i as i64, "resources/read", json!({"uri": uri})).await;
        let contents = r["result"]["contents"]
            .as_array()
            .unwrap_or_else(|| panic!("{uri}: {r}"));
        assert!(contents.iter().all(|c| c["uri"] == *uri), "{uri}: {r}");
    }
    let r = s
        .rpc(
            2,
            "resources/read",
            json!({"uri": "marina://twin/test://static-text"}),
        )
        .await;
    assert_eq!(
        r["result"]["contents"][0]["text"], "This is the content of the static text resource.",
        "{r}"
    );

    // Templates collide the same way; a namespaced template still matches its URIs.
    let templates = s.rpc(3, "resources/templates/list", json!({})).await;
    let names = listed(&templates, "resourceTemplates", "uriTemplate");
    assert!(
        names.contains(&"test://template/{id}/data".to_owned())
            && names.contains(&"marina://twin/test://template/{id}/data".to_owned()),
        "{names:?}"
    );
    let r = s
        .rpc(
            4,
            "resources/read",
            json!({"uri": "marina://twin/test://template/7/data"}),
        )
        .await;
    assert_eq!(
        r["result"]["contents"][0]["uri"], "marina://twin/test://template/7/data",
        "{r}"
    );

    // Updates of a resource subscribed to under its namespaced URI carry that URI.
    let watched = "marina://twin/test://watched-resource";
    let update = first_update(&s, 7, watched).await;
    assert_eq!(update["params"]["uri"], watched);
    s.rpc(8, "resources/unsubscribe", json!({"uri": watched})).await;

    // An explicit `marina://<upstream>/` address goes to that upstream, even one that is down.
    let r = s
        .rpc(
            5,
            "resources/read",
            json!({"uri": "marina://gone/test://static-text"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("gone"), "{r}");
    // An unknown upstream name is just an unknown URI.
    let r = s
        .rpc(
            6,
            "resources/read",
            json!({"uri": "marina://nobody/test://static-text"}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
    app.shutdown().await;
}

/// `notifications/roots/list_changed` from the client reaches the upstream, which asks for the
/// roots again; the new list is what its tool then reports.
#[actix_rt::test]
async fn root_list_changes_reach_the_upstream() {
    let everything = UpstreamPeer::start_everything();
    let (app, _dir) = start_tenant(
        &format!("      - {{kind: mcp, name: ev, url: \"{}\"}}\n", everything.url),
        true,
    )
    .await;
    let s = Mcp::connect(
        &app.endpoint("acme"),
        "2025-11-25",
        json!({"roots": {"listChanged": true}}),
    )
    .await;
    // Listing tools starts the upstream session; the upstream then asks for the roots.
    assert!(s.tool_names(1).await.iter().any(|n| n == "ev.get-roots-list"));
    let answer = |ask: &Value, roots: Value| json!({"jsonrpc":"2.0","id":ask["id"],"result":{"roots":roots}});
    let first = s
        .wait_for_message("0_0-0", |m| m["method"] == "roots/list")
        .await
        .expect("the upstream asks for the roots");
    let one = json!([{"uri": "file:///work/one", "name": "one"}]);
    assert_eq!(s.post(&answer(&first, one)).await.status(), StatusCode::ACCEPTED);

    let note = json!({"jsonrpc":"2.0","method":"notifications/roots/list_changed"});
    assert_eq!(s.post(&note).await.status(), StatusCode::ACCEPTED);
    let second = s
        .wait_for_message("0_0-0", |m| m["method"] == "roots/list" && m["id"] != first["id"])
        .await
        .expect("the upstream asks again after roots/list_changed");
    let two = json!([{"uri": "file:///work/one", "name": "one"}, {"uri": "file:///work/two", "name": "two"}]);
    assert_eq!(s.post(&answer(&second, two)).await.status(), StatusCode::ACCEPTED);

    // The upstream now knows both roots (it stores them once the answer arrives).
    let mut text = String::new();
    for attempt in 0..20 {
        text = s.call_text(20 + attempt, "ev.get-roots-list", json!({})).await;
        if text.contains("file:///work/two") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("file:///work/two"), "{text}");
    app.shutdown().await;
}

/// An upstream that withdraws its own request to the client (`notifications/cancelled`, here on a
/// timeout) has it withdrawn from the client too, under the id the client knows; the call goes on
/// while the client has not answered, and ends with the upstream's result.
#[actix_rt::test]
async fn an_upstream_withdrawing_its_request_withdraws_it_from_the_client() {
    let upstream = UpstreamPeer::start();
    let (app, _dir) = start_app(&upstream.url, true).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({"elicitation": {}})).await;
    let (_, msgs) = s
        .exchange(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"conf.marina_elicitation_withdrawn","arguments":{"timeout_ms":300}}}))
        .await;
    let ask = msgs
        .iter()
        .position(|m| m["method"] == "elicitation/create")
        .unwrap_or_else(|| panic!("{msgs:?}"));
    let withdrawn = msgs
        .iter()
        .position(|m| m["method"] == "notifications/cancelled")
        .unwrap_or_else(|| panic!("{msgs:?}"));
    assert_eq!(
        msgs[withdrawn]["params"]["requestId"], msgs[ask]["id"],
        "{msgs:?}"
    );
    let result = msgs.len() - 1;
    assert!(ask < withdrawn && withdrawn < result, "{msgs:?}");
    assert_eq!(msgs[result]["id"], 1);
    let text = msgs[result]["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("withdrawn"), "{msgs:?}");
    // The client's late answer is accepted and goes nowhere.
    let late = json!({"jsonrpc":"2.0","id":msgs[ask]["id"],"result":{"action":"decline"}});
    assert_eq!(s.post(&late).await.status(), StatusCode::ACCEPTED);
    app.shutdown().await;
}

/// An upstream's `tools/list_changed` and `prompts/list_changed` (sent on its GET stream) reach
/// the client, and the aggregated lists — and what is callable — follow the change.
#[actix_rt::test]
async fn upstream_list_changes_reach_the_client_and_the_lists_follow() {
    let upstream = UpstreamPeer::start();
    let (app, _dir) = start_app(&upstream.url, true).await;
    let s = Mcp::connect(&app.endpoint("acme"), "2025-11-25", json!({})).await;
    let prompts = |r: Value| listed(&r, "prompts", "name");
    assert!(!s.tool_names(1).await.iter().any(|n| n == "conf.marina_extra"));
    assert!(!prompts(s.rpc(2, "prompts/list", json!({})).await).contains(&"conf.marina_extra_prompt".into()));

    let stream = s.get(None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(15), |ev| {
        let got = messages(ev);
        [
            "notifications/tools/list_changed",
            "notifications/prompts/list_changed",
        ]
        .iter()
        .all(|method| got.iter().any(|m| m["method"] == *method))
    }));
    assert_eq!(
        s.call_text(3, "conf.marina_toggle_extra", json!({})).await,
        "extra on"
    );
    let (events, _) = reader.await.unwrap();
    let got = messages(&events);
    assert!(
        got.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed")
            && got
                .iter()
                .any(|m| m["method"] == "notifications/prompts/list_changed"),
        "{got:?}"
    );

    assert!(s.tool_names(4).await.iter().any(|n| n == "conf.marina_extra"));
    assert_eq!(s.call_text(5, "conf.marina_extra", json!({})).await, "extra");
    assert!(prompts(s.rpc(6, "prompts/list", json!({})).await).contains(&"conf.marina_extra_prompt".into()));
    app.shutdown().await;
}
