//! The store conformance suite: the same checks run against [`super::MemoryStore`] (unit tests)
//! and [`super::RedisStore`] (integration tests with a real `redis-server`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{InflightCall, LeaseOutcome, NodeInfo, SessionRecord, SessionStore, StoreError, now_ms};
use crate::domain::SessionId;

const TTL: Duration = Duration::from_secs(60);

fn record() -> SessionRecord {
    SessionRecord {
        tenant: "demo".into(),
        principal: Some(crate::domain::Owner {
            issuer: "api-key".into(),
            subject: "alice".into(),
        }),
        protocol_version: "2025-11-25".into(),
        client_capabilities: json!({"elicitation": {}}),
        client_info: json!({"name": "t", "version": "1"}),
        log_level: None,
        upstreams: Default::default(),
        initialized: false,
        created_at_ms: now_ms(),
        expires_at_ms: now_ms() + 3_600_000,
        last_used_ms: 0,
        next_stream: 1,
        inflight: BTreeMap::new(),
        version: 1,
    }
}

/// Take the lease as `holder`, whose node is alive for the length of the suite.
async fn acquire(store: &dyn SessionStore, id: &SessionId, holder: &str) -> super::Fence {
    let node = NodeInfo {
        instance: holder.to_owned(),
        url: "http://127.0.0.1:1".into(),
        draining: false,
    };
    store.register_node(&node, TTL).await.unwrap();
    match store.acquire_lease(id, holder).await.unwrap() {
        LeaseOutcome::Acquired(f) => f,
        other => panic!("expected to acquire, got {other:?}"),
    }
}

/// Run every check. Each uses fresh random ids, so runs can share one store.
pub async fn run_all(store: Arc<dyn SessionStore>) {
    let s = store.as_ref();
    store.ping().await.unwrap();
    records_round_trip_and_writes_are_fenced_and_versioned(s).await;
    leases_are_exclusive_and_expire(s).await;
    events_append_read_trim_and_fence(s).await;
    calls_begin_and_complete_atomically_and_fenced(s).await;
    delete_removes_everything(s).await;
    sessions_expire_by_ttl(s).await;
    nodes_register_and_expire(s).await;
    tenants_index_their_sessions(s).await;
    ended_sessions_are_announced(s).await;
    principals_share_upstream_sessions(s).await;
    tokens_are_claimed_once_and_keys_shared(s).await;
}

async fn records_round_trip_and_writes_are_fenced_and_versioned(s: &dyn SessionStore) {
    let id = SessionId::generate();
    assert!(s.load_session(&id).await.unwrap().is_none());
    let mut rec = record();
    s.create_session(&id, &rec, TTL).await.unwrap();
    assert!(
        s.create_session(&id, &rec, TTL).await.is_err(),
        "create must not overwrite"
    );
    assert_eq!(s.load_session(&id).await.unwrap().unwrap(), rec);

    let fence = acquire(s, &id, "node-a/1").await;
    rec.version = 3;
    rec.log_level = Some("error".into());
    s.save_session(&fence, &rec, TTL).await.unwrap();
    // A write with an older version (completing late) does not roll state back.
    let mut stale = rec.clone();
    stale.version = 2;
    stale.log_level = Some("debug".into());
    s.save_session(&fence, &stale, TTL).await.unwrap();
    let loaded = s.load_session(&id).await.unwrap().unwrap();
    assert_eq!(loaded.version, 3);
    assert_eq!(loaded.log_level.as_deref(), Some("error"));

    // A holder whose lease was taken over cannot write any more.
    s.release_lease(&fence).await.unwrap();
    let other = acquire(s, &id, "node-b/1").await;
    assert!(other.token > fence.token, "fencing tokens increase");
    rec.version = 4;
    assert!(matches!(
        s.save_session(&fence, &rec, TTL).await,
        Err(StoreError::Fenced)
    ));
    s.save_session(&other, &rec, TTL).await.unwrap();
}

async fn leases_are_exclusive_and_expire(s: &dyn SessionStore) {
    let missing = SessionId::generate();
    assert_eq!(
        s.acquire_lease(&missing, "a/1").await.unwrap(),
        LeaseOutcome::NoSession
    );

    let id = SessionId::generate();
    s.create_session(&id, &record(), TTL).await.unwrap();
    let a_node = format!("a/{}", SessionId::generate());
    let node = NodeInfo {
        instance: a_node.clone(),
        url: "http://127.0.0.1:1".into(),
        draining: false,
    };
    // Node a is alive for NODE_TTL unless it announces itself again.
    const NODE_TTL: Duration = Duration::from_millis(1000);
    s.register_node(&node, NODE_TTL).await.unwrap();
    let LeaseOutcome::Acquired(a) = s.acquire_lease(&id, &a_node).await.unwrap() else {
        panic!("a acquires")
    };
    assert_eq!(
        s.acquire_lease(&id, "b/1").await.unwrap(),
        LeaseOutcome::Held {
            holder: a_node.clone()
        }
    );
    assert_eq!(
        s.acquire_lease(&id, &a_node).await.unwrap(),
        LeaseOutcome::Held {
            holder: a_node.clone()
        }
    );
    assert_eq!(s.lease_holder(&id).await.unwrap(), Some(a_node.clone()));
    // Another node cannot reclaim a's lease; a itself can (its actor is gone), with a new token
    // that fences the old one.
    assert_eq!(
        s.reclaim_lease(&id, "b/1").await.unwrap(),
        LeaseOutcome::Held {
            holder: a_node.clone()
        }
    );
    let LeaseOutcome::Acquired(a2) = s.reclaim_lease(&id, &a_node).await.unwrap() else {
        panic!("a reclaims its own lease")
    };
    assert!(a2.token > a.token);
    let mut rec = record();
    rec.version = 5;
    assert!(matches!(
        s.save_session(&a, &rec, TTL).await,
        Err(StoreError::Fenced)
    ));
    s.save_session(&a2, &rec, TTL).await.unwrap();
    assert_eq!(
        s.reclaim_lease(&missing, &a_node).await.unwrap(),
        LeaseOutcome::NoSession
    );
    let a = a2;
    // A heartbeat keeps the lease valid past the first TTL (the margins allow a loaded machine
    // to oversleep by 40 % of the TTL).
    tokio::time::sleep(NODE_TTL * 6 / 10).await;
    s.register_node(&node, NODE_TTL).await.unwrap();
    tokio::time::sleep(NODE_TTL * 6 / 10).await;
    assert_eq!(
        s.acquire_lease(&id, "b/1").await.unwrap(),
        LeaseOutcome::Held {
            holder: a_node.clone()
        }
    );
    // Node a stops heartbeating: once its record expires its lease is taken over, with a
    // higher fencing token.
    b_node_alive(s).await;
    let deadline = std::time::Instant::now() + NODE_TTL * 5;
    let b = loop {
        match s.acquire_lease(&id, "b/1").await.unwrap() {
            LeaseOutcome::Acquired(f) => break f,
            LeaseOutcome::Held { holder } => assert_eq!(holder, a_node),
            LeaseOutcome::NoSession => panic!("the session is still there"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a's lease was never released by expiry"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(b.token > a.token);
    rec.version = 9;
    assert!(
        matches!(s.save_session(&a, &rec, TTL).await, Err(StoreError::Fenced)),
        "the old holder is fenced"
    );
    s.release_lease(&a).await.unwrap(); // releasing someone else's lease is a no-op
    assert_eq!(s.lease_holder(&id).await.unwrap().as_deref(), Some("b/1"));
    s.release_lease(&b).await.unwrap();
    assert_eq!(s.lease_holder(&id).await.unwrap(), None);
}

/// Node `b/1` is alive for the length of the suite.
async fn b_node_alive(s: &dyn SessionStore) {
    let node = NodeInfo {
        instance: "b/1".into(),
        url: "http://127.0.0.1:1".into(),
        draining: false,
    };
    s.register_node(&node, TTL).await.unwrap();
}

async fn events_append_read_trim_and_fence(s: &dyn SessionStore) {
    let id = SessionId::generate();
    s.create_session(&id, &record(), TTL).await.unwrap();
    let f = acquire(s, &id, "a/1").await;
    assert!(s.read_events(&id, 1, "0-0", 10).await.unwrap().is_empty());
    assert_eq!(s.last_entry(&id, 1).await.unwrap(), None);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.append_event(&f, 1, &format!("{{\"n\":{i}}}"), 1000, TTL)
                .await
                .unwrap(),
        );
    }
    s.append_event(&f, 2, "other-stream", 1000, TTL).await.unwrap();
    let all = s.read_events(&id, 1, "0-0", 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.entry.clone()).collect::<Vec<_>>(), ids);
    assert_eq!(all[4].data, "{\"n\":4}");
    let rest = s.read_events(&id, 1, &ids[2], 100).await.unwrap();
    assert_eq!(rest.len(), 2, "strictly after the given id, and only this stream");
    assert_eq!(rest[0].entry, ids[3]);
    assert_eq!(s.read_events(&id, 1, &ids[0], 2).await.unwrap().len(), 2, "limit");
    assert_eq!(s.last_entry(&id, 1).await.unwrap(), Some(ids[4].clone()));
    // Another session never sees these events.
    let other = SessionId::generate();
    assert!(s.read_events(&other, 1, "0-0", 100).await.unwrap().is_empty());

    // Streams are capped (Redis trims approximately, so allow slack but require a bound).
    for i in 0..400 {
        s.append_event(&f, 3, &i.to_string(), 50, TTL).await.unwrap();
    }
    let kept = s.read_events(&id, 3, "0-0", 10_000).await.unwrap();
    assert!(kept.len() < 400 && kept.len() >= 50, "kept {}", kept.len());
    assert_eq!(kept.last().unwrap().data, "399");

    // A stale holder cannot append.
    s.release_lease(&f).await.unwrap();
    let _g = acquire(s, &id, "b/1").await;
    assert!(matches!(
        s.append_event(&f, 1, "x", 1000, TTL).await,
        Err(StoreError::Fenced)
    ));
}

async fn calls_begin_and_complete_atomically_and_fenced(s: &dyn SessionStore) {
    let id = SessionId::generate();
    let mut rec = record();
    s.create_session(&id, &rec, TTL).await.unwrap();
    let f = acquire(s, &id, "a/1").await;
    let call = |n: i64| InflightCall {
        request_id: json!(n),
        method: "tools/call".into(),
        params: json!({"name": "echo", "arguments": {"text": n}}),
        replayable: n % 2 == 0,
    };
    s.begin_call(&f, 4, &call(1), TTL).await.unwrap();
    s.begin_call(&f, 6, &call(2), TTL).await.unwrap();
    // A record save (another concern, e.g. the log level) leaves the calls alone.
    rec.version = 2;
    rec.log_level = Some("info".into());
    s.save_session(&f, &rec, TTL).await.unwrap();
    let loaded = s.load_session(&id).await.unwrap().unwrap();
    assert_eq!(loaded.inflight.keys().copied().collect::<Vec<_>>(), [4, 6]);
    assert_eq!(loaded.inflight[&6], call(2));
    assert_eq!(loaded.next_stream, 7, "the stream counter moved past the calls");
    assert_eq!(loaded.log_level.as_deref(), Some("info"));

    s.append_event(&f, 4, "progress", 1000, TTL).await.unwrap();
    let entry = s
        .complete_stream(&f, 4, Some("response"), 1000, TTL)
        .await
        .unwrap()
        .unwrap();
    let events = s.read_events(&id, 4, "0-0", 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        ["progress", "response"]
    );
    assert_eq!(events[1].entry, entry);
    // Without a message (a cancelled call) only the in-flight entry goes.
    assert_eq!(s.complete_stream(&f, 6, None, 1000, TTL).await.unwrap(), None);
    assert!(s.read_events(&id, 6, "0-0", 10).await.unwrap().is_empty());
    let loaded = s.load_session(&id).await.unwrap().unwrap();
    assert!(loaded.inflight.is_empty());
    assert_eq!(loaded.next_stream, 7);
    // A stale holder can do neither.
    s.release_lease(&f).await.unwrap();
    let _g = acquire(s, &id, "b/1").await;
    assert!(matches!(
        s.begin_call(&f, 8, &call(3), TTL).await,
        Err(StoreError::Fenced)
    ));
    assert!(matches!(
        s.complete_stream(&f, 4, Some("late"), 1000, TTL).await,
        Err(StoreError::Fenced)
    ));
    assert_eq!(s.read_events(&id, 4, "0-0", 10).await.unwrap().len(), 2);
    assert!(s.load_session(&id).await.unwrap().unwrap().inflight.is_empty());
}

async fn delete_removes_everything(s: &dyn SessionStore) {
    let id = SessionId::generate();
    s.create_session(&id, &record(), TTL).await.unwrap();
    let f = acquire(s, &id, "a/1").await;
    s.append_event(&f, 0, "g", 1000, TTL).await.unwrap();
    s.append_event(&f, 1, "p", 1000, TTL).await.unwrap();
    assert!(s.delete_session(&id, 2).await.unwrap());
    assert!(s.load_session(&id).await.unwrap().is_none());
    assert!(s.read_events(&id, 0, "0-0", 10).await.unwrap().is_empty());
    assert!(s.read_events(&id, 1, "0-0", 10).await.unwrap().is_empty());
    assert_eq!(s.lease_holder(&id).await.unwrap(), None);
    assert!(!s.delete_session(&id, 2).await.unwrap());
    assert_eq!(
        s.acquire_lease(&id, "a/1").await.unwrap(),
        LeaseOutcome::NoSession
    );
}

async fn sessions_expire_by_ttl(s: &dyn SessionStore) {
    let id = SessionId::generate();
    s.create_session(&id, &record(), Duration::from_millis(200))
        .await
        .unwrap();
    assert!(s.load_session(&id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(s.load_session(&id).await.unwrap().is_none());

    // A save refreshes the TTL.
    let id = SessionId::generate();
    let mut rec = record();
    s.create_session(&id, &rec, Duration::from_millis(300))
        .await
        .unwrap();
    let f = acquire(s, &id, "a/1").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    rec.version = 2;
    s.save_session(&f, &rec, Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.load_session(&id).await.unwrap().is_some());
}

async fn nodes_register_and_expire(s: &dyn SessionStore) {
    let n = NodeInfo {
        instance: format!("n/{}", SessionId::generate()),
        url: "http://127.0.0.1:1".into(),
        draining: false,
    };
    async fn listed(s: &dyn SessionStore, instance: &str) -> Vec<NodeInfo> {
        let all = s.nodes().await.unwrap();
        all.into_iter().filter(|m| m.instance == instance).collect()
    }
    // Each announcement says whether the previous record was still there.
    assert!(
        !s.register_node(&n, Duration::from_millis(200)).await.unwrap(),
        "first"
    );
    assert!(
        s.register_node(&n, Duration::from_millis(200)).await.unwrap(),
        "renewed"
    );
    assert_eq!(s.node(&n.instance).await.unwrap(), Some(n.clone()));
    assert_eq!(listed(s, &n.instance).await, vec![n.clone()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.node(&n.instance).await.unwrap(), None);
    assert_eq!(listed(s, &n.instance).await, vec![]);
    let draining = NodeInfo {
        draining: true,
        ..n.clone()
    };
    assert!(!s.register_node(&draining, TTL).await.unwrap(), "after expiry");
    assert_eq!(listed(s, &n.instance).await, vec![draining.clone()]);
    s.unregister_node(&n.instance).await.unwrap();
    assert_eq!(s.node(&n.instance).await.unwrap(), None);
    assert_eq!(listed(s, &n.instance).await, vec![]);
    assert!(!s.register_node(&draining, TTL).await.unwrap(), "after removal");
    s.unregister_node(&n.instance).await.unwrap();
}

async fn tenants_index_their_sessions(s: &dyn SessionStore) {
    let (x, y) = (format!("x{}", now_ms()), format!("y{}", now_ms()));
    let rec = |tenant: &str| SessionRecord {
        tenant: tenant.to_owned(),
        ..record()
    };
    let (a, b, c, short) = (
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
        SessionId::generate(),
    );
    s.create_session(&a, &rec(&x), TTL).await.unwrap();
    s.create_session(&b, &rec(&x), TTL).await.unwrap();
    s.create_session(&c, &rec(&y), TTL).await.unwrap();
    s.create_session(&short, &rec(&x), Duration::from_millis(200))
        .await
        .unwrap();
    let mut listed = s.tenant_sessions(&x, 100).await.unwrap();
    listed.sort();
    let mut want = vec![a.clone(), b.clone(), short.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(s.tenant_sessions(&y, 100).await.unwrap(), vec![c.clone()]);
    assert_eq!(s.tenant_sessions(&x, 1).await.unwrap().len(), 1);
    // A save keeps a session listed past its first TTL; an expired one drops out.
    let f = acquire(s, &a, "a/1").await;
    let mut saved = rec(&x);
    saved.version = 2;
    s.save_session(&f, &saved, TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let listed = s.tenant_sessions(&x, 100).await.unwrap();
    assert!(listed.contains(&a) && listed.contains(&b) && !listed.contains(&short));
}

async fn ended_sessions_are_announced(s: &dyn SessionStore) {
    use futures_util::StreamExt as _;
    let Some(mut ended) = s.ended_sessions().await.unwrap() else {
        // A single-node store: nothing to announce to.
        s.announce_ended(&SessionId::generate()).await.unwrap();
        return;
    };
    let id = SessionId::generate();
    // The subscription is live once the first announcement arrives; repeat until then.
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            s.announce_ended(&id).await.unwrap();
            if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), ended.next()).await {
                return got;
            }
        }
    })
    .await
    .expect("announcement within 10 s");
    assert_eq!(got, id);
}

async fn principals_share_upstream_sessions(s: &dyn SessionStore) {
    let key = format!("acme:{}", now_ms());
    assert!(s.principal_upstreams(&key).await.unwrap().is_empty());
    s.set_principal_upstream(&key, "files", Some("{\"id\":\"u1\"}"), TTL)
        .await
        .unwrap();
    s.set_principal_upstream(&key, "wiki", Some("{}"), Duration::from_millis(300))
        .await
        .unwrap();
    let got = s.principal_upstreams(&key).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["files"], "{\"id\":\"u1\"}");
    s.set_principal_upstream(&key, "wiki", None, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(s.principal_upstreams(&key).await.unwrap().len(), 1);
    // The whole set expires after its last write.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(s.principal_upstreams(&key).await.unwrap().is_empty());
}

async fn tokens_are_claimed_once_and_keys_shared(s: &dyn SessionStore) {
    let token = format!("t{}", now_ms());
    assert!(s.claim_once(&token, TTL).await.unwrap());
    assert!(!s.claim_once(&token, TTL).await.unwrap(), "a replay");
    let short = format!("s{}", now_ms());
    assert!(s.claim_once(&short, Duration::from_millis(200)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        s.claim_once(&short, TTL).await.unwrap(),
        "claimable again once expired"
    );
    let name = format!("k{}", now_ms());
    assert_eq!(s.cluster_key(&name, b"first").await.unwrap(), b"first");
    assert_eq!(
        s.cluster_key(&name, b"second").await.unwrap(),
        b"first",
        "the first one stays"
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_suite() {
        super::run_all(std::sync::Arc::new(crate::store::MemoryStore::new())).await;
    }
}
