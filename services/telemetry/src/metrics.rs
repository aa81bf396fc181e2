//! The registry and the recording API.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::labels::{self, NamedTargets, OTHER, Outcome, Target};

/// The OpenTelemetry MCP conventions' advice for the operation and session histograms.
const MCP_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Marina's own time per request: microseconds to a quarter second.
const PROCESSING_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];
/// The OpenTelemetry HTTP conventions' advice for `http.server.request.duration`.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const STORE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];
const REPLAY_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0];
const CONTROL_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How many tool and prompt names one node carries as label values (see docs/operations.md,
/// "Series budget").
pub const DEFAULT_MAX_NAMED_TARGETS: usize = 500;

/// Whether observations are recorded (`telemetry.metrics`; on unless the node is told otherwise at
/// start). Off, every observation returns at once; what the node itself relies on still counts
/// (the open streams behind `server.max_open_streams`, the draining flag).
static RECORDING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turn recording off (or on) for the process; the node does it once, at start.
pub fn set_recording(on: bool) {
    RECORDING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether observations are recorded.
pub fn recording() -> bool {
    RECORDING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The process's metrics (the node serves them at the admin listener's `/metrics`).
pub fn metrics() -> &'static Metrics {
    static GLOBAL: LazyLock<Metrics> = LazyLock::new(|| {
        let m = Metrics::new(DEFAULT_MAX_NAMED_TARGETS);
        #[cfg(target_os = "linux")]
        {
            let _ = m.registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        m
    });
    &GLOBAL
}

/// Every metric of the reference, registered in one registry.
pub struct Metrics {
    registry: Registry,
    targets: NamedTargets,
    server_op: HistogramVec,
    client_op: HistogramVec,
    session_duration: HistogramVec,
    processing: HistogramVec,
    http: HistogramVec,
    sessions_active: IntGaugeVec,
    sessions_started: IntCounterVec,
    sessions_ended: IntCounterVec,
    sse_open: IntGaugeVec,
    sse_max: IntGauge,
    sse_open_total: AtomicI64,
    sse_events: IntCounterVec,
    sse_replays: IntCounterVec,
    sse_replayed: HistogramVec,
    sse_closed: IntCounterVec,
    listen_open: IntGaugeVec,
    store_op: HistogramVec,
    store_errors: IntCounterVec,
    takeovers: IntCounterVec,
    forwards: IntCounterVec,
    draining: IntGauge,
    drain_inflight: IntGauge,
    auth_failures: IntCounterVec,
    authz: IntCounterVec,
    limits: IntCounterVec,
    upstream_up: IntGaugeVec,
    upstream_backoffs: IntCounterVec,
    upstream_items: IntGaugeVec,
    control_apply: Histogram,
    control_errors: IntCounter,
    tenants: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("named_targets", &self.targets.len())
            .finish_non_exhaustive()
    }
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .expect("valid histogram");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid gauge");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Metrics {
    /// A fresh registry (tests make their own; the node uses [`metrics`]) carrying at most
    /// `max_named_targets` tool and prompt names.
    pub fn new(max_named_targets: usize) -> Self {
        let r = Registry::new();
        let op_labels = [
            "tenant",
            "mcp_method_name",
            "gen_ai_tool_name",
            "gen_ai_prompt_name",
            "error_type",
            "mcp_protocol_version",
        ];
        let m = Self {
            server_op: histogram(
                &r,
                "mcp_server_operation_duration_seconds",
                "MCP requests and notifications served, from receipt to result, error or 202.",
                MCP_BUCKETS,
                &op_labels,
            ),
            client_op: histogram(
                &r,
                "mcp_client_operation_duration_seconds",
                "Requests from Marina to upstream MCP servers, from send to answer.",
                MCP_BUCKETS,
                &["tenant", "upstream", "mcp_method_name", "error_type"],
            ),
            session_duration: histogram(
                &r,
                "mcp_server_session_duration_seconds",
                "Lifetime of ended sessionful-era sessions.",
                MCP_BUCKETS,
                &["tenant", "mcp_protocol_version", "error_type"],
            ),
            processing: histogram(
                &r,
                "marina_request_processing_seconds",
                "Marina's own time for an MCP request: its duration minus the time spent waiting on upstreams.",
                PROCESSING_BUCKETS,
                &["tenant", "mcp_method_name"],
            ),
            http: histogram(
                &r,
                "http_server_request_duration_seconds",
                "HTTP requests on the public listener, until the response head.",
                HTTP_BUCKETS,
                &["http_route", "http_request_method", "http_response_status_class"],
            ),
            sessions_active: gauge_vec(
                &r,
                "marina_sessions_active",
                "Sessionful-era sessions whose actor lives on this node.",
                &["tenant"],
            ),
            sessions_started: counter(
                &r,
                "marina_sessions_started_total",
                "Sessions created on this node.",
                &["tenant"],
            ),
            sessions_ended: counter(
                &r,
                "marina_sessions_ended_total",
                "Sessions ended on this node, by reason.",
                &["tenant", "reason"],
            ),
            sse_open: gauge_vec(
                &r,
                "marina_sse_streams_open",
                "Open SSE response streams.",
                &["kind"],
            ),
            sse_max: gauge(
                &r,
                "marina_sse_streams_max",
                "server.max_open_streams: the SSE streams this node keeps open at most.",
            ),
            sse_open_total: AtomicI64::new(0),
            sse_events: counter(
                &r,
                "marina_sse_events_sent_total",
                "SSE data events written (not keep-alives).",
                &["kind"],
            ),
            sse_replays: counter(
                &r,
                "marina_sse_replays_total",
                "SSE resumptions with Last-Event-ID.",
                &["kind"],
            ),
            sse_replayed: histogram(
                &r,
                "marina_sse_replayed_events",
                "Stored events each resumption replayed.",
                REPLAY_BUCKETS,
                &["kind"],
            ),
            sse_closed: counter(
                &r,
                "marina_sse_streams_closed_total",
                "SSE streams ended, by reason.",
                &["kind", "reason"],
            ),
            listen_open: gauge_vec(
                &r,
                "marina_listen_streams_open",
                "subscriptions/listen streams open on this node.",
                &["tenant"],
            ),
            store_op: histogram(
                &r,
                "marina_store_operation_duration_seconds",
                "One store call (a Redis round trip, pipeline or script).",
                STORE_BUCKETS,
                &["operation", "db_system_name"],
            ),
            store_errors: counter(
                &r,
                "marina_store_errors_total",
                "Failed store calls.",
                &["operation", "error_type"],
            ),
            takeovers: counter(
                &r,
                "marina_session_takeovers_total",
                "Sessions this node took over from another node.",
                &["reason"],
            ),
            forwards: counter(
                &r,
                "marina_forwards_total",
                "Requests forwarded to the node holding a session or a parked call.",
                &["kind", "outcome"],
            ),
            draining: gauge(&r, "marina_draining", "1 while the node drains, else 0."),
            drain_inflight: gauge(
                &r,
                "marina_drain_inflight",
                "Calls and streams the draining node still waits for.",
            ),
            auth_failures: counter(
                &r,
                "marina_auth_failures_total",
                "Refused authentication, by reason.",
                &["tenant", "reason"],
            ),
            authz: counter(
                &r,
                "marina_authz_decisions_total",
                "RBAC decisions (list filtering counts once per list).",
                &["tenant", "decision", "action"],
            ),
            limits: counter(
                &r,
                "marina_limit_decisions_total",
                "Limit checks, by scope.",
                &["tenant", "scope", "decision"],
            ),
            upstream_up: gauge_vec(
                &r,
                "marina_upstream_up",
                "1 when the node's last contact with the upstream succeeded.",
                &["tenant", "upstream"],
            ),
            upstream_backoffs: counter(
                &r,
                "marina_upstream_backoffs_total",
                "Times the node started backing off an upstream.",
                &["tenant", "upstream"],
            ),
            upstream_items: gauge_vec(
                &r,
                "marina_upstream_list_items",
                "Size of the upstream's last list.",
                &["tenant", "upstream", "kind"],
            ),
            control_apply: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "marina_control_apply_seconds",
                        "Delay from a control-plane change being written to this node applying it.",
                    )
                    .buckets(CONTROL_BUCKETS.to_vec()),
                )
                .expect("valid histogram");
                r.register(Box::new(h.clone())).expect("registered once");
                h
            },
            control_errors: {
                let c = IntCounter::new(
                    "marina_control_apply_errors_total",
                    "Tenant documents this node failed to apply.",
                )
                .expect("valid counter");
                r.register(Box::new(c.clone())).expect("registered once");
                c
            },
            tenants: gauge(&r, "marina_tenants", "Tenants this node serves."),
            targets: NamedTargets::new(max_named_targets),
            registry: r,
        };
        let info = gauge_vec(
            &m.registry,
            "marina_build_info",
            "Always 1; the labels name the build.",
            &["version", "commit"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("MARINA_COMMIT")])
            .set(1);
        m.sse_max.set(10_000);
        m
    }

    /// Everything in Prometheus text format ([`crate::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for metrics this registry validated.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    // === MCP operations ===

    /// Start timing an MCP request or notification that `tenant` received; record it with
    /// [`ServerOperation::finish`]. One dropped unfinished (a stream that closed before its
    /// result) is not recorded: its client resumes it, or it never ended.
    pub fn server_operation(
        &'static self,
        tenant: &str,
        method: &str,
        target: Target<'_>,
        protocol_version: Option<&str>,
    ) -> ServerOperation {
        let (tool, name) = match target {
            Target::None => (true, None),
            Target::Tool(n) => (true, Some(n.to_owned())),
            Target::Prompt(n) => (false, Some(n.to_owned())),
        };
        ServerOperation {
            metrics: self,
            started: Instant::now(),
            tenant: tenant.to_owned(),
            method: labels::method(method),
            tool,
            name,
            version: labels::protocol_version(protocol_version),
            wait: UpstreamWait::default(),
        }
    }

    fn record_server(&self, op: &ServerOperation, outcome: Outcome) {
        if !recording() {
            return;
        }
        let elapsed = op.started.elapsed();
        // A name the request got "invalid params" for was unknown, denied or malformed: it was
        // not one the tenant publishes to this caller.
        let named = match (&op.name, outcome) {
            (None, _) => String::new(),
            (Some(_), Outcome::Code(-32602)) => OTHER.to_owned(),
            (Some(n), _) => self.targets.label(&op.tenant, op.tool, n),
        };
        let (tool, prompt) = match (op.name.is_some(), op.tool) {
            (false, _) => ("", ""),
            (true, true) => (named.as_str(), ""),
            (true, false) => ("", named.as_str()),
        };
        self.server_op
            .with_label_values(&[
                op.tenant.as_str(),
                op.method,
                tool,
                prompt,
                &outcome.label(),
                op.version,
            ])
            .observe(elapsed.as_secs_f64());
        let waited = Duration::from_nanos(op.wait.0.load(Ordering::Relaxed));
        self.processing
            .with_label_values(&[op.tenant.as_str(), op.method])
            .observe(elapsed.saturating_sub(waited).as_secs_f64());
    }

    /// One request (or notification) Marina sent to upstream `upstream` of `tenant`.
    pub fn client_operation(
        &self,
        tenant: &str,
        upstream: &str,
        method: &str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        if !recording() {
            return;
        }
        self.client_op
            .with_label_values(&[tenant, upstream, labels::method(method), &outcome.label()])
            .observe(elapsed.as_secs_f64());
    }

    // === HTTP ===

    /// One HTTP request on the public listener, until its response head. `route` is the
    /// matched pattern (or [`OTHER`]).
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if !recording() {
            return;
        }
        self.http
            .with_label_values(&[route, labels::http_method(method), labels::status_class(status)])
            .observe(elapsed.as_secs_f64());
    }

    // === sessions ===

    /// A session's actor started on this node (a new session, or one re-activated here).
    pub fn session_activated(&self, tenant: &str) {
        self.sessions_active.with_label_values(&[tenant]).inc();
    }

    /// A new session was created on this node.
    pub fn session_started(&self, tenant: &str) {
        self.sessions_started.with_label_values(&[tenant]).inc();
    }

    /// A session's actor stopped on this node.
    pub fn session_deactivated(&self, tenant: &str) {
        self.sessions_active.with_label_values(&[tenant]).dec();
    }

    /// A session ended for good (`reason`: `deleted`, `expired`, `evicted`, `refused`) after
    /// `lifetime`.
    pub fn session_ended(
        &self,
        tenant: &str,
        reason: &'static str,
        protocol_version: &str,
        lifetime: Duration,
    ) {
        self.sessions_ended.with_label_values(&[tenant, reason]).inc();
        if reason != "refused" {
            self.session_duration
                .with_label_values(&[tenant, labels::protocol_version(Some(protocol_version)), ""])
                .observe(lifetime.as_secs_f64());
        }
    }

    // === SSE ===

    /// Set `server.max_open_streams` (exported as `marina_sse_streams_max`).
    pub fn set_max_open_streams(&self, max: usize) {
        self.sse_max.set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// May a new SSE stream of `kind` (`post`, `get`, `listen`) open? Not once the node has
    /// `server.max_open_streams` open (the refusal is counted as closed with `refused_cap`).
    /// Checked before a request that opens one is dispatched; [`Self::stream`] then counts it.
    pub fn stream_room(&self, kind: &'static str) -> Result<(), AtCap> {
        if self.sse_open_total.load(Ordering::Acquire) >= self.sse_max.get() {
            self.sse_closed.with_label_values(&[kind, "refused_cap"]).inc();
            return Err(AtCap);
        }
        Ok(())
    }

    /// An SSE stream of `kind` opened; it closes when the guard drops.
    pub fn stream(&'static self, kind: &'static str) -> SseStream {
        self.sse_open_total.fetch_add(1, Ordering::AcqRel);
        self.sse_open.with_label_values(&[kind]).inc();
        SseStream {
            metrics: self,
            kind,
            reason: "client_gone",
        }
    }

    /// [`Self::stream_room`] and [`Self::stream`] at once.
    pub fn open_stream(&'static self, kind: &'static str) -> Result<SseStream, AtCap> {
        self.stream_room(kind)?;
        Ok(self.stream(kind))
    }

    /// Is the node draining?
    pub fn is_draining(&self) -> bool {
        self.draining.get() == 1
    }

    /// Streams open on this node (all kinds).
    pub fn open_streams(&self) -> i64 {
        self.sse_open_total.load(Ordering::Acquire)
    }

    /// A resumption with `Last-Event-ID` that replayed `events` stored events.
    pub fn sse_replay(&self, kind: &'static str, events: usize) {
        if !recording() {
            return;
        }
        self.sse_replays.with_label_values(&[kind]).inc();
        self.sse_replayed
            .with_label_values(&[kind])
            .observe(events as f64);
    }

    /// A `subscriptions/listen` stream of `tenant` opened (`+1`) or closed (`-1`).
    pub fn listen_stream(&self, tenant: &str, delta: i64) {
        self.listen_open.with_label_values(&[tenant]).add(delta);
    }

    // === store, cluster ===

    /// One store call (`operation`: the store method; `system`: `redis` or `memory`), failed
    /// with `error` (`timeout`, `io`, `response`, `other`) or not.
    pub fn store_operation(
        &self,
        operation: &'static str,
        system: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        if !recording() {
            return;
        }
        self.store_op
            .with_label_values(&[operation, system])
            .observe(elapsed.as_secs_f64());
        if let Some(e) = error {
            self.store_errors.with_label_values(&[operation, e]).inc();
        }
    }

    /// This node took a session over (`owner_gone`, `lease_expired`, `drain`).
    pub fn takeover(&self, reason: &'static str) {
        if !recording() {
            return;
        }
        self.takeovers.with_label_values(&[reason]).inc();
    }

    /// This node forwarded a request (`kind`: `session`, `parked_call`).
    pub fn forward(&self, kind: &'static str, ok: bool) {
        if !recording() {
            return;
        }
        self.forwards
            .with_label_values(&[kind, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The node started (or, for tests, stopped) draining.
    pub fn set_draining(&self, draining: bool) {
        self.draining.set(i64::from(draining));
    }

    /// What the draining node still waits for.
    pub fn set_drain_inflight(&self, n: usize) {
        self.drain_inflight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    // === security ===

    /// Authentication refused for `reason` (a fixed set, see the reference).
    pub fn auth_failure(&self, tenant: &str, reason: &'static str) {
        if !recording() {
            return;
        }
        self.auth_failures.with_label_values(&[tenant, reason]).inc();
    }

    /// An RBAC decision on `action` (`list`, `call`, `read`, `get`).
    pub fn authz_decision(&self, tenant: &str, allow: bool, action: &'static str) {
        if !recording() {
            return;
        }
        self.authz
            .with_label_values(&[tenant, if allow { "allow" } else { "deny" }, action])
            .inc();
    }

    /// A limit check of `scope`.
    pub fn limit_decision(&self, tenant: &str, scope: &'static str, allow: bool) {
        if !recording() {
            return;
        }
        self.limits
            .with_label_values(&[tenant, scope, if allow { "allow" } else { "deny" }])
            .inc();
    }

    // === upstreams, control plane ===

    /// The node's last contact with `upstream` of `tenant` succeeded (or not).
    pub fn upstream_up(&self, tenant: &str, upstream: &str, up: bool) {
        self.upstream_up
            .with_label_values(&[tenant, upstream])
            .set(i64::from(up));
    }

    /// The node started backing off `upstream` of `tenant`.
    pub fn upstream_backoff(&self, tenant: &str, upstream: &str) {
        if !recording() {
            return;
        }
        self.upstream_backoffs
            .with_label_values(&[tenant, upstream])
            .inc();
    }

    /// The size of `upstream`'s last list of `kind` (`tools`, `prompts`, `resources`).
    pub fn upstream_list(&self, tenant: &str, upstream: &str, kind: &'static str, items: usize) {
        self.upstream_items
            .with_label_values(&[tenant, upstream, kind])
            .set(i64::try_from(items).unwrap_or(i64::MAX));
    }

    /// A control-plane change written `delay` ago was applied here.
    pub fn control_applied(&self, delay: Duration) {
        if !recording() {
            return;
        }
        self.control_apply.observe(delay.as_secs_f64());
    }

    /// A tenant document could not be applied.
    pub fn control_apply_error(&self) {
        if !recording() {
            return;
        }
        self.control_errors.inc();
    }

    /// The node now serves `n` tenants.
    pub fn set_tenants(&self, n: usize) {
        self.tenants.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Forget a tenant's gauges (the node stopped serving it, or it lost upstreams), so they
    /// do not linger: `upstreams` are the names it had.
    pub fn forget_tenant<'a>(&self, tenant: &str, upstreams: impl IntoIterator<Item = &'a str>) {
        let _ = self.sessions_active.remove_label_values(&[tenant]);
        let _ = self.listen_open.remove_label_values(&[tenant]);
        for u in upstreams {
            let _ = self.upstream_up.remove_label_values(&[tenant, u]);
            for kind in ["tools", "prompts", "resources"] {
                let _ = self.upstream_items.remove_label_values(&[tenant, u, kind]);
            }
        }
    }
}

/// The node has `server.max_open_streams` SSE streams open.
#[derive(Debug, Clone, Copy)]
pub struct AtCap;

/// Time one request spent waiting on upstreams (and on its client), shared with whatever waits
/// on its behalf; subtracted from its duration for `marina_request_processing_seconds`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamWait(Arc<AtomicU64>);

impl UpstreamWait {
    /// Add `d` to the request's waiting time.
    pub fn add(&self, d: Duration) {
        self.0
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// An MCP operation being served (see [`Metrics::server_operation`]).
#[derive(Debug)]
pub struct ServerOperation {
    metrics: &'static Metrics,
    started: Instant,
    tenant: String,
    method: &'static str,
    tool: bool,
    name: Option<String>,
    version: &'static str,
    wait: UpstreamWait,
}

impl ServerOperation {
    /// The clock of this request's upstream waits.
    pub fn wait(&self) -> UpstreamWait {
        self.wait.clone()
    }
    /// The operation ended with `outcome`: record it.
    pub fn finish(self, outcome: Outcome) {
        self.metrics.record_server(&self, outcome);
    }
}

/// An open SSE stream (see [`Metrics::open_stream`]); closed when dropped, with the reason last
/// set ([`SseStream::closing`]), `client_gone` if none.
#[derive(Debug)]
pub struct SseStream {
    metrics: &'static Metrics,
    kind: &'static str,
    reason: &'static str,
}

impl SseStream {
    /// One data event written.
    pub fn event(&self) {
        self.events(1);
    }
    /// `n` data events written.
    pub fn events(&self, n: usize) {
        if n > 0 && recording() {
            self.metrics
                .sse_events
                .with_label_values(&[self.kind])
                .inc_by(n as u64);
        }
    }
    /// Why the stream is ending (`complete`, `max_duration`, `drain`, `evicted`).
    pub fn closing(&mut self, reason: &'static str) {
        self.reason = reason;
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        let m = self.metrics;
        m.sse_open_total.fetch_sub(1, Ordering::AcqRel);
        m.sse_open.with_label_values(&[self.kind]).dec();
        m.sse_closed.with_label_values(&[self.kind, self.reason]).inc();
    }
}

#[cfg(test)]
mod tests;
