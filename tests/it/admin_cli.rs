//! `marina admin …`: the admin API from the command line, run as a subprocess against a live
//! node with Redis.

use std::process::Stdio;
use std::time::{Duration, Instant};

use marina_auth::{digest, generate_key};
use marina_tests::{MarinaProc, RedisServer, free_port, marina_bin};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VERSION: &str = "2025-11-25";

/// What a `marina admin` run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Exit status `code`, else a failure showing the run.
    fn expect(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "exit status of {self:#?}");
        self
    }

    /// Success, stdout as JSON.
    fn json(self) -> Value {
        let r = self.expect(0);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r:#?}"))
    }

    /// The cells of the table's rows (header left out), whitespace-split.
    fn rows(&self) -> Vec<Vec<&str>> {
        self.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect()
    }
}

/// `marina admin ARGS` with exactly `env` of the MARINA_ADMIN_* variables (none inherited),
/// bounded: killed after a minute.
async fn marina_admin(env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(marina_bin());
    cmd.arg("admin")
        .args(args)
        .env_remove("MARINA_ADMIN_KEY")
        .env_remove("MARINA_ADMIN_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("marina admin {args:?} did not finish within a minute"))
        .expect("run marina");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CLI pointed at one node's admin API with one key.
struct Cli {
    url: String,
    key: String,
}

impl Cli {
    async fn run(&self, args: &[&str]) -> Run {
        marina_admin(
            &[("MARINA_ADMIN_URL", &self.url), ("MARINA_ADMIN_KEY", &self.key)],
            args,
        )
        .await
    }

    /// The number of audit entries (all tenants).
    async fn audit_len(&self) -> usize {
        let a = self.run(&["audit", "--limit", "1000", "--json"]).await.json();
        a["items"].as_array().map_or(0, Vec::len)
    }
}

/// Status of an `initialize` on `url` with `Authorization: Bearer <key>`.
async fn initialize_status(url: &str, key: &str) -> StatusCode {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .post(url)
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
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

/// Poll (bounded) until `url` answers `initialize` with `key` with `status`; how long it took.
async fn until_initialize(url: &str, key: &str, status: StatusCode, limit: Duration) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    loop {
        let got = initialize_status(url, key).await;
        if got == status {
            let took = start.elapsed();
            assert!(took <= limit, "{status} took {took:?}, more than {limit:?}");
            return took;
        }
        assert!(
            Instant::now() < deadline,
            "initialize never got {status} (last {got})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const POLICY: &str =
    "p, operator, tool:*, call, allow\np, operator, tool:admin_*, call, deny\ng, alice, operator\n";

/// A configuration file of two tenants, as an operator would write it.
fn tenants_file(bob_digest: &str) -> String {
    format!(
        r#"# two tenants managed through the admin API
server:
  log_format: json
tenants:
  acme:
    auth:
      api_keys:
        - subject: bob
          sha256: {bob_digest}
          roles: [operator]
    rbac:
      policy: |
        p, operator, tool:*, call, allow
        p, operator, tool:admin_*, call, deny
        g, alice, operator
    limits: {{max_body_bytes: 262144, rate: {{tenant: "1000/s"}}}}
    upstreams:
      - kind: builtin
        tools: [echo, add]
  globex:
    auth: {{anonymous: true}}
    upstreams: [{{kind: builtin, tools: [echo]}}]
"#
    )
}

/// A node with Redis, one administrator key and the file tenant `fixed` (anonymous, `echo`).
struct Node {
    // Dropped in this order: the node before its store.
    node: MarinaProc,
    admin_key: String,
    dir: tempfile::TempDir,
    _redis: RedisServer,
}

fn node() -> Node {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let admin_key = generate_key();
    let node_config = dir.path().join("node.yaml");
    std::fs::write(
        &node_config,
        format!(
            "admin:\n  api_keys:\n    - {{subject: ops, sha256: {}}}\ntenants:\n  fixed:\n    auth: {{anonymous: true}}\n    upstreams: [{{kind: builtin, tools: [echo]}}]\n",
            digest(&admin_key)
        ),
    )
    .unwrap();
    Node {
        node: MarinaProc::start_with_config(&redis.url(), "cli", &[], &node_config),
        admin_key,
        dir,
        _redis: redis,
    }
}

#[tokio::test]
async fn the_admin_cli_manages_tenants_keys_and_audit() {
    let Node {
        node, admin_key, dir, ..
    } = &node();
    // Either form of the URL.
    let cli = Cli {
        url: node.admin(),
        key: admin_key.clone(),
    };
    let cli_short = Cli {
        url: format!("http://127.0.0.1:{}", node.admin_port),
        key: admin_key.clone(),
    };
    let acme_mcp = format!("{}/t/acme/mcp", node.base());

    // apply: both tenants created.
    let bob = generate_key();
    let file = dir.path().join("tenants.yaml");
    std::fs::write(&file, tenants_file(&digest(&bob))).unwrap();
    let file = file.to_str().unwrap();
    let r = cli.run(&["tenants", "apply", "-f", file]).await.expect(0);
    assert!(r.stdout.contains("acme: created"), "{r:#?}");
    assert!(r.stdout.contains("globex: created"), "{r:#?}");
    until_initialize(&acme_mcp, &bob, StatusCode::OK, Duration::from_secs(10)).await;
    let audited = cli.audit_len().await;
    assert!(audited >= 2, "{audited} audit entries after two creations");

    // Again: nothing to do, nothing written, nothing audited.
    let r = cli_short.run(&["tenants", "apply", "-f", file]).await.expect(0);
    assert!(r.stdout.contains("acme: unchanged"), "{r:#?}");
    assert!(r.stdout.contains("globex: unchanged"), "{r:#?}");
    assert!(
        !r.stdout.contains("created") && !r.stdout.contains("replaced"),
        "{r:#?}"
    );
    assert_eq!(cli.audit_len().await, audited, "a no-op apply was audited");
    let r = cli
        .run(&["tenants", "apply", "-f", file, "--dry-run", "--json"])
        .await
        .json();
    assert_eq!(
        r["items"],
        json!([{"id": "acme", "result": "unchanged"}, {"id": "globex", "result": "unchanged"}])
    );

    // list: a table, and JSON.
    let r = cli.run(&["tenants", "list"]).await.expect(0);
    assert!(r.stdout.starts_with("ID "), "{r:#?}");
    let rows = r.rows();
    let summary: Vec<(&str, &str)> = rows.iter().map(|c| (c[0], c[1])).collect();
    assert_eq!(
        summary,
        [("acme", "store"), ("fixed", "file"), ("globex", "store")],
        "{r:#?}"
    );
    let listed = cli_short.run(&["tenants", "list", "--json"]).await.json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "fixed", "globex"]);

    // get: YAML for people, the document as written for scripts.
    let r = cli.run(&["tenants", "get", "acme"]).await.expect(0);
    assert!(
        r.stdout.starts_with("# tenant acme: source store, ETag \""),
        "{r:#?}"
    );
    assert!(r.stdout.contains("\nacme:\n"), "{r:#?}");
    assert!(r.stdout.contains("g, alice, operator"), "{r:#?}");
    let doc = cli.run(&["tenants", "get", "acme", "--json"]).await.json();
    assert_eq!(doc["rbac"]["policy"], POLICY);
    assert_eq!(
        doc["limits"],
        json!({"max_body_bytes": 262144, "rate": {"tenant": "1000/s"}})
    );
    assert_eq!(doc["auth"]["api_keys"][0]["sha256"], digest(&bob));

    // keys: create (the key works on the tenant's endpoint), list, revoke (refused within a
    // second).
    let r = cli
        .run(&[
            "keys",
            "create",
            "acme",
            "--subject",
            "ci-bot",
            "--role",
            "operator",
        ])
        .await
        .expect(0);
    let mut lines = r.stdout.lines();
    let key = lines.next().unwrap_or_default().trim().to_owned();
    assert!(key.starts_with("mk_"), "{r:#?}");
    let id = lines
        .find_map(|l| l.strip_prefix("id:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no id: {r:#?}"));
    assert!(
        !r.stderr.contains(admin_key.as_str()),
        "the admin key was printed"
    );
    until_initialize(&acme_mcp, &key, StatusCode::OK, Duration::from_secs(10)).await;
    let r = cli.run(&["keys", "list", "acme"]).await.expect(0);
    assert!(r.stdout.starts_with("ID "), "{r:#?}");
    let row = r
        .rows()
        .into_iter()
        .find(|c| c[0] == id)
        .unwrap_or_else(|| panic!("key {id} not listed: {r:#?}"))
        .join(" ");
    assert!(row.contains("ci-bot") && row.contains("operator"), "{row}");
    assert!(!r.stdout.contains(&key), "a listing showed a key");
    let listed = cli.run(&["keys", "list", "acme", "--json"]).await.json();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str() && k["subject"] == "ci-bot"),
        "{listed}"
    );
    let r = cli.run(&["keys", "revoke", "acme", &id]).await.expect(0);
    assert!(r.stdout.contains(&id), "{r:#?}");
    until_initialize(&acme_mcp, &key, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;
    assert_eq!(initialize_status(&acme_mcp, &bob).await, StatusCode::OK);
    let r = cli.run(&["keys", "revoke", "acme", &id]).await.expect(1);
    assert!(r.stderr.starts_with("marina: 404 "), "{r:#?}");

    // explain: the deciding rule and the role chain.
    let r = cli
        .run(&[
            "explain",
            "acme",
            "--subject",
            "alice",
            "--object",
            "tool:admin_reset",
            "--action",
            "call",
        ])
        .await
        .expect(0);
    assert!(r.stdout.contains("decision: deny"), "{r:#?}");
    assert!(
        r.stdout.contains("p, operator, tool:admin_*, call, deny"),
        "{r:#?}"
    );
    assert!(r.stdout.contains("alice -> operator"), "{r:#?}");
    let r = cli
        .run(&[
            "explain",
            "acme",
            "--subject",
            "carol",
            "--role",
            "operator",
            "--object",
            "tool:echo",
            "--action",
            "call",
            "--json",
        ])
        .await
        .json();
    assert_eq!(r["decision"], "allow", "{r}");

    // audit: the key's creation and revocation, by the administrator.
    let r = cli.run(&["audit", "--tenant", "acme"]).await.expect(0);
    assert!(r.stdout.starts_with("TIME "), "{r:#?}");
    let actions: Vec<&str> = r.rows().iter().map(|c| c[2]).collect();
    assert_eq!(
        actions,
        ["tenant.create", "api_key.create", "api_key.revoke"],
        "{r:#?}"
    );
    assert!(r.rows().iter().all(|c| c[1] == "ops"), "{r:#?}");
    assert!(r.stdout.contains(&format!("key {id}")), "{r:#?}");
    let a = cli
        .run(&[
            "audit", "--tenant", "acme", "--since", "1h", "--limit", "1", "--json",
        ])
        .await
        .json();
    assert_eq!(a["items"].as_array().map(Vec::len), Some(1), "{a}");
    let r = cli.run(&["audit", "--since", "whenever"]).await.expect(1);
    assert!(r.stderr.starts_with("marina: 400 since must be"), "{r:#?}");

    // export, then apply what it wrote: nothing changes, nothing is audited.
    let exported = dir.path().join("export.yaml");
    let exported = exported.to_str().unwrap();
    cli.run(&["export", "-o", exported]).await.expect(0);
    let text = std::fs::read_to_string(exported).unwrap();
    assert!(text.contains("\ntenants:\n"), "{text}");
    let audited = cli.audit_len().await;
    let r = cli.run(&["tenants", "apply", "-f", exported]).await.expect(0);
    for t in ["acme", "fixed", "globex"] {
        assert!(r.stdout.contains(&format!("{t}: unchanged")), "{r:#?}");
    }
    assert_eq!(cli.audit_len().await, audited, "applying an export was audited");
    let stdout = cli.run(&["export"]).await.expect(0).stdout;
    assert_eq!(stdout, text, "export to stdout and to a file differ");
    let as_json = cli.run(&["export", "--json"]).await.json();
    assert_eq!(as_json["tenants"]["acme"], doc_now(&cli, "acme").await);
    let json_file = dir.path().join("export.json");
    std::fs::write(&json_file, as_json.to_string()).unwrap();
    let r = cli
        .run(&["tenants", "apply", "-f", json_file.to_str().unwrap()])
        .await
        .expect(0);
    assert_eq!(r.stdout.matches(": unchanged").count(), 3, "{r:#?}");

    // A changed file: acme's limits are replaced (bob's key still works); a change to the
    // configuration file's tenant is refused, and only that fails.
    let mut changed = tenants_file(&digest(&bob)).replace("1000/s", "500/s");
    changed.push_str("  fixed:\n    auth: {anonymous: false}\n");
    std::fs::write(&json_file, &changed).unwrap();
    let r = cli
        .run(&["tenants", "apply", "-f", json_file.to_str().unwrap()])
        .await
        .expect(1);
    assert!(r.stdout.contains("globex: unchanged"), "{r:#?}");
    assert!(r.stdout.contains("acme: replaced (version "), "{r:#?}");
    assert!(r.stdout.contains("): limits"), "{r:#?}");
    assert!(r.stderr.contains("marina: fixed: 409 "), "{r:#?}");
    assert!(r.stderr.contains("configuration file"), "{r:#?}");
    assert!(r.stderr.contains("1 of 3 tenants not applied"), "{r:#?}");
    assert_eq!(initialize_status(&acme_mcp, &bob).await, StatusCode::OK);

    // An invalid document: the problem names the field; nothing else is touched.
    std::fs::write(
        &json_file,
        "tenants:\n  broken:\n    auth: {api_keys: [{subject: x, sha256: abc}]}\n",
    )
    .unwrap();
    let r = cli
        .run(&["tenants", "apply", "-f", json_file.to_str().unwrap()])
        .await
        .expect(1);
    assert!(
        r.stderr.contains("marina: broken: 400 ") && r.stderr.contains("(field: auth.api_keys[0].sha256)"),
        "{r:#?}"
    );

    // delete.
    let r = cli.run(&["tenants", "delete", "globex"]).await.expect(0);
    assert!(r.stdout.contains("deleted tenant globex"), "{r:#?}");
    let r = cli.run(&["tenants", "get", "globex"]).await.expect(1);
    assert_eq!(r.stderr.trim(), "marina: 404 no tenant globex", "{r:#?}");

    // Errors: an unknown tenant; a configuration-file tenant; a wrong key; no key; a key file.
    let r = cli.run(&["tenants", "get", "nope"]).await.expect(1);
    assert_eq!(r.stderr.trim(), "marina: 404 no tenant nope", "{r:#?}");
    assert!(r.stdout.is_empty(), "{r:#?}");
    let r = cli
        .run(&["keys", "create", "fixed", "--subject", "x"])
        .await
        .expect(1);
    assert!(r.stderr.starts_with("marina: 409 "), "{r:#?}");
    let wrong = generate_key();
    let r = marina_admin(
        &[("MARINA_ADMIN_URL", &node.admin()), ("MARINA_ADMIN_KEY", &wrong)],
        &["tenants", "list"],
    )
    .await
    .expect(1);
    assert!(r.stderr.starts_with("marina: 401 "), "{r:#?}");
    assert!(
        !r.stderr.contains(&wrong) && !r.stdout.contains(&wrong),
        "the key was printed"
    );
    let r = marina_admin(&[("MARINA_ADMIN_URL", &node.admin())], &["tenants", "list"])
        .await
        .expect(1);
    assert!(r.stderr.starts_with("marina: 401 "), "{r:#?}");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, format!("{admin_key}\n")).unwrap();
    let r = marina_admin(
        &[],
        &[
            "tenants",
            "list",
            "--url",
            &node.admin(),
            "--key-file",
            key_file.to_str().unwrap(),
        ],
    )
    .await
    .expect(0);
    let ids: Vec<&str> = r.rows().iter().map(|c| c[0]).collect();
    assert_eq!(ids, ["acme", "fixed"], "{r:#?}");
}

/// A tenant's document as the API has it now.
async fn doc_now(cli: &Cli, id: &str) -> Value {
    cli.run(&["tenants", "get", id, "--json"]).await.json()
}

#[tokio::test]
async fn the_admin_cli_exits_3_when_the_api_is_unreachable_and_2_when_misused() {
    // Nothing listens on a port that was just free.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let r = marina_admin(&[("MARINA_ADMIN_URL", &closed)], &["tenants", "list"])
        .await
        .expect(3);
    assert!(
        r.stderr.starts_with("marina: cannot reach the admin API at "),
        "{r:#?}"
    );
    let r = marina_admin(&[], &["audit", "--url", &format!("{closed}/admin/v1/"), "--json"])
        .await
        .expect(3);
    assert!(r.stdout.is_empty(), "{r:#?}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let not_config = dir.path().join("server.yaml");
    std::fs::write(&not_config, "server: {bind: 127.0.0.1:0}\n").unwrap();
    let env = [("MARINA_ADMIN_URL", closed.as_str())];
    for args in [
        vec!["tenants", "apply"],
        vec!["tenants", "get"],
        vec!["tenants", "get", ""],
        vec!["sessions", "kill", "acme"],
        vec![
            "sessions",
            "kill",
            "acme",
            "0123456789abcdef",
            "--principal",
            "bob",
        ],
        vec!["audit", "--limit", "0"],
        vec!["tenants", "list", "--url", "ftp://127.0.0.1/"],
        vec!["tenants", "list", "--url", "not a url"],
        vec!["tenants", "apply", "-f", missing.to_str().unwrap()],
        vec!["tenants", "apply", "-f", not_config.to_str().unwrap()],
        vec!["tenants", "list", "--key-file", missing.to_str().unwrap()],
        vec!["frobnicate"],
    ] {
        let r = marina_admin(&env, &args).await;
        assert_eq!(r.code, Some(2), "{args:?}: {r:#?}");
        assert!(!r.stderr.is_empty(), "{args:?}: {r:#?}");
    }
}

#[tokio::test]
async fn the_admin_cli_lists_and_ends_sessions_and_shows_upstream_status() {
    let Node { node, admin_key, .. } = &node();
    let cli = Cli {
        url: node.admin(),
        key: admin_key.clone(),
    };
    let endpoint = format!("{}/t/fixed/mcp", node.base());
    let a = marina_tests::Mcp::connect(&endpoint, VERSION, json!({})).await;
    let b = marina_tests::Mcp::connect(&endpoint, VERSION, json!({})).await;
    let tag = |m: &marina_tests::Mcp| m.session.as_deref().unwrap()[..8].to_owned();

    // list: a table naming both sessions' tags; --json for scripts.
    let r = cli.run(&["sessions", "list", "fixed"]).await.expect(0);
    assert!(
        r.stdout.contains(&tag(&a)) && r.stdout.contains(&tag(&b)),
        "{r:#?}"
    );
    let listed = cli.run(&["sessions", "list", "fixed", "--json"]).await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let got = cli
        .run(&["sessions", "get", "fixed", &tag(&a), "--json"])
        .await
        .json();
    assert_eq!(got["id"], tag(&a).as_str());
    assert_eq!(got["node"], "cli");

    // kill one: it is gone (404), the other lives.
    cli.run(&["sessions", "kill", "fixed", &tag(&a)]).await.expect(0);
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
    assert_eq!(a.post(&ping).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(b.post(&ping).await.status(), StatusCode::OK);
    let r = cli.run(&["sessions", "get", "fixed", &tag(&a)]).await.expect(1);
    assert!(r.stderr.contains("404"), "{r:#?}");

    // kill all of a principal's (the anonymous tenant's callers are `anonymous`).
    let r = cli
        .run(&["sessions", "kill", "fixed", "--principal", "anonymous", "--json"])
        .await
        .json();
    assert_eq!(r["terminated"], 1);
    assert_eq!(b.post(&ping).await.status(), StatusCode::NOT_FOUND);

    // upstream status.
    let r = cli.run(&["upstreams", "fixed"]).await.expect(0);
    assert!(r.stdout.contains("builtin"), "{r:#?}");
    let s = cli.run(&["upstreams", "fixed", "--json"]).await.json();
    assert_eq!(s["items"][0]["reachable"], true);
}
