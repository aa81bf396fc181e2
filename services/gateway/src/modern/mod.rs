//! MCP 2026-07-28, the stateless era, beside the sessionful one on the same endpoint (on by default:
//! `server.stateless_era`). Which era serves a POST is decided per request:
//!
//! | the request | era |
//! |---|---|
//! | `server/discover` | stateless |
//! | carries `Mcp-Session-Id` | sessionful (its session) |
//! | `initialize` | sessionful (a new session) — unless it declares a stateless revision (404) |
//! | `params._meta["io.modelcontextprotocol/protocolVersion"]` names a stateless revision | stateless |
//! | anything else | sessionful (without a session: 400) |
//!
//! A stateless request goes through the same steps as any other — tenant, origin, credentials,
//! limits — then: its `_meta` (`meta.rs`), its routing headers (`routing.rs`), and the method,
//! with a request context (`context.rs`) where the sessionful era has the session actor. The same
//! policy decides what it lists and may call.

pub mod cache;
mod context;
mod listen;
pub mod meta;
pub mod mrtr;
pub mod park;
pub mod routing;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use base64::Engine as _;
use bytes::Bytes;
use marina_core::access::{Access, action};
use marina_core::caps::{CALL_LEASE, principal_key};
use marina_core::protocol::{self, RpcError, result_response};
use marina_core::tenant::Tenant;
use marina_core::tools::ToolIndex;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::context::RequestCtx;
use crate::authn::Caller;
use crate::reply::{self, Refusal};
use crate::state::AppState;

/// How long clients may keep a list or a discovery result (their `ttlMs`): short, since the
/// control plane changes tenants live; notifications tell sessionful clients sooner.
const LIST_TTL_MS: u64 = 60_000;
/// Notifications queued for a request's stream; more are dropped (a slow reader must not make
/// the call's memory grow).
const STREAM_QUEUE: usize = 256;

/// Is this POST (its JSON-RPC message, its `MCP-Protocol-Version` header; `session`: it names
/// one) one of the stateless era?
pub fn wants(state: &AppState, message: &Value, header_version: Option<&str>, session: bool) -> bool {
    if !state.stateless_era || session {
        return false;
    }
    // A stateless revision — or one Marina does not know, which only that era can refuse
    // properly (-32022); a sessionful revision without a session is the sessionful era's 400.
    let stateless = |v: &str| meta::is_modern(v) || !protocol::is_supported_version(v);
    let declared = meta::declared_version(message).or(header_version);
    match message.get("method").and_then(Value::as_str) {
        Some("server/discover") => true,
        // The handshake of the sessionful era — unless the request says it speaks a stateless
        // revision, which has no `initialize` (404).
        Some("initialize") => declared.is_some_and(meta::is_modern),
        Some(_) => declared.is_some_and(stateless),
        None => false,
    }
}

/// Serve a stateless request of `caller` to tenant `t` (already admitted and charged).
pub async fn serve(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    message: Value,
    wait: marina_telemetry::UpstreamWait,
) -> Result<HttpResponse, Refusal> {
    let Some(id) = message.get("id").cloned() else {
        // A notification: nothing to answer (cancellation is the closing of a request's stream).
        return Ok(HttpResponse::Accepted().finish());
    };
    let method = message["method"].as_str().unwrap_or_default().to_owned();
    let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
    let answer = |e: RpcError| reply::json(meta::http_status(&e), &e.to_response(Some(&id)));
    // The request's own description, then its routing headers against it, then its version —
    // each refusal a 400.
    let bad_request = |e: RpcError| reply::json(StatusCode::BAD_REQUEST, &e.to_response(Some(&id)));
    let meta = match meta::parse(&message) {
        Ok(m) => m,
        Err(e) => return Ok(bad_request(e)),
    };
    if let Err(e) =
        routing::check(req, &method, &params, &meta.version).and_then(|()| meta::check_version(&meta))
    {
        return Ok(bad_request(e));
    }
    let ctx = match RequestCtx::load(
        t,
        &principal_key(caller.owner().as_ref()),
        meta.clone(),
        state.node.store.clone(),
        state.upstream_sessions.clone(),
        state.node.sessions().idle_ttl(),
        method != "server/discover" && t.providers.iter().any(|p| p.keeps_upstream_sessions()),
    )
    .await
    {
        Ok(c) => c.timed(wait),
        Err(e) => return Ok(answer(e)),
    };
    let result = match method.as_str() {
        "server/discover" => Ok(discover(t)),
        "tools/list" => list_tools(state, t, caller, &ctx, &params).await,
        "tools/call" => return call_tool(state, req, t, caller, ctx, id, params).await,
        "subscriptions/listen" => {
            let until = caller.principal.as_ref().and_then(|p| p.expires_at);
            return Ok(
                listen::listen(state, t, id.clone(), &params, until, caller.access()).unwrap_or_else(answer),
            );
        }
        "resources/list"
        | "resources/templates/list"
        | "resources/read"
        | "prompts/list"
        | "prompts/get"
        | "completion/complete" => feature(state, t, caller, &ctx, &method, params).await,
        // The sessionful era's methods, gone in 2026-07-28, and what is not served statelessly
        // yet: 404 with -32601, as the transport asks for unknown methods.
        _ => Err(RpcError::method_not_found(&method)),
    };
    Ok(match result {
        Ok(r) => reply::json(StatusCode::OK, &result_response(&id, complete(r))),
        Err(e) => answer(e),
    })
}

/// A final result: `resultType: complete` and the server's identity.
fn complete(mut result: Value) -> Value {
    if result.get("resultType").is_none() {
        result["resultType"] = json!("complete");
    }
    if !result.get("_meta").is_some_and(Value::is_object) {
        result["_meta"] = json!({});
    }
    result["_meta"][meta::SERVER_INFO] = server_info();
    result
}

fn server_info() -> Value {
    json!({"name": "marina", "title": "Marina", "version": env!("CARGO_PKG_VERSION")})
}

/// `server/discover`: the versions, capabilities and identity of the tenant's endpoint. The
/// same for every caller of the tenant: cacheable publicly.
fn discover(t: &Tenant) -> Value {
    let mut capabilities = json!({"tools": {"listChanged": true}});
    if t.providers.iter().any(|p| p.serves_features()) {
        capabilities["resources"] = json!({"listChanged": true});
        capabilities["prompts"] = json!({"listChanged": true});
        capabilities["completions"] = json!({});
    }
    json!({
        "supportedVersions": meta::supported_versions(),
        "capabilities": capabilities,
        "instructions": format!("Tools of tenant {}, hosted by Marina.", t.id),
        "ttlMs": LIST_TTL_MS,
        "cacheScope": "public",
    })
}

/// Every provider's tools as this request's context sees them. A provider that cannot list (an
/// upstream down) contributes nothing.
/// The caller's tool index: this node's recent one (`cache.rs`), or listed from every source.
async fn tool_index(state: &AppState, t: &Arc<Tenant>, ctx: &RequestCtx) -> Arc<ToolIndex> {
    use marina_core::tools::SessionContext as _;
    let key = ctx.session_key();
    if let Some(index) = state.indexes.get(t, &key) {
        return index;
    }
    let lists = futures_util::future::join_all(t.providers.iter().map(|p| p.list_tools(ctx))).await;
    let mut complete = true;
    let lists = lists
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|e| {
                complete = false;
                tracing::warn!(tenant = %t.id, error = %e.message, "a tool source could not list its tools");
                Vec::new()
            })
        })
        .collect();
    let index = Arc::new(ToolIndex::new(lists));
    if complete {
        state.indexes.put(t, &key, index.clone());
    }
    index
}

/// Whether a list depends on who asks: it does when a policy filters it.
fn cache_scope(t: &Tenant) -> &'static str {
    if t.authorizer.is_some() {
        "private"
    } else {
        "public"
    }
}

/// A page of `items` (the caller's filtered list, field `key`) from `cursor`: an offset, opaque
/// to clients, that names its list.
fn page(key: &str, items: &[Value], cursor: Option<&Value>, size: usize) -> Result<Value, RpcError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let from = match cursor.filter(|c| !c.is_null()) {
        None => 0,
        Some(c) => c
            .as_str()
            .and_then(|c| b64.decode(c).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix(&format!("{key}:")).and_then(|n| n.parse().ok()))
            .filter(|n: &usize| *n <= items.len())
            .ok_or_else(|| RpcError::invalid_params("invalid cursor"))?,
    };
    let size = size.max(1);
    let end = (from + size).min(items.len());
    let mut result = json!({ key: items[from..end] });
    if end < items.len() {
        result["nextCursor"] = json!(b64.encode(format!("{key}:{end}")));
    }
    Ok(result)
}

/// May `access` do `act` on `object` (a request for one item)? A denial is an audit event, as
/// in a session.
fn authorize(t: &Tenant, access: &Access, request_id: &str, object: &str, act: &str) -> bool {
    let ok = t.permits(access, object, act);
    if t.authorizer.is_some() {
        let action = match act {
            "call" => "call",
            "read" => "read",
            "get" => "get",
            _ => "list",
        };
        marina_telemetry::metrics().authz_decision(&t.id, ok, action);
    }
    if !ok {
        tracing::info!(
            target: "marina::audit",
            event = "access_denied",
            reason = "policy",
            tenant = %t.id,
            subject = %access.subject,
            object,
            action = act,
            request_id,
            "access denied"
        );
    }
    ok
}

/// `tools/list`: the tools the caller may call, a page at a time.
async fn list_tools(
    state: &AppState,
    t: &Arc<Tenant>,
    caller: &Caller,
    ctx: &RequestCtx,
    params: &Value,
) -> Result<Value, RpcError> {
    let access = caller.access();
    let index = tool_index(state, t, ctx).await;
    if t.authorizer.is_some() {
        // One decision per list, not per item filtered.
        marina_telemetry::metrics().authz_decision(&t.id, true, "list");
    }
    let tools: Vec<Value> = index
        .tools()
        .iter()
        .filter(|d| t.permits(&access, &format!("tool:{}", d.name), action::CALL))
        .map(|d| d.definition.clone())
        .collect();
    let mut result = page(
        "tools",
        &tools,
        params.get("cursor"),
        state.node.sessions().page_size,
    )?;
    result["ttlMs"] = json!(LIST_TTL_MS);
    result["cacheScope"] = json!(cache_scope(t));
    Ok(result)
}

/// Resources, templates, prompts and completion of the tenant's upstream MCP servers, merged
/// and routed as for a session (`marina_actors::Features`), filtered and decided by the same
/// policy. Lists and reads carry cache hints.
async fn feature(
    state: &AppState,
    t: &Tenant,
    caller: &Caller,
    ctx: &RequestCtx,
    method: &str,
    params: Value,
) -> Result<Value, RpcError> {
    let access = caller.access();
    let authorize = |object: &str, act: &str| authorize(t, &access, &caller.request_id, object, act);
    let size = state.node.sessions().page_size;
    let cut = |key: &str, items: &[Value], cursor: Option<&Value>| page(key, items, cursor, size);
    let who = marina_actors::FeatureCaller {
        tenant: t,
        access: &access,
        authorize: &authorize,
        page: &cut,
        label: &caller.request_id,
    };
    // The retry of an upstream's multi round-trip request (prompts/get, resources/read, …): our
    // sealed state, bound to this very request, gives back the upstream's.
    let expected = mrtr::RequestState::expected(
        &t.id,
        marina_core::tools::SessionContext::session_key(ctx),
        method,
        ["name", "uri"]
            .iter()
            .find_map(|k| params.get(*k).and_then(Value::as_str))
            .unwrap_or_default(),
        mrtr::digest(&without_round(&params)),
    );
    let mut params = params;
    if let Some(sealed) = params.get("requestState") {
        let st = match sealed.as_str() {
            Some(sealed) => mrtr::open_for(&state.sealer, sealed, &expected)?,
            None => return Err(mrtr::refused("not a string")),
        };
        if !st.u {
            return Err(mrtr::refused("issued for another request"));
        }
        let upstream_state = st.w.clone();
        mrtr::claim(state.node.store.as_ref(), st).await?;
        match upstream_state {
            Some(w) => params["requestState"] = json!(w),
            None => {
                params.as_object_mut().map(|p| p.remove("requestState"));
            }
        }
    }
    let mut result = marina_actors::Features::default()
        .request(&who, ctx, method, params)
        .await?;
    if result["resultType"] == "input_required" {
        return Ok(wrap_input_required(&state.sealer, &expected, &result));
    }
    if matches!(
        method,
        "resources/list" | "resources/templates/list" | "resources/read" | "prompts/list"
    ) {
        result["ttlMs"] = json!(LIST_TTL_MS);
        result["cacheScope"] = json!(cache_scope(t));
    }
    Ok(result)
}

/// `tools/call`: decided by the same policy and checks as in a session; answered with JSON, or
/// with an SSE stream when the request wants progress or log messages (they go on its own
/// stream, before its result).
async fn call_tool(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    ctx: RequestCtx,
    id: Value,
    params: Value,
) -> Result<HttpResponse, Refusal> {
    let answer = |e: RpcError| Ok(reply::json(meta::http_status(&e), &e.to_response(Some(&id))));
    let Some(name) = params.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return answer(RpcError::invalid_params("tools/call needs a string name"));
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => return answer(RpcError::invalid_params("arguments must be an object")),
    };
    let index = tool_index(state, t, &ctx).await;
    let access = caller.access();
    // A tool the caller may not call is answered exactly like one that does not exist.
    let found = index.get(&name).filter(|_| {
        authorize(
            t,
            &access,
            &caller.request_id,
            &format!("tool:{name}"),
            action::CALL,
        )
    });
    let Some((def, provider)) = found else {
        return answer(RpcError::invalid_params(format!(
            "unknown tool: {}",
            protocol::truncate(&name, 128)
        )));
    };
    if let Some(schema) = def.definition.get("inputSchema")
        && let Err(e) = routing::check_params(req, schema, &arguments)
    {
        return answer(e);
    }
    if let Some(text) = t.argument_problem(def, Some(&arguments)) {
        let result = json!({"content": [{"type": "text", "text": text}], "isError": true});
        return Ok(reply::json(
            StatusCode::OK,
            &result_response(&id, complete(result)),
        ));
    }
    let provider = t.providers[provider].clone();
    let expected = mrtr::RequestState::expected(
        &t.id,
        marina_core::tools::SessionContext::session_key(&ctx),
        "tools/call",
        &name,
        mrtr::digest(&arguments),
    );
    let sealed = match params.get("requestState") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return answer(mrtr::refused("not a string")),
    };
    let token = params.pointer("/_meta/progressToken").cloned();
    let wants_stream = token.is_some() || ctx_log_level(&params).is_some();
    if !provider.replays_questions() {
        // A source that cannot be re-run: its call starts here and, when it asks the client
        // something, waits parked for the answer (park.rs) — or, when its upstream speaks
        // 2026-07-28 and answers `input_required`, the client retries it through us.
        let follow = Follow::new(state, expected, id.clone(), token.clone());
        let mut ctx = ctx.with_progress_token(token);
        let mut continued = None;
        if let Some(sealed) = sealed {
            let st = match mrtr::open_for(&state.sealer, sealed, &follow.expected) {
                Ok(st) => st,
                Err(e) => return answer(e),
            };
            if st.k.is_some() {
                return Ok(match follow.resume(state, req, st, &params).await {
                    Ok(resp) => resp,
                    Err(e) => reply::json(meta::http_status(&e), &e.to_response(Some(&id))),
                });
            }
            if !st.u {
                return answer(mrtr::refused("issued for another request"));
            }
            continued = Some(st);
        }
        // Counted before a retry's state is used up, so a refused call can be retried with it.
        let call_cap = CallCap::begin(state, t, &caller.request_id).await?;
        if let Some(st) = continued {
            let upstream_state = st.w.clone();
            if let Err(e) = mrtr::claim(state.node.store.as_ref(), st).await {
                return answer(e);
            }
            ctx = ctx.with_continuation(continuation(&params, upstream_state));
        } else if params.get("inputResponses").is_some_and(Value::is_object) {
            // Answers sent ahead of any question go to the upstream as they are (it uses what
            // it recognizes); our sources never ask by those keys.
            ctx = ctx.with_continuation(continuation(&params, None));
        }
        let running = park::Running::start(provider, name, arguments, ctx, call_cap);
        return Ok(follow.serve(running, wants_stream).await);
    }
    // Counted before a retry's state is used up, so a refused call can be retried with it.
    let call_cap = CallCap::begin(state, t, &caller.request_id).await?;
    // A retry of a multi round-trip request: its sealed state must be ours, for exactly this
    // request, unexpired and unused; its answers and the new ones feed the re-run.
    let mut answers = serde_json::Map::new();
    if let Some(sealed) = sealed {
        match mrtr::admit(&state.sealer, state.node.store.as_ref(), sealed, &expected).await {
            Ok(st) if st.k.is_none() => answers = st.r,
            Ok(_) => return answer(mrtr::refused("issued for another request")),
            Err(e) => return answer(e),
        }
        if let Some(Value::Object(given)) = params.get("inputResponses") {
            answers.extend(given.clone());
        }
    }
    let ctx = ctx.with_answers(answers.clone(), true);
    let round = Round {
        sealer: state.sealer.clone(),
        expected,
        answers,
    };
    if !wants_stream {
        let outcome = provider.call(&name, arguments, &ctx).await;
        drop(call_cap);
        let (status, body) = round.outcome(&id, &ctx, outcome);
        return Ok(reply::json(status, &body));
    }
    // The call runs beside the response; closing the stream cancels it.
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let cancel = CancellationToken::new();
    let ctx = ctx.streaming(token, tx.clone(), cancel.clone());
    // The call stays in the request's trace.
    actix_web::rt::spawn(marina_telemetry::traces::current().within(async move {
        let _cap = call_cap;
        let outcome = tokio::select! {
            r = provider.call(&name, arguments, &ctx) => r,
            () = ctx_cancelled(&ctx) => return,
        };
        let _ = tx.send(round.outcome(&id, &ctx, outcome).1).await;
    }));

    Ok(stream_response(rx, cancel))
}

/// The SSE response of a request that streams: its notifications, then its response.
fn stream_response(rx: mpsc::Receiver<Value>, cancel: CancellationToken) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(crate::sse::counted("post", Box::pin(request_stream(rx, cancel))))
}

/// The response to a call that ended: its result or error, or -32021 (HTTP 400) when it needed a
/// capability its client did not declare.
fn final_response(
    id: &Value,
    missing: Option<&'static str>,
    outcome: Result<Value, RpcError>,
) -> (StatusCode, Value) {
    if let Some(cap) = missing {
        return (
            StatusCode::BAD_REQUEST,
            meta::missing_capability(cap).to_response(Some(id)),
        );
    }
    match outcome {
        Ok(r) => (StatusCode::OK, result_response(id, complete(r))),
        // An upstream's protocol error keeps its HTTP status (-32021 is a 400).
        Err(e) => (meta::http_status(&e), e.to_response(Some(id))),
    }
}

/// One round of a (possibly multi round-trip) call of a source that re-runs with the answers.
struct Round {
    sealer: Arc<mrtr::Sealer>,
    expected: mrtr::RequestState,
    answers: serde_json::Map<String, Value>,
}

impl Round {
    /// The response to the call's request: its result, or — when the tool asked the client
    /// something not yet answered — `input_required` with the questions and a sealed state
    /// carrying every answer so far (no cache hints: it is not cacheable).
    fn outcome(self, id: &Value, ctx: &RequestCtx, outcome: Result<Value, RpcError>) -> (StatusCode, Value) {
        let asked = ctx.take_asked();
        if ctx.missing_capability().is_none() && !asked.is_empty() {
            let state = mrtr::next(&self.sealer, &self.expected, self.answers);
            return (
                StatusCode::OK,
                input_required(id, asked, self.sealer.seal(&state)),
            );
        }
        final_response(id, ctx.missing_capability(), outcome)
    }
}

/// An `input_required` result.
fn input_required(id: &Value, asked: serde_json::Map<String, Value>, state: String) -> Value {
    let result = json!({
        "resultType": "input_required",
        "inputRequests": asked,
        "requestState": state,
    });
    result_response(id, complete(result))
}

/// A request following a call that runs in the background (park.rs): the request that started
/// it, or a retry that answered its question.
struct Follow {
    parked: Arc<park::ParkedCalls>,
    sealer: Arc<mrtr::Sealer>,
    instance: String,
    expected: mrtr::RequestState,
    id: Value,
    /// This request's progress token (a retry's may differ from the first request's).
    token: Option<Value>,
}

impl Follow {
    fn new(state: &AppState, expected: mrtr::RequestState, id: Value, token: Option<Value>) -> Self {
        Self {
            parked: state.parked.clone(),
            sealer: state.sealer.clone(),
            instance: state.node.config.instance.clone(),
            expected,
            id,
            token,
        }
    }

    /// Continue the call parked under `sealed`, with the answer in `params.inputResponses` —
    /// here, or on the node where it waits.
    async fn resume(
        self,
        state: &AppState,
        req: &HttpRequest,
        st: mrtr::RequestState,
        params: &Value,
    ) -> Result<HttpResponse, RpcError> {
        let Some(at) = st.k.clone() else {
            return Err(mrtr::refused("issued for another request"));
        };
        if at.node != self.instance {
            // Never forwarded twice: a peer sent it here because the call was here.
            if state.cluster.is_forwarded(req) {
                return Err(park::lost());
            }
            return self.elsewhere(state, req, &at.node, params).await;
        }
        let Some(answer) = params.get("inputResponses").and_then(|r| r.get(&at.q)).cloned() else {
            return Err(RpcError::invalid_params(format!(
                "inputResponses must answer {}",
                at.q
            )));
        };
        mrtr::claim(state.node.store.as_ref(), st).await?;
        let Some(parked) = self.parked.take(&at.id) else {
            return Err(park::lost());
        };
        let _ = parked.reply.send(answer);
        let stream = self.token.is_some() || ctx_log_level(params).is_some();
        Ok(self.serve(parked.running, stream).await)
    }

    /// Hand the retry to `node`, where its call waits; a node that is gone (or cannot be
    /// reached) took the call with it.
    async fn elsewhere(
        &self,
        state: &AppState,
        req: &HttpRequest,
        node: &str,
        params: &Value,
    ) -> Result<HttpResponse, RpcError> {
        let unavailable = |_| RpcError::new(protocol::code::SERVICE_UNAVAILABLE, "session store unavailable");
        let Some(peer) = state.node.store.node(node).await.map_err(unavailable)? else {
            return Err(park::lost());
        };
        let message = json!({"jsonrpc": "2.0", "id": self.id, "method": "tools/call", "params": params});
        let body = Bytes::from(serde_json::to_vec(&message).unwrap_or_default());
        crate::forward::forward(state, req, &peer.url, body)
            .await
            .inspect(|_| marina_telemetry::metrics().forward("parked_call", true))
            .map_err(|e| {
                marina_telemetry::metrics().forward("parked_call", false);
                tracing::info!(node, error = %e, "the node of a parked call is unreachable");
                park::lost()
            })
    }

    /// Follow the call to its next question or its end: one JSON response, or an SSE stream
    /// of its notifications ending with it.
    async fn serve(self, mut running: park::Running, stream: bool) -> HttpResponse {
        if !stream {
            let (status, body) = loop {
                match running.next().await {
                    park::Step::Note(_) => {}
                    park::Step::Ask(ask) => break (StatusCode::OK, self.park(running, ask)),
                    park::Step::Done(o) => break self.finish(o),
                }
            };
            return reply::json(status, &body);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        actix_web::rt::spawn(async move {
            loop {
                // The client went away: dropping the call cancels it.
                let step = tokio::select! {
                    s = running.next() => s,
                    () = tx.closed() => return,
                };
                let last = match step {
                    park::Step::Note(n) => {
                        if let Some(n) = retag(n, self.token.as_ref()) {
                            let _ = tx.try_send(n);
                        }
                        continue;
                    }
                    park::Step::Ask(ask) => self.park(running, ask),
                    park::Step::Done(o) => self.finish(o).1,
                };
                let _ = tx.send(last).await;
                return;
            }
        });
        stream_response(rx, CancellationToken::new())
    }

    /// The response to the call's end — an upstream's own `input_required` passed on, with its
    /// state sealed inside ours.
    fn finish(&self, o: park::Outcome) -> (StatusCode, Value) {
        match (o.missing, &o.result) {
            (None, Ok(r)) if r["resultType"] == "input_required" => (
                StatusCode::OK,
                result_response(
                    &self.id,
                    complete(wrap_input_required(&self.sealer, &self.expected, r)),
                ),
            ),
            _ => final_response(&self.id, o.missing, o.result),
        }
    }

    /// Park the call on its question: `input_required` with a state pointing at it.
    fn park(&self, mut running: park::Running, ask: park::Ask) -> Value {
        let key = format!("q{}", running.asked);
        running.asked += 1;
        let mut asked = serde_json::Map::new();
        asked.insert(key.clone(), json!({"method": ask.method, "params": ask.params}));
        let call = park::Parked {
            running,
            key: key.clone(),
            reply: ask.reply,
        };
        let id = self.parked.park(call, self.sealer.ttl());
        let mut st = mrtr::next(&self.sealer, &self.expected, serde_json::Map::new());
        st.k = Some(mrtr::ParkRef {
            node: self.instance.clone(),
            id,
            q: key,
        });
        input_required(&self.id, asked, self.sealer.seal(&st))
    }
}

/// An upstream's `input_required` `result` for the client: its questions as they are, its
/// `requestState` (if any) sealed inside a state of ours bound to `expected`.
fn wrap_input_required(sealer: &mrtr::Sealer, expected: &mrtr::RequestState, result: &Value) -> Value {
    let mut st = mrtr::next(sealer, expected, serde_json::Map::new());
    st.u = true;
    st.w = result
        .get("requestState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    json!({
        "resultType": "input_required",
        "inputRequests": result["inputRequests"].as_object().cloned().unwrap_or_default(),
        "requestState": sealer.seal(&st),
    })
}

/// A request's params without what changes from round to round of a multi round-trip request.
fn without_round(params: &Value) -> Value {
    let mut p = params.clone();
    if let Some(o) = p.as_object_mut() {
        for k in ["_meta", "requestState", "inputResponses"] {
            o.remove(k);
        }
    }
    p
}

/// What the retry of an upstream's multi round-trip request adds to the upstream request: the
/// client's `inputResponses` and the upstream's own `requestState`.
fn continuation(params: &Value, upstream_state: Option<String>) -> Value {
    let mut more = json!({
        "inputResponses": params.get("inputResponses").cloned().unwrap_or_else(|| json!({})),
    });
    if let Some(w) = upstream_state {
        more["requestState"] = json!(w);
    }
    more
}

/// A notification of a followed call for this request: progress carries this request's token
/// (and is dropped when it has none).
fn retag(mut note: Value, token: Option<&Value>) -> Option<Value> {
    if note["method"] == "notifications/progress" {
        note["params"]["progressToken"] = token?.clone();
    }
    Some(note)
}

fn ctx_log_level(params: &Value) -> Option<&str> {
    params
        .get("_meta")?
        .get("io.modelcontextprotocol/logLevel")?
        .as_str()
}

async fn ctx_cancelled(ctx: &RequestCtx) {
    use marina_core::tools::CallContext as _;
    ctx.cancellation().cancelled().await;
}

/// A request's own SSE stream: its notifications, then its response, which ends it (no event
/// ids: the stateless era has no resumption). Dropped before the end (the client went away), it
/// cancels the call.
fn request_stream(
    rx: mpsc::Receiver<Value>,
    cancel: CancellationToken,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(Some((rx, cancel.drop_guard())), |state| async move {
        let (mut rx, guard) = state?;
        let msg = rx.recv().await?;
        let frame = Ok(Bytes::from(format!("event: message\ndata: {msg}\n\n")));
        // The response is the last message: the call is over, nothing left to cancel.
        if msg.get("id").is_some() && msg.get("method").is_none() {
            guard.disarm();
            return Some((frame, None));
        }
        Some((frame, Some((rx, guard))))
    })
}

/// The tenant's count of calls in flight (`limits.max_inflight_calls`), held while a stateless
/// call runs.
struct CallCap {
    release: Option<(Arc<dyn marina_core::caps::Caps>, String, String)>,
}

impl CallCap {
    async fn begin(state: &AppState, t: &Tenant, request_id: &str) -> Result<Self, Refusal> {
        let Some(max) = t.settings.limits.max_inflight_calls else {
            return Ok(Self { release: None });
        };
        let member = format!("stateless:{request_id}");
        let m = marina_telemetry::metrics();
        match state.caps.begin_call(&t.id, &member, max, CALL_LEASE).await {
            Ok(true) => {
                m.limit_decision(&t.id, "inflight", true);
                Ok(Self {
                    release: Some((state.caps.clone(), t.id.clone(), member)),
                })
            }
            Ok(false) => Err({
                m.limit_decision(&t.id, "inflight", false);
                Refusal::rate_limited(
                    format!(
                        "too many calls in flight for tenant {} (cap {max}); retry shortly",
                        t.id
                    ),
                    1_000,
                    json!({"retryAfterMs": 1_000, "scope": "calls_tenant"}),
                    Vec::new(),
                )
            }),
            Err(_) => Err(Refusal::unavailable("session store unavailable; retry shortly")),
        }
    }
}

impl Drop for CallCap {
    fn drop(&mut self) {
        if let Some((caps, tenant, member)) = self.release.take() {
            actix_web::rt::spawn(async move {
                let _ = caps.end_call(&tenant, &member).await;
            });
        }
    }
}
