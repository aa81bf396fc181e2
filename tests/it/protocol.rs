//! The MCP lifecycle and features of the demo tenant, in one process with the in-memory store.

use std::time::Duration;

use marina_tests::{Mcp, SseEvent, read_events, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[actix_rt::test]
async fn initialize_negotiates_versions_and_issues_random_session_ids() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let mut ids = Vec::new();
    for (asked, got) in [
        ("2025-11-25", "2025-11-25"),
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("1999-01-01", "2025-11-25"),
        ("2024-11-05", "2025-11-25"),
    ] {
        let c = Mcp::new(&url);
        let r = c
            .post(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":asked,"capabilities":{},"clientInfo":{"name":"t","version":"0"}}}))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        assert!(
            sid.len() >= 32 && sid.bytes().all(|b| (0x21..=0x7e).contains(&b)),
            "{sid}"
        );
        ids.push(sid);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["id"], 1);
        assert_eq!(b["result"]["protocolVersion"], got, "asked {asked}");
        assert!(b["result"]["capabilities"]["tools"].is_object());
        assert!(
            b["result"]["serverInfo"]["name"].is_string() && b["result"]["serverInfo"]["version"].is_string()
        );
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5);
}

#[actix_rt::test]
async fn ping_list_and_every_builtin_tool() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    assert_eq!(
        s.rpc(1, "ping", json!({})).await,
        json!({"jsonrpc":"2.0","id":1,"result":{}})
    );
    let tools = s.rpc(2, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "confirm", "countdown", "echo", "log"]);
    for t in tools["result"]["tools"].as_array().unwrap() {
        assert_eq!(t["inputSchema"]["type"], "object");
    }
    let countdown = &tools["result"]["tools"][2];
    assert_eq!(countdown["annotations"]["readOnlyHint"], true);
    assert_eq!(countdown["annotations"]["idempotentHint"], true);
    assert_eq!(s.call_text(3, "echo", json!({"text": "héllo"})).await, "héllo");
    assert_eq!(s.call_text(4, "add", json!({"a": 2, "b": 40})).await, "42");
    assert_eq!(s.call_text(5, "add", json!({"a": 0.5, "b": 0.25})).await, "0.75");
    assert_eq!(
        s.call_text(6, "countdown", json!({"steps": 2, "interval_ms": 1}))
            .await,
        "done: 2 steps"
    );
    // confirm without the elicitation capability: a tool error, nothing sent to the client.
    let r = s
        .rpc(
            7,
            "tools/call",
            json!({"name": "confirm", "arguments": {"question": "?"}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], true);
}

#[actix_rt::test]
async fn tools_list_paginates_deterministically() {
    let app = spawn_app(&[("sessions.page_size", "2")]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for i in 0..10 {
        let params = cursor.as_ref().map(|c| json!({"cursor": c})).unwrap_or(json!({}));
        let r = s.rpc(i, "tools/list", params).await;
        names.extend(
            r["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned()),
        );
        cursor = r["result"]["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(names, ["add", "confirm", "countdown", "echo", "log"]);
    // Cursors belong to their session.
    let first = s.rpc(20, "tools/list", json!({})).await;
    let cursor = first["result"]["nextCursor"].as_str().unwrap().to_owned();
    let other = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let r = other.rpc(21, "tools/list", json!({"cursor": cursor})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
}

fn messages(events: &[SseEvent]) -> Vec<Value> {
    events.iter().filter_map(SseEvent::json).collect()
}

#[actix_rt::test]
async fn progress_priming_and_event_ids_on_2025_11_25() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let resp = s
        .post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":3,"interval_ms":10},"_meta":{"progressToken":"p1"}}}))
        .await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, ended) = read_events(resp, Duration::from_secs(10), |_| false).await;
    assert!(ended, "the server closes the stream after the response");
    assert!(
        events[0].id.is_some() && events[0].data.is_empty() && events[0].retry.is_some(),
        "priming: {:?}",
        events[0]
    );
    let msgs = messages(&events);
    let progress: Vec<i64> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .map(|m| {
            assert_eq!(m["params"]["progressToken"], "p1");
            m["params"]["progress"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(progress, [1, 2, 3]);
    let last = msgs.last().unwrap();
    assert_eq!(last["id"], 3);
    assert_eq!(last["result"]["content"][0]["text"], "done: 3 steps");
    let mut ids: Vec<_> = events.iter().filter_map(|e| e.id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "event ids are unique");
}

#[actix_rt::test]
async fn no_priming_or_retry_for_older_versions() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-06-18", json!({})).await;
    let resp = s.post(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}}})).await;
    let (events, _) = read_events(resp, Duration::from_secs(10), |_| false).await;
    assert!(
        events.iter().all(|e| !e.data.is_empty() && e.retry.is_none()),
        "{events:?}"
    );
    assert_eq!(messages(&events)[0]["result"]["content"][0]["text"], "x");
}

#[actix_rt::test]
async fn log_level_filters_notifications() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let (_, msgs) = s.exchange(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"log","arguments":{"level":"info","message":"hello"}}})).await;
    let note = msgs
        .iter()
        .find(|m| m["method"] == "notifications/message")
        .expect("log notification");
    assert_eq!(note["params"]["level"], "info");
    assert_eq!(note["params"]["data"], "hello");
    assert_eq!(
        s.rpc(2, "logging/setLevel", json!({"level": "error"})).await["result"],
        json!({})
    );
    let (_, msgs) = s.exchange(&json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"log","arguments":{"level":"warning","message":"quiet"}}})).await;
    assert!(
        msgs.iter().all(|m| m["method"] != "notifications/message"),
        "{msgs:?}"
    );
    let (_, msgs) = s.exchange(&json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"log","arguments":{"level":"critical","message":"loud"}}})).await;
    assert!(msgs.iter().any(|m| m["method"] == "notifications/message"));
}

#[actix_rt::test]
async fn cancellation_stops_the_work_and_sends_no_response() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let resp = s
        .post(&json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"countdown","arguments":{"steps":50,"interval_ms":50},"_meta":{"progressToken":1}}}))
        .await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(10), |_| false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s.post(&json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"c1","reason":"test"}})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (events, ended) = reader.await.unwrap();
    assert!(ended, "the stream ends once the call is cancelled");
    let msgs = messages(&events);
    assert!(
        msgs.iter()
            .all(|m| m.get("result").is_none() && m.get("error").is_none()),
        "no response: {msgs:?}"
    );
    let steps = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert!(steps < 20, "work stopped early ({steps} steps)");
}

#[actix_rt::test]
async fn resume_replays_exactly_the_rest_of_that_stream_then_follows_live() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    // Another stream of the same session, whose events must never appear in the resumption.
    s.call_text(1, "echo", json!({"text": "other"})).await;
    let resp = s
        .post(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":6,"interval_ms":100},"_meta":{"progressToken":"t"}}}))
        .await;
    // Drop the connection after the priming event and two progress events (the call goes on).
    let (first, _) = read_events(resp, Duration::from_secs(10), |ev| ev.len() >= 3).await;
    let last_id = first.last().unwrap().id.clone().unwrap();
    let resumed = s.get(Some(&last_id)).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let (rest, ended) = read_events(resumed, Duration::from_secs(10), |_| false).await;
    assert!(ended);
    let before: Vec<i64> = messages(&first)
        .iter()
        .filter_map(|m| m["params"]["progress"].as_i64())
        .collect();
    let after: Vec<i64> = messages(&rest)
        .iter()
        .filter_map(|m| m["params"]["progress"].as_i64())
        .collect();
    assert_eq!(before, [1, 2]);
    assert_eq!(after, [3, 4, 5, 6], "exactly the rest, in order, no repeats");
    let msgs = messages(&rest);
    assert_eq!(msgs.last().unwrap()["id"], 2);
    assert!(msgs.iter().all(|m| m["result"]["content"][0]["text"] != "other"));
    // Resuming after the end replays nothing more than the tail and closes.
    let again = s.get(Some(rest.last().unwrap().id.as_ref().unwrap())).await;
    let (tail, ended) = read_events(again, Duration::from_secs(5), |_| false).await;
    assert!(ended && messages(&tail).is_empty());
}

#[actix_rt::test]
async fn another_session_cannot_replay_these_events() {
    let app = spawn_app(&[]).await;
    let url = app.endpoint("demo");
    let a = Mcp::connect(&url, "2025-11-25", json!({})).await;
    let b = Mcp::connect(&url, "2025-11-25", json!({})).await;
    let resp = a.post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"secret-of-a"}}})).await;
    let (events, _) = read_events(resp, Duration::from_secs(5), |_| false).await;
    let a_id = events[0].id.clone().unwrap();
    let r = b.get(Some(&a_id)).await;
    if r.status() == StatusCode::OK {
        let (leak, _) = read_events(r, Duration::from_millis(500), |_| false).await;
        assert!(leak.iter().all(|e| !e.data.contains("secret-of-a")), "{leak:?}");
    } else {
        assert!(r.status().is_client_error());
    }
}

#[actix_rt::test]
async fn get_stream_carries_server_messages_one_at_a_time() {
    let app = spawn_app(&[("sessions.tools_call_response", "json")]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    // A second standalone GET replaces the first, which ends with a retry hint: one stream.
    let first = s.get(None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = tokio::spawn(read_events(first, Duration::from_secs(5), |_| false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stream = s.get(None).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let (old, ended) = first.await.unwrap();
    assert!(ended && old.last().unwrap().retry.is_some(), "{old:?}");
    let reader = tokio::spawn(read_events(stream, Duration::from_secs(10), |ev| {
        ev.iter().any(|e| e.data.contains("via-get"))
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // JSON mode: the call's log notification cannot ride the response, so it goes on the GET stream.
    let r = s
        .rpc(
            1,
            "tools/call",
            json!({"name": "log", "arguments": {"level": "info", "message": "via-get"}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], false);
    let (events, _) = reader.await.unwrap();
    let msgs = messages(&events);
    assert!(msgs.iter().any(|m| m["params"]["data"] == "via-get"));
    assert!(
        msgs.iter()
            .all(|m| m.get("result").is_none() && m.get("error").is_none()),
        "no responses on the GET stream"
    );
}

#[actix_rt::test]
async fn long_post_streams_are_closed_with_retry_and_resumed() {
    let app = spawn_app(&[
        ("sessions.max_post_stream_ms", "300"),
        ("sessions.retry_ms", "50"),
    ])
    .await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let resp = s
        .post(&json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":8,"interval_ms":100},"_meta":{"progressToken":"p"}}}))
        .await;
    let (events, ended) = read_events(resp, Duration::from_secs(10), |_| false).await;
    assert!(ended, "closed by the server");
    assert_eq!(
        events.last().unwrap().retry,
        Some(50),
        "a retry hint before the close"
    );
    assert!(messages(&events).iter().all(|m| m.get("result").is_none()));
    let mut last = events.iter().rev().find_map(|e| e.id.clone()).unwrap();
    let mut result = None;
    for _ in 0..20 {
        let (more, _) = read_events(s.get(Some(&last)).await, Duration::from_secs(10), |_| false).await;
        if let Some(id) = more.iter().rev().find_map(|e| e.id.clone()) {
            last = id;
        }
        if let Some(r) = messages(&more).into_iter().find(|m| m["id"] == 9) {
            result = Some(r);
            break;
        }
    }
    assert_eq!(
        result.expect("result after polling")["result"]["content"][0]["text"],
        "done: 8 steps"
    );
}

#[actix_rt::test]
async fn confirm_elicits_and_returns_the_answer() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({"elicitation": {}})).await;
    let resp = s.post(&json!({"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"confirm","arguments":{"question":"Deploy?"}}})).await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(10), |_| false));
    // Find the elicitation request by resuming the stream from its start.
    let ask = s
        .wait_for_message("1_0-0", |m| m["method"] == "elicitation/create")
        .await
        .expect("elicitation request");
    assert_eq!(ask["params"]["message"], "Deploy?");
    assert_eq!(
        ask["params"]["requestedSchema"]["properties"]["answer"]["type"],
        "string"
    );
    let r = s.post(&json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"accept","content":{"answer":"ship it"}}})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (_events, _) = reader.await.unwrap();
    let (events, _) = read_events(s.get(Some("1_0-0")).await, Duration::from_secs(5), |_| false).await;
    let result = messages(&events)
        .into_iter()
        .find(|m| m["id"] == 5)
        .expect("result");
    assert_eq!(result["result"]["content"][0]["text"], "ship it");
}

#[actix_rt::test]
async fn sigterm_path_drains_and_finishes_calls() {
    let app = spawn_app(&[]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let resp = s
        .post(&json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"countdown","arguments":{"steps":5,"interval_ms":100}}}))
        .await;
    let reader = tokio::spawn(read_events(resp, Duration::from_secs(10), |_| false));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let base = app.base.clone();
    let drained = tokio::spawn(app.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = reqwest::get(format!("{base}/readyz")).await.map(|r| r.status());
    assert!(
        ready.map_or(true, |st| st == StatusCode::SERVICE_UNAVAILABLE),
        "not ready while draining"
    );
    let (events, ended) = reader.await.unwrap();
    assert!(ended);
    assert!(
        events.last().unwrap().retry.is_some(),
        "connection ended with a retry hint"
    );
    drained.await.unwrap();
}

#[actix_rt::test]
async fn idle_actors_passivate_and_reactivate_on_demand() {
    let app = spawn_app(&[("sessions.passivate_after_secs", "1")]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    assert_eq!(
        s.rpc(1, "logging/setLevel", json!({"level": "critical"})).await["result"],
        json!({})
    );
    let ready: Value = reqwest::get(format!("{}/readyz", app.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    // Wait for the housekeeping tick to passivate the idle actor, then use the session again:
    // the state written through before passivation (the log level) is still there.
    assert_eq!(app.node.live_sessions(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while app.node.live_sessions() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle actor was never passivated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, msgs) = s
        .exchange(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"log","arguments":{"level":"error","message":"filtered"}}}))
        .await;
    assert!(
        msgs.iter().all(|m| m["method"] != "notifications/message"),
        "log level survived passivation: {msgs:?}"
    );
    assert_eq!(s.call_text(3, "echo", json!({"text": "back"})).await, "back");
    assert_eq!(app.node.live_sessions(), 1, "re-activated on demand");
}

#[actix_rt::test]
async fn sessions_expire_by_idle_ttl_and_by_absolute_maximum() {
    let app = spawn_app(&[
        ("sessions.idle_ttl_secs", "1"),
        ("sessions.passivate_after_secs", "1"),
    ])
    .await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = s.post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).await;
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "idle session expired without DELETE"
    );

    let app = spawn_app(&[("sessions.max_lifetime_secs", "2")]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    let mut status = StatusCode::OK;
    for _ in 0..40 {
        // Busy all along: only the absolute maximum can end it.
        status = s
            .post(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
            .await
            .status();
        if status != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "session ended at its absolute maximum"
    );
}

#[actix_rt::test]
async fn messages_sent_before_the_get_stream_opens_are_not_lost() {
    let app = spawn_app(&[("sessions.tools_call_response", "json")]).await;
    let s = Mcp::connect(&app.endpoint("demo"), "2025-11-25", json!({})).await;
    // JSON mode: the log notification goes to the GET stream, which is not open yet.
    let r = s
        .rpc(
            1,
            "tools/call",
            json!({"name": "log", "arguments": {"level": "info", "message": "early bird"}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], false);
    let (events, _) = read_events(s.get(None).await, Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e.data.contains("early bird"))
    })
    .await;
    assert!(
        messages(&events)
            .iter()
            .any(|m| m["params"]["data"] == "early bird"),
        "{events:?}"
    );
    // Delivered once: a second GET (after the first closes) does not repeat it.
    let mut second = s.get(None).await;
    for _ in 0..20 {
        if second.status() == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the first connection is closing
        second = s.get(None).await;
    }
    assert_eq!(second.status(), StatusCode::OK);
    let (again, _) = read_events(second, Duration::from_millis(500), |_| false).await;
    assert!(messages(&again).is_empty(), "{again:?}");
}
