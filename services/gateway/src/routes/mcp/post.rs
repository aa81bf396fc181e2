//! POST: one JSON-RPC message per body (a batch only on 2025-03-26 sessions). `initialize` starts
//! a session; requests are answered with JSON, except `tools/call`, which gets a resumable SSE
//! stream unless `sessions.tools_call_response = "json"`; notifications and responses get 202.

use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use marina_actors::{Describe, Dispatch, Reply, SessionActor};
use marina_core::protocol::{self, MessageKind, RpcError, code, result_response};
use marina_core::store::{SessionRecord, now_ms};
use marina_core::tenant::Tenant;
use serde_json::{Value, json};

use super::{
    Target, accepts, header, preflight, protocol_header, rejection, resolve_error, route,
    session_header,
};
use crate::reply;
use crate::sse::{self, SseOptions};
use crate::state::AppState;

/// `POST /t/{tenant}/mcp`
pub async fn post(
    req: HttpRequest,
    tenant: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = match preflight(&state, &req, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !(accepts(&req, "application/json") && accepts(&req, "text/event-stream")) {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            code::INVALID_REQUEST,
            "Accept must list both application/json and text/event-stream",
        );
    }
    let json_body = header(&req, CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json_body {
        return reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            code::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let body = match read_body(payload, t.settings.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let version = match protocol_header(&req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return reply::bad_request(
                None,
                code::PARSE_ERROR,
                "parse error: the body is not valid JSON",
            );
        }
    };
    if let Value::Array(items) = message {
        return batch(&state, &req, &t, version, items, body).await;
    }
    let kind = match protocol::classify(&message) {
        Ok(k) => k,
        Err(e) => {
            return reply::bad_request(
                e.id.as_ref(),
                code::INVALID_REQUEST,
                &format!("invalid request: {e}"),
            );
        }
    };
    if let MessageKind::Request { id, method } = &kind {
        match method.as_str() {
            "initialize" => return initialize(&state, &t, id, &message).await,
            // The 2026-07-28 probe of dual-era clients: a plain 4xx (not -32020..-32022) makes
            // them fall back to initialize.
            "server/discover" => {
                return reply::bad_request(
                    Some(id),
                    code::METHOD_NOT_FOUND,
                    "server/discover is not supported; use initialize",
                );
            }
            _ => {}
        }
    }
    let id = match session_header(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    let addr = match route(&state, &req, &t.id, &id, body).await {
        Target::Local(a) => a,
        Target::Done(resp) => return resp,
    };
    let reply = match addr
        .send(Dispatch {
            message,
            kind,
            protocol_version: version,
            force_json: false,
        })
        .await
    {
        Ok(r) => r,
        Err(_) => return reply::unavailable("session actor stopped; retry"),
    };
    respond(&state, reply).await
}

/// Read the body, refusing it (413) as soon as it passes `limit`.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<Bytes, HttpResponse> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| {
            reply::bad_request(
                None,
                code::INVALID_REQUEST,
                "could not read the request body",
            )
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                code::INVALID_REQUEST,
                &format!("request body exceeds {limit} bytes"),
            ));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// `initialize`: negotiate the version, create the session (its actor starts on this node).
async fn initialize(
    state: &AppState,
    t: &std::sync::Arc<Tenant>,
    id: &Value,
    msg: &Value,
) -> HttpResponse {
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
        return reply::json(StatusCode::OK, &e.to_response(Some(id)));
    };
    let version = protocol::negotiate_version(requested);
    let s = state.node.sessions();
    let now = now_ms();
    let rec = SessionRecord {
        tenant: t.id.clone(),
        principal: None,
        protocol_version: version.to_owned(),
        client_capabilities: caps.clone(),
        client_info: info.clone(),
        log_level: None,
        initialized: false,
        created_at_ms: now,
        expires_at_ms: now + s.max_lifetime_secs * 1000,
        next_stream: 1,
        inflight: Default::default(),
        version: 1,
    };
    let sid = match state.node.create_session(t.clone(), rec).await {
        Ok(sid) => sid,
        Err(e) => return resolve_error(e),
    };
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(sid.as_str()));
    tracing::info!(version, "session created");
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}, "logging": {}},
        "serverInfo": {"name": "marina", "title": "Marina", "version": env!("CARGO_PKG_VERSION")},
        "instructions": format!("Tools of tenant {}, hosted by Marina.", t.id),
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("MCP-Session-Id", sid.as_str()))
        .body(result_response(id, result).to_string())
}

/// Turn the actor's reply into the HTTP answer.
async fn respond(state: &AppState, reply: Reply) -> HttpResponse {
    match reply {
        Reply::Json(v) => reply::json(StatusCode::OK, &v),
        Reply::Accepted => HttpResponse::Accepted().finish(),
        Reply::Pending(rx) => match rx.await {
            Ok(v) => reply::json(StatusCode::OK, &v),
            Err(_) => reply::json(
                StatusCode::OK,
                &RpcError::new(
                    code::INTERRUPTED,
                    "the request was cancelled or interrupted",
                )
                .to_response(None),
            ),
        },
        Reply::Stream(handle) => {
            let s = state.node.sessions();
            sse::response(
                handle,
                SseOptions {
                    retry_ms: s.retry_ms,
                    max_duration: Some(std::time::Duration::from_millis(s.max_post_stream_ms)),
                },
            )
        }
        Reply::Rejected(r) => rejection(r),
    }
}

/// A JSON-RPC batch: accepted only on sessions negotiated at 2025-03-26 (which MUST accept them);
/// answered with a JSON array of the responses, or 202 if it held no request.
async fn batch(
    state: &AppState,
    req: &HttpRequest,
    t: &std::sync::Arc<Tenant>,
    version: Option<String>,
    items: Vec<Value>,
    body: Bytes,
) -> HttpResponse {
    let refuse = || {
        reply::bad_request(
            None,
            code::INVALID_REQUEST,
            "JSON-RPC batches are not supported; send one message per request",
        )
    };
    if items.is_empty()
        || version
            .as_deref()
            .is_some_and(|v| !protocol::supports_batches(v))
    {
        return refuse();
    }
    let Ok(id) = session_header(req) else {
        return refuse();
    };
    let addr: actix::Addr<SessionActor> = match route(state, req, &t.id, &id, body).await {
        Target::Local(a) => a,
        Target::Done(resp) => return resp,
    };
    match addr.send(Describe).await {
        Ok(v) if protocol::supports_batches(&v) => {}
        Ok(_) => return refuse(),
        Err(_) => return reply::unavailable("session actor stopped; retry"),
    }
    let mut responses = Vec::new();
    for message in items {
        let kind = match protocol::classify(&message) {
            Ok(k) => k,
            Err(e) => {
                responses.push(
                    RpcError::new(code::INVALID_REQUEST, format!("invalid request: {e}"))
                        .to_response(e.id.as_ref()),
                );
                continue;
            }
        };
        if matches!(&kind, MessageKind::Request { method, .. } if method == "initialize") {
            let id = if let MessageKind::Request { id, .. } = &kind {
                Some(id.clone())
            } else {
                None
            };
            responses.push(
                RpcError::new(
                    code::INVALID_REQUEST,
                    "initialize must not be part of a batch",
                )
                .to_response(id.as_ref()),
            );
            continue;
        }
        let reply = match addr
            .send(Dispatch {
                message,
                kind,
                protocol_version: version.clone(),
                force_json: true,
            })
            .await
        {
            Ok(r) => r,
            Err(_) => return reply::unavailable("session actor stopped; retry"),
        };
        match reply {
            Reply::Json(v) => responses.push(v),
            Reply::Pending(rx) => {
                if let Ok(v) = rx.await {
                    responses.push(v);
                }
            }
            Reply::Accepted => {}
            Reply::Stream(_) => {}
            Reply::Rejected(r) => return rejection(r),
        }
    }
    if responses.is_empty() {
        HttpResponse::Accepted().finish()
    } else {
        reply::json(StatusCode::OK, &Value::Array(responses))
    }
}
