//! The official conformance suite (all 32 server scenarios: 30 active, 2 pending; no baseline)
//! against a tenant whose tools, resources and prompts live in an upstream MCP server
//! (tests/peers/upstream), served by two Marina nodes sharing one Redis behind a round-robin balancer — so consecutive requests
//! of every session land on different nodes and are forwarded to the session's holder.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use marina_tests::{MarinaProc, RedisServer, UpstreamPeer, start_balancer};

#[actix_rt::test]
async fn every_conformance_scenario_passes_through_a_two_node_cluster() {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/node");
    let node22 = peers.join("node_modules/.bin/node");
    let suite = peers.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node22.exists() && suite.exists(),
        "conformance peers missing: run scripts/install-test-deps.sh"
    );

    let redis = RedisServer::start();
    let upstream = UpstreamPeer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        format!(
            "egress:\n  allow_loopback: true\ntenants:\n  conf:\n    upstreams:\n      - {{kind: mcp, name: conf, prefix: \"\", url: \"{}\", timeout_ms: 30000}}\n",
            upstream.url
        ),
    )
    .unwrap();
    let env = [("MARINA__SESSIONS__LEASE_TTL_MS", "3000")];
    let a = MarinaProc::start_with_config(&redis.url(), "A", &env, &config);
    let b = MarinaProc::start_with_config(&redis.url(), "B", &env, &config);
    let lb = start_balancer(vec![a.base(), b.base()]).await;

    let url = format!("{lb}/t/conf/mcp");
    let results = dir.path().join("results");
    let run = tokio::task::spawn_blocking(move || {
        Command::new(&node22)
            .arg(&suite)
            .args(["server", "--suite", "all", "--url", &url, "-o"])
            .arg(&results)
            .current_dir(&peers)
            .output()
            .expect("run the conformance suite")
    });
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("conformance timed out")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with('✗')).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "failed scenarios: {failed:#?}\n{stdout}"
    );
    let passed = stdout.lines().filter(|l| l.starts_with('✓')).count();
    assert_eq!(passed, 32, "{stdout}");
}
