//! Upstream kind `mcp`: a remote MCP server over Streamable HTTP.
//!
//! Each downstream session has its own upstream session, initialized lazily (on the first list or
//! call that needs it) and kept in the downstream session's record, so whichever node holds the
//! session continues it; when the upstream answers 404 (it forgot the session) a new one is
//! initialized and the request retried once. The client's token never goes upstream: requests
//! carry only the tenant's configured headers and bearer token.
//!
//! Tools are published as `<prefix>.<name>` (see [`McpUpstream::publish`]), filtered by the
//! `include`/`exclude` patterns. A call's upstream answer — one JSON body or an SSE stream — is read
//! to its response; on the way, progress and log notifications are relayed onto the call's own
//! downstream stream, and the upstream's requests to the client (sampling, elicitation, roots) are
//! relayed only if the client declared the capability (otherwise the upstream gets -32601), the
//! client's answer going back to the upstream. A call the client cancels is cancelled upstream.
//! Upstream failures (unreachable, timeout, HTTP errors, malformed answers, a stream that breaks
//! off) are tool errors with a short message; upstream JSON-RPC errors are relayed as they are.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use http_body_util::Full;
use marina_core::protocol::{self, RpcError, code, result_response};
use marina_core::settings::McpUpstreamSettings;
use marina_core::tools::{CallContext, SessionContext, ToolDef, ToolProvider, UpstreamSession};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

mod modern;

use super::egress::{self, Policy};
use super::http_tool::valid_tool_name;
use super::transport::{self, Transport};

/// Most pages of `tools/list` read from one upstream.
const MAX_PAGES: usize = 100;
/// How often a session's follower looks whether its upstream session has started.
const FOLLOW_POLL: Duration = Duration::from_millis(25);
/// How long a new upstream session waits for its GET stream to be opened before it is used.
const GET_OPEN_WAIT: Duration = Duration::from_secs(2);
/// How often an interrupted upstream answer stream is resumed before giving up.
const MAX_RESUMES: usize = 5;
/// The longest `retry` hint of an upstream that Marina honours before resuming.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);
/// Consecutive transport failures after which an upstream is given a rest.
const TRIP_AFTER: u32 = 3;
/// Longest rest between attempts at a failing upstream.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Listing tools never waits longer than this, whatever the call timeout: a slow upstream must
/// not hold up every session's `tools/list`.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Backs off an upstream that keeps failing: after [`TRIP_AFTER`] consecutive transport failures
/// (unreachable, timeout, HTTP 5xx) requests fail at once for 1 s, doubling up to [`MAX_BACKOFF`];
/// one success closes it again. Node-local on purpose: each node learns for itself.
#[derive(Debug, Default)]
struct Breaker {
    failures: std::sync::atomic::AtomicU32,
    open_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Breaker {
    fn rest_left(&self) -> Option<Duration> {
        let until = *self.open_until.lock().unwrap_or_else(|p| p.into_inner());
        until.and_then(|u| u.checked_duration_since(std::time::Instant::now()))
    }

    /// Note a failure; `true` when it starts a rest (the upstream is backed off).
    fn failed(&self) -> bool {
        use std::sync::atomic::Ordering;
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        let started = n == TRIP_AFTER;
        if n >= TRIP_AFTER {
            let rest = Duration::from_secs(1 << (n - TRIP_AFTER).min(5)).min(MAX_BACKOFF);
            *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now() + rest);
        }
        started
    }

    fn succeeded(&self) {
        self.failures.store(0, std::sync::atomic::Ordering::SeqCst);
        *self.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
/// What the body of an upstream's error response says (see `McpUpstream::error_body`).
enum ErrorBody {
    /// A JSON-RPC error answering our request: relayed as it is.
    Answer(Value),
    /// An error answering no request, about the session: the upstream does not know it.
    NoSession,
    /// Anything else.
    Other,
}

/// Drop the per-request envelope of a 2026-07-28 request (`_meta["io.modelcontextprotocol/…"]`:
/// version, client capabilities and identity, log level) from params relayed within an upstream
/// session: the session negotiated those, and an upstream that knows both eras refuses a
/// sessionful request that claims a stateless revision.
fn without_envelope(params: &mut Value) {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params.as_object_mut().map(|p| p.remove("_meta"));
        }
    }
}

/// Server→client requests relayed, with the capability the client must have declared.
const RELAYED_REQUESTS: [(&str, &str); 3] = [
    ("sampling/createMessage", "sampling"),
    ("elicitation/create", "elicitation"),
    ("roots/list", "roots"),
];

/// A remote MCP server.
pub struct McpUpstream {
    name: String,
    prefix: String,
    url: reqwest::Url,
    /// `url` as hyper takes it (parsed once, not per request).
    uri: http::Uri,
    headers: HeaderMap,
    /// `headers` with those of every POST (Accept, Content-Type), cloned per request.
    post_headers: HeaderMap,
    include: Vec<String>,
    exclude: Vec<String>,
    timeout: Duration,
    max_bytes: usize,
    client: reqwest::Client,
    /// For POSTs, every call's path (`transport.rs`); `client` serves the GET streams.
    transport: Transport,
    policy: Policy,
    breaker: Breaker,
    /// What this node sees of the upstream (for the admin API's status).
    health: std::sync::Arc<super::health::Health>,
    /// One upstream-session initialization at a time per downstream session (two concurrent
    /// first requests must not start two upstream sessions).
    starting: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// The running follower of each downstream session (see [`FollowerLink`]).
    followers: std::sync::Mutex<std::collections::HashMap<String, FollowerLink>>,
    /// The protocol the configuration asks for.
    protocol: modern::Protocol,
    /// The era probed (`protocol: auto`), once known.
    era: std::sync::Mutex<Option<modern::Era>>,
    /// Input schemas of the upstream's tools that mark arguments with `x-mcp-header` (by
    /// upstream name, from its last list): a 2026-07-28 call of one mirrors them in headers.
    marked: std::sync::Mutex<std::collections::HashMap<String, Value>>,
    /// The resources each downstream session subscribed to on a 2026-07-28 upstream (served
    /// by the session's follower through `subscriptions/listen`).
    subscribed: std::sync::Mutex<std::collections::HashMap<String, std::collections::BTreeSet<String>>>,
}

/// How a new upstream session reaches its downstream session's follower (which lives as long as
/// the session's actor on this node).
///
/// A new upstream session is not used before the follower has opened its GET stream (or failed
/// to), because an upstream may send a request there in answer to our very next request, and a
/// message sent on the GET stream while no GET stream is open is lost: the Streamable HTTP server
/// of the official TypeScript SDK stores it but replays it only to a GET that carries a
/// `Last-Event-ID`, which a first GET cannot have. server-everything's `get-roots-list`, as the
/// session's first call, sends `roots/list` that way at once (not on the call's stream), and the
/// call then waits for an answer forever.
#[derive(Clone)]
struct FollowerLink {
    /// Wakes the follower when an upstream session starts (rather than at its next look).
    wake: std::sync::Arc<tokio::sync::Notify>,
    /// The upstream session (its id) whose GET stream the follower last tried to open, set once
    /// the upstream has answered the attempt. Closed when the follower stops.
    tried: tokio::sync::watch::Receiver<Option<Option<String>>>,
}

/// Removes a follower's [`FollowerLink`] when the follower stops (returns or is dropped).
struct Unlink<'a> {
    upstream: &'a McpUpstream,
    key: String,
    wake: std::sync::Arc<tokio::sync::Notify>,
}

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        let mut followers = self.upstream.followers.lock().unwrap_or_else(|p| p.into_inner());
        // Only this follower's own link: a successor may have replaced it.
        if followers
            .get(&self.key)
            .is_some_and(|l| std::sync::Arc::ptr_eq(&l.wake, &self.wake))
        {
            followers.remove(&self.key);
            self.upstream
                .subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.key);
        }
    }
}

impl std::fmt::Debug for McpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers may hold credentials: never print them.
        f.debug_struct("McpUpstream")
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// How one connection of an upstream's GET stream ended.
enum Follow {
    /// The upstream has no GET stream.
    Unsupported,
    /// It ended normally (reconnect soon).
    Ended,
    /// It could not be opened (reconnect with back-off).
    Failed,
    /// The session has no upstream session yet (look again soon).
    NotYet,
}

/// Why an exchange with the upstream failed.
#[derive(Debug)]
enum Failure {
    /// The upstream no longer knows our session (404): initialize a new one.
    SessionGone,
    /// The upstream answered with an HTTP error status (and no JSON-RPC error to relay).
    Refused(String),
    /// Anything else, as a message safe to show the client.
    Upstream(String),
}

impl Failure {
    fn into_rpc(self) -> RpcError {
        match self {
            Failure::SessionGone => RpcError::new(code::INTERNAL_ERROR, "the upstream lost its session"),
            Failure::Refused(m) | Failure::Upstream(m) => RpcError::new(code::INTERNAL_ERROR, m),
        }
    }
}

/// The result of an upstream response, or its error relayed as it is.
/// A request id for an upstream: `marina-<kind>-<process nonce>-<counter>`. Unique within an
/// upstream session even when the session moves to another node (each process has its own random
/// nonce), and far cheaper than a random UUID per request (no `getrandom` system call).
fn upstream_request_id(kind: &str) -> Value {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: LazyLock<u64> = LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Value::String(format!("marina-{kind}-{:016x}-{n}", *NONCE))
}

fn relayed_result(msg: &Value) -> Result<Value, RpcError> {
    match (msg.get("result"), msg.get("error")) {
        (Some(result), _) => Ok(result.clone()),
        (None, Some(e)) => Err(RpcError::new(
            e["code"].as_i64().unwrap_or(code::INTERNAL_ERROR),
            e["message"].as_str().unwrap_or("upstream error"),
        )
        .with_data(e.get("data").cloned().unwrap_or(Value::Null))),
        (None, None) => Err(RpcError::new(
            code::INTERNAL_ERROR,
            "the upstream sent a malformed answer",
        )),
    }
}

fn tool_error(message: String) -> Value {
    json!({"content": [{"type": "text", "text": message}], "isError": true})
}

/// Keep only icons clients may fetch safely (https or data URIs); spec: consumers must reject
/// other schemes (`javascript:`, `file:`, …), and Marina re-publishes what upstreams declare.
fn safe_icons(definition: &mut Value) {
    if let Some(icons) = definition.get_mut("icons").and_then(Value::as_array_mut) {
        icons.retain(|i| {
            i.get("src").and_then(Value::as_str).is_some_and(|s| {
                let s = s.trim_start().to_ascii_lowercase();
                s.starts_with("https://") || s.starts_with("data:")
            })
        });
    }
}

/// `name` matches `pattern`: equal, or starting with what precedes a final `*`.
fn matches(pattern: &str, name: &str) -> bool {
    pattern
        .strip_suffix('*')
        .map_or(pattern == name, |p| name.starts_with(p))
}

/// The messages an upstream sends on a stream Marina reads (a call's answer stream, the session's
/// GET stream). Its requests to the client are relayed concurrently — reading goes on, so
/// progress, logs and the upstream's own `notifications/cancelled` still flow while the client
/// thinks — and the upstream can cancel each of them (the client is then told, see the session's
/// pending-request guard). Notifications are relayed in order.
struct Relays<'a> {
    upstream: &'a McpUpstream,
    session: Option<&'a UpstreamSession>,
    ctx: &'a dyn CallContext,
    /// Each resolves to its request's key in `cancels` when done (answered or cancelled).
    running: futures_util::stream::FuturesUnordered<futures_util::future::LocalBoxFuture<'a, String>>,
    /// Cancellation of each relayed request, by the upstream's request id (its JSON text).
    cancels: std::collections::HashMap<String, tokio_util::sync::CancellationToken>,
}

impl<'a> Relays<'a> {
    fn new(
        upstream: &'a McpUpstream,
        session: Option<&'a UpstreamSession>,
        ctx: &'a dyn CallContext,
    ) -> Self {
        Self {
            upstream,
            session,
            ctx,
            running: Default::default(),
            cancels: Default::default(),
        }
    }

    /// Make progress on the running relays; pending forever when there are none (for `select!`).
    async fn drive(&mut self) {
        if self.running.is_empty() {
            std::future::pending::<()>().await;
        }
        if let Some(done) = self.running.next().await {
            self.cancels.remove(&done);
        }
    }

    async fn handle(&mut self, msg: Value) {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
        if method == "notifications/cancelled" {
            let key = msg.pointer("/params/requestId").map(Value::to_string);
            if let Some(token) = key.as_ref().and_then(|k| self.cancels.remove(k)) {
                token.cancel();
                // Let the cancelled relay end now, and its notice to the client go out, before
                // anything the upstream sends next (the call's result, typically).
                while let Some(done) = self.running.next().await {
                    if Some(&done) == key.as_ref() {
                        break;
                    }
                    self.cancels.remove(&done);
                }
                tokio::task::yield_now().await;
            }
            return;
        }
        let Some(id) = msg.get("id").filter(|_| !method.is_empty()).map(Value::to_string) else {
            return self.upstream.relay(self.session, self.ctx, msg).await;
        };
        let token = tokio_util::sync::CancellationToken::new();
        self.cancels.insert(id.clone(), token.clone());
        let (upstream, session, ctx) = (self.upstream, self.session, self.ctx);
        self.running.push(Box::pin(async move {
            tokio::select! {
                () = upstream.relay(session, ctx, msg) => {}
                () = token.cancelled() => {}
            }
            id
        }));
    }
}

/// Sends `notifications/cancelled` upstream if the call is dropped (cancelled by the client)
/// before its answer arrived.
struct CancelOnDrop<'a> {
    upstream: &'a McpUpstream,
    session: UpstreamSession,
    request_id: Value,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.upstream.notify_in_background(
            &self.session,
            "notifications/cancelled",
            json!({"requestId": self.request_id, "reason": "cancelled by the client"}),
        );
    }
}

impl McpUpstream {
    /// Send a notification to an upstream session without waiting for it (nothing answers a
    /// notification, and neither a dropped call nor a client's POST should wait on upstreams).
    fn notify_in_background(&self, session: &UpstreamSession, method: &str, params: Value) {
        let request = self.post_request(Some(session), &protocol::notification(method, params));
        let (transport, timeout) = (self.transport.clone(), self.timeout);
        actix_rt::spawn(async move {
            let _ = transport.send(request, timeout).await;
        });
    }

    /// Note what is seen of the upstream in `health`.
    pub fn with_health(mut self, health: std::sync::Arc<super::health::Health>) -> Self {
        self.health = health;
        self
    }

    /// Build from settings; every problem is a configuration error.
    pub fn new(s: &McpUpstreamSettings, shared: &super::Upstreams) -> Result<Self, String> {
        let name = &s.name;
        let ok_name = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !ok_name {
            return Err(format!(
                "mcp upstream {name:?}: names are 1-64 characters of A-Z a-z 0-9 _ -"
            ));
        }
        let prefix = s.prefix.clone().unwrap_or_else(|| name.clone());
        let ok_prefix = prefix.is_empty() || (prefix.len() <= 64 && valid_tool_name(&prefix));
        if !ok_prefix {
            return Err(format!(
                "mcp upstream {name}: the prefix must be 1-64 characters of A-Z a-z 0-9 _ - ."
            ));
        }
        let url = super::http_url(&format!("mcp upstream {name}"), &s.url)?;
        let protocol = modern::Protocol::parse(&s.protocol).ok_or_else(|| {
            format!(
                "mcp upstream {name}: protocol must be auto, {} or one of {}",
                modern::MODERN,
                protocol::SUPPORTED_VERSIONS.join(", ")
            )
        })?;
        let headers = super::credential_headers(
            &format!("mcp upstream {name}"),
            &s.headers,
            s.bearer_env.as_deref(),
            s.bearer_file.as_deref(),
        )?;
        let uri = url
            .as_str()
            .parse()
            .map_err(|_| format!("mcp upstream {name}: invalid url"))?;
        let mut post_headers = headers.clone();
        post_headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        post_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            name: name.clone(),
            prefix,
            url,
            uri,
            headers,
            post_headers,
            include: s.include.clone(),
            exclude: s.exclude.clone(),
            timeout: Duration::from_millis(s.timeout_ms),
            max_bytes: s.max_response_bytes,
            client: shared.client.clone(),
            transport: shared.transport.clone(),
            policy: shared.policy,
            breaker: Breaker::default(),
            health: Default::default(),
            starting: Default::default(),
            followers: Default::default(),
            protocol,
            era: Default::default(),
            marked: Default::default(),
            subscribed: Default::default(),
        })
    }

    fn wanted(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| matches(p, name)))
            && !self.exclude.iter().any(|p| matches(p, name))
    }

    /// The published name of upstream tool `name`: `<prefix>.<name>` (just `name` with an empty
    /// prefix); `None` when that is not a valid tool name (e.g. longer than 128 characters) —
    /// such a tool is not published rather than published under a name that breaks clients.
    fn publish(&self, name: &str) -> Option<String> {
        let published = if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        };
        valid_tool_name(&published).then_some(published)
    }

    /// The upstream name of published tool `published` (inverse of [`Self::publish`]).
    fn unpublish<'a>(&self, published: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(published)
        } else {
            published.strip_prefix(self.prefix.as_str())?.strip_prefix('.')
        }
    }

    /// A POST of `body` (in `session`, when given), ready for the transport.
    fn post_request(&self, session: Option<&UpstreamSession>, body: &Value) -> http::Request<Full<Bytes>> {
        let mut headers = self.post_headers.clone();
        if let Some(s) = session {
            if let Some(value) = s.id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()) {
                headers.insert("mcp-session-id", value);
            }
            if let Ok(value) = HeaderValue::from_str(&s.protocol_version) {
                headers.insert("mcp-protocol-version", value);
            }
            if s.protocol_version == modern::MODERN {
                let marked = self.marked.lock().unwrap_or_else(|p| p.into_inner());
                let schema = body
                    .pointer("/params/name")
                    .and_then(Value::as_str)
                    .filter(|_| body["method"] == "tools/call")
                    .and_then(|n| marked.get(n));
                for (name, value) in modern::routing_headers(body, schema) {
                    if let (Ok(name), Ok(value)) = (
                        http::HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        headers.append(name, value);
                    }
                }
            }
        }
        // Sent inside a CLIENT span (`request`), the request carries its context.
        marina_telemetry::traces::inject_headers(&mut headers);
        let mut req = http::Request::new(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        req
    }

    /// A failed exchange; counted when it starts a back-off.
    fn backing_off(&self) {
        if self.breaker.failed() {
            marina_telemetry::metrics().upstream_backoff(self.health.tenant(), &self.name);
        }
    }

    async fn post(
        &self,
        session: Option<&UpstreamSession>,
        body: &Value,
    ) -> Result<reqwest::Response, Failure> {
        self.post_within(session, body, self.timeout).await
    }

    async fn post_within(
        &self,
        session: Option<&UpstreamSession>,
        body: &Value,
        timeout: Duration,
    ) -> Result<reqwest::Response, Failure> {
        egress::check_url(&self.policy, &self.url).map_err(|e| Failure::Upstream(e.to_owned()))?;
        if let Some(rest) = self.breaker.rest_left() {
            return Err(Failure::Upstream(format!(
                "the upstream {} keeps failing; next attempt in {} s",
                self.name,
                rest.as_secs() + 1
            )));
        }
        let sent = self
            .transport
            .send(self.post_request(session, body), timeout)
            .await;
        let resp = sent.map_err(|e| {
            self.backing_off();
            let message = match e {
                transport::Failed::Timeout => format!(
                    "the upstream {} did not answer within {} ms",
                    self.name,
                    timeout.as_millis()
                ),
                transport::Failed::Unreachable(error) => {
                    tracing::info!(upstream = %self.name, %error, "mcp upstream unreachable");
                    format!("the upstream {} could not be reached", self.name)
                }
            };
            self.health.failed(&message);
            Failure::Upstream(message)
        })?;
        if resp.status().is_server_error() {
            self.backing_off();
            self.health.failed(&format!(
                "the upstream {} answered with HTTP {}",
                self.name,
                resp.status().as_u16()
            ));
        } else {
            self.breaker.succeeded();
            self.health.succeeded();
        }
        if resp.status() == reqwest::StatusCode::NOT_FOUND && session.is_some_and(|s| s.id.is_some()) {
            return Err(Failure::SessionGone);
        }
        Ok(resp)
    }

    /// Send request `method` with id `id` and read its answer — one JSON body or an SSE stream —
    /// handing every other message on the stream to `relay` (when given). Returns the response
    /// message and the `MCP-Session-Id` the upstream set, if any. Every request to an upstream
    /// goes through here, so here it is measured (`mcp_client_operation_duration_seconds`).
    async fn request(
        &self,
        session: Option<&UpstreamSession>,
        id: &Value,
        method: &str,
        params: Value,
        relay: Option<&dyn CallContext>,
    ) -> Result<(Value, Option<String>), Failure> {
        use marina_telemetry::{Outcome, traces};
        let started = std::time::Instant::now();
        // The CLIENT span of this request (when traces are on); the upstream sees it as the
        // parent of its own spans, through the headers (transport) and `params._meta` (SEP-414).
        let span = if traces::enabled() {
            let tool = params
                .get("name")
                .and_then(Value::as_str)
                .filter(|_| method == "tools/call")
                .map(|t| protocol::truncate(t, 128));
            let mut attributes = Vec::with_capacity(4);
            attributes.push(traces::KeyValue::new(
                "mcp.method.name",
                traces::method_value(method),
            ));
            if let Some(t) = tool {
                attributes.push(traces::KeyValue::new("gen_ai.tool.name", t.to_owned()));
            }
            attributes.push(traces::KeyValue::new("marina.upstream", self.name.clone()));
            attributes.push(traces::KeyValue::new(
                "marina.tenant",
                self.health.tenant().to_owned(),
            ));
            traces::client(traces::span_name(method, tool), attributes)
        } else {
            traces::Span::none()
        };
        let mut params = params;
        traces::inject_meta(&span, &mut params);
        let answer = span
            .clone()
            .within(self.send_request(session, id, method, params, relay))
            .await;
        // An answer that is no response (neither `result` nor `error`) is malformed.
        let outcome = match &answer {
            Ok((msg, _)) => Outcome::of_response(msg).unwrap_or(Outcome::Other),
            Err(_) => Outcome::Other,
        };
        if outcome.is_error() {
            span.record_error(outcome.label());
        }
        let waited = started.elapsed();
        marina_telemetry::metrics().client_operation(
            self.health.tenant(),
            &self.name,
            method,
            outcome,
            waited,
        );
        if let Some(ctx) = relay {
            ctx.upstream_waited(waited);
        }
        answer
    }

    async fn send_request(
        &self,
        session: Option<&UpstreamSession>,
        id: &Value,
        method: &str,
        params: Value,
        relay: Option<&dyn CallContext>,
    ) -> Result<(Value, Option<String>), Failure> {
        // Only calls (which relay) get the full timeout; everything else is a quick exchange.
        let timeout = if relay.is_some() {
            self.timeout
        } else {
            self.timeout.min(LIST_TIMEOUT)
        };
        let resp = self
            .post_within(session, &protocol::request(id, method, params), timeout)
            .await?;
        let status = resp.status();
        if !status.is_success() {
            // A JSON-RPC error for our request (a 2026-07-28 server answers errors with 4xx) is
            // relayed as it is; anything else is a failure.
            let in_session = session.is_some_and(|s| s.id.is_some());
            match self.error_body(resp, id).await {
                ErrorBody::Answer(msg) => return Ok((msg, None)),
                // Some servers answer an unknown session with 400 rather than 404.
                ErrorBody::NoSession if in_session && status == reqwest::StatusCode::BAD_REQUEST => {
                    return Err(Failure::SessionGone);
                }
                _ => {}
            }
            return Err(Failure::Refused(format!(
                "the upstream {} answered {method} with HTTP {}",
                self.name,
                status.as_u16()
            )));
        }
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let malformed = || Failure::Upstream(format!("the upstream {} sent a malformed answer", self.name));
        let is_answer =
            |m: &Value| m.get("id") == Some(id) && (m.get("result").is_some() || m.get("error").is_some());
        if !sse {
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| {
                    Failure::Upstream(format!("the upstream {} broke off its answer", self.name))
                })?;
                if body.len() + chunk.len() > self.max_bytes {
                    return Err(Failure::Upstream(format!(
                        "the upstream {} answered with too much data",
                        self.name
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let msg: Value = serde_json::from_slice(&body).map_err(|_| malformed())?;
            return if is_answer(&msg) {
                Ok((msg, sid))
            } else {
                Err(malformed())
            };
        }
        // An SSE answer. The upstream may close the stream before the answer (SEP-1699 polling,
        // or a broken connection): resume it with GET + Last-Event-ID, waiting its `retry` hint
        // (bounded), a few times.
        let mut resp = resp;
        let mut last_id: Option<String> = None;
        let mut retry = Duration::from_millis(500);
        let mut relays = relay.map(|ctx| Relays::new(self, session, ctx));
        for attempt in 0..=MAX_RESUMES {
            let mut events = resp.bytes_stream().eventsource();
            let mut broke = false;
            loop {
                let next = match relays.as_mut() {
                    Some(relays) => tokio::select! {
                        event = events.next() => Some(event),
                        () = relays.drive() => None,
                    },
                    None => Some(events.next().await),
                };
                let Some(next) = next else {
                    continue;
                };
                let Some(event) = next else {
                    break;
                };
                let Ok(event) = event else {
                    broke = true;
                    break;
                };
                if !event.id.is_empty() {
                    last_id = Some(event.id.clone());
                }
                if let Some(r) = event.retry {
                    retry = r.min(MAX_RETRY_WAIT);
                }
                if event.data.is_empty() {
                    continue; // priming event
                }
                if event.data.len() > self.max_bytes {
                    return Err(Failure::Upstream(format!(
                        "the upstream {} answered with too much data",
                        self.name
                    )));
                }
                let msg: Value = serde_json::from_str(&event.data).map_err(|_| malformed())?;
                if is_answer(&msg) {
                    return Ok((msg, sid));
                }
                if let Some(relays) = relays.as_mut() {
                    relays.handle(msg).await;
                }
            }
            let (Some(last), true) = (last_id.clone(), attempt < MAX_RESUMES) else {
                let how = if broke {
                    "broke off"
                } else {
                    "ended without an answer"
                };
                return Err(Failure::Upstream(format!(
                    "the upstream {}'s stream {how}",
                    self.name
                )));
            };
            // Relayed requests go on while we wait: the upstream may have closed its stream
            // precisely to wait for the client's answer to one of them.
            let wait = tokio::time::sleep(retry);
            tokio::pin!(wait);
            loop {
                match relays.as_mut() {
                    Some(relays) => tokio::select! {
                        () = &mut wait => break,
                        () = relays.drive() => {}
                    },
                    None => break wait.as_mut().await,
                }
            }
            resp = self.resume(session, &last).await?;
        }
        Err(Failure::Upstream(format!(
            "the upstream {}'s stream ended without an answer",
            self.name
        )))
    }

    /// What an error response's body says: a JSON-RPC error answering request `id`, or one
    /// answering no request that is about the session (the upstream does not know it).
    async fn error_body(&self, resp: reqwest::Response, id: &Value) -> ErrorBody {
        let json = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"));
        if !json || resp.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return ErrorBody::Other;
        }
        let Some(body) = resp.bytes().await.ok().filter(|b| b.len() <= self.max_bytes) else {
            return ErrorBody::Other;
        };
        let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
            return ErrorBody::Other;
        };
        let Some(error) = msg.get("error").filter(|e| e.is_object()) else {
            return ErrorBody::Other;
        };
        if msg.get("id") == Some(id) {
            return ErrorBody::Answer(msg);
        }
        let unanswered = msg.get("id").is_none_or(Value::is_null);
        let about_session = error["message"]
            .as_str()
            .is_some_and(|m| m.to_ascii_lowercase().contains("session"));
        if unanswered && about_session {
            ErrorBody::NoSession
        } else {
            ErrorBody::Other
        }
    }

    /// Reopen an interrupted answer stream: GET + `Last-Event-ID` on the upstream session.
    async fn resume(
        &self,
        session: Option<&UpstreamSession>,
        last_event_id: &str,
    ) -> Result<reqwest::Response, Failure> {
        let mut req = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream")
            .header("last-event-id", last_event_id)
            .timeout(self.timeout);
        if let Some(s) = session {
            if let Some(id) = &s.id {
                req = req.header("mcp-session-id", id);
            }
            req = req.header("mcp-protocol-version", &s.protocol_version);
        }
        let resp = req.send().await.map_err(|_| {
            Failure::Upstream(format!(
                "the upstream {} could not be reached to resume its answer",
                self.name
            ))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            s => Err(Failure::Upstream(format!(
                "the upstream {} refused to resume its answer (HTTP {})",
                self.name,
                s.as_u16()
            ))),
        }
    }

    /// Relay one message the upstream sent while answering a call.
    async fn relay(&self, session: Option<&UpstreamSession>, ctx: &dyn CallContext, msg: Value) {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or_default();
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
        match msg.get("id") {
            None if method == "notifications/progress" => {
                let p = &params;
                ctx.progress(
                    p["progress"].as_f64().unwrap_or(0.0),
                    p["total"].as_f64(),
                    p["message"].as_str(),
                )
                .await;
            }
            None if method == "notifications/message" => {
                let level = params["level"].as_str().unwrap_or("info");
                let logger = params["logger"].as_str().unwrap_or(&self.name);
                ctx.log(level, logger, params["data"].clone()).await;
            }
            // Other notifications (list changes, resource updates) are the GET stream's business.
            None => {}
            Some(id) => {
                let answer = match RELAYED_REQUESTS.iter().find(|(m, _)| *m == method) {
                    Some((_, capability))
                        if ctx.client_supports(capability) || ctx.upstream_sessions_shared() =>
                    {
                        ctx.request_client(method, params).await
                    }
                    _ if method == "ping" => Ok(json!({})),
                    _ => Err(RpcError::method_not_found(method)),
                };
                let reply = match answer {
                    Ok(result) => result_response(id, result),
                    Err(e) => e.to_response(Some(id)),
                };
                if let Err(f) = self.post(session, &reply).await.map(drop) {
                    let m = f.into_rpc().message;
                    tracing::info!(upstream = %self.name, error = %m, "could not answer an upstream request");
                }
            }
        }
    }

    /// This session's upstream session, initialized now if there is none yet.
    async fn session(&self, ctx: &dyn SessionContext) -> Result<UpstreamSession, Failure> {
        if let Some(s) = ctx.upstream_session(&self.name) {
            return Ok(s);
        }
        let key = ctx.session_key();
        let lock = self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _one_at_a_time = lock.lock().await;
            match ctx.upstream_session(&self.name) {
                Some(s) => Ok(s),
                None => self.initialize(ctx).await,
            }
        };
        let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        if std::sync::Arc::strong_count(&lock) <= 2 {
            starting.remove(&key);
        }
        result
    }

    async fn initialize(&self, ctx: &dyn SessionContext) -> Result<UpstreamSession, Failure> {
        // Declare upstream only what the client declared and Marina relays — or, for a session
        // that requests of several clients share, all of it (each question is checked against
        // its own request's capabilities; form-mode elicitation only, as `{}` means).
        let client = if ctx.upstream_sessions_shared() {
            json!({"sampling": {}, "elicitation": {}, "roots": {}})
        } else {
            ctx.client_capabilities()
        };
        let mut capabilities = json!({});
        for (_, capability) in RELAYED_REQUESTS {
            if let Some(v) = client.get(capability).filter(|v| v.is_object()) {
                capabilities[capability] = v.clone();
            }
        }
        let offered = match self.protocol {
            modern::Protocol::Sessionful(v) => v,
            _ => protocol::LATEST_VERSION,
        };
        let params = json!({
            "protocolVersion": offered,
            "capabilities": capabilities,
            "clientInfo": {"name": "marina", "version": env!("CARGO_PKG_VERSION")},
        });
        let id = upstream_request_id("init");
        let (msg, sid) = self
            .request(None, &id, "initialize", params, None)
            .await
            .inspect_err(|f| {
                // Refused: perhaps it speaks only the stateless era now; probe again next time.
                if matches!(f, Failure::Refused(_)) {
                    self.forget_era();
                }
            })?;
        let version = msg
            .pointer("/result/protocolVersion")
            .and_then(Value::as_str)
            .filter(|v| protocol::is_supported_version(v))
            .ok_or_else(|| {
                Failure::Upstream(format!(
                    "the upstream {} could not agree on a protocol version",
                    self.name
                ))
            })?;
        let session = UpstreamSession {
            id: sid,
            protocol_version: version.to_owned(),
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let resp = self.post(Some(&session), &initialized).await?;
        if !resp.status().is_success() {
            return Err(Failure::Upstream(format!(
                "the upstream {} refused to start a session",
                self.name
            )));
        }
        // A level the client set before this upstream session existed applies to it too.
        if let Some(level) = ctx.log_level()
            && msg.pointer("/result/capabilities/logging").is_some()
        {
            self.send_log_level(&session, &level).await;
        }
        ctx.set_upstream_session(&self.name, Some(session.clone()))
            .await
            .map_err(|e| Failure::Upstream(e.message))?;
        self.await_get_stream(&ctx.session_key(), &session).await;
        Ok(session)
    }

    /// Wait (at most [`GET_OPEN_WAIT`]) until this session's follower has opened the new upstream
    /// session's GET stream, or failed to, so that what the upstream sends there in answer to our
    /// next request is not lost (see [`FollowerLink`]). No wait without a follower.
    async fn await_get_stream(&self, key: &str, session: &UpstreamSession) {
        let link = self
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned();
        let Some(FollowerLink { wake, mut tried }) = link else {
            return;
        };
        wake.notify_one();
        let opened = tried.wait_for(|t| t.as_ref() == Some(&session.id));
        if tokio::time::timeout(GET_OPEN_WAIT, opened).await.is_err() {
            tracing::info!(upstream = %self.name, "the upstream session's GET stream is not open yet");
        }
    }

    async fn list_all(
        &self,
        session: &UpstreamSession,
        ctx: &dyn SessionContext,
    ) -> Result<Vec<ToolDef>, Failure> {
        let stateless = session.protocol_version == modern::MODERN;
        let mut tools = Vec::new();
        let mut marked = std::collections::HashMap::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let mut params = cursor.take().map_or_else(|| json!({}), |c| json!({"cursor": c}));
            if stateless {
                modern::envelope(&mut params, ctx);
            }
            let id = upstream_request_id("list");
            let (msg, _) = self
                .request(Some(session), &id, "tools/list", params, None)
                .await?;
            let result = msg.get("result").ok_or_else(|| {
                Failure::Upstream(format!("the upstream {} refused to list its tools", self.name))
            })?;
            for tool in result["tools"].as_array().into_iter().flatten() {
                let Some(name) = tool
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| self.wanted(n))
                else {
                    continue;
                };
                let Some(published) = self.publish(name) else {
                    tracing::info!(upstream = %self.name, tool = name, "tool not published: its name would be invalid");
                    continue;
                };
                if stateless && crate::modern::routing::has_marks(&tool["inputSchema"]) {
                    marked.insert(name.to_owned(), tool["inputSchema"].clone());
                }
                let mut definition = tool.clone();
                definition["name"] = json!(published);
                safe_icons(&mut definition);
                tools.push(ToolDef {
                    name: published,
                    definition,
                });
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        if stateless {
            *self.marked.lock().unwrap_or_else(|p| p.into_inner()) = marked;
        }
        Ok(tools)
    }

    /// Tell the upstream session the client's log level (best effort: logs are filtered again
    /// downstream anyway).
    async fn send_log_level(&self, session: &UpstreamSession, level: &str) {
        let id = upstream_request_id("level");
        if let Err(Failure::Upstream(m)) = self
            .request(
                Some(session),
                &id,
                "logging/setLevel",
                json!({"level": level}),
                None,
            )
            .await
        {
            tracing::debug!(upstream = %self.name, error = %m, "logging/setLevel not passed on");
        }
    }

    /// One request outside a call (lists, reads, prompts, completion): with this session's
    /// upstream session, once more with a new one if the upstream forgot it. Upstream JSON-RPC
    /// errors come back as they are; transport failures as -32603 with a short message.
    async fn exchange(
        &self,
        ctx: &dyn SessionContext,
        method: &str,
        mut params: Value,
    ) -> Result<Value, RpcError> {
        without_envelope(&mut params);
        if self.era().await.map_err(Failure::into_rpc)? == modern::Era::Modern {
            return self.exchange_modern(ctx, method, params).await;
        }
        for _ in 0..2 {
            let session = self.session(ctx).await.map_err(Failure::into_rpc)?;
            let id = upstream_request_id("req");
            match self
                .request(Some(&session), &id, method, params.clone(), None)
                .await
            {
                Ok((msg, _)) => return relayed_result(&msg),
                Err(Failure::SessionGone) => self.forget(ctx).await?,
                Err(f) => return Err(f.into_rpc()),
            }
        }
        Err(Failure::SessionGone.into_rpc())
    }

    /// One connection of the upstream's GET stream: relay what arrives until it ends.
    async fn follow_once(
        &self,
        ctx: &dyn CallContext,
        last_event_id: &mut Option<String>,
        followed: &mut Option<Option<String>>,
        tried: &tokio::sync::watch::Sender<Option<Option<String>>>,
    ) -> Follow {
        // Follow the session the session's requests use; never start one just to follow it.
        let Some(session) = ctx.upstream_session(&self.name) else {
            return Follow::NotYet;
        };
        if followed.as_ref() != Some(&session.id) {
            // A new upstream session: event ids of the old one mean nothing to it.
            *followed = Some(session.id.clone());
            *last_event_id = None;
        }
        let mut req = self
            .client
            .get(self.url.clone())
            .headers(self.headers.clone())
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = &session.id {
            req = req.header("mcp-session-id", id);
        }
        req = req.header("mcp-protocol-version", &session.protocol_version);
        if let Some(last) = last_event_id.as_deref() {
            req = req.header("last-event-id", last);
        }
        if egress::check_url(&self.policy, &self.url).is_err() {
            return Follow::Unsupported;
        }
        let sent = req.send().await;
        // The upstream has answered (with a 2xx, its GET stream is open): a new upstream session
        // waiting for this may now be used.
        tried.send_replace(Some(session.id.clone()));
        let Ok(resp) = sent else {
            return Follow::Failed;
        };
        match resp.status() {
            reqwest::StatusCode::METHOD_NOT_ALLOWED => return Follow::Unsupported,
            reqwest::StatusCode::NOT_FOUND => {
                let _ = self.forget(ctx).await;
                return Follow::Failed;
            }
            s if !s.is_success() => return Follow::Failed,
            _ => {}
        }
        ctx.stream_opened();
        let mut events = resp.bytes_stream().eventsource();
        let mut relays = Relays::new(self, Some(&session), ctx);
        loop {
            let event = tokio::select! {
                event = events.next() => event,
                () = relays.drive() => continue,
            };
            let Some(Ok(event)) = event else {
                break;
            };
            if !event.id.is_empty() {
                *last_event_id = Some(event.id.clone());
            }
            if event.data.is_empty() || event.data.len() > self.max_bytes {
                continue;
            }
            let Ok(msg) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let method = msg
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            match method.as_str() {
                "notifications/tools/list_changed" => {
                    ctx.tools_changed();
                    ctx.notify(&method, json!({})).await;
                }
                "notifications/resources/updated"
                | "notifications/resources/list_changed"
                | "notifications/prompts/list_changed" => {
                    ctx.notify(&method, msg.get("params").cloned().unwrap_or_else(|| json!({})))
                        .await;
                }
                _ => relays.handle(msg).await,
            }
        }
        Follow::Ended
    }

    /// Forget this session's upstream session (the upstream dropped it).
    async fn forget(&self, ctx: &dyn SessionContext) -> Result<(), RpcError> {
        ctx.set_upstream_session(&self.name, None).await
    }
}

#[async_trait(?Send)]
impl ToolProvider for McpUpstream {
    fn name(&self) -> &str {
        &self.name
    }

    fn tools(&self) -> Vec<ToolDef> {
        Vec::new()
    }

    async fn list_tools(&self, ctx: &dyn SessionContext) -> Result<Vec<ToolDef>, RpcError> {
        let mut result = Err(Failure::SessionGone);
        for _ in 0..2 {
            let session = match self.era().await.map_err(Failure::into_rpc)? {
                modern::Era::Modern => modern::stateless(),
                modern::Era::Sessionful => self.session(ctx).await.map_err(Failure::into_rpc)?,
            };
            result = self.list_all(&session, ctx).await;
            if !matches!(result, Err(Failure::SessionGone)) {
                break;
            }
            self.forget(ctx).await?;
        }
        if let Ok(tools) = &result {
            self.health.counted("tools", tools.len());
        }
        result.map_err(Failure::into_rpc)
    }

    fn serves_features(&self) -> bool {
        true
    }

    fn keeps_upstream_sessions(&self) -> bool {
        self.known_era() != Some(modern::Era::Modern)
    }

    async fn list_feature(&self, method: &str, ctx: &dyn SessionContext) -> Result<Vec<Value>, RpcError> {
        let key = match method {
            "resources/list" => "resources",
            "resources/templates/list" => "resourceTemplates",
            "prompts/list" => "prompts",
            _ => return Err(RpcError::method_not_found(method)),
        };
        let mut items = Vec::new();
        let mut cursor: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let params = cursor.take().map_or_else(|| json!({}), |c| json!({"cursor": c}));
            let result = self.exchange(ctx, method, params).await?;
            for item in result[key].as_array().into_iter().flatten() {
                let mut item = item.clone();
                if key == "prompts" {
                    let Some(published) = item["name"].as_str().and_then(|n| self.publish(n)) else {
                        continue;
                    };
                    item["name"] = json!(published);
                }
                safe_icons(&mut item);
                items.push(item);
            }
            match result.get("nextCursor") {
                Some(c) if !c.is_null() => cursor = Some(c.clone()),
                _ => break,
            }
        }
        match key {
            "resources" => self.health.counted("resources", items.len()),
            "prompts" => self.health.counted("prompts", items.len()),
            _ => {}
        }
        Ok(items)
    }

    async fn request_feature(
        &self,
        method: &str,
        mut params: Value,
        ctx: &dyn SessionContext,
    ) -> Result<Value, RpcError> {
        if matches!(method, "resources/subscribe" | "resources/unsubscribe")
            && self.era().await.map_err(Failure::into_rpc)? == modern::Era::Modern
        {
            return Ok(self.subscribe(ctx, method, &params));
        }
        // Prompt names are published under the prefix: map them back.
        let prompt = match method {
            "prompts/get" => params.get_mut("name"),
            "completion/complete" if params["ref"]["type"] == "ref/prompt" => params["ref"].get_mut("name"),
            _ => None,
        };
        if let Some(name) = prompt {
            let published = name.as_str().unwrap_or_default().to_owned();
            let upstream = self.unpublish(&published).ok_or_else(|| {
                RpcError::invalid_params(format!("unknown prompt: {}", protocol::truncate(&published, 128)))
            })?;
            *name = json!(upstream);
        }
        self.exchange(ctx, method, params).await
    }

    async fn follow(&self, ctx: &dyn CallContext) {
        // Held by the node that holds the session (this actor), reconnecting with back-off; an
        // upstream without a GET stream (405) is not asked again.
        // Reconnections carry the last event id, so the upstream replays what it sent meanwhile.
        let mut delay = Duration::from_millis(500);
        let mut last_event_id: Option<String> = None;
        let mut session_id: Option<Option<String>> = None;
        // Let new upstream sessions of this session wake us and wait for their GET stream.
        let key = ctx.session_key();
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let (tried, rx) = tokio::sync::watch::channel(None);
        self.followers.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.clone(),
            FollowerLink {
                wake: wake.clone(),
                tried: rx,
            },
        );
        let _unlink = Unlink {
            upstream: self,
            key,
            wake: wake.clone(),
        };
        loop {
            // A 2026-07-28 upstream has no session to follow: its listener instead.
            if self.known_era() == Some(modern::Era::Modern) {
                return self.listen(ctx, &wake).await;
            }
            let outcome = self
                .follow_once(ctx, &mut last_event_id, &mut session_id, &tried)
                .await;
            let pause = match outcome {
                Follow::Unsupported => return,
                // Look often: an upstream may send requests right after its session starts.
                Follow::NotYet => FOLLOW_POLL,
                Follow::Ended => {
                    delay = Duration::from_millis(500);
                    delay
                }
                Follow::Failed => {
                    delay = (delay * 2).min(MAX_BACKOFF);
                    delay
                }
            };
            // A new upstream session is followed at once, whatever the pause.
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = wake.notified() => {}
            }
        }
    }

    async fn roots_changed(&self, ctx: &dyn SessionContext) {
        // Only an upstream session that exists can have asked for the roots; a new one asks
        // afresh.
        if let Some(session) = ctx.upstream_session(&self.name) {
            self.notify_in_background(&session, "notifications/roots/list_changed", json!({}));
        }
    }

    async fn set_log_level(&self, level: &str, ctx: &dyn SessionContext) {
        // Only sessions already started: a new one gets the level when it starts.
        if let Some(session) = ctx.upstream_session(&self.name) {
            self.send_log_level(&session, level).await;
        }
    }

    async fn call(&self, name: &str, arguments: Value, ctx: &dyn CallContext) -> Result<Value, RpcError> {
        let Some(upstream_name) = self.unpublish(name) else {
            return Err(RpcError::invalid_params(format!(
                "unknown tool: {}",
                protocol::truncate(name, 128)
            )));
        };
        match self.era().await {
            Ok(modern::Era::Modern) => return self.call_modern(upstream_name, arguments, ctx).await,
            Ok(modern::Era::Sessionful) => {}
            Err(f) => return Ok(tool_error(f.into_rpc().message)),
        }
        let mut params = json!({"name": upstream_name, "arguments": arguments});
        if let Some(token) = ctx.progress_token() {
            // The upstream session belongs to this downstream session alone, so the client's
            // token is unique there too and needs no remapping.
            params["_meta"] = json!({"progressToken": token});
        }
        for _ in 0..2 {
            // Starting the upstream session (its initialize, and its GET stream) is waiting on
            // the upstream too.
            let started = std::time::Instant::now();
            let session = self.session(ctx).await;
            ctx.upstream_waited(started.elapsed());
            let session = match session {
                Ok(s) => s,
                Err(f) => return Ok(tool_error(f.into_rpc().message)),
            };
            let id = upstream_request_id("call");
            let mut guard = CancelOnDrop {
                upstream: self,
                session: session.clone(),
                request_id: id.clone(),
                armed: true,
            };
            let outcome = self
                .request(Some(&session), &id, "tools/call", params.clone(), Some(ctx))
                .await;
            guard.armed = false;
            match outcome {
                Ok((mut msg, _)) => {
                    // Moved, not cloned: the result is the bulk of the message.
                    if let Some(result) = msg.get_mut("result") {
                        return Ok(result.take());
                    }
                    return match msg.get("error") {
                        Some(e) => Err(RpcError::new(
                            e["code"].as_i64().unwrap_or(code::INTERNAL_ERROR),
                            e["message"].as_str().unwrap_or("upstream error"),
                        )
                        .with_data(e.get("data").cloned().unwrap_or(Value::Null))),
                        None => Ok(tool_error(format!(
                            "the upstream {} sent a malformed answer",
                            self.name
                        ))),
                    };
                }
                Err(Failure::SessionGone) => self.forget(ctx).await?,
                Err(f) => return Ok(tool_error(f.into_rpc().message)),
            }
        }
        Ok(tool_error(format!(
            "the upstream {} keeps losing its session",
            self.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(prefix: Option<&str>, include: &[&str], exclude: &[&str]) -> McpUpstream {
        let s: McpUpstreamSettings = serde_json::from_value(json!({
            "name": "files", "url": "http://127.0.0.1:1/mcp", "prefix": prefix,
            "include": include, "exclude": exclude,
        }))
        .unwrap();
        let policy = Policy::new(
            &serde_json::from_value(json!({"allow_loopback": true, "allow_private": false})).unwrap(),
        );
        let shared = super::super::Upstreams {
            policy,
            client: reqwest::Client::new(),
            transport: Transport::new(policy).unwrap(),
            health: Default::default(),
        };
        McpUpstream::new(&s, &shared).unwrap()
    }

    #[test]
    fn unsafe_icons_are_dropped() {
        let mut d = json!({"icons": [
            {"src": "https://a.example/i.png"}, {"src": "javascript:alert(1)"},
            {"src": "data:image/png;base64,AA"}, {"src": "file:///etc/passwd"}, {"src": "HTTP://plain.example/i.png"}
        ]});
        safe_icons(&mut d);
        let srcs: Vec<&str> = d["icons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["src"].as_str().unwrap())
            .collect();
        assert_eq!(srcs, ["https://a.example/i.png", "data:image/png;base64,AA"]);
    }

    #[test]
    fn a_failing_upstream_is_given_a_rest() {
        let b = Breaker::default();
        b.failed();
        b.failed();
        assert!(b.rest_left().is_none(), "not before {TRIP_AFTER} failures");
        b.failed();
        assert!(b.rest_left().is_some_and(|r| r <= Duration::from_secs(1)));
        b.succeeded();
        assert!(b.rest_left().is_none());
    }

    #[test]
    fn names_are_prefixed_filtered_and_reversible() {
        let u = upstream(None, &[], &["danger*"]);
        assert_eq!(u.publish("read").as_deref(), Some("files.read"));
        assert_eq!(u.unpublish("files.read"), Some("read"));
        assert_eq!(u.unpublish("other.read"), None);
        assert_eq!(u.unpublish("filesread"), None);
        assert!(u.wanted("read") && !u.wanted("danger_delete"));
        assert_eq!(u.publish(&"x".repeat(130)), None);
        let bare = upstream(Some(""), &["get_*", "list"], &[]);
        assert_eq!(bare.publish("get_a").as_deref(), Some("get_a"));
        assert!(bare.wanted("get_a") && bare.wanted("list") && !bare.wanted("put"));
    }
}
