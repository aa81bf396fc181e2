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
