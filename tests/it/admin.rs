//! The control plane's admin API: tenants as live data, written on one node and applied on every
//! node within a second, checked like the configuration file before anything is stored.

use std::time::{Duration, Instant};

use marina_auth::{digest, generate_key};
use marina_tests::{MarinaProc, Mcp, RedisServer, SseEvent, read_events, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VERSION: &str = "2025-11-25";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Config of a cluster node with one platform administrator key.
fn admin_config(dir: &std::path::Path, admin_key: &str) -> std::path::PathBuf {
    let f = dir.join("marina.yaml");
    std::fs::write(
        &f,
        format!(
            "admin:\n  api_keys:\n    - {{subject: ops, sha256: {}}}\ntenants:\n  fixed:\n    auth: {{anonymous: true}}\n    upstreams: [{{kind: builtin, tools: [echo]}}]\n",
            digest(admin_key)
        ),
    )
    .unwrap();
    f
}

/// Two nodes sharing one Redis, each configured by [`admin_config`] with one administrator key.
struct TwoNodes {
    // Dropped in this order: the nodes before their store.
    a: MarinaProc,
    b: MarinaProc,
    admin_key: String,
    redis: RedisServer,
    _dir: tempfile::TempDir,
}

fn two_nodes(env: &[(&str, &str)]) -> TwoNodes {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let config = admin_config(dir.path(), &admin_key);
    TwoNodes {
        a: MarinaProc::start_with_config(&redis.url(), "a", env, &config),
        b: MarinaProc::start_with_config(&redis.url(), "b", env, &config),
        admin_key,
        redis,
        _dir: dir,
    }
}

/// GET `url` as the administrator with `key`; the JSON body.
async fn get_json(http: &reqwest::Client, url: &str, key: &str) -> Value {
    http.get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `method url` as the administrator with `key`, without a body.
async fn call(http: &reqwest::Client, method: reqwest::Method, url: &str, key: &str) -> reqwest::Response {
    http.request(method, url).bearer_auth(key).send().await.unwrap()
}

/// Wait (at most a second) until an `initialize` with `key` gets `status` on every one of `urls`.
async fn everywhere_within_a_second(urls: [&str; 2], key: &str, status: StatusCode) {
    for url in urls {
        within(Duration::from_secs(1), || async {
            initialize_status(url, key).await == status
        })
        .await;
    }
}

/// `method url` as the administrator with `key`, with a JSON body.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    http.request(method, url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Poll `probe` (bounded) until it holds; how long that took.
async fn within<F, Fut>(limit: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    loop {
        if probe().await {
            let took = start.elapsed();
            assert!(took <= limit, "took {took:?}, more than {limit:?}");
            return took;
        }
        assert!(Instant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Status of an `initialize` on `url` with API key `key` (`""`: none).
async fn initialize_status(url: &str, key: &str) -> StatusCode {
    let mut req = client().post(url);
    if !key.is_empty() {
        req = req.header("x-api-key", key);
    }
    req.header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap()
        .status()
}

fn tenant_doc(key_digest: &str, policy: &str) -> Value {
    json!({
        "auth": {"api_keys": [{"subject": "bob", "sha256": key_digest, "roles": ["viewer"]}]},
        "rbac": {"policy": policy},
        "upstreams": [{"kind": "builtin", "tools": ["echo", "add"]}],
    })
}

#[tokio::test]
async fn a_tenant_written_on_one_node_is_served_by_another_within_a_second() {
    let TwoNodes { a, b, admin_key, .. } = &two_nodes(&[]);
    let http = client();
    let bob = generate_key();
    let url_b = format!("{}/t/acme/mcp", b.base());
    let url_a = format!("{}/t/acme/mcp", a.base());

    // No admin key: 401 with a problem document; nothing stored.
    let r = http
        .put(format!("{}/tenants/acme", a.admin()))
        .json(&tenant_doc(&digest(&bob), "p, viewer, tool:echo, call, allow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    // Create through node A; serve through node B within a second.
    let r = send(
        &http,
        reqwest::Method::PUT,
        &format!("{}/tenants/acme", a.admin()),
        admin_key,
        &tenant_doc(&digest(&bob), "p, viewer, tool:echo, call, allow"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["marina-store"], "redis");
    let etag1 = r.headers()["etag"].to_str().unwrap().to_owned();
    within(Duration::from_secs(1), || async {
        initialize_status(&url_b, &bob).await == StatusCode::OK
    })
    .await;
    let mcp = Mcp::new(&url_b)
        .with_header("x-api-key", &bob)
        .open(VERSION, json!({}))
        .await;
    assert_eq!(mcp.tool_names(1).await, ["echo"], "the policy filters the list");
    assert_eq!(mcp.call_text(2, "echo", json!({"text": "hi"})).await, "hi");

    // The document reads back with its ETag, from either node.
    let r = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/tenants/acme", b.admin()),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    let listed: Value = get_json(&http, &format!("{}/tenants", b.admin()), admin_key).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "fixed"]);
    assert_eq!(listed["items"][1]["source"], "file");

    // A policy change reaches the open session: list_changed on its GET stream, and the
    // list re-filtered.
    let get = mcp.get(None).await;
    assert_eq!(get.status(), StatusCode::OK);
    let r = http
        .patch(format!("{}/tenants/acme", a.admin()))
        .bearer_auth(admin_key)
        .header("if-match", &etag1)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"rbac": {"policy": "p, viewer, tool:*, call, allow"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let etag2 = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(etag1, etag2);
    let (events, _) = read_events(get, Duration::from_secs(5), |ev| {
        ev.iter()
            .filter_map(SseEvent::json)
            .any(|m| m["method"] == "notifications/tools/list_changed")
    })
    .await;
    assert!(
        events
            .iter()
            .filter_map(SseEvent::json)
            .any(|m| m["method"] == "notifications/tools/list_changed"),
        "no list_changed after the policy change: {events:?}"
    );
    assert_eq!(mcp.tool_names(3).await, ["add", "echo"]);

    // A write with the stale ETag is refused, and changes nothing.
    let r = http
        .put(format!("{}/tenants/acme", b.admin()))
        .bearer_auth(admin_key)
        .header("if-match", &etag1)
        .json(&tenant_doc(&digest(&bob), ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["status"], 412);
    assert_eq!(mcp.tool_names(4).await, ["add", "echo"]);

    // Revoke bob's key (replace it with another): refused on both nodes within a second.
    let carol = generate_key();
    let r = http
        .put(format!("{}/tenants/acme", b.admin()))
        .bearer_auth(admin_key)
        .header("if-match", &etag2)
        .json(&tenant_doc(&digest(&carol), "p, viewer, tool:*, call, allow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for url in [&url_a, &url_b] {
        within(Duration::from_secs(1), || async {
            initialize_status(url, &bob).await == StatusCode::UNAUTHORIZED
        })
        .await;
        assert_eq!(initialize_status(url, &carol).await, StatusCode::OK);
    }

    // Suspend, then delete: refused on both nodes.
    let r = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{}/tenants/acme", a.admin()),
        admin_key,
        &json!({"disabled": true}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    within(Duration::from_secs(1), || async {
        initialize_status(&url_b, &carol).await == StatusCode::FORBIDDEN
    })
    .await;
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{}/tenants/acme", b.admin()),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    everywhere_within_a_second([&url_a, &url_b], &carol, StatusCode::NOT_FOUND).await;
    let r = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/tenants/acme", a.admin()),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[actix_rt::test]
async fn every_invalid_write_is_a_problem_naming_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let config = admin_config(dir.path(), &admin_key);
    let app = spawn_app_with(Some(&config), &[]).await;
    let http = client();
    let key = digest(&generate_key());
    let builtin = json!([{"kind": "builtin"}]);
    let auth = json!({"api_keys": [{"subject": "bob", "sha256": key}]});
    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "bad upstream URL",
            "t1",
            json!({"auth": auth, "upstreams": [{"kind": "mcp", "name": "u", "url": "not a url"}]}),
            StatusCode::BAD_REQUEST,
            "upstreams[0].url",
        ),
        (
            "a private upstream address",
            "t2",
            json!({"auth": auth, "upstreams": [{"kind": "mcp", "name": "u", "url": "http://10.1.2.3/mcp"}]}),
            StatusCode::BAD_REQUEST,
            "upstreams[0].url",
        ),
        (
            "an unparsable policy",
            "t3",
            json!({"auth": auth, "upstreams": builtin, "rbac": {"policy": "p, viewer"}}),
            StatusCode::BAD_REQUEST,
            "rbac.policy",
        ),
        (
            "an unknown key",
            "t4",
            json!({"auth": auth, "upstreams": builtin, "limits": {"max_sesions": 3}}),
            StatusCode::BAD_REQUEST,
            "limits",
        ),
        (
            "a malformed limit",
            "t5",
            json!({"auth": auth, "upstreams": builtin, "limits": {"rate": {"tenant": "lots"}}}),
            StatusCode::BAD_REQUEST,
            "limits.rate.tenant",
        ),
        (
            "a bad key digest",
            "t6",
            json!({"auth": {"api_keys": [{"subject": "bob", "sha256": "abc"}]}}),
            StatusCode::BAD_REQUEST,
            "auth.api_keys[0].sha256",
        ),
        (
            "an id with bad characters",
            "bad.id",
            json!({"auth": auth}),
            StatusCode::BAD_REQUEST,
            "id",
        ),
    ];
    for (what, id, doc, status, field) in cases {
        let r = send(
            &http,
            reqwest::Method::PUT,
            &format!("{}/tenants/{id}", app.admin),
            &admin_key,
            &doc,
        )
        .await;
        assert_eq!(r.status(), status, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
        assert_eq!(
            r.headers()["marina-store"],
            "memory",
            "this node alone keeps the data"
        );
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["status"], status.as_u16(), "{what}: {p}");
        assert!(
            p["field"].as_str().is_some_and(|f| f.starts_with(field)),
            "{what}: field {} is not {field}: {p}",
            p["field"]
        );
        assert!(!p["detail"].as_str().unwrap_or("").is_empty(), "{what}: {p}");
        let r = call(
            &http,
            reqwest::Method::GET,
            &format!("{}/tenants/{id}", app.admin),
            &admin_key,
        )
        .await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{what}: stored anyway");
    }
    // Oversized, not JSON, not an object.
    let big = json!({"auth": auth, "allowed_origins": ["x".repeat(300 * 1024)]});
    for (body, status) in [
        (big.to_string(), StatusCode::PAYLOAD_TOO_LARGE),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
        ("[1, 2]".to_owned(), StatusCode::BAD_REQUEST),
    ] {
        let r = http
            .put(format!("{}/tenants/t9", app.admin))
            .bearer_auth(&admin_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The file's tenants are read-only; create-only refuses an existing tenant.
    let r = send(
        &http,
        reqwest::Method::PUT,
        &format!("{}/tenants/fixed", app.admin),
        &admin_key,
        &json!({"auth": auth}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let ok = json!({"auth": auth, "upstreams": builtin});
    let r = http
        .put(format!("{}/tenants/t10", app.admin))
        .bearer_auth(&admin_key)
        .header("if-none-match", "*")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .put(format!("{}/tenants/t10", app.admin))
        .bearer_auth(&admin_key)
        .header("if-none-match", "*")
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    let listed: Value = get_json(&http, &format!("{}/tenants", app.admin), &admin_key).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
}

#[tokio::test]
async fn tenant_documents_in_redis_keep_versions_conflicts_and_the_cap() {
    let redis = RedisServer::start();
    let store = std::sync::Arc::new(
        marina_core::store::RedisStore::new(&redis.url(), "cp", Duration::from_secs(2)).unwrap(),
    );
    let docs = marina_control::RedisDocs::new(store, 2);
    marina_control::suite::versions_conflicts_and_caps(&docs).await;
}

#[tokio::test]
async fn audit_entries_in_redis_are_kept_filtered_and_ordered() {
    let redis = RedisServer::start();
    let store = std::sync::Arc::new(
        marina_core::store::RedisStore::new(&redis.url(), "au", Duration::from_secs(2)).unwrap(),
    );
    let log = marina_control::RedisAudit::new(store, 1000, Duration::from_secs(3600));
    marina_control::audit::suite(&log).await;
}

#[actix_rt::test]
async fn changes_are_audited_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let config = admin_config(dir.path(), &admin_key);
    let app = spawn_app_with(Some(&config), &[]).await;
    let http = client();
    let doc = tenant_doc(
        &digest(&generate_key()),
        "p, viewer, tool:*, call, allow\np, viewer, tool:add, call, deny\ng, operator, viewer\ng, alice, operator",
    );
    let r = send(
        &http,
        reqwest::Method::PUT,
        &format!("{}/tenants/acme", app.admin),
        &admin_key,
        &doc,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = send(
        &http,
        reqwest::Method::PATCH,
        &format!("{}/tenants/acme", app.admin),
        &admin_key,
        &json!({"disabled": true}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let audit: Value = get_json(
        &http,
        &format!("{}/audit?tenant=acme&since=2020-01-01T00:00:00Z", app.admin),
        &admin_key,
    )
    .await;
    let items = audit["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["tenant.create", "tenant.patch"], "{audit}");
    assert!(items.iter().all(|e| e["actor"] == "ops"));
    assert_eq!(items[1]["change"]["change"], json!({"disabled": true}));
    let r = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/audit?since=yesterday", app.admin),
        &admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Explain: alice → operator → viewer; the deny on tool:add wins over the glob allow.
    let ask = |object: &str| json!({"subject": "alice", "object": object, "action": "call"});
    let ex: Value = send(
        &http,
        reqwest::Method::POST,
        &format!("{}/tenants/acme/explain", app.admin),
        &admin_key,
        &ask("tool:echo"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ex["decision"], "allow", "{ex}");
    assert_eq!(ex["chain"], json!(["alice", "operator", "viewer"]), "{ex}");
    let ex: Value = send(
        &http,
        reqwest::Method::POST,
        &format!("{}/tenants/acme/explain", app.admin),
        &admin_key,
        &ask("tool:add"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ex["decision"], "deny", "{ex}");
    assert!(ex["rule"].as_str().unwrap().contains("deny"), "{ex}");
    let r = send(
        &http,
        reqwest::Method::POST,
        &format!("{}/tenants/nobody/explain", app.admin),
        &admin_key,
        &ask("tool:add"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_keys_are_created_once_listed_with_their_last_use_and_revoked_everywhere() {
    let TwoNodes { a, b, admin_key, .. } = &two_nodes(&[("MARINA__ADMIN__KEY_USAGE_FLUSH_MS", "100")]);
    let http = client();
    let r = send(
        &http,
        reqwest::Method::PUT,
        &format!("{}/tenants/acme", a.admin()),
        admin_key,
        &json!({"auth": {"api_keys": []}, "upstreams": [{"kind": "builtin", "tools": ["echo"]}]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A malformed expiry names the request's field; nothing is stored.
    let r = send(
        &http,
        reqwest::Method::POST,
        &format!("{}/tenants/acme/api-keys", a.admin()),
        admin_key,
        &json!({"subject": "ci", "expires": "someday"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["field"], "expires", "{p}");

    let created: Value = {
        let r = send(
            &http,
            reqwest::Method::POST,
            &format!("{}/tenants/acme/api-keys", a.admin()),
            admin_key,
            &json!({"subject": "ci", "roles": ["operator"]}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    };
    let key = created["key"].as_str().unwrap().to_owned();
    let kid = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("mk_"));
    assert_eq!(kid, marina_auth::key_id(&digest(&key)));
    let url_a = format!("{}/t/acme/mcp", a.base());
    let url_b = format!("{}/t/acme/mcp", b.base());
    within(Duration::from_secs(1), || async {
        initialize_status(&url_b, &key).await == StatusCode::OK
    })
    .await;

    // Listed on the other node without the secret, with its last use once flushed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let l: Value = get_json(&http, &format!("{}/tenants/acme/api-keys", a.admin()), admin_key).await;
        if l["items"][0]["lastUsedMs"].is_u64() {
            break l;
        }
        assert!(Instant::now() < deadline, "no last use: {l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let item = &listed["items"][0];
    assert_eq!(
        (item["id"].as_str(), item["subject"].as_str()),
        (Some(kid.as_str()), Some("ci"))
    );
    assert_eq!(item["roles"], json!(["operator"]));
    assert!(
        !listed.to_string().contains(&key),
        "the key itself is never listed"
    );
    assert!(!listed.to_string().contains(&digest(&key)), "nor its digest");

    // Revoked through node B: refused on both nodes within a second.
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{}/tenants/acme/api-keys/{kid}", b.admin()),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    everywhere_within_a_second([&url_a, &url_b], &key, StatusCode::UNAUTHORIZED).await;
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{}/tenants/acme/api-keys/{kid}", b.admin()),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let audit = http
        .get(format!("{}/audit?tenant=acme", a.admin()))
        .bearer_auth(admin_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("api_key.create") && audit.contains("api_key.revoke"),
        "{audit}"
    );
    assert!(!audit.contains(&key), "the audit log never holds a key");
}

#[tokio::test]
async fn key_last_use_in_redis_only_rises() {
    let redis = RedisServer::start();
    let store = std::sync::Arc::new(
        marina_core::store::RedisStore::new(&redis.url(), "ku", Duration::from_secs(2)).unwrap(),
    );
    marina_control::usage::suite(&marina_control::RedisUsage::new(store, Duration::from_secs(60))).await;
}

#[actix_rt::test]
async fn a_tenant_administrator_manages_its_tenant_and_sees_nothing_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let config = admin_config(dir.path(), &admin_key);
    let app = spawn_app_with(Some(&config), &[]).await;
    let http = client();
    let (alice, bob, other) = (generate_key(), generate_key(), generate_key());
    let doc = |keys: Value| {
        json!({"auth": {"api_keys": keys}, "rbac": {"policy": "p, viewer, tool:*, call, allow\ng, alice, tenant-admin"},
               "upstreams": [{"kind": "builtin", "tools": ["echo"]}]})
    };
    let a_doc = doc(json!([
        {"subject": "alice", "sha256": digest(&alice)},
        {"subject": "bob", "sha256": digest(&bob), "roles": ["viewer"]},
    ]));
    let b_doc = doc(json!([{"subject": "alice", "sha256": digest(&other)}]));
    for (id, d) in [("a", &a_doc), ("b", &b_doc)] {
        let r = send(
            &http,
            reqwest::Method::PUT,
            &format!("{}/tenants/{id}", app.admin),
            &admin_key,
            d,
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let t = |path: &str| format!("{}/tenants/{path}", app.admin);
    let as_ =
        |m: reqwest::Method, url: String, key: &str| http.request(m, url).header("x-api-key", key.to_owned());

    // Alice administers a: reads it, changes its policy, makes a key, reads its audit.
    let r = as_(reqwest::Method::GET, t("a"), &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = as_(reqwest::Method::PATCH, t("a"), &alice)
        .json(&json!({"allowed_origins": ["https://app.a.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = as_(reqwest::Method::POST, t("a/api-keys"), &alice)
        .json(&json!({"subject": "ci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = as_(
        reqwest::Method::GET,
        format!("{}/audit?tenant=a", app.admin),
        &alice,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let audit: Value = r.json().await.unwrap();
    assert!(
        audit.to_string().contains("a/alice"),
        "the tenant administrator is named: {audit}"
    );

    // But neither suspends nor deletes it, nor lists the platform's tenants.
    let r = as_(reqwest::Method::PATCH, t("a"), &alice)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = as_(reqwest::Method::DELETE, t("a"), &alice).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = as_(reqwest::Method::GET, format!("{}/tenants", app.admin), &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Nothing of b, whatever the verb: always 404, as if b did not exist.
    for (m, path) in [
        (reqwest::Method::GET, t("b")),
        (reqwest::Method::PATCH, t("b")),
        (reqwest::Method::PUT, t("b")),
        (reqwest::Method::DELETE, t("b")),
        (reqwest::Method::GET, t("b/api-keys")),
        (reqwest::Method::POST, t("b/api-keys")),
        (reqwest::Method::DELETE, t("b/api-keys/0123456789abcdef")),
        (reqwest::Method::POST, t("b/explain")),
        (reqwest::Method::GET, format!("{}/audit?tenant=b", app.admin)),
        (reqwest::Method::GET, t("nope")),
    ] {
        let r = as_(m.clone(), path.clone(), &alice)
            .json(&json!({"subject": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{m} {path}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("alice") && !body.contains(&digest(&other)),
            "{body}"
        );
    }

    // A principal of a without the role: 403; no credential: 401.
    let r = as_(reqwest::Method::GET, t("a"), &bob).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http.get(t("a")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The platform administrator still sees a's change.
    let got = get_json(&http, &t("a"), &admin_key).await;
    assert_eq!(got["allowed_origins"], json!(["https://app.a.example"]));
    assert_eq!(got["auth"]["api_keys"].as_array().unwrap().len(), 3);
}

/// Status of a `ping` in `mcp`'s session.
async fn ping_status(mcp: &Mcp) -> StatusCode {
    mcp.post(&json!({"jsonrpc": "2.0", "id": 99, "method": "ping"}))
        .await
        .status()
}

#[tokio::test]
async fn sessions_are_listed_inspected_and_ended_on_every_node() {
    let nodes = two_nodes(&[]);
    let TwoNodes { a, b, admin_key, .. } = &nodes;
    let http = client();
    let (bob, carol) = (generate_key(), generate_key());
    let doc = json!({
        "auth": {"api_keys": [
            {"subject": "bob", "sha256": digest(&bob), "roles": ["viewer"]},
            {"subject": "carol", "sha256": digest(&carol), "roles": ["viewer"]},
        ]},
        "rbac": {"policy": "p, viewer, tool:*, call, allow"},
        "upstreams": [{"kind": "builtin", "tools": ["echo"]}],
    });
    let tenant = format!("{}/tenants/acme", a.admin());
    let r = send(&http, reqwest::Method::PUT, &tenant, admin_key, &doc).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (url_a, url_b) = (
        format!("{}/t/acme/mcp", a.base()),
        format!("{}/t/acme/mcp", b.base()),
    );
    for url in [&url_a, &url_b] {
        within(Duration::from_secs(1), || async {
            initialize_status(url, &bob).await == StatusCode::OK
        })
        .await;
    }
    // The probes above opened a session of bob's on each node: end them all at once.
    let sessions = format!("{}/tenants/acme/sessions", b.admin());
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{sessions}?principal=bob"),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["terminated"], 2);
    let open = |url: &str, key: &str| {
        Mcp::new(url)
            .with_header("x-api-key", key)
            .open(VERSION, json!({}))
    };
    let bob_a = open(&url_a, &bob).await;
    let bob_b = open(&url_b, &bob).await;
    let carol_a = open(&url_a, &carol).await;
    let tag = |m: &Mcp| m.session.as_deref().unwrap()[..8].to_owned();
    let stream = bob_a.get(None).await;
    assert_eq!(stream.status(), StatusCode::OK);

    // Listed from either node, whichever node runs them, without their ids.
    let listed = get_json(&http, &sessions, admin_key).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{listed}");
    let mut tags: Vec<String> = [&bob_a, &bob_b, &carol_a].iter().map(|m| tag(m)).collect();
    tags.sort();
    let listed_tags: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(listed_tags, tags, "in tag order");
    assert!(!listed.to_string().contains(bob_a.session.as_deref().unwrap()));
    let one = items.iter().find(|i| i["id"] == tag(&bob_b)).unwrap();
    assert_eq!(one["principal"]["subject"], "bob");
    assert_eq!(one["protocolVersion"], VERSION);
    assert_eq!(one["clientInfo"]["name"], "marina-tests");
    assert_eq!(one["node"], "b");
    assert!(one["createdMs"].as_u64().unwrap() <= one["lastUsedMs"].as_u64().unwrap());
    let bobs = get_json(&http, &format!("{sessions}?principal=bob"), admin_key).await;
    assert_eq!(bobs["items"].as_array().unwrap().len(), 2);

    // Paged.
    let page = get_json(&http, &format!("{sessions}?limit=2"), admin_key).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().unwrap();
    let rest = get_json(&http, &format!("{sessions}?limit=2&after={next}"), admin_key).await;
    assert_eq!(rest["items"][0]["id"], tags[2]);
    assert_eq!(rest["next"], Value::Null);

    // Inspected.
    let detail = get_json(&http, &format!("{sessions}/{}", tag(&bob_a)), admin_key).await;
    assert_eq!(detail["node"], "a");
    assert_eq!(detail["initialized"], true);
    assert_eq!(detail["inflightCalls"], 0);
    let r = call(
        &http,
        reqwest::Method::GET,
        &format!("{sessions}/nosuchtg"),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Ended through node B while node A runs it: 404 on both nodes, its stream ends, its keys
    // are gone; the other sessions carry on.
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{sessions}/{}", tag(&bob_a)),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for url in [&url_a, &url_b] {
        let m = bob_a.at(url);
        within(Duration::from_secs(1), || async {
            ping_status(&m).await == StatusCode::NOT_FOUND
        })
        .await;
    }
    let (_, ended) = read_events(stream, Duration::from_secs(5), |_| false).await;
    assert!(ended, "the ended session's stream closes");
    let mut redis_cli = redis::Client::open(nodes.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{}*", bob_a.session.as_deref().unwrap()))
        .query_async(&mut redis_cli)
        .await
        .unwrap();
    assert!(keys.is_empty(), "keys left: {keys:?}");
    assert_eq!(ping_status(&bob_b).await, StatusCode::OK);
    assert_eq!(ping_status(&carol_a).await, StatusCode::OK);

    // All of a principal's sessions at once.
    let r = call(&http, reqwest::Method::DELETE, &sessions, admin_key).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the principal must be named");
    let r = call(
        &http,
        reqwest::Method::DELETE,
        &format!("{sessions}?principal=bob"),
        admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["terminated"], 1);
    for url in [&url_a, &url_b] {
        let m = bob_b.at(url);
        within(Duration::from_secs(1), || async {
            ping_status(&m).await == StatusCode::NOT_FOUND
        })
        .await;
    }
    assert_eq!(ping_status(&carol_a).await, StatusCode::OK);
    let left = get_json(&http, &sessions, admin_key).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 1);

    // Audited.
    let audit = get_json(&http, &format!("{}/audit?tenant=acme", a.admin()), admin_key).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"session.end") && actions.contains(&"session.end_principal"),
        "{actions:?}"
    );
}

#[tokio::test]
async fn upstream_status_shows_reachability_the_last_error_and_counts_across_nodes() {
    let mut peer = marina_tests::UpstreamPeer::start();
    let TwoNodes { a, b, admin_key, .. } = &two_nodes(&[("MARINA__EGRESS__ALLOW_LOOPBACK", "true")]);
    let http = client();
    let doc = json!({
        "auth": {"anonymous": true},
        "upstreams": [
            {"kind": "mcp", "name": "peer", "url": peer.url},
            {"kind": "mcp", "name": "dead", "url": "http://127.0.0.1:1/mcp", "timeout_ms": 2000},
            {"kind": "builtin", "tools": ["echo"]},
        ],
    });
    let r = send(
        &http,
        reqwest::Method::PUT,
        &format!("{}/tenants/ups", a.admin()),
        admin_key,
        &doc,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let status_url = format!("{}/tenants/ups/upstreams", b.admin());
    let status = || async { get_json(&http, &status_url, admin_key).await };
    let of = |s: &Value, name: &str| {
        s["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .cloned()
            .unwrap()
    };

    // Nothing seen yet. The tenant was written through node A: node B serves its status once it
    // has applied the change (within a second).
    within(Duration::from_secs(3), || async {
        status().await["items"].is_array()
    })
    .await;
    let s = status().await;
    assert_eq!(of(&s, "peer")["reachable"], Value::Null);
    assert_eq!(of(&s, "peer")["kind"], "mcp");
    assert_eq!(of(&s, "builtin")["reachable"], true);
    assert_eq!(of(&s, "builtin")["tools"], 1);

    // A session on node A lists the tools: node B's status shows what A saw.
    let url_a = format!("{}/t/ups/mcp", a.base());
    within(Duration::from_secs(1), || async {
        initialize_status(&url_a, "").await == StatusCode::OK
    })
    .await;
    let mcp = Mcp::new(&url_a).open(VERSION, json!({})).await;
    let tools = mcp.tool_names(1).await;
    let peer_tool = tools.iter().find(|t| t.starts_with("peer.")).unwrap().clone();
    let peer_tools = tools.iter().filter(|t| t.starts_with("peer.")).count() as u64;
    within(Duration::from_secs(3), || async {
        let s = status().await;
        of(&s, "peer")["reachable"] == true && of(&s, "dead")["reachable"] == false
    })
    .await;
    let s = status().await;
    let p = of(&s, "peer");
    assert_eq!(p["tools"], peer_tools);
    assert_eq!(p["node"], "a");
    assert!(p["lastSuccessMs"].as_u64().is_some());
    assert_eq!(p["url"], peer.url.as_str());
    let d = of(&s, "dead");
    assert!(d["lastError"].as_str().unwrap().contains("dead"), "{d}");
    assert!(d["lastErrorMs"].as_u64().is_some());
    assert_eq!(d["lastSuccessMs"], Value::Null);

    // The peer goes away: the next call through it turns it unreachable, with its error.
    peer.stop();
    let _ = mcp
        .rpc(2, "tools/call", json!({"name": peer_tool, "arguments": {}}))
        .await;
    within(Duration::from_secs(3), || async {
        of(&status().await, "peer")["reachable"] == false
    })
    .await;
    let p = of(&status().await, "peer");
    assert!(p["lastError"].as_str().unwrap().contains("peer"), "{p}");
    assert!(p["lastSuccessMs"].as_u64().is_some(), "the last success is kept");
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    // No tenant in the file: the node serves the embedded default tenant `demo`.
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            "admin:\n  api_keys:\n    - {{subject: ops, sha256: {}}}\n",
            digest(&admin_key)
        ),
    )
    .unwrap();
    let node = MarinaProc::start_with_config("", "a", &[], &config);
    let http = client();

    let r = http
        .get(format!("{}/openapi.json", node.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Marina admin API");
    assert_eq!(doc["servers"][0]["url"], "/admin/v1");
    assert!(doc["paths"]["/tenants/{id}"]["put"]["responses"]["412"].is_object());

    // Everything else still needs the key.
    let r = http
        .get(format!("{}/tenants", node.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The embedded default tenant, which no file section describes, reads as an empty document
    // (an object, as documented), not `null`.
    let r = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/tenants/demo", node.admin()),
        &admin_key,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["marina-source"], "file");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({}));
}
