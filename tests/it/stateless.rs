//! MCP 2026-07-28 (the stateless era) beside the sessionful era on one endpoint: the per-request
//! era decision, `server/discover`, per-request `_meta`, the routing headers, and tools served
//! with the same authentication, policy and checks as in a session.

use std::time::Duration;

use marina_auth::{digest, generate_key};
use marina_tests::{MarinaProc, Mcp, RedisServer, read_events, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

/// A stateless request's body: `params` with the request's `_meta`.
fn body(id: i64, method: &str, mut params: Value, meta: Value) -> Value {
    let mut m = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "marina-tests", "version": "0"},
    });
    for (k, v) in meta.as_object().into_iter().flatten() {
        m[k] = v.clone();
    }
    // Merged with what the params' own `_meta` holds (a progress token).
    for (k, v) in params
        .get("_meta")
        .and_then(Value::as_object)
        .cloned()
        .into_iter()
        .flatten()
    {
        m[k] = v;
    }
    params["_meta"] = m;
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// POST a stateless request with its routing headers (`name`: `Mcp-Name`), plus `extra` headers.
async fn post(url: &str, msg: &Value, name: Option<&str>, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", msg["method"].as_str().unwrap());
    if let Some(n) = name {
        r = r.header("mcp-name", n);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    r.json(msg).send().await.unwrap()
}

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    config_with(dir, "", extra)
}

/// A configuration with the stateless era on, more `server` fields (`, k: v`) and `extra`.
fn config_with(dir: &std::path::Path, server: &str, extra: &str) -> std::path::PathBuf {
    let f = dir.join("marina.yaml");
    std::fs::write(&f, format!("server: {{stateless_era: true{server}}}\n{extra}")).unwrap();
    f
}

#[actix_rt::test]
async fn server_discover_and_tools_are_served_statelessly_beside_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(Some(&config(dir.path(), "")), &[]).await;
    let url = format!("{}/t/demo/mcp", app.base);

    // server/discover: versions of both eras, capabilities, identity, cache hints.
    let (status, d) =
        json_of(post(&url, &body(1, "server/discover", json!({}), json!({})), None, &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let r = &d["result"];
    assert_eq!(r["resultType"], "complete");
    let versions = r["supportedVersions"].as_array().unwrap();
    assert_eq!(versions[0], MODERN);
    assert!(versions.contains(&json!("2025-11-25")));
    assert!(r["capabilities"]["tools"].is_object());
    assert_eq!(r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "marina");
    assert!(r["ttlMs"].as_u64().is_some());
    assert_eq!(r["cacheScope"], "public");

    // tools/list and tools/call without a session.
    let (status, l) =
        json_of(post(&url, &body(2, "tools/list", json!({}), json!({})), None, &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{l}");
    let names: Vec<&str> = l["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"echo") && names.contains(&"add"), "{names:?}");
    assert_eq!(l["result"]["resultType"], "complete");
    assert_eq!(
        l["result"]["cacheScope"], "public",
        "no policy: the same list for everyone"
    );
    let call = body(
        3,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 20, "b": 22}}),
        json!({}),
    );
    let (status, c) = json_of(post(&url, &call, Some("add"), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["result"]["content"][0]["text"], "42");
    assert_eq!(c["result"]["resultType"], "complete");
    // Invalid arguments: a tool error, as in a session.
    let bad = body(
        4,
        "tools/call",
        json!({"name": "add", "arguments": {"a": "x"}}),
        json!({}),
    );
    let (_, c) = json_of(post(&url, &bad, Some("add"), &[]).await).await;
    assert_eq!(c["result"]["isError"], true, "{c}");

    // Progress and log messages on the request's own stream, then its result.
    let count = body(
        5,
        "tools/call",
        json!({"name": "countdown", "arguments": {"steps": 3, "interval_ms": 0}, "_meta": {"progressToken": "p1"}}),
        json!({}),
    );
    let r = post(&url, &count, Some("countdown"), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (events, ended) = read_events(r, Duration::from_secs(10), |_| false).await;
    assert!(ended, "the stream ends with the result");
    let msgs: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    assert!(
        msgs.iter()
            .filter(|m| m["method"] == "notifications/progress")
            .count()
            >= 3,
        "{msgs:?}"
    );
    assert_eq!(msgs.last().unwrap()["id"], 5);
    assert!(
        events.iter().all(|e| e.id.is_none()),
        "no event ids: no resumption in 2026-07-28"
    );
    let log = |id: i64, meta: Value| {
        body(
            id,
            "tools/call",
            json!({"name": "log", "arguments": {"level": "warning", "message": "careful"}}),
            meta,
        )
    };
    let r = post(
        &url,
        &log(6, json!({"io.modelcontextprotocol/logLevel": "info"})),
        Some("log"),
        &[],
    )
    .await;
    let (events, _) = read_events(r, Duration::from_secs(10), |_| false).await;
    let msgs: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    assert!(
        msgs.iter()
            .any(|m| m["method"] == "notifications/message" && m["params"]["level"] == "warning")
    );
    // Without a log level in `_meta`, no log messages at all.
    let (_, c) = json_of(post(&url, &log(7, json!({})), Some("log"), &[]).await).await;
    assert!(c["result"].is_object(), "a plain JSON answer: {c}");

    // The sessionful era on the same endpoint is untouched.
    let mcp = Mcp::connect(&url, "2025-11-25", json!({})).await;
    assert_eq!(mcp.call_text(1, "add", json!({"a": 1, "b": 2})).await, "3");
}

#[actix_rt::test]
async fn bad_versions_headers_and_methods_get_the_errors_of_2026_07_28() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_with(Some(&config(dir.path(), "")), &[]).await;
    let url = format!("{}/t/demo/mcp", app.base);
    let call = body(
        1,
        "tools/call",
        json!({"name": "echo", "arguments": {"text": "hi"}}),
        json!({}),
    );

    // An unknown version: -32022 with what is supported.
    let mut old = call.clone();
    old["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("1900-01-01");
    let (status, e) = json_of(
        reqwest::Client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "1900-01-01")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .json(&old)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], -32022, "{e}");
    assert_eq!(e["error"]["data"]["requested"], "1900-01-01");
    assert!(
        e["error"]["data"]["supported"]
            .as_array()
            .unwrap()
            .contains(&json!(MODERN))
    );

    // Every request carries `_meta` with a version and capabilities (discover too): 400, -32602.
    let mut bare = call.clone();
    bare["params"].as_object_mut().unwrap().remove("_meta");
    let mut no_caps = call.clone();
    no_caps["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let mut bare_discover = body(9, "server/discover", json!({}), json!({}));
    bare_discover["params"].as_object_mut().unwrap().remove("_meta");
    for (what, msg, name) in [
        ("no _meta", &bare, Some("echo")),
        ("no capabilities", &no_caps, Some("echo")),
        ("discover without _meta", &bare_discover, None),
    ] {
        let (status, e) = json_of(post(&url, msg, name, &[]).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {e}");
        assert_eq!(e["error"]["code"], -32602, "{what}: {e}");
    }
    // A header that contradicts `_meta` is a mismatch, whatever the version says.
    let (status, e) = json_of(
        reqwest::Client::new()
            .post(&url)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", MODERN)
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .json(&old)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], -32020, "{e}");

    // Routing headers: missing, contradicting, repeated → 400 HeaderMismatch.
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        ("no Mcp-Name", vec![], None),
        ("another Mcp-Name", vec![], Some("add")),
        ("Mcp-Name twice", vec![("mcp-name", "echo")], Some("echo")),
        (
            "another Mcp-Method",
            vec![("mcp-method", "tools/list")],
            Some("echo"),
        ),
    ];
    for (what, extra, name) in cases {
        let (status, e) = json_of(post(&url, &call, name, &extra).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {e}");
        assert_eq!(e["error"]["code"], -32020, "{what}: {e}");
        assert_eq!(e["id"], 1, "{what}");
    }
    // The Base64 form of Mcp-Name is decoded before comparing.
    let (status, e) = json_of(post(&url, &call, Some("=?base64?ZWNobw==?="), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{e}");

    // Methods of the sessionful era (initialize too, when it declares 2026-07-28), and unknown
    // ones: 404 with -32601.
    for method in ["initialize", "ping", "logging/setLevel", "no/such"] {
        let (status, e) = json_of(post(&url, &body(2, method, json!({}), json!({})), None, &[]).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {e}");
        assert_eq!(e["error"]["code"], -32601, "{method}");
    }

    // A sessionful revision in `_meta` without a session stays in the sessionful era: 400.
    let mut legacy = call.clone();
    legacy["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2025-11-25");
    let r = reqwest::Client::new()
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&legacy)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[actix_rt::test]
async fn a_stateless_request_is_authenticated_and_filtered_like_a_sessionful_one() {
    let dir = tempfile::tempdir().unwrap();
    let (viewer, operator) = (generate_key(), generate_key());
    let tenant = format!(
        "tenants:\n  acme:\n    auth:\n      api_keys:\n        - {{subject: vera, sha256: {}, roles: [viewer]}}\n        - {{subject: otto, sha256: {}, roles: [operator]}}\n    rbac:\n      policy: |\n        p, viewer, tool:echo, call, allow\n        p, operator, tool:*, call, allow\n    upstreams: [{{kind: builtin}}]\n",
        digest(&viewer),
        digest(&operator)
    );
    let app = spawn_app_with(Some(&config(dir.path(), &tenant)), &[]).await;
    let url = format!("{}/t/acme/mcp", app.base);
    let list = body(1, "tools/list", json!({}), json!({}));
    let add = body(
        2,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 1}}),
        json!({}),
    );

    // No credentials: 401, as on the sessionful path; discover too.
    assert_eq!(
        post(&url, &list, None, &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let discover = body(0, "server/discover", json!({}), json!({}));
    assert_eq!(
        post(&url, &discover, None, &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The viewer sees and may call only echo; a denied tool looks like no tool at all.
    let as_viewer = [("x-api-key", viewer.as_str())];
    let (_, l) = json_of(post(&url, &list, None, &as_viewer).await).await;
    let names: Vec<&str> = l["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);
    assert_eq!(
        l["result"]["cacheScope"], "private",
        "the list depends on who asks"
    );
    let (status, e) = json_of(post(&url, &add, Some("add"), &as_viewer).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(e["error"]["code"], -32602);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("unknown tool"),
        "{e}"
    );

    // The operator may.
    let as_operator = [("x-api-key", operator.as_str())];
    let (_, c) = json_of(post(&url, &add, Some("add"), &as_operator).await).await;
    assert_eq!(c["result"]["content"][0]["text"], "2", "{c}");
}

#[tokio::test]
async fn a_principal_shares_one_upstream_session_across_nodes() {
    let redis = RedisServer::start();
    let peer = marina_tests::UpstreamPeer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        dir.path(),
        &format!(
            "egress: {{allow_loopback: true}}\ntenants:\n  demo:\n    upstreams: [{{kind: mcp, name: conf, url: \"{}\"}}]\n",
            peer.url
        ),
    );
    let a = MarinaProc::start_with_config(&redis.url(), "a", &[], &file);
    let b = MarinaProc::start_with_config(&redis.url(), "b", &[], &file);
    let (_, l) = json_of(
        post(
            &a.endpoint(),
            &body(1, "tools/list", json!({}), json!({})),
            None,
            &[],
        )
        .await,
    )
    .await;
    let tool = l["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .find(|n| n == "conf.test_simple_text")
        .expect("the upstream's tools are listed");
    let call = body(2, "tools/call", json!({"name": tool, "arguments": {}}), json!({}));
    let upstream_session = || async {
        let mut c = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*:pu:*")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(
            keys.len(),
            1,
            "one principal, one set of upstream sessions: {keys:?}"
        );
        let v: String = redis::cmd("HGET")
            .arg(&keys[0])
            .arg("conf")
            .query_async(&mut c)
            .await
            .unwrap();
        v
    };
    let (_, c) = json_of(post(&a.endpoint(), &call, Some(&tool), &[]).await).await;
    assert!(c["result"]["content"].is_array(), "{c}");
    let first = upstream_session().await;
    // Through the other node: the same upstream session, no new initialize.
    let (_, c) = json_of(post(&b.endpoint(), &call, Some(&tool), &[]).await).await;
    assert!(c["result"]["content"].is_array(), "{c}");
    assert_eq!(upstream_session().await, first);

    // The upstream loses that session. Both nodes keep a copy of it (`cache.rs`): the node that
    // finds out first makes a new one; the other, finding out next, continues that one rather
    // than making a third.
    let lost: Value = serde_json::from_str(&first).unwrap();
    let deleted = reqwest::Client::new()
        .delete(&peer.url)
        .header("mcp-session-id", lost["id"].as_str().unwrap())
        .header("mcp-protocol-version", lost["protocol_version"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let (_, c) = json_of(post(&b.endpoint(), &call, Some(&tool), &[]).await).await;
    assert!(c["result"]["content"].is_array(), "{c}");
    let second = upstream_session().await;
    assert_ne!(second, first, "a new upstream session");
    let (_, c) = json_of(post(&a.endpoint(), &call, Some(&tool), &[]).await).await;
    assert!(c["result"]["content"].is_array(), "{c}");
    assert_eq!(
        upstream_session().await,
        second,
        "node a continues node b's new session"
    );
    let first = second;

    // Resources and prompts of the upstream, statelessly, with cache hints.
    let (_, d) = json_of(
        post(
            &b.endpoint(),
            &body(3, "server/discover", json!({}), json!({})),
            None,
            &[],
        )
        .await,
    )
    .await;
    assert!(d["result"]["capabilities"]["resources"].is_object(), "{d}");
    let (_, r) = json_of(
        post(
            &b.endpoint(),
            &body(4, "resources/list", json!({}), json!({})),
            None,
            &[],
        )
        .await,
    )
    .await;
    let uris: Vec<&str> = r["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["uri"].as_str())
        .collect();
    assert!(uris.contains(&"test://static-text"), "{r}");
    assert_eq!(r["result"]["cacheScope"], "public");
    assert_eq!(r["result"]["resultType"], "complete");
    let read = body(
        5,
        "resources/read",
        json!({"uri": "test://static-text"}),
        json!({}),
    );
    let (status, r) = json_of(post(&a.endpoint(), &read, Some("test://static-text"), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["result"]["contents"][0]["uri"], "test://static-text");
    assert!(r["result"]["ttlMs"].as_u64().is_some());
    let (_, p) = json_of(
        post(
            &a.endpoint(),
            &body(6, "prompts/list", json!({}), json!({})),
            None,
            &[],
        )
        .await,
    )
    .await;
    let prompt = p["result"]["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["name"].as_str())
        .find(|n| n.ends_with("test_simple_prompt"))
        .unwrap_or_else(|| panic!("{p}"))
        .to_owned();
    let get = body(7, "prompts/get", json!({"name": prompt}), json!({}));
    let (status, g) = json_of(post(&b.endpoint(), &get, Some(&prompt), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert!(g["result"]["messages"].is_array(), "{g}");
    // Subscriptions of the sessionful era are gone in 2026-07-28.
    let sub = body(
        8,
        "resources/subscribe",
        json!({"uri": "test://static-text"}),
        json!({}),
    );
    assert_eq!(
        post(&a.endpoint(), &sub, None, &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(upstream_session().await, first, "still the one upstream session");
}

#[tokio::test]
async fn subscriptions_listen_hears_a_change_made_through_another_node() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let file = config(
        dir.path(),
        &format!(
            "admin:\n  api_keys:\n    - {{subject: ops, sha256: {}}}\n",
            digest(&admin_key)
        ),
    );
    let a = MarinaProc::start_with_config(&redis.url(), "a", &[], &file);
    let b = MarinaProc::start_with_config(&redis.url(), "b", &[], &file);
    let http = reqwest::Client::new();
    let doc = json!({"auth": {"anonymous": true}, "upstreams": [{"kind": "builtin"}],
        "rbac": {"policy": "p, anonymous, tool:echo, call, allow"}});
    let r = http
        .put(format!("{}/tenants/live", b.admin()))
        .bearer_auth(&admin_key)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let url_a = format!("{}/t/live/mcp", a.base());
    let discover = body(0, "server/discover", json!({}), json!({}));
    for _ in 0..200 {
        if post(&url_a, &discover, None, &[]).await.status() == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A listener on node A for tools and prompts (this tenant has no prompts: not honored).
    let listen = body(
        5,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "promptsListChanged": true}}),
        json!({}),
    );
    let stream = post(&url_a, &listen, None, &[]).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let sub_id = listen["id"].clone();

    // A policy change through node B.
    let change = async {
        // (After the acknowledgment has been read, below.)
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = http
            .patch(format!("{}/tenants/live", b.admin()))
            .bearer_auth(&admin_key)
            .header("content-type", "application/merge-patch+json")
            .body(json!({"rbac": {"policy": "p, anonymous, tool:*, call, allow"}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    };
    let read = read_events(stream, Duration::from_secs(10), |ev| {
        ev.iter()
            .filter_map(|e| e.json())
            .any(|m| m["method"] == "notifications/tools/list_changed")
    });
    let ((events, _), ()) = tokio::join!(read, change);
    let msgs: Vec<Value> = events.iter().filter_map(|e| e.json()).collect();
    assert_eq!(
        msgs[0]["method"], "notifications/subscriptions/acknowledged",
        "{msgs:?}"
    );
    assert_eq!(
        msgs[0]["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    for m in &msgs {
        assert_eq!(
            m["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], sub_id,
            "{m}"
        );
    }
    assert!(
        msgs.iter()
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "{msgs:?}"
    );
    assert!(
        !msgs
            .iter()
            .any(|m| m["method"] == "notifications/prompts/list_changed")
    );

    // The tenant deleted: the listener ends gracefully, with a response.
    let stream = post(&url_a, &listen, None, &[]).await;
    let delete = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = http
            .delete(format!("{}/tenants/live", b.admin()))
            .bearer_auth(&admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    };
    let ((events, ended), ()) = tokio::join!(read_events(stream, Duration::from_secs(10), |_| false), delete);
    assert!(ended, "the stream ends");
    let last = events.iter().filter_map(|e| e.json()).next_back().unwrap();
    assert_eq!(last["id"], sub_id);
    assert_eq!(last["result"]["resultType"], "complete");
    assert_eq!(
        last["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        sub_id
    );
}

#[tokio::test]
async fn multi_round_trip_requests_are_sealed_bound_single_use_and_complete_on_any_node() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (generate_key(), generate_key());
    let file = config_with(
        dir.path(),
        ", request_state_ttl_ms: 1500",
        &format!(
            "tenants:\n  acme:\n    auth:\n      api_keys:\n        - {{subject: alice, sha256: {}}}\n        - {{subject: bob, sha256: {}}}\n    upstreams: [{{kind: builtin}}]\n",
            digest(&alice),
            digest(&bob)
        ),
    );
    let a = MarinaProc::start_with_config(&redis.url(), "a", &[], &file);
    let b = MarinaProc::start_with_config(&redis.url(), "b", &[], &file);
    let (url_a, url_b) = (
        format!("{}/t/acme/mcp", a.base()),
        format!("{}/t/acme/mcp", b.base()),
    );
    let as_alice = [("x-api-key", alice.as_str())];
    let elicit = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let ask = |id: i64, extra: Value| {
        let mut params = json!({"name": "confirm", "arguments": {"question": "Proceed?"}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            params[k] = v.clone();
        }
        body(id, "tools/call", params, elicit.clone())
    };

    // A client that did not declare elicitation cannot be asked: 400, -32021.
    let mut undeclared = ask(0, json!({}));
    undeclared["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let (status, e) = json_of(post(&url_a, &undeclared, Some("confirm"), &as_alice).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], -32021, "{e}");
    assert_eq!(
        e["error"]["data"]["requiredCapabilities"],
        json!({"elicitation": {}})
    );

    // Round one on node A: the question, and a sealed state.
    let (status, r) = json_of(post(&url_a, &ask(1, json!({})), Some("confirm"), &as_alice).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let result = &r["result"];
    assert_eq!(result["resultType"], "input_required", "{r}");
    assert!(
        result.get("ttlMs").is_none(),
        "an interim result is not cacheable"
    );
    let (key, question) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(question["method"], "elicitation/create");
    assert_eq!(question["params"]["message"], "Proceed?");
    let state = result["requestState"].as_str().unwrap().to_owned();
    let answer = json!({ key.as_str(): {"action": "accept", "content": {"answer": "yes"}} });
    let retry = |id: i64, state: &str| ask(id, json!({"inputResponses": answer, "requestState": state}));

    // Attacks, each refused without using the state up.
    let refused = |r: &Value| {
        r["error"]["code"] == -32602
            && r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("requestState")
    };
    let mut tampered = state.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (_, r) = json_of(post(&url_b, &retry(2, &tampered), Some("confirm"), &as_alice).await).await;
    assert!(refused(&r), "tampered: {r}");
    let (_, r) = json_of(
        post(
            &url_b,
            &retry(3, &state),
            Some("confirm"),
            &[("x-api-key", bob.as_str())],
        )
        .await,
    )
    .await;
    assert!(refused(&r), "another principal's: {r}");
    let mut other_args = retry(4, &state);
    other_args["params"]["arguments"]["question"] = json!("Delete everything?");
    let (_, r) = json_of(post(&url_b, &other_args, Some("confirm"), &as_alice).await).await;
    assert!(refused(&r), "other arguments: {r}");
    let mut other_tool = retry(5, &state);
    other_tool["params"]["name"] = json!("echo");
    other_tool["params"]["arguments"] = json!({"text": "Proceed?"});
    let (_, r) = json_of(post(&url_b, &other_tool, Some("echo"), &as_alice).await).await;
    assert!(refused(&r), "another tool: {r}");

    // The retry with the answer on node B completes the call.
    let (_, r) = json_of(post(&url_b, &retry(6, &state), Some("confirm"), &as_alice).await).await;
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "yes");
    // Single use: the same state again is refused, on either node.
    let (_, r) = json_of(post(&url_a, &retry(7, &state), Some("confirm"), &as_alice).await).await;
    assert!(refused(&r), "replayed: {r}");

    // A state past its TTL is refused.
    let (_, r) = json_of(post(&url_a, &ask(8, json!({})), Some("confirm"), &as_alice).await).await;
    let old = r["result"]["requestState"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let (_, r) = json_of(post(&url_b, &retry(9, &old), Some("confirm"), &as_alice).await).await;
    assert!(refused(&r), "expired: {r}");
}

#[tokio::test]
async fn an_upstream_question_parks_the_call_and_the_answer_continues_it_from_any_node() {
    let redis = RedisServer::start();
    let peer = marina_tests::UpstreamPeer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        dir.path(),
        &format!(
            "egress: {{allow_loopback: true}}\ntenants:\n  demo:\n    upstreams: [{{kind: mcp, name: conf, url: \"{}\"}}]\n",
            peer.url
        ),
    );
    let mut a = MarinaProc::start_with_config(&redis.url(), "a", &[], &file);
    let b = MarinaProc::start_with_config(&redis.url(), "b", &[], &file);
    let tool = "conf.test_elicitation";
    let elicit = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let ask = |id: i64, message: &str, extra: Value| {
        let mut params = json!({"name": tool, "arguments": {"message": message}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            params[k] = v.clone();
        }
        body(id, "tools/call", params, elicit.clone())
    };
    // The upstream's question, as `input_required` (its key and the sealed state).
    let parked = |r: &Value| -> (String, String) {
        let result = &r["result"];
        assert_eq!(result["resultType"], "input_required", "{r}");
        let (key, question) = result["inputRequests"]
            .as_object()
            .unwrap()
            .iter()
            .next()
            .unwrap();
        assert_eq!(question["method"], "elicitation/create", "{r}");
        (key.clone(), result["requestState"].as_str().unwrap().to_owned())
    };

    // A client without elicitation: the upstream's question cannot be put to it (-32021).
    let mut undeclared = ask(0, "who?", json!({}));
    undeclared["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let (status, e) = json_of(post(&a.endpoint(), &undeclared, Some(tool), &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], -32021, "{e}");

    // Asked on node A, answered on node B: the same upstream call continues to its result.
    let (status, r) =
        json_of(post(&a.endpoint(), &ask(1, "Who are you?", json!({})), Some(tool), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        r["result"]["inputRequests"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["params"]["message"],
        "Who are you?"
    );
    let (key, state) = parked(&r);
    let answer = json!({ key.as_str(): {"action": "accept", "content": {"username": "ann", "email": "ann@example.com"}} });
    let retry = ask(
        2,
        "Who are you?",
        json!({"inputResponses": answer, "requestState": state}),
    );
    let (status, r) = json_of(post(&b.endpoint(), &retry, Some(tool), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["result"]["resultType"], "complete", "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("action=accept") && text.contains("ann@example.com"),
        "{text}"
    );

    // The state is single-use, wherever it is replayed.
    for node in [&a, &b] {
        let (_, r) = json_of(post(&node.endpoint(), &retry, Some(tool), &[]).await).await;
        assert_eq!(r["error"]["code"], -32602, "replayed: {r}");
    }
    // Bound to its arguments.
    let (_, r) = json_of(post(&a.endpoint(), &ask(3, "Who?", json!({})), Some(tool), &[]).await).await;
    let (key, state) = parked(&r);
    let answer = json!({ key.as_str(): {"action": "decline"} });
    let other = ask(
        4,
        "Something else",
        json!({"inputResponses": answer, "requestState": state}),
    );
    let (_, r) = json_of(post(&b.endpoint(), &other, Some(tool), &[]).await).await;
    assert_eq!(r["error"]["code"], -32602, "another request's state: {r}");
    // An answer for a question that was not asked is refused without using the state up; the
    // right one then continues the call.
    let wrong = ask(
        5,
        "Who?",
        json!({"inputResponses": {"q9": {"action": "decline"}}, "requestState": state}),
    );
    let (_, r) = json_of(post(&b.endpoint(), &wrong, Some(tool), &[]).await).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let right = ask(
        6,
        "Who?",
        json!({"inputResponses": answer, "requestState": state}),
    );
    let (_, r) = json_of(post(&a.endpoint(), &right, Some(tool), &[]).await).await;
    let text = r["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("action=decline"), "{r}");

    // The node holding a parked call drains (SIGTERM): it waits for the call, whose retry
    // through the other node still reaches it and completes, and then stops.
    let (_, r) = json_of(post(&a.endpoint(), &ask(9, "Leaving?", json!({})), Some(tool), &[]).await).await;
    let (key, state) = parked(&r);
    a.sigterm();
    let answer =
        json!({ key.as_str(): {"action": "accept", "content": {"username": "d", "email": "d@example.com"}} });
    let retry = ask(
        10,
        "Leaving?",
        json!({"inputResponses": answer, "requestState": state}),
    );
    let (_, r) = json_of(post(&b.endpoint(), &retry, Some(tool), &[]).await).await;
    let text = r["result"]["content"][0]["text"].as_str().unwrap_or_default();
    assert!(text.contains("d@example.com"), "completed while draining: {r}");
    assert_eq!(
        a.wait_exit(Duration::from_secs(20)),
        Some(0),
        "then the node stops"
    );
    let mut a = MarinaProc::start_with_config(&redis.url(), "a", &[], &file);

    // The node holding a parked call dies: the retry on the other node gets a definite error.
    let (_, r) =
        json_of(post(&a.endpoint(), &ask(7, "Still there?", json!({})), Some(tool), &[]).await).await;
    let (key, state) = parked(&r);
    a.kill9();
    let answer =
        json!({ key.as_str(): {"action": "accept", "content": {"username": "x", "email": "x@example.com"}} });
    let retry = ask(
        8,
        "Still there?",
        json!({"inputResponses": answer, "requestState": state}),
    );
    let (_, r) = json_of(post(&b.endpoint(), &retry, Some(tool), &[]).await).await;
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("gone"), "{r}");
}

#[actix_rt::test]
async fn a_denied_call_is_denied_in_every_era_and_translation_direction() {
    let old = marina_tests::UpstreamPeer::start();
    let new = marina_tests::UpstreamPeer::start_v2();
    let dir = tempfile::tempdir().unwrap();
    let (viewer, operator) = (generate_key(), generate_key());
    let tenant = format!(
        "egress: {{allow_loopback: true}}\ntenants:\n  acme:\n    auth:\n      api_keys:\n        - {{subject: vera, sha256: {}, roles: [viewer]}}\n        - {{subject: otto, sha256: {}, roles: [operator]}}\n    rbac:\n      policy: |\n        p, viewer, tool:*.test_simple_text, call, allow\n        p, operator, tool:*, call, allow\n    upstreams:\n      - {{kind: mcp, name: old, url: \"{}\", protocol: \"2025-11-25\"}}\n      - {{kind: mcp, name: new, url: \"{}\"}}\n",
        digest(&viewer),
        digest(&operator),
        old.url,
        new.url
    );
    let app = spawn_app_with(Some(&config(dir.path(), &tenant)), &[]).await;
    let url = format!("{}/t/acme/mcp", app.base);
    let simple = "This is a simple text response for testing.";

    for (who, key) in [("viewer", &viewer), ("operator", &operator)] {
        let allowed = who == "operator";
        let session = Mcp::new(&url)
            .with_header("x-api-key", key)
            .open("2025-11-25", json!({}))
            .await;
        let listed = session.tool_names(1).await;
        for upstream in ["old", "new"] {
            let open = format!("{upstream}.test_simple_text");
            let guarded = format!("{upstream}.test_error_handling");
            assert_eq!(listed.contains(&guarded), allowed, "{who}: {listed:?}");
            // A sessionful client, to an upstream of either era.
            assert_eq!(
                session.call_text(2, &open, json!({})).await,
                simple,
                "{who} {open}"
            );
            let r = session
                .rpc(3, "tools/call", json!({"name": guarded, "arguments": {}}))
                .await;
            if allowed {
                assert_eq!(r["result"]["isError"], true, "{who} {guarded}: {r}");
            } else {
                assert_eq!(r["error"]["code"], -32602, "{who} {guarded}: {r}");
                assert!(
                    r["error"]["message"].as_str().unwrap().contains("unknown tool"),
                    "{r}"
                );
            }
            // A 2026-07-28 client, to an upstream of either era.
            let as_who = [("x-api-key", key.as_str())];
            let call = |name: &str| body(4, "tools/call", json!({"name": name, "arguments": {}}), json!({}));
            let (_, r) = json_of(post(&url, &call(&open), Some(&open), &as_who).await).await;
            assert_eq!(r["result"]["content"][0]["text"], simple, "{who} {open}: {r}");
            let (_, r) = json_of(post(&url, &call(&guarded), Some(&guarded), &as_who).await).await;
            if allowed {
                assert_eq!(r["result"]["isError"], true, "{who} {guarded}: {r}");
            } else {
                assert_eq!(r["error"]["code"], -32602, "{who} {guarded}: {r}");
            }
        }
    }
}

#[actix_rt::test]
async fn a_listener_gets_updates_of_the_upstream_resources_it_may_read() {
    let peer = marina_tests::UpstreamPeer::start_env(&[("WATCH_INTERVAL_MS", "100")]);
    let dir = tempfile::tempdir().unwrap();
    let tenant = format!(
        "egress: {{allow_loopback: true}}\ntenants:\n  acme:\n    auth: {{anonymous: true}}\n    rbac:\n      policy: |\n        p, anonymous, resource:test://watched-resource, read, allow\n    upstreams: [{{kind: mcp, name: conf, url: \"{}\"}}]\n",
        peer.url
    );
    let app = spawn_app_with(Some(&config(dir.path(), &tenant)), &[]).await;
    let url = format!("{}/t/acme/mcp", app.base);
    let watched = "test://watched-resource";
    let listen = body(
        7,
        "subscriptions/listen",
        json!({"notifications": {"resourceSubscriptions": [watched, "test://static-text"]}}),
        json!({}),
    );
    let stream = post(&url, &listen, None, &[]).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let updated = |e: &marina_tests::SseEvent| e.data.contains("notifications/resources/updated");
    let (events, _) = read_events(stream, Duration::from_secs(15), |evs| evs.iter().any(updated)).await;
    let messages: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str(&e.data).ok())
        .collect();
    // Acknowledged with what the caller may read only (as if the other did not exist).
    let ack = &messages[0];
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!([watched]),
        "{ack}"
    );
    // The upstream's update, tagged with the subscription.
    let update = messages
        .iter()
        .find(|m| m["method"] == "notifications/resources/updated")
        .unwrap_or_else(|| panic!("no update in {messages:?}"));
    assert_eq!(update["params"]["uri"], watched);
    assert_eq!(
        update["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        7
    );
}

#[actix_rt::test]
async fn an_upstreams_own_request_state_is_sealed_in_ours_and_as_well_guarded() {
    let new = marina_tests::UpstreamPeer::start_v2();
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (generate_key(), generate_key());
    let tenant = format!(
        "egress: {{allow_loopback: true}}\ntenants:\n  acme:\n    auth:\n      api_keys:\n        - {{subject: alice, sha256: {}}}\n        - {{subject: bob, sha256: {}}}\n    upstreams: [{{kind: mcp, name: v2, url: \"{}\"}}]\n",
        digest(&alice),
        digest(&bob),
        new.url
    );
    let app = spawn_app_with(Some(&config(dir.path(), &tenant)), &[]).await;
    let url = format!("{}/t/acme/mcp", app.base);
    let tool = "v2.test_input_required_result_request_state";
    let caps = json!({"io.modelcontextprotocol/clientCapabilities": {"elicitation": {}}});
    let call = |id: i64, extra: Value| {
        let mut params = json!({"name": tool, "arguments": {}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            params[k] = v.clone();
        }
        body(id, "tools/call", params, caps.clone())
    };
    let as_alice = [("x-api-key", alice.as_str())];

    // The upstream's question comes with its own key; its state is inside ours, unreadable.
    let (_, r) = json_of(post(&url, &call(1, json!({})), Some(tool), &as_alice).await).await;
    assert_eq!(r["result"]["resultType"], "input_required", "{r}");
    assert!(r["result"]["inputRequests"]["confirm"].is_object(), "{r}");
    let state = r["result"]["requestState"].as_str().unwrap().to_owned();
    assert!(
        !state.starts_with("v1."),
        "the upstream's own state format is not exposed"
    );
    let answer = json!({"confirm": {"action": "accept", "content": {"ok": true}}});
    let retry = |id: i64, state: &str| call(id, json!({"inputResponses": answer, "requestState": state}));
    let refused = |r: &Value| r["error"]["code"] == -32602;

    // Another principal's retry, and a tampered state: refused, the state not used up.
    let (_, r) = json_of(
        post(
            &url,
            &retry(2, &state),
            Some(tool),
            &[("x-api-key", bob.as_str())],
        )
        .await,
    )
    .await;
    assert!(refused(&r), "another principal's: {r}");
    let mut tampered = state.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (_, r) = json_of(post(&url, &retry(3, &tampered), Some(tool), &as_alice).await).await;
    assert!(refused(&r), "tampered: {r}");

    // The owner's retry completes: the upstream got its own state back, verified.
    let (_, r) = json_of(post(&url, &retry(4, &state), Some(tool), &as_alice).await).await;
    assert_eq!(
        r["result"]["content"][0]["text"], "state-ok: requestState verified and confirmation received",
        "{r}"
    );
    // Single use.
    let (_, r) = json_of(post(&url, &retry(5, &state), Some(tool), &as_alice).await).await;
    assert!(refused(&r), "replayed: {r}");
}
