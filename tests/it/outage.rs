//! Store outages and lapsed liveness: 503 with a JSON-RPC error while Redis is down, automatic
//! recovery, no crash — and, after recovery, every session served (none left waiting on a lease
//! nobody runs, none stopped by stale liveness handling).
//!
//! The node-level tests drive the heartbeat by hand, so the orderings that raced in the running
//! app (an activation between the store's return and the node's next announcement) happen
//! deterministically.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marina_actors::{Describe, Node, NodeConfig, ResolveError, Resolved};
use marina_core::domain::SessionId;
use marina_core::store::{RedisStore, SessionRecord, SessionStore, now_ms};
use marina_core::tenant::Tenant;
use marina_tests::{Mcp, RedisServer, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

const LEASE_TTL_MS: &str = "1000";
const URL: &str = "http://127.0.0.1:1";

/// Poll `cond` every 20 ms until it holds; panic naming `what` after `timeout`.
async fn wait_until<F: Future<Output = bool>>(what: &str, timeout: Duration, mut cond: impl FnMut() -> F) {
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node on `store` whose heartbeat the test drives by hand.
fn node(store: Arc<dyn SessionStore>, name: &str) -> Arc<Node> {
    let settings = marina_core::settings::load(
        None,
        Some(Default::default()),
        &[("sessions.lease_ttl_ms", LEASE_TTL_MS.to_owned())],
    )
    .expect("settings");
    let tenant = Arc::new(Tenant {
        id: "demo".into(),
        settings: Default::default(),
        providers: Vec::new(),
        authorizer: None,
        schemas: Default::default(),
    });
    Node::new(
        store,
        NodeConfig {
            instance: format!("{name}/{}", SessionId::generate().as_str()),
            sessions: settings.sessions,
            caps: None,
        },
        vec![tenant],
    )
}

fn redis_store(redis: &RedisServer, prefix: &str) -> Arc<dyn SessionStore> {
    Arc::new(RedisStore::new(&redis.url(), prefix, Duration::from_millis(300)).expect("store"))
}

/// B's address (nothing listens there: the tests only check who would be forwarded to).
const B_URL: &str = "http://127.0.0.1:2";

/// Nodes A and B on one store, A announced; the store too, to act on it behind their backs.
async fn two_nodes(redis: &RedisServer, prefix: &str) -> (Arc<dyn SessionStore>, Arc<Node>, Arc<Node>) {
    let store = redis_store(redis, prefix);
    let a = node(store.clone(), "A");
    let b = node(store.clone(), "B");
    a.heartbeat(URL).await.expect("announce A");
    (store, a, b)
}

fn record() -> SessionRecord {
    SessionRecord {
        tenant: "demo".into(),
        principal: None,
        protocol_version: "2025-11-25".into(),
        client_capabilities: json!({}),
        client_info: json!({"name": "outage-test", "version": "0"}),
        log_level: None,
        upstreams: Default::default(),
        initialized: true,
        created_at_ms: now_ms(),
        expires_at_ms: now_ms() + 3_600_000,
        last_used_ms: 0,
        next_stream: 1,
        inflight: Default::default(),
        version: 1,
    }
}

async fn create(node: &Arc<Node>) -> Result<SessionId, ResolveError> {
    let t = node.tenant("demo").unwrap().clone();
    node.create_session(t, SessionId::generate(), record()).await
}

/// Resolve `id` on `node` and prove the actor found answers.
async fn served_locally(node: &Arc<Node>, id: &SessionId) -> actix::Addr<marina_actors::SessionActor> {
    match node.resolve("demo", id, false, None).await {
        Ok(Resolved::Local(addr)) => {
            let version = addr.send(Describe { owner: None }).await.expect("actor answers");
            assert_eq!(version.as_deref(), Ok("2025-11-25"));
            addr
        }
        other => panic!("expected the session to be served here, got {other:?}"),
    }
}

/// The node's liveness has lapsed (no announcement for a lease TTL): noticed on the next look.
async fn wait_for_lapse(node: &Arc<Node>) {
    wait_until("the node's liveness lapsed", Duration::from_secs(10), || async {
        !node.is_live()
    })
    .await;
}

#[actix_rt::test]
async fn after_a_redis_outage_no_actor_runs_on_stale_liveness_and_new_sessions_survive() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let store = redis_store(&redis, "lapse");
    let node = node(store.clone(), "A");

    // Never announced: the node runs nothing yet.
    assert!(matches!(create(&node).await, Err(ResolveError::Rejoining)));
    node.heartbeat(URL).await.expect("announce");
    assert!(node.is_live());
    let before = create(&node).await.expect("session");
    served_locally(&node, &before).await;

    redis.stop();
    assert!(node.heartbeat(URL).await.is_err());
    wait_for_lapse(&node).await;
    assert_eq!(
        node.live_sessions(),
        0,
        "every actor stopped when the lapse was noticed"
    );

    // Redis is back, but the node has not announced itself since its liveness lapsed. This is
    // the moment the old code raced: it activated a new session here, and the next heartbeat's
    // lapse handling stopped it, leaving its lease naming this node with no actor (503 forever).
    let _back = RedisServer::start_on(port);
    wait_until("Redis answers again", Duration::from_secs(10), || async {
        store.ping().await.is_ok()
    })
    .await;
    assert!(!node.is_live());
    assert!(
        matches!(create(&node).await, Err(ResolveError::Rejoining)),
        "no activation under a stale liveness"
    );
    assert_eq!(node.live_sessions(), 0);

    node.heartbeat(URL).await.expect("announce again");
    assert!(node.is_live());
    let after = create(&node).await.expect("a session after recovery");
    let addr = served_locally(&node, &after).await;
    // Later announcements never stop an actor activated after recovery.
    node.heartbeat(URL).await.expect("announce");
    node.heartbeat(URL).await.expect("announce");
    assert!(addr.connected());
    let again = served_locally(&node, &after).await;
    assert_eq!(again, addr, "the same actor still serves it");
    // The restarted Redis kept nothing: the earlier session is gone, and says so.
    assert!(matches!(
        node.resolve("demo", &before, false, None).await,
        Err(ResolveError::NotFound)
    ));
}

#[actix_rt::test]
async fn a_lease_left_by_a_stopped_actor_is_reclaimed_once_the_node_is_back() {
    let redis = RedisServer::start();
    let store = redis_store(&redis, "orphan");
    let node = node(store.clone(), "A");
    node.heartbeat(URL).await.expect("announce");
    let id = create(&node).await.expect("session");
    let first = served_locally(&node, &id).await;

    // The node stops announcing itself for a lease TTL (a paused process): it stops its actors
    // without releasing their leases (a peer may own them by now) ...
    wait_for_lapse(&node).await;
    assert_eq!(node.live_sessions(), 0);
    wait_until("the stopped actor is gone", Duration::from_secs(10), || async {
        node.running_actors() == 0
    })
    .await;
    assert!(!first.connected());
    assert_eq!(
        store.lease_holder(&id).await.unwrap().as_deref(),
        Some(node.config.instance.as_str()),
        "the lease still names this node, which runs no actor for it"
    );
    assert!(matches!(
        node.resolve("demo", &id, false, None).await,
        Err(ResolveError::Rejoining)
    ));

    // ... and once it is back, the session is re-activated at once (the old code waited on "another
    // worker of this node is activating it" until its deadline, then answered 503 every time).
    // Many requests at once still make exactly one actor.
    node.heartbeat(URL).await.expect("announce again");
    let resolved = futures_util::future::join_all((0..8).map(|_| served_locally(&node, &id))).await;
    assert!(resolved.windows(2).all(|w| w[0] == w[1]), "one actor for all");
    assert_eq!(node.live_sessions(), 1);
}

#[actix_rt::test]
async fn a_session_taken_over_during_the_lapse_is_forwarded_not_reclaimed() {
    let redis = RedisServer::start();
    let (_store, a, b) = two_nodes(&redis, "takeover").await;
    let id = create(&a).await.expect("session");
    served_locally(&a, &id).await;

    // A pauses; once its record has expired in Redis, B takes the session over.
    wait_for_lapse(&a).await;
    b.heartbeat(B_URL).await.expect("announce B");
    wait_until("B takes the session over", Duration::from_secs(10), || async {
        b.heartbeat(B_URL).await.is_ok()
            && matches!(b.resolve("demo", &id, false, None).await, Ok(Resolved::Local(_)))
    })
    .await;

    // A is back: the session is B's now, and A forwards to it instead of taking it back.
    a.heartbeat(URL).await.expect("announce A again");
    b.heartbeat(B_URL).await.expect("announce B");
    match a.resolve("demo", &id, true, None).await {
        Ok(Resolved::Remote { holder, url }) => {
            assert_eq!(holder, b.config.instance);
            assert_eq!(url, B_URL);
        }
        other => panic!("expected a forward to B, got {other:?}"),
    }
    assert_eq!(a.live_sessions(), 0);
}

/// Stand-in for Redis's clock jumping forward (a stepped host clock, a VM resumed from a pause):
/// the node's record vanishes before its time while the node itself, on its monotonic clock,
/// is alive and serving.
async fn record_vanishes(store: &Arc<dyn SessionStore>, node: &Arc<Node>) {
    store
        .unregister_node(&node.config.instance)
        .await
        .expect("remove record");
    assert!(store.node(&node.config.instance).await.expect("look").is_none());
}

#[actix_rt::test]
async fn a_live_node_whose_record_vanished_keeps_its_sessions() {
    let redis = RedisServer::start();
    let (store, a, b) = two_nodes(&redis, "jump").await;
    b.heartbeat(B_URL).await.expect("announce B");
    let id = create(&a).await.expect("session");
    served_locally(&a, &id).await;

    record_vanishes(&store, &a).await;
    // B looks for the session while A's record is missing; A announces itself again on its
    // next heartbeat, well within the grace — so B must forward, not take the session over.
    let (a2, look_started) = (a.clone(), Instant::now());
    let announce = actix_rt::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        a2.heartbeat(URL).await.expect("announce A again")
    });
    match b.resolve("demo", &id, true, None).await {
        Ok(Resolved::Remote { holder, url }) => {
            assert_eq!(holder, a.config.instance);
            assert_eq!(url, URL);
        }
        other => panic!("expected a forward to A, got {other:?}"),
    }
    assert!(
        look_started.elapsed() >= Duration::from_millis(150),
        "B waited for A's record"
    );
    announce.await.expect("announce task");
    assert_eq!(b.live_sessions(), 0);
    // A announced within the grace: nothing lapsed, its actor still serves.
    assert!(a.is_live());
    assert_eq!(a.live_sessions(), 1);
    served_locally(&a, &id).await;
}

#[actix_rt::test]
async fn a_node_whose_record_vanished_for_the_grace_stops_its_actors_and_takes_them_back() {
    let redis = RedisServer::start();
    let (store, a, b) = two_nodes(&redis, "jump2").await;
    let mine = create(&a).await.expect("session");
    let actor = served_locally(&a, &mine).await;
    let theirs = create(&a).await.expect("second session");
    served_locally(&a, &theirs).await;

    // A's record vanishes and A cannot announce for the whole grace (half the 1 s lease TTL),
    // though not for a whole TTL: by A's own clock it never lapsed. B takes a session over.
    let gone = Instant::now();
    record_vanishes(&store, &a).await;
    b.heartbeat(B_URL).await.expect("announce B");
    assert!(matches!(
        b.resolve("demo", &theirs, false, None).await,
        Ok(Resolved::Local(_))
    ));
    assert!(
        gone.elapsed() >= Duration::from_millis(500),
        "B waited for the grace"
    );
    assert!(a.is_live(), "by its own clock A is still live");

    // A's next announcement finds its record gone after a gap that long: a lapse. Every actor
    // of A stops — including the one whose session B now runs.
    a.heartbeat(URL).await.expect("announce A again");
    wait_until("A's actors stopped", Duration::from_secs(5), || async {
        !actor.connected()
    })
    .await;
    assert_eq!(a.live_sessions(), 0);
    assert!(a.is_live(), "announced again: serving");
    // The session nobody took is A's again (reclaimed); the other is forwarded to B.
    served_locally(&a, &mine).await;
    b.heartbeat(B_URL).await.expect("announce B");
    match a.resolve("demo", &theirs, true, None).await {
        Ok(Resolved::Remote { holder, .. }) => assert_eq!(holder, b.config.instance),
        other => panic!("expected a forward to B, got {other:?}"),
    }
}

#[actix_rt::test]
async fn redis_down_gives_503_and_the_node_recovers() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let url = redis.url();
    let app = spawn_app(&[
        ("store.redis_url", &url),
        ("store.timeout_ms", "500"),
        ("sessions.lease_ttl_ms", LEASE_TTL_MS),
    ])
    .await;
    let endpoint = app.endpoint("demo");
    let readyz = || async {
        reqwest::get(format!("{}/readyz", app.base))
            .await
            .unwrap()
            .status()
    };
    wait_until("ready", Duration::from_secs(10), || async {
        readyz().await == StatusCode::OK
    })
    .await;
    let s = Mcp::connect(&endpoint, "2025-11-25", json!({})).await;
    assert_eq!(s.call_text(1, "echo", json!({"text": "up"})).await, "up");
    assert_eq!(app.node.live_sessions(), 1);

    redis.stop();
    let r = s.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"down"}}})).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["code"].is_i64());
    let fresh = Mcp::new(&endpoint)
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}))
        .await;
    assert_eq!(fresh.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32000);
    assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reqwest::get(format!("{}/healthz", app.base))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // The node could not renew its liveness for a whole lease TTL: another node may have taken
    // its sessions over, so it stops every local actor.
    wait_until(
        "the node's actors are stopped",
        Duration::from_secs(10),
        || async { app.node.live_sessions() == 0 },
    )
    .await;

    let _back = RedisServer::start_on(port);
    wait_until(
        "ready again once Redis is back",
        Duration::from_secs(10),
        || async { readyz().await == StatusCode::OK },
    )
    .await;
    // Ready means ready: a new session works at once, on its first call and after later
    // heartbeats (which must not stop it for the lapse before).
    let s2 = Mcp::connect(&endpoint, "2025-11-25", json!({})).await;
    assert_eq!(s2.call_text(1, "echo", json!({"text": "again"})).await, "again");
    tokio::time::sleep(Duration::from_millis(800)).await; // proving an absence: two heartbeats
    assert_eq!(s2.call_text(2, "echo", json!({"text": "still"})).await, "still");
    // The restarted Redis kept no data: the old session is gone, and the client is told so.
    let r = s.post(&json!({"jsonrpc":"2.0","id":3,"method":"ping"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
