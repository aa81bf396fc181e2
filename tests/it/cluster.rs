//! Several `marina` processes sharing one Redis: any node serves any session, streams resume on
//! any node, and a node's death or shutdown loses nothing.

use std::time::Duration;

use marina_tests::{MarinaProc, Mcp, RedisServer, SseEvent, read_events};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FAST_LEASE: [(&str, &str); 3] = [
    ("MARINA__SESSIONS__LEASE_TTL_MS", "1500"),
    ("MARINA__SESSIONS__RETRY_MS", "100"),
    // Forwarded requests are authenticated with it (HMAC markers).
    ("MARINA__CLUSTER__SECRET", "cluster-tests-secret-0123456789"),
];

fn messages(events: &[SseEvent]) -> Vec<Value> {
    events.iter().filter_map(SseEvent::json).collect()
}

fn progress(events: &[SseEvent]) -> Vec<i64> {
    messages(events)
        .iter()
        .filter_map(|m| m["params"]["progress"].as_i64())
        .collect()
}

fn cluster() -> (RedisServer, MarinaProc, MarinaProc) {
    let redis = RedisServer::start();
    let a = MarinaProc::start(&redis.url(), "A", &FAST_LEASE);
    let b = MarinaProc::start(&redis.url(), "B", &FAST_LEASE);
    (redis, a, b)
}

#[tokio::test]
async fn initialize_on_one_node_call_on_another() {
    let (_redis, a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let on_b = on_a.at(&b.endpoint());
    assert_eq!(on_b.call_text(1, "add", json!({"a": 20, "b": 22})).await, "42");
    assert_eq!(
        on_b.rpc(2, "tools/list", json!({})).await["result"]["tools"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        on_b.rpc(3, "logging/setLevel", json!({"level": "error"})).await["result"],
        json!({})
    );
    // The level set through B holds for calls through A.
    let (_, msgs) = on_a.exchange(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"log","arguments":{"level":"info","message":"hidden"}}})).await;
    assert!(msgs.iter().all(|m| m["method"] != "notifications/message"));
    assert_eq!(on_b.delete().await.status(), StatusCode::OK);
    let r = on_a.post(&json!({"jsonrpc":"2.0","id":5,"method":"ping"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stream_opened_on_one_node_resumes_on_another() {
    let (_redis, a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let resp = on_a
        .post(&json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":6,"interval_ms":150},"_meta":{"progressToken":"x"}}}))
        .await;
    let (first, _) = read_events(resp, Duration::from_secs(10), |ev| ev.len() >= 3).await;
    let last = first.last().unwrap().id.clone().unwrap();
    let (rest, ended) = read_events(
        on_a.at(&b.endpoint()).get(Some(&last)).await,
        Duration::from_secs(15),
        |_| false,
    )
    .await;
    assert!(ended);
    assert_eq!(progress(&first), [1, 2]);
    assert_eq!(progress(&rest), [3, 4, 5, 6]);
    assert_eq!(
        messages(&rest).last().unwrap()["result"]["content"][0]["text"],
        "done: 6 steps"
    );
}

#[tokio::test]
async fn kill_9_during_a_call_loses_nothing_and_every_call_gets_an_outcome() {
    let (_redis, mut a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({"elicitation": {}})).await;
    // An idempotent call in flight...
    let resp = on_a
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":10,"interval_ms":200},"_meta":{"progressToken":"k"}}}))
        .await;
    // ...and a non-idempotent one, waiting for the user.
    let ask = on_a.post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"confirm","arguments":{"question":"really?"}}})).await;
    let (asked, _) = read_events(ask, Duration::from_secs(5), |ev| ev.len() >= 2).await;
    assert!(
        messages(&asked)
            .iter()
            .any(|m| m["method"] == "elicitation/create")
    );
    let (seen, _) = read_events(resp, Duration::from_secs(10), |ev| ev.len() >= 4).await;
    assert_eq!(progress(&seen), [1, 2, 3]);
    a.kill9();

    let on_b = on_a.at(&b.endpoint());
    // Everything persisted before the crash replays, then the re-run finishes the call.
    let (all, ended) = read_events(on_b.get(Some("1_0-0")).await, Duration::from_secs(30), |_| false).await;
    assert!(ended, "the stream completes");
    let p = progress(&all);
    assert_eq!(
        p,
        (1..=10).collect::<Vec<_>>(),
        "every progress once, increasing: {p:?}"
    );
    let result = messages(&all)
        .into_iter()
        .find(|m| m["id"] == 1)
        .expect("a definite outcome");
    assert_eq!(result["result"]["content"][0]["text"], "done: 10 steps");
    // The non-idempotent call is not re-run: it is answered as interrupted.
    let (other, ended) = read_events(on_b.get(Some("2_0-0")).await, Duration::from_secs(15), |_| false).await;
    assert!(ended);
    let outcome = messages(&other)
        .into_iter()
        .find(|m| m["id"] == 2)
        .expect("a definite outcome");
    assert_eq!(outcome["error"]["code"], -32001, "{outcome}");
    // The session lives on, on B.
    assert_eq!(
        on_b.call_text(3, "echo", json!({"text": "still here"})).await,
        "still here"
    );
}

#[tokio::test]
async fn sigterm_during_a_call_ends_with_the_real_result_on_the_peer() {
    let (_redis, mut a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    let resp = on_a
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":8,"interval_ms":150},"_meta":{"progressToken":"s"}}}))
        .await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(20), |_| false));
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.sigterm();
    let (first, ended) = reader.await.unwrap();
    assert!(ended, "A ends its streams on SIGTERM");
    assert!(first.last().unwrap().retry.is_some(), "with a retry hint");
    let last = first.iter().rev().find_map(|e| e.id.clone()).unwrap();
    let (rest, ended) = read_events(
        on_a.at(&b.endpoint()).get(Some(&last)).await,
        Duration::from_secs(20),
        |_| false,
    )
    .await;
    assert!(ended);
    let mut all = progress(&first);
    all.extend(progress(&rest));
    assert_eq!(all, (1..=8).collect::<Vec<_>>());
    let result = messages(&rest)
        .into_iter()
        .find(|m| m["id"] == 1)
        .expect("the real result");
    assert_eq!(result["result"]["content"][0]["text"], "done: 8 steps");
    assert_eq!(a.wait_exit(Duration::from_secs(20)), Some(0), "A exits 0");
    assert_eq!(
        on_a.at(&b.endpoint())
            .call_text(2, "echo", json!({"text": "on B"}))
            .await,
        "on B"
    );
}

#[tokio::test]
async fn confirm_asked_on_one_node_is_answered_on_another() {
    let (_redis, a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({"elicitation": {}})).await;
    let resp = on_a.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"confirm","arguments":{"question":"Ship?"}}})).await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(15), |ev| {
        messages(ev).iter().any(|m| m["id"] == 1)
    }));
    let ask = on_a
        .wait_for_message("1_0-0", |m| m["method"] == "elicitation/create")
        .await
        .expect("elicitation request");
    let on_b = on_a.at(&b.endpoint());
    let r = on_b.post(&json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"accept","content":{"answer":"yes, from B"}}})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_, _) = reader.await.unwrap();
    let (events, _) = read_events(on_b.get(Some("1_0-0")).await, Duration::from_secs(10), |_| false).await;
    let result = messages(&events)
        .into_iter()
        .find(|m| m["id"] == 1)
        .expect("result");
    assert_eq!(result["result"]["content"][0]["text"], "yes, from B");
}

/// The forwarding marker is the nodes' own: a client that sends `x-marina-forwarded` itself is
/// treated like any client (its request is still forwarded to the holder and served there), and
/// a node of another cluster (another secret) cannot pose as a peer either.
#[tokio::test]
async fn a_client_cannot_pose_as_a_forwarding_node() {
    let (_redis, a, b) = cluster();
    let on_a = Mcp::connect(&a.endpoint(), "2025-11-25", json!({})).await;
    for forged in ["B/forged", "A;0;00", "x"] {
        let on_b = on_a.at(&b.endpoint()).with_header("x-marina-forwarded", forged);
        assert_eq!(
            on_b.call_text(1, "echo", json!({"text": "forwarded anyway"}))
                .await,
            "forwarded anyway",
            "{forged}"
        );
    }
}

#[test]
fn a_shared_redis_on_a_public_bind_needs_a_cluster_secret() {
    let out = std::process::Command::new(marina_tests::marina_bin())
        .args([
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--redis-url",
            "redis://127.0.0.1:1/",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.secret"), "{stderr}");
}

/// `redis-cli` against `redis`.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_call_re_run_after_a_crash_keeps_its_place_or_gets_the_limit_in_its_stream() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("marina.yaml");
    std::fs::write(
        &config,
        "tenants:\n  acme:\n    upstreams: [{kind: builtin}]\n    limits: {max_inflight_calls: 1}\n",
    )
    .unwrap();
    let start = |name| MarinaProc::start_with_config(&redis.url(), name, &FAST_LEASE, &config);
    let (mut a, b, mut c) = (start("A"), start("B"), start("C"));
    let countdown = |steps: u32| json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":steps,"interval_ms":200},"_meta":{"progressToken":"k"}}});

    // 1. The tenant's only place is held by a call on A when A dies: its re-run on B keeps it.
    let on_a = Mcp::connect(&format!("{}/t/acme/mcp", a.base()), "2025-11-25", json!({})).await;
    let (seen, _) = read_events(on_a.post(&countdown(6)).await, Duration::from_secs(10), |ev| {
        ev.len() >= 3
    })
    .await;
    assert_eq!(progress(&seen), [1, 2]);
    a.kill9();
    let (all, ended) = read_events(
        on_a.at(&format!("{}/t/acme/mcp", b.base()))
            .get(Some("1_0-0"))
            .await,
        Duration::from_secs(30),
        |_| false,
    )
    .await;
    assert!(ended);
    let outcome = messages(&all)
        .into_iter()
        .find(|m| m["id"] == 1)
        .expect("an outcome");
    assert_eq!(
        outcome["result"]["content"][0]["text"], "done: 6 steps",
        "{outcome}"
    );

    // 2. A call on C when C dies, and its entry aged out (as after an outage longer than the
    //    lease) while another call took the place: the re-run is refused inside the resumed
    //    stream, with a JSON-RPC error the client can act on.
    let on_c = Mcp::connect(&format!("{}/t/acme/mcp", c.base()), "2025-11-25", json!({})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let resp = loop {
        // The place of call 1 is released asynchronously after its end: bounded wait.
        let r = on_c.post(&countdown(6)).await;
        if r.status() == StatusCode::OK {
            break r;
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            std::time::Instant::now() < deadline,
            "the finished call kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (seen, _) = read_events(resp, Duration::from_secs(10), |ev| ev.len() >= 3).await;
    assert_eq!(progress(&seen), [1, 2]);
    let first_event = seen[0].id.clone().unwrap();
    let stream = first_event.split('_').next().unwrap();
    c.kill9();
    for key in redis_cli(&redis, &["--scan", "--pattern", "*:cap:{acme}:c"]).lines() {
        redis_cli(&redis, &["del", key]);
    }
    let other = Mcp::connect(&format!("{}/t/acme/mcp", b.base()), "2025-11-25", json!({})).await;
    let busy = other.post(&countdown(50)).await;
    assert_eq!(busy.status(), StatusCode::OK);
    let (all, ended) = read_events(
        on_c.at(&format!("{}/t/acme/mcp", b.base()))
            .get(Some(&format!("{stream}_0-0")))
            .await,
        Duration::from_secs(30),
        |_| false,
    )
    .await;
    assert!(ended, "the stream ends with the refusal");
    assert_eq!(progress(&all), [1, 2], "what was sent before the crash replays");
    let outcome = messages(&all)
        .into_iter()
        .find(|m| m["id"] == 1)
        .expect("an outcome");
    assert_eq!(outcome["error"]["code"], -32005, "{outcome}");
    assert_eq!(outcome["error"]["data"]["scope"], "calls_tenant");
    assert!(
        outcome["error"]["data"]["retryAfterMs"]
            .as_u64()
            .is_some_and(|ms| ms > 0)
    );
    drop(busy);
}
