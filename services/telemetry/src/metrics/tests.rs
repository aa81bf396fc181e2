use super::*;

fn fresh(cap: usize) -> &'static Metrics {
    Box::leak(Box::new(Metrics::new(cap)))
}

/// The sample lines (series) of a scrape.
fn series(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn an_operation_is_recorded_with_its_labels() {
    let m = fresh(10);
    let op = m.server_operation("acme", "tools/call", Target::Tool("echo"), Some("2025-06-18"));
    op.finish(Outcome::ToolError);
    let text = m.render();
    assert!(
        text.contains(
            r#"mcp_server_operation_duration_seconds_count{error_type="tool_error",gen_ai_prompt_name="",gen_ai_tool_name="echo",mcp_method_name="tools/call",mcp_protocol_version="2025-06-18",tenant="acme"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"marina_request_processing_seconds_count{mcp_method_name="tools/call",tenant="acme"} 1"#
    ));
    assert!(text.contains("marina_build_info{commit="), "{text}");
}

#[test]
fn unknown_or_denied_names_and_unknown_methods_are_other() {
    let m = fresh(10);
    m.server_operation("acme", "tools/call", Target::Tool("secret"), None)
        .finish(Outcome::Code(-32602));
    m.server_operation("acme", "x/y", Target::None, Some("9999-01-01"))
        .finish(Outcome::Code(-32601));
    let text = m.render();
    assert!(
        text.contains(r#"gen_ai_tool_name="_OTHER",mcp_method_name="tools/call""#),
        "{text}"
    );
    assert!(!text.contains("secret"));
    assert!(
        text.contains(r#"error_type="-32601",gen_ai_prompt_name="",gen_ai_tool_name="",mcp_method_name="_OTHER",mcp_protocol_version="_OTHER""#),
        "{text}"
    );
}

#[test]
fn processing_time_excludes_upstream_waits() {
    let m = fresh(10);
    let op = m.server_operation("acme", "tools/call", Target::Tool("slow"), None);
    op.wait().add(Duration::from_secs(3600));
    op.finish(Outcome::Ok);
    let text = m.render();
    // Less than nothing is nothing: the whole observation lies in the first bucket.
    assert_eq!(
        value(
            &text,
            r#"marina_request_processing_seconds_bucket{mcp_method_name="tools/call",tenant="acme",le="0.00005"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn streams_past_the_cap_are_refused_and_closes_have_reasons() {
    let m = fresh(10);
    m.set_max_open_streams(2);
    let a = m.open_stream("post").expect("first");
    let mut b = m.open_stream("get").expect("second");
    assert!(m.open_stream("post").is_err());
    assert_eq!(m.open_streams(), 2);
    b.event();
    b.closing("complete");
    drop(b);
    drop(a);
    assert_eq!(m.open_streams(), 0);
    let text = m.render();
    assert_eq!(
        value(
            &text,
            r#"marina_sse_streams_closed_total{kind="post",reason="refused_cap"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"marina_sse_streams_closed_total{kind="get",reason="complete"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"marina_sse_streams_closed_total{kind="post",reason="client_gone"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, r#"marina_sse_streams_open{kind="post"}"#), Some(0.0));
    assert_eq!(value(&text, "marina_sse_streams_max"), Some(2.0));
    assert_eq!(
        value(&text, r#"marina_sse_events_sent_total{kind="get"}"#),
        Some(1.0)
    );
}

#[test]
fn a_forgotten_tenant_leaves_no_gauges() {
    let m = fresh(10);
    m.session_activated("gone");
    m.session_started("gone");
    m.upstream_up("gone", "u", true);
    m.forget_tenant("gone", ["u"]);
    let text = m.render();
    assert!(!text.contains(r#"marina_sessions_active{tenant="gone"}"#));
    assert!(!text.contains(r#"marina_upstream_up{tenant="gone""#));
    // Counters stay: they are rates' history.
    assert!(text.contains(r#"marina_sessions_started_total{tenant="gone"} 1"#));
}

/// The documented series budget (docs/operations.md, "Series budget").
const SERIES_BUDGET: usize = 300_000;

/// The series budget: 1,000 tenants × 20 tools on one node, every tenant with the traffic a
/// realistic client makes, stays under the budget, and names past the cap are `_OTHER`.
#[test]
fn one_thousand_tenants_of_twenty_tools_stay_within_the_series_budget() {
    let m = fresh(DEFAULT_MAX_NAMED_TARGETS);
    let v = Some("2025-06-18");
    for t in 0..1000 {
        let tenant = format!("tenant-{t:04}");
        let up = "github";
        for method in ["initialize", "notifications/initialized", "tools/list"] {
            m.server_operation(&tenant, method, Target::None, v)
                .finish(Outcome::Ok);
            m.client_operation(&tenant, up, method, Outcome::Ok, Duration::from_millis(3));
        }
        for tool in 0..20 {
            let name = format!("{up}.tool_{tool:02}");
            for outcome in [Outcome::Ok, Outcome::ToolError] {
                m.server_operation(&tenant, "tools/call", Target::Tool(&name), v)
                    .finish(outcome);
                m.client_operation(&tenant, up, "tools/call", outcome, Duration::from_millis(30));
            }
        }
        // A caller asking for a tool that does not exist, and one denied.
        m.server_operation(&tenant, "tools/call", Target::Tool("no-such-tool"), v)
            .finish(Outcome::Code(-32602));
        // Sessions, security, limits and upstreams.
        m.session_activated(&tenant);
        m.session_started(&tenant);
        m.session_ended(&tenant, "deleted", "2025-06-18", Duration::from_secs(60));
        m.session_ended(&tenant, "expired", "2025-06-18", Duration::from_secs(600));
        m.auth_failure(&tenant, "invalid_key");
        m.authz_decision(&tenant, true, "list");
        m.authz_decision(&tenant, true, "call");
        m.authz_decision(&tenant, false, "call");
        for scope in ["tenant_rate", "principal_rate", "tool_rate"] {
            m.limit_decision(&tenant, scope, true);
        }
        m.limit_decision(&tenant, "tenant_rate", false);
        m.upstream_up(&tenant, up, true);
        m.upstream_list(&tenant, up, "tools", 20);
    }
    for route in ["/t/{tenant}/mcp", "/healthz", "/readyz", "_OTHER"] {
        for status in [200, 202, 400, 401, 404, 429, 503] {
            m.http_request(route, "POST", status, Duration::from_millis(5));
            m.http_request(route, "GET", status, Duration::from_millis(5));
        }
    }
    for op in ["load", "save", "append", "begin_call", "complete_stream"] {
        m.store_operation(op, "redis", Duration::from_micros(300), None);
    }
    let text = m.render();
    let n = series(&text).len();
    println!("series for 1,000 tenants x 20 tools: {n}");
    for name in [
        "mcp_server_operation_duration_seconds",
        "mcp_client_operation_duration_seconds",
        "marina_request_processing_seconds",
        "mcp_server_session_duration_seconds",
    ] {
        let k = series(&text).iter().filter(|l| l.starts_with(name)).count();
        println!("  {name}: {k}");
    }
    assert!(n < SERIES_BUDGET, "{n} series, budget {SERIES_BUDGET}");
    // Names: at most the cap named (one successful series per admitted tenant and tool), every
    // other tool call `_OTHER`.
    let named = series(&text)
        .iter()
        .filter(|l| l.starts_with("mcp_server_operation_duration_seconds_count{error_type=\"\""))
        .filter(|l| l.contains("mcp_method_name=\"tools/call\""))
        .filter(|l| !l.contains("gen_ai_tool_name=\"_OTHER\""))
        .count();
    assert_eq!(named, DEFAULT_MAX_NAMED_TARGETS);
    assert!(text.contains(r#"gen_ai_tool_name="_OTHER""#));
    assert!(!text.contains("no-such-tool"));
}
