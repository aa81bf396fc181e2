//! The store conformance suite against a real Redis (the memory store runs it in its unit tests).

use std::sync::Arc;
use std::time::Duration;

use marina_core::store::{RedisStore, SessionStore, suite};
use marina_tests::RedisServer;

#[tokio::test]
async fn redis_store_passes_the_suite() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url(), "test", Duration::from_secs(2)).unwrap();
    suite::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn every_session_key_has_a_ttl_and_shares_one_hash_tag() {
    let redis = RedisServer::start();
    let store = Arc::new(RedisStore::new(&redis.url(), "ttl", Duration::from_secs(2)).unwrap());
    suite::run_all(store.clone()).await;
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--scan"])
        .output()
        .unwrap();
    let keys = String::from_utf8(out.stdout).unwrap();
    assert!(!keys.trim().is_empty());
    for key in keys.lines() {
        let ttl = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "pttl", key])
            .output()
            .unwrap();
        let ttl: i64 = String::from_utf8(ttl.stdout).unwrap().trim().parse().unwrap();
        // The cluster's shared keys are capped instead: one per name.
        if key.starts_with("ttl:key:") {
            continue;
        }
        assert!(ttl > 0 || ttl == -2, "{key} has no TTL ({ttl})");
        // Node records stand alone; a tenant's session index is tagged by its tenant, a
        // principal's upstream sessions by tenant and principal.
        let own_tag = ["ttl:node:", "ttl:nodes", "ttl:idx:{", "ttl:pu:{", "ttl:once:{"];
        if !own_tag.iter().any(|p| key.starts_with(p)) {
            assert!(
                key.starts_with("ttl:{") && key.contains("}:"),
                "{key} lacks the session hash tag"
            );
        }
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_not_a_hang() {
    // Port 1 (tcpmux) is privileged and unused: a freshly freed port could be taken by another
    // test's Redis before this test connects.
    let port = 1;
    let store = RedisStore::new(
        &format!("redis://127.0.0.1:{port}/"),
        "x",
        Duration::from_millis(500),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = store.ping().await.unwrap_err();
    assert!(
        matches!(err, marina_core::store::StoreError::Unavailable(_)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The configured store timeout is the one that applies: an answer Redis delays by 800 ms (well
/// under the 2 s timeout) is waited for, not cut off by the client library's own default
/// (500 ms), which under load turned slow answers into 503s.
#[tokio::test]
async fn a_slow_answer_within_the_store_timeout_is_waited_for() {
    let redis = RedisServer::start();
    let store = RedisStore::new(&redis.url(), "slow", Duration::from_secs(2)).unwrap();
    store.ping().await.expect("connected");
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "client", "pause", "800", "all"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "OK");
    let started = std::time::Instant::now();
    store.ping().await.expect("answered once the pause ends");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the answer was delayed"
    );
}
