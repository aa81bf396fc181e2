//! casbin RBAC through the MCP endpoint: for every row of `policies/tests/hierarchy.yaml` about a
//! tool Marina serves, `tools/list` shows the tool exactly when the table allows it and
//! `tools/call` runs it exactly then — and a denied call is answered like an unknown tool, with
//! every protocol version, without a version header, and inside a batch.

use std::collections::BTreeMap;

use marina_auth::{digest, generate_key};
use marina_policy::table::{Row, Table};
use marina_tests::{Mcp, TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The built-in tools of the tenant, with arguments that make each call succeed quickly.
fn call_args(tool: &str) -> Option<Value> {
    Some(match tool {
        "echo" => json!({"text": "hi"}),
        "add" => json!({"a": 1, "b": 2}),
        "countdown" => json!({"steps": 1, "interval_ms": 1}),
        "log" => json!({"level": "info", "message": "m"}),
        _ => return None,
    })
}

fn table() -> Table {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests/hierarchy.yaml");
    Table::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One API key per distinct (subject, roles) of the table, and the tenant `acme` with the
/// table's policy (and `extra` YAML under it).
struct Rbac {
    app: TestApp,
    keys: BTreeMap<(String, Vec<String>), String>,
    _dir: tempfile::TempDir,
}

impl Rbac {
    async fn start(extra_settings: &[(&str, &str)]) -> Self {
        let t = table();
        let mut keys = BTreeMap::new();
        for r in &t.rows {
            keys.entry((r.subject.clone(), r.roles.clone()))
                .or_insert_with(generate_key);
        }
        let mut yaml = String::from("tenants:\n  acme:\n    auth:\n      api_keys:\n");
        for ((subject, roles), key) in &keys {
            yaml += &format!(
                "        - {{subject: {subject}, sha256: {}, roles: {}}}\n",
                digest(key),
                serde_json::to_string(roles).unwrap()
            );
        }
        yaml += "    rbac:\n      policy: |\n";
        for line in t.policy.unwrap().lines() {
            yaml += &format!("        {line}\n");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("marina.yaml");
        std::fs::write(&file, yaml).unwrap();
        Self {
            app: spawn_app_with(Some(&file), extra_settings).await,
            keys,
            _dir: dir,
        }
    }

    fn key(&self, row: &Row) -> &str {
        &self.keys[&(row.subject.clone(), row.roles.clone())]
    }

    async fn session(&self, row: &Row, version: &str) -> Mcp {
        Mcp::new(&self.app.endpoint("acme"))
            .bearer(self.key(row))
            .open(version, json!({}))
            .await
    }
}

/// Every page of `tools/list`, following `nextCursor`.
async fn all_tools(c: &Mcp) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for id in 100..120 {
        let params = match &cursor {
            Some(cur) => json!({"cursor": cur}),
            None => json!({}),
        };
        let r = c.rpc(id, "tools/list", params).await;
        for t in r["result"]["tools"].as_array().unwrap() {
            names.push(t["name"].as_str().unwrap().to_owned());
        }
        match r["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return names,
        }
    }
    panic!("tools/list never ended");
}

async fn call(c: &Mcp, id: i64, tool: &str, args: Value) -> Value {
    c.rpc(id, "tools/call", json!({"name": tool, "arguments": args}))
        .await
}

/// A denied call's answer, with its request id and tool name blanked: it must equal the answer
/// for a tool that does not exist.
fn shape(mut v: Value, tool: &str) -> String {
    v["id"] = Value::Null;
    v.to_string().replace(tool, "<tool>")
}

#[actix_rt::test]
async fn lists_and_calls_agree_with_every_row_of_the_policy_table() {
    // Two tools per page: pagination must hold after filtering.
    let r = Rbac::start(&[("sessions.page_size", "2")]).await;
    let mut checked = 0;
    for (i, row) in table().rows.iter().enumerate() {
        let Some(tool) = row.object.strip_prefix("tool:") else {
            continue;
        };
        let Some(args) = call_args(tool) else {
            continue;
        };
        let c = r.session(row, "2025-11-25").await;
        let listed = all_tools(&c).await;
        assert_eq!(
            listed.contains(&tool.to_owned()),
            row.allow,
            "row {}: {row:?} lists {listed:?}",
            i + 1
        );
        let mut unique = listed.clone();
        unique.dedup();
        assert_eq!(unique, listed, "no tool twice across pages");
        let answer = call(&c, 1, tool, args).await;
        if row.allow {
            assert_eq!(answer["result"]["isError"], false, "row {}: {answer}", i + 1);
        } else {
            let unknown = call(&c, 1, "no_such_tool", json!({})).await;
            assert_eq!(
                shape(answer, tool),
                shape(unknown, "no_such_tool"),
                "row {}: a denied call looks like an unknown tool",
                i + 1
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "the table exercises the tools ({checked} rows)");
}

#[actix_rt::test]
async fn a_denied_call_stays_denied_on_every_protocol_version_and_in_batches() {
    let r = Rbac::start(&[]).await;
    let viewer = table()
        .rows
        .into_iter()
        .find(|row| row.roles == ["viewer"] && row.object == "tool:add" && !row.allow)
        .expect("the table denies add to a viewer");
    for version in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let c = r.session(&viewer, version).await;
        let denied = call(&c, 1, "add", json!({"a": 1, "b": 2})).await;
        assert_eq!(denied["error"]["code"], -32602, "{version}: {denied}");
        // Without the version header (servers assume 2025-03-26).
        let mut bare = c.clone();
        bare.version = None;
        let denied = call(&bare, 2, "add", json!({"a": 1, "b": 2})).await;
        assert_eq!(denied["error"]["code"], -32602, "{version}, no header: {denied}");
        assert_eq!(
            call(&c, 3, "echo", json!({"text": "ok"})).await["result"]["isError"],
            false
        );
    }
    // Inside a batch (2025-03-26 sessions), each item is authorized on its own.
    let c = r.session(&viewer, "2025-03-26").await;
    let resp = c
        .post(&json!([
            {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}},
            {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ok"}}},
            {"jsonrpc":"2.0","id":3,"method":"tools/list"}
        ]))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let answers: Vec<Value> = resp.json().await.unwrap();
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["error"]["code"], -32602, "{answers:?}");
    assert_eq!(by_id(2)["result"]["content"][0]["text"], "ok");
    let list = by_id(3);
    let listed: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["echo"]);
}

#[actix_rt::test]
async fn roles_come_from_each_request_credential() {
    let r = Rbac::start(&[]).await;
    let rows = table().rows;
    let find = |subject: &str, roles: &[&str]| {
        rows.iter()
            .find(|row| row.subject == subject && row.roles == roles)
            .unwrap()
            .clone()
    };
    // vera's session opened with her viewer+operator key, continued with her viewer-only key:
    // the same principal (the session goes on), fewer roles at once.
    let both = find("vera", &["viewer", "operator"]);
    let fewer = find("vera", &["viewer"]);
    let c = r.session(&both, "2025-11-25").await;
    assert!(all_tools(&c).await.contains(&"add".to_owned()));
    let c = c.bearer(r.key(&fewer));
    assert_eq!(all_tools(&c).await, ["echo"]);
    assert_eq!(
        call(&c, 1, "add", json!({"a": 1, "b": 2})).await["error"]["code"],
        -32602
    );
}

/// Resources, templates and prompts of an upstream MCP server are filtered and guarded the same
/// way: a denied read, subscription, prompt or completion looks exactly like a missing one.
#[actix_rt::test]
async fn resources_and_prompts_follow_the_policy() {
    let upstream = marina_tests::UpstreamPeer::start();
    let key = generate_key();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(
        &file,
        format!(
            r#"egress: {{allow_loopback: true}}
tenants:
  acme:
    auth:
      api_keys: [{{subject: rita, sha256: {}, roles: [reader]}}]
    rbac:
      policy: |
        p, reader, resource:test://static-*, read, allow
        p, reader, prompt:conf.test_simple_prompt, get, allow
        p, reader, tool:echo, call, allow
    upstreams:
      - {{kind: builtin, tools: [echo]}}
      - {{kind: mcp, name: conf, url: "{}", timeout_ms: 10000}}
"#,
            digest(&key),
            upstream.url
        ),
    )
    .unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    let c = Mcp::new(&app.endpoint("acme"))
        .bearer(&key)
        .open("2025-11-25", json!({}))
        .await;
    let names = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v["result"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|i| i[field].as_str().unwrap().to_owned())
            .collect()
    };
    let uris = names(&c.rpc(1, "resources/list", json!({})).await, "resources", "uri");
    assert!(!uris.is_empty());
    assert!(uris.iter().all(|u| u.starts_with("test://static-")), "{uris:?}");
    assert!(uris.contains(&"test://static-text".to_owned()));
    let templates = c.rpc(2, "resources/templates/list", json!({})).await;
    assert_eq!(
        names(&templates, "resourceTemplates", "uriTemplate"),
        Vec::<String>::new()
    );
    let prompts = names(&c.rpc(3, "prompts/list", json!({})).await, "prompts", "name");
    assert_eq!(prompts, ["conf.test_simple_prompt"]);
    assert_eq!(c.tool_names(4).await, ["echo"]);

    let read = c
        .rpc(5, "resources/read", json!({"uri": "test://static-text"}))
        .await;
    assert!(read["result"]["contents"].is_array(), "{read}");
    // Denied and missing look the same, whatever the method.
    let same = |a: Value, b: Value, what: &str| {
        let strip = |mut v: Value| {
            v["id"] = Value::Null;
            v.to_string()
                .replace("test://watched-resource", "<x>")
                .replace("test://nope", "<x>")
                .replace("conf.test_prompt_with_arguments", "<x>")
                .replace("conf.nope", "<x>")
        };
        assert_eq!(strip(a), strip(b), "{what}");
    };
    for method in ["resources/read", "resources/subscribe"] {
        same(
            c.rpc(6, method, json!({"uri": "test://watched-resource"})).await,
            c.rpc(6, method, json!({"uri": "test://nope"})).await,
            method,
        );
    }
    same(
        c.rpc(
            7,
            "prompts/get",
            json!({"name": "conf.test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}),
        )
        .await,
        c.rpc(
            7,
            "prompts/get",
            json!({"name": "conf.nope", "arguments": {"arg1": "a", "arg2": "b"}}),
        )
        .await,
        "prompts/get",
    );
    same(
        c.rpc(8, "completion/complete", json!({"ref": {"type": "ref/prompt", "name": "conf.test_prompt_with_arguments"}, "argument": {"name": "arg1", "value": "a"}})).await,
        c.rpc(8, "completion/complete", json!({"ref": {"type": "ref/prompt", "name": "conf.nope"}, "argument": {"name": "arg1", "value": "a"}})).await,
        "completion",
    );
    let got = c
        .rpc(9, "prompts/get", json!({"name": "conf.test_simple_prompt"}))
        .await;
    assert!(got["result"]["messages"].is_array(), "{got}");
    app.shutdown().await;
}

#[test]
fn marina_policy_explains_decisions_and_checks_tables() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        "tenants:\n  acme:\n    auth: {api_keys: []}\n    rbac:\n      policy: |\n        p, viewer, tool:echo, call, allow\n        p, operator, tool:*, call, allow\n        p, operator, tool:admin_*, call, deny\n        g, operator, viewer\n        g, admin, operator\n        g, alice, admin\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(marina_tests::marina_bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let c = config.to_str().unwrap();
    let (code, out) = run(&[
        "policy",
        "explain",
        "--config",
        c,
        "--tenant",
        "acme",
        "--subject",
        "alice",
        "--object",
        "tool:admin_reset",
        "--action",
        "call",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("decision: deny"), "{out}");
    assert!(
        out.contains("rule: p, operator, tool:admin_*, call, deny"),
        "{out}"
    );
    assert!(out.contains("chain: alice -> admin -> operator"), "{out}");
    let (_, out) = run(&[
        "policy",
        "explain",
        "--config",
        c,
        "--tenant",
        "acme",
        "--subject",
        "bob",
        "--roles",
        "viewer",
        "--object",
        "tool:echo",
        "--action",
        "call",
    ]);
    assert!(
        out.contains("decision: allow") && out.contains("chain: viewer"),
        "{out}"
    );

    let table = dir.path().join("table.yaml");
    std::fs::write(
        &table,
        "tenant: acme\nrows:\n  - {subject: alice, object: 'tool:add', action: call, allow: true}\n  - {subject: bob, roles: [viewer], object: 'tool:add', action: call, allow: true}\n",
    )
    .unwrap();
    let (code, out) = run(&["policy", "test", "--config", c, table.to_str().unwrap()]);
    assert_eq!(code, Some(1), "a wrong row fails the run: {out}");
    assert!(
        out.contains("row 2: bob") && out.contains("expected allow, got deny"),
        "{out}"
    );
    assert!(out.contains("2 rows, 1 failed"), "{out}");
    let repo_table =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/tests/hierarchy.yaml");
    let (code, out) = run(&["policy", "test", repo_table.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
}

/// The URIs of the `notifications/resources/updated` among `events`.
fn updated_uris(events: &[marina_tests::SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(marina_tests::SseEvent::json)
        .filter(|m| m["method"] == "notifications/resources/updated")
        .map(|m| m["params"]["uri"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Resource updates follow what the session's owner may read now, not when it subscribed: after
/// a request with a credential carrying fewer roles, updates of a resource those roles may not
/// read stop, while those of a resource they may read go on.
#[actix_rt::test]
async fn resource_updates_stop_once_the_owner_may_no_longer_read_the_resource() {
    let upstream = marina_tests::UpstreamPeer::start_env(&[("WATCH_INTERVAL_MS", "100")]);
    let (full, narrow) = (generate_key(), generate_key());
    let yaml = format!(
        r#"egress:
  allow_loopback: true
tenants:
  acme:
    upstreams:
      - {{kind: mcp, name: conf, url: "{url}"}}
      - {{kind: mcp, name: twin, url: "{url}"}}
    auth:
      api_keys:
        - {{subject: alice, sha256: {full}, roles: [reader]}}
        - {{subject: alice, sha256: {narrow}, roles: [twin-reader]}}
    rbac:
      policy: |
        p, reader, resource:*, read, allow
        p, twin-reader, resource:marina://twin/*, read, allow
"#,
        url = upstream.url,
        full = digest(&full),
        narrow = digest(&narrow),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("marina.yaml");
    std::fs::write(&file, yaml).unwrap();
    let app = spawn_app_with(Some(&file), &[]).await;
    let s = Mcp::new(&app.endpoint("acme"))
        .bearer(&full)
        .open("2025-11-25", json!({}))
        .await;
    let (plain, twin) = ("test://watched-resource", "marina://twin/test://watched-resource");
    let stream = s.get(None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let reader = tokio::spawn(marina_tests::read_events(
        stream,
        std::time::Duration::from_secs(20),
        move |ev| {
            let uris = updated_uris(ev);
            uris.iter().any(|u| u == plain) && uris.iter().any(|u| u == twin)
        },
    ));
    assert_eq!(
        s.rpc(1, "resources/subscribe", json!({"uri": twin})).await["result"],
        json!({})
    );
    assert_eq!(
        s.rpc(2, "resources/subscribe", json!({"uri": plain})).await["result"],
        json!({})
    );
    let (before, _) = reader.await.unwrap();
    assert!(
        updated_uris(&before).iter().any(|u| u == plain),
        "both arrive at first"
    );

    // The same principal, now with a credential that may read only the twin's resources.
    let narrowed = s.bearer(&narrow);
    assert_eq!(narrowed.rpc(3, "ping", json!({})).await["result"], json!({}));
    let (after, _) = marina_tests::read_events(
        narrowed.get(None).await,
        std::time::Duration::from_secs(20),
        |ev| updated_uris(ev).len() >= 6,
    )
    .await;
    let uris = updated_uris(&after);
    assert!(uris.len() >= 6, "the twin's updates go on: {uris:?}");
    assert!(
        uris.iter().all(|u| u == twin),
        "no update of a resource it may not read: {uris:?}"
    );
    // And reading it directly is refused like a missing resource.
    let r = narrowed.rpc(4, "resources/read", json!({"uri": plain})).await;
    assert_eq!(r["error"]["code"], -32002, "{r}");
}
