//! POST: one JSON-RPC message per body (a batch only on 2025-03-26 sessions). `initialize` starts
//! a session; requests are answered with JSON, except `tools/call`, which gets a resumable SSE
//! stream unless `sessions.tools_call_response = "json"`; notifications and responses get 202.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use marina_actors::{Describe, Dispatch, Reply};
use marina_core::domain::SessionId;
use marina_core::protocol::{self, MessageKind, RpcError, code, result_response};
use marina_core::store::{SessionRecord, now_ms};
use marina_core::tenant::Tenant;
use serde_json::{Value, json};

use super::{
    MOVE_ATTEMPTS, Target, accepts, actor_gone, admit, charge, forwarded_away, header, protocol_header,
    rejection, resolve_error, route, session_header,
};
use crate::authn::Caller;
use crate::forward::hand_off;
use crate::reply::{self, Refusal};
use crate::sse::{self, SseOptions};
use crate::state::AppState;

/// `POST /t/{tenant}/mcp`: the request is timed as an MCP operation once its method is known
/// (`observe`), whatever answers it.
pub async fn post(
    req: HttpRequest,
    tenant: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let mut op = None;
    let answer = serve(&req, &tenant, payload, &state, &mut op).await;
    crate::observe::finish(op.filter(|_| !forwarded_away(&req)), answer)
}

async fn serve(
    req: &HttpRequest,
    tenant: &str,
    payload: web::Payload,
    state: &AppState,
    op: &mut Option<crate::observe::Operation>,
) -> Result<HttpResponse, Refusal> {
    let (t, caller) = admit(state, req, tenant).await?;
    if !(accepts(req, "application/json") && accepts(req, "text/event-stream")) {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must list both application/json and text/event-stream",
        ));
    }
    let json_body = header(req, CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_body {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        ));
    }
    let body = read_body(payload, t.settings.limits.max_body_bytes)
        .await
        .inspect_err(|r| {
            if actix_web::ResponseError::status_code(r) == StatusCode::PAYLOAD_TOO_LARGE {
                marina_telemetry::metrics().limit_decision(&t.id, "body", false);
            }
        })?;
    let message: Value = serde_json::from_slice(&body)
        .map_err(|_| Refusal::bad_request(code::PARSE_ERROR, "parse error: the body is not valid JSON"))?;
    // The era of this request (modern/mod.rs has the decision table).
    let stateless = crate::modern::wants(
        state,
        &message,
        header(req, "mcp-protocol-version"),
        req.headers().contains_key("mcp-session-id"),
    );
    let version = if stateless { None } else { protocol_header(req)? };
    if let Value::Array(items) = message {
        return batch(state, req, &t, &caller, version, items, body).await;
    }
    let kind = protocol::classify(&message).map_err(|e| {
        Refusal::bad_request(code::INVALID_REQUEST, format!("invalid request: {e}")).with_id(e.id.as_ref())
    })?;
    *op = crate::observe::begin(&t.id, &message, req, || super::forwarded(state, req));
    let wait = op.as_ref().map(|o| o.wait()).unwrap_or_default();
    // Served inside the operation's span (when traces are on), so what it calls is its child.
    let span = op
        .as_ref()
        .map_or_else(marina_telemetry::traces::Span::none, |o| o.span().clone());
    let request_span = tracing::Span::current();
    let tag_session = |tag: &str| {
        request_span.record("session", tag);
        if let Some(o) = op.as_ref() {
            o.session(tag);
        }
    };
    span.within(serve_message(
        state,
        req,
        &t,
        &caller,
        Message {
            message,
            kind,
            body,
            version,
            stateless,
            wait,
        },
        &tag_session,
    ))
    .await
}

/// A single message, its classification and what `serve` learnt of it.
struct Message {
    message: Value,
    kind: MessageKind,
    body: Bytes,
    version: Option<String>,
    stateless: bool,
    wait: marina_telemetry::UpstreamWait,
}

async fn serve_message(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    m: Message,
    tag_session: &dyn Fn(&str),
) -> Result<HttpResponse, Refusal> {
    let Message {
        message,
        kind,
        body,
        version,
        stateless,
        wait,
    } = m;
    charge(state, req, t, caller, Some(&kind), called_tool(&kind, &message))
        .await
        .map_err(|r| r.with_id(request_id(&kind)))?;
    // A request answered with a stream needs room for it on this node.
    if matches!(&kind, MessageKind::Request { method, .. } if method == "tools/call" || method == "subscriptions/listen")
    {
        sse::room(if stateless && called_tool(&kind, &message).is_none() {
            "listen"
        } else {
            "post"
        })?;
    }
    if stateless {
        return crate::modern::serve(state, req, t, caller, message, wait).await;
    }
    if let MessageKind::Request { id, method } = &kind {
        match method.as_str() {
            // A draining node creates no session: a live peer does.
            "initialize" if state.node.is_draining() => return Ok(hand_off(state, req, body).await),
            "initialize" => return initialize(state, req, t, caller, &message, body, tag_session).await,
            // The 2026-07-28 probe of dual-era clients: a plain 4xx (not -32020..-32022) makes
            // them fall back to initialize.
            "server/discover" => {
                return Err(Refusal::bad_request(
                    code::METHOD_NOT_FOUND,
                    "server/discover is not supported; use initialize",
                )
                .with_id(Some(id)));
            }
            _ => {}
        }
    }
    let id = session_header(req)?;
    tag_session(marina_core::telemetry::session_tag(id.as_str()));
    let rpc_id = request_id(&kind).cloned();
    let mut dispatch = Dispatch {
        message,
        kind,
        protocol_version: version,
        force_json: false,
        owner: caller.owner(),
        access: caller.access(),
        request_id: caller.request_id.clone(),
        wait,
        span: marina_telemetry::traces::current(),
    };
    let mut attempts = 0;
    let reply = loop {
        let addr = match route(state, req, &t.id, &id, body.clone()).await {
            Target::Local(a) => a,
            Target::Done(resp) => return Ok(resp),
        };
        match addr.send(dispatch).await.map_err(|_| actor_gone())? {
            Reply::Moved(back) if attempts < MOVE_ATTEMPTS => {
                attempts += 1;
                dispatch = *back;
            }
            reply => break reply,
        }
    };
    respond(state, caller, reply)
        .await
        .map_err(|r| r.with_id(rpc_id.as_ref()))
}

/// The tool a `tools/call` names (its rate bucket).
fn called_tool<'a>(kind: &MessageKind, message: &'a Value) -> Option<&'a str> {
    match kind {
        MessageKind::Request { method, .. } if method == "tools/call" => message["params"]["name"].as_str(),
        _ => None,
    }
}

fn request_id(kind: &MessageKind) -> Option<&Value> {
    match kind {
        MessageKind::Request { id, .. } => Some(id),
        _ => None,
    }
}

/// Read the body, refusing it (413) as soon as it passes `limit`.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, Refusal> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|_| Refusal::bad_request(code::INVALID_REQUEST, "could not read the request body"))?;
        if buf.len() + chunk.len() > limit {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::INVALID_REQUEST,
                format!("request body exceeds {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `initialize`: negotiate the version, create the session (its actor starts on this node).
async fn initialize(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    msg: &Value,
    body: Bytes,
    tag_session: &dyn Fn(&str),
) -> Result<HttpResponse, Refusal> {
    let id = &msg["id"];
    let params = &msg["params"];
    let (Some(requested), Some(caps), Some(info)) = (
        params.get("protocolVersion").and_then(Value::as_str),
        params.get("capabilities").filter(|c| c.is_object()),
        params
            .get("clientInfo")
            .filter(|c| c.get("name").is_some_and(Value::is_string)),
    ) else {
        let e = RpcError::invalid_params(
            "initialize needs protocolVersion (string), capabilities (object) and clientInfo (object with a name)",
        );
        return Ok(reply::json(StatusCode::OK, &e.to_response(Some(id))));
    };
    let version = protocol::negotiate_version(requested);
    let s = state.node.sessions();
    let now = now_ms();
    let rec = SessionRecord {
        tenant: t.id.clone(),
        principal: caller.owner(),
        protocol_version: version.to_owned(),
        client_capabilities: caps.clone(),
        client_info: info.clone(),
        log_level: None,
        upstreams: Default::default(),
        initialized: false,
        created_at_ms: now,
        expires_at_ms: now + s.max_lifetime_secs * 1000,
        last_used_ms: now,
        next_stream: 1,
        inflight: Default::default(),
        version: 1,
    };
    let sid = SessionId::generate();
    crate::limits::admit_session(state, t, caller, &sid).await?;
    let sid = match state.node.create_session(t.clone(), sid.clone(), rec).await {
        Ok(sid) => sid,
        Err(e) => {
            crate::limits::release_session(state, t, caller, &sid).await;
            if matches!(e, marina_actors::ResolveError::Draining) {
                // The drain began since the check above.
                return Ok(hand_off(state, req, body).await);
            }
            return Err(resolve_error(e));
        }
    };
    tag_session(marina_core::telemetry::session_tag(sid.as_str()));
    tracing::info!(version, "session created");
    let result = json!({
        "protocolVersion": version,
        "capabilities": capabilities(t),
        "serverInfo": {"name": "marina", "title": "Marina", "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!("Tools of tenant {}, hosted by Marina.", t.id),
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("MCP-Session-Id", sid.as_str()))
        .body(result_response(id, result).to_string()))
}

/// What the tenant's endpoint can do: tools and logging always; resources (with subscriptions),
/// prompts and completion when an upstream MCP server provides them.
fn capabilities(t: &Tenant) -> Value {
    // Upstreams' list changes are relayed on the GET stream.
    let upstreams = t.providers.iter().any(|p| p.serves_features());
    let mut caps = json!({"tools": {"listChanged": upstreams}, "logging": {}});
    if upstreams {
        caps["resources"] = json!({"subscribe": true, "listChanged": true});
        caps["prompts"] = json!({"listChanged": true});
        caps["completions"] = json!({});
    }
    caps
}

/// Turn the actor's reply into the HTTP answer.
async fn respond(state: &AppState, caller: &Caller, reply: Reply) -> Result<HttpResponse, Refusal> {
    Ok(match reply {
        Reply::Json(v) => reply::json(StatusCode::OK, &v),
        Reply::Accepted => HttpResponse::Accepted().finish(),
        Reply::Pending(rx) => match rx.await {
            Ok(v) => reply::json(StatusCode::OK, &v),
            Err(_) => reply::json(
                StatusCode::OK,
                &RpcError::new(code::INTERRUPTED, "the request was cancelled or interrupted")
                    .to_response(None),
            ),
        },
        Reply::Stream(handle) => {
            let s = state.node.sessions();
            let max = Some(std::time::Duration::from_millis(s.max_post_stream_ms));
            sse::response(
                handle,
                SseOptions {
                    retry_ms: s.retry_ms,
                    max_duration: max,
                    until: caller.principal.as_ref().and_then(|p| p.expires_at),
                },
                "post",
            )
        }
        Reply::Rejected(r) => return Err(rejection(r)),
        Reply::Moved(_) => return Err(rejection(marina_actors::Rejection::Moved)),
    })
}

/// A JSON-RPC batch: accepted only on sessions negotiated at 2025-03-26 (which MUST accept them);
/// answered with a JSON array of the responses, or 202 if it held no request.
async fn batch(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    version: Option<String>,
    items: Vec<Value>,
    body: Bytes,
) -> Result<HttpResponse, Refusal> {
    let refuse = || {
        Refusal::bad_request(
            code::INVALID_REQUEST,
            "JSON-RPC batches are not supported; send one message per request",
        )
    };
    if items.is_empty() || version.as_deref().is_some_and(|v| !protocol::supports_batches(v)) {
        return Err(refuse());
    }
    let id = session_header(req).map_err(|_| refuse())?;
    let addr = match route(state, req, &t.id, &id, body).await {
        Target::Local(a) => a,
        Target::Done(resp) => return Ok(resp),
    };
    let negotiated = addr
        .send(Describe {
            owner: caller.owner(),
        })
        .await
        .map_err(|_| actor_gone())?
        .map_err(rejection)?;
    if !protocol::supports_batches(&negotiated) {
        return Err(refuse());
    }
    let tag = marina_core::telemetry::session_tag(id.as_str());
    tracing::Span::current().record("session", tag);
    let mut responses = Vec::new();
    for message in items {
        let kind = match protocol::classify(&message) {
            Ok(k) => k,
            Err(e) => {
                let err = RpcError::new(code::INVALID_REQUEST, format!("invalid request: {e}"));
                responses.push(err.to_response(e.id.as_ref()));
                continue;
            }
        };
        // Each request or notification is an MCP operation of its own: timed, and served inside
        // its own SERVER span (so what it calls upstream is that span's child).
        let op = match kind {
            MessageKind::Request { .. } | MessageKind::Notification { .. } => {
                crate::observe::begin(&t.id, &message, req, || super::forwarded(state, req))
            }
            MessageKind::Response { .. } => None,
        };
        let span = op
            .as_ref()
            .map_or_else(marina_telemetry::traces::Span::none, |o| {
                o.session(tag);
                o.span().clone()
            });
        let item = BatchItem {
            message,
            kind,
            version: version.clone(),
            wait: op.as_ref().map(|o| o.wait()).unwrap_or_default(),
            span: span.clone(),
        };
        match span.within(batch_item(state, req, t, caller, &addr, item)).await {
            Ok((response, outcome)) => {
                if let Some(op) = op {
                    op.finish(outcome);
                }
                responses.extend(response);
            }
            Err(refusal) => {
                if let Some(op) = op {
                    op.finish(marina_telemetry::Outcome::Code(refusal.code()));
                }
                return Err(refusal);
            }
        }
    }
    Ok(if responses.is_empty() {
        HttpResponse::Accepted().finish()
    } else {
        reply::json(StatusCode::OK, &Value::Array(responses))
    })
}

/// One message of a batch, classified.
struct BatchItem {
    message: Value,
    kind: MessageKind,
    version: Option<String>,
    wait: marina_telemetry::UpstreamWait,
    /// Its SERVER span (none for a response, or when traces are off).
    span: marina_telemetry::traces::Span,
}

/// Serve one message of a batch: its response, if it gets one, and its outcome (a
/// notification's acceptance is [`Outcome::Ok`]); `Err` refuses the whole batch.
///
/// [`Outcome::Ok`]: marina_telemetry::Outcome::Ok
async fn batch_item(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    addr: &actix::Addr<marina_actors::SessionActor>,
    item: BatchItem,
) -> Result<(Option<Value>, marina_telemetry::Outcome), Refusal> {
    use marina_telemetry::Outcome;
    let BatchItem {
        message,
        kind,
        version,
        wait,
        span,
    } = item;
    // A request's outcome is its response's; without one it was interrupted.
    let request = matches!(kind, MessageKind::Request { .. });
    let answered = |response: Option<Value>| {
        let outcome = match &response {
            Some(r) => Outcome::of_response(r).unwrap_or(Outcome::Other),
            None if request => Outcome::Other,
            None => Outcome::Ok,
        };
        (response, outcome)
    };
    if let MessageKind::Request { id, method } = &kind
        && method == "initialize"
    {
        let err = RpcError::new(code::INVALID_REQUEST, "initialize must not be part of a batch");
        return Ok(answered(Some(err.to_response(Some(id)))));
    }
    // Each item is limited on its own.
    if let Err(limited) = charge(state, req, t, caller, Some(&kind), called_tool(&kind, &message)).await {
        let error = limited.rpc_error();
        return Ok(match request_id(&kind) {
            Some(id) => answered(Some(error.to_response(Some(id)))),
            // A notification has no answer to carry its refusal.
            None => (None, Outcome::Code(error.code)),
        });
    }
    let reply = addr
        .send(Dispatch {
            message,
            kind,
            protocol_version: version,
            force_json: true,
            owner: caller.owner(),
            access: caller.access(),
            request_id: caller.request_id.clone(),
            wait,
            span,
        })
        .await
        .map_err(|_| actor_gone())?;
    Ok(match reply {
        Reply::Json(v) => answered(Some(v)),
        Reply::Pending(rx) => answered(rx.await.ok()),
        Reply::Accepted | Reply::Stream(_) => answered(None),
        Reply::Rejected(r) => return Err(rejection(r)),
        Reply::Moved(_) => return Err(rejection(marina_actors::Rejection::Moved)),
    })
}
