//! The MCP endpoint `/t/{tenant}/mcp` (Streamable HTTP): POST carries client messages, GET opens
//! or resumes an SSE stream, DELETE ends the session. Checks shared by the three verbs live here.

mod delete;
mod get;
mod post;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError as _};
use bytes::Bytes;
use marina_actors::{Rejection, ResolveError, Resolved};
use marina_core::domain::SessionId;
use marina_core::protocol::{self, MessageKind, code};
use marina_core::tenant::Tenant;

pub use delete::delete;
pub use get::get;
pub use post::post;

use crate::authn::{self, Caller};
use crate::forward::{ForwardError, forward, hand_off};
use crate::reply::Refusal;
use crate::state::AppState;

/// The steps every request of the endpoint takes before its method's own: tenant → Host/Origin
/// policy → credentials. The caller's principal then goes with the request to the session actor,
/// which serves only its session's owner.
async fn admit(state: &AppState, req: &HttpRequest, tenant: &str) -> Result<(Arc<Tenant>, Caller), Refusal> {
    let t = preflight(state, req, tenant)?;
    let caller = authn::authenticate(&state.auth, req, &t.id).await?;
    forwarded(state, req);
    Ok((t, caller))
}

/// The request is for session `id`: its log lines (the `request` span) and its trace span (a
/// GET's or DELETE's, when traces are on) name the session by its tag, never by the id.
fn tag_session(span: &marina_telemetry::traces::Span, id: &SessionId) {
    let tag = marina_core::telemetry::session_tag(id.as_str());
    tracing::Span::current().record("session", tag);
    span.set("mcp.session.id", tag.to_owned());
}

/// This node passed the request on to the session's holder (which records it as an MCP
/// operation: counting it here too would count it twice across the fleet).
#[derive(Debug, Clone, Copy)]
struct ForwardedAway;

fn forwarded_away(req: &HttpRequest) -> bool {
    req.extensions().contains::<ForwardedAway>()
}

/// Whether a peer forwarded the request (decided once: in [`admit`], or before it when the
/// request's span needs to know).
#[derive(Debug, Clone, Copy)]
struct Forwarded(bool);

fn forwarded(state: &AppState, req: &HttpRequest) -> bool {
    if let Some(f) = req.extensions().get::<Forwarded>() {
        return f.0;
    }
    let forwarded = state.cluster.is_forwarded(req);
    req.extensions_mut().insert(Forwarded(forwarded));
    forwarded
}

/// The limits step, after [`admit`]: charge the caller's rate buckets (a `tools/call` of
/// `tool` also its tool bucket); `kind` is the POSTed message's. A request a peer forwarded was
/// charged where it arrived. A client's answer to a request of ours, a cancellation and a
/// DELETE are not charged: they finish or free work that was admitted already, and refusing
/// them would strand it.
async fn charge(
    state: &AppState,
    req: &HttpRequest,
    t: &Arc<Tenant>,
    caller: &Caller,
    kind: Option<&MessageKind>,
    tool: Option<&str>,
) -> Result<(), Refusal> {
    let finishes_admitted_work = match kind {
        Some(MessageKind::Response { .. }) => true,
        Some(MessageKind::Notification { method }) => method == "notifications/cancelled",
        Some(MessageKind::Request { .. }) | None => false,
    };
    if finishes_admitted_work || forwarded(state, req) {
        return Ok(());
    }
    crate::limits::check(state, t, caller, tool).await
}

/// `OPTIONS /t/{tenant}/mcp`: CORS preflight.
pub async fn options(
    req: HttpRequest,
    tenant: actix_web::web::Path<String>,
    state: actix_web::web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let Some(t) = state.node.tenant(&tenant) else {
        return Err(Refusal::not_found("unknown tenant"));
    };
    Ok(crate::cors::preflight(&req, &t.settings))
}

/// Tenant lookup, then Host/Origin policy.
fn preflight(state: &AppState, req: &HttpRequest, tenant: &str) -> Result<Arc<Tenant>, Refusal> {
    let Some(t) = state.node.tenant(tenant) else {
        return Err(Refusal::not_found("unknown tenant"));
    };
    if t.settings.disabled {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "this tenant is suspended",
        ));
    }
    let host = match req.extensions().get::<crate::proxy::Seen>() {
        Some(seen) => seen.host.clone(),
        None => crate::proxy::seen(req, &t.settings).host,
    };
    if let Err(why) = crate::origin::check(req, host.as_deref(), &t.settings) {
        tracing::info!(why, "refused by DNS-rebinding protection");
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            "forbidden: origin or host not allowed",
        ));
    }
    Ok(t)
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Does `Accept` list `mime` (or a wildcard covering it)?
fn accepts(req: &HttpRequest, mime: &str) -> bool {
    let (kind, _) = mime.split_once('/').unwrap_or((mime, ""));
    req.headers()
        .get_all("accept")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let m = item.split(';').next().unwrap_or("").trim();
            let wildcard = m
                .split_once('/')
                .is_some_and(|(k, sub)| sub == "*" && (k == "*" || k.eq_ignore_ascii_case(kind)));
            m.eq_ignore_ascii_case(mime) || wildcard
        })
}

/// `MCP-Protocol-Version`: absent is fine; present must be one we support.
fn protocol_header(req: &HttpRequest) -> Result<Option<String>, Refusal> {
    match req.headers().get("mcp-protocol-version") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if protocol::is_supported_version(s) => Ok(Some(s.to_owned())),
            _ => Err(Refusal::bad_request(
                code::INVALID_REQUEST,
                format!(
                    "unsupported MCP-Protocol-Version; supported: {}",
                    protocol::SUPPORTED_VERSIONS.join(", ")
                ),
            )),
        },
    }
}

/// The session named by `MCP-Session-Id`: 400 when missing, 404 when it cannot be ours.
fn session_header(req: &HttpRequest) -> Result<SessionId, Refusal> {
    let Some(raw) = req.headers().get("mcp-session-id") else {
        return Err(Refusal::bad_request(
            code::INVALID_REQUEST,
            "missing MCP-Session-Id header; send initialize first",
        ));
    };
    raw.to_str()
        .ok()
        .and_then(SessionId::parse)
        .ok_or_else(|| Refusal::not_found("session not found"))
}

/// HTTP answer for an actor's refusal.
fn rejection(r: Rejection) -> Refusal {
    match r {
        Rejection::VersionMismatch => Refusal::bad_request(
            code::INVALID_REQUEST,
            "MCP-Protocol-Version does not match the session's negotiated version",
        ),
        Rejection::UnknownStream => Refusal::bad_request(
            code::INVALID_REQUEST,
            "Last-Event-ID names no stream of this session",
        ),
        Rejection::Unavailable => Refusal::unavailable("session store unavailable; retry shortly"),
        Rejection::Gone => Refusal::not_found("session not found"),
        Rejection::Draining => Refusal::unavailable("this node is shutting down; retry"),
        Rejection::Moved => Refusal::unavailable("session is moving; retry"),
        Rejection::Limited(scope) => Refusal::rate_limited(
            if scope == "session" {
                "too many calls or streams open in this session; retry when one ends"
            } else {
                "too many calls in flight for this tenant; retry shortly"
            },
            1000,
            serde_json::json!({"retryAfterMs": 1000, "scope": scope}),
            Vec::new(),
        ),
    }
}

/// How often a request follows a session whose actor passivated under it.
const MOVE_ATTEMPTS: usize = 5;

fn resolve_error(e: ResolveError) -> Refusal {
    match e {
        ResolveError::NotFound => Refusal::not_found("session not found"),
        ResolveError::Store(err) => {
            tracing::warn!(error = %err, "session store error");
            Refusal::unavailable("session store unavailable; retry shortly")
        }
        ResolveError::Busy => Refusal::unavailable("session temporarily unavailable; retry"),
        ResolveError::Draining => Refusal::unavailable("this node is shutting down; retry"),
        ResolveError::Rejoining => Refusal::unavailable("this node is rejoining the cluster; retry shortly"),
    }
}

/// The actor went away between lookup and delivery (passivated, lease lost): the client retries.
fn actor_gone() -> Refusal {
    Refusal::unavailable("session actor stopped; retry")
}

/// The outcome of [`ask`]: the actor's answer, or the peer's response to a forwarded request.
enum Answer<T> {
    /// The local actor answered.
    Local(T),
    /// Another node served the request (or resolving failed); send this as is.
    Done(HttpResponse),
}

/// Send `msg` to the session's actor — here, or by forwarding the request to its holder — and
/// follow the session when its actor passivates under us.
async fn ask<M, T>(
    state: &AppState,
    req: &HttpRequest,
    tenant: &str,
    id: &SessionId,
    msg: M,
) -> Result<Answer<T>, Refusal>
where
    M: actix::Message<Result = Result<T, Rejection>> + Clone + Send + 'static,
    T: Send + 'static,
    marina_actors::SessionActor: actix::Handler<M>,
{
    for _ in 0..=MOVE_ATTEMPTS {
        let addr = match route(state, req, tenant, id, Bytes::new()).await {
            Target::Local(a) => a,
            Target::Done(resp) => return Ok(Answer::Done(resp)),
        };
        match addr.send(msg.clone()).await.map_err(|_| actor_gone())? {
            Err(Rejection::Moved) => continue,
            other => return other.map(Answer::Local).map_err(rejection),
        }
    }
    Err(rejection(Rejection::Moved))
}

/// Where the request is served.
enum Target {
    /// By the local actor.
    Local(actix::Addr<marina_actors::SessionActor>),
    /// Already answered (forwarded, or an error).
    Done(HttpResponse),
}

/// Find the session's actor; if another node holds it, forward the request there (once: a
/// forwarded request is served here or refused). An unreachable holder is waited out. A draining
/// node that would have to take the session's lease hands the request to a live peer instead.
async fn route(state: &AppState, req: &HttpRequest, tenant: &str, id: &SessionId, body: Bytes) -> Target {
    let may_forward = !forwarded(state, req);
    let mut avoid: Option<String> = None;
    loop {
        match state
            .node
            .resolve(tenant, id, may_forward, avoid.as_deref())
            .await
        {
            Ok(Resolved::Local(addr)) => return Target::Local(addr),
            Ok(Resolved::Remote { holder, url }) => match forward(state, req, &url, body.clone())
                .await
                .inspect(|_| marina_telemetry::metrics().forward("session", true))
                .inspect_err(|_| marina_telemetry::metrics().forward("session", false))
            {
                Ok(resp) => {
                    // The holder serves it, and measures it as its own operation.
                    req.extensions_mut().insert(ForwardedAway);
                    return Target::Done(resp);
                }
                Err(ForwardError::Unreachable(e)) => {
                    tracing::info!(holder, error = %e, "session holder unreachable; waiting for its lease");
                    avoid = Some(holder);
                }
            },
            Err(ResolveError::Draining) => return Target::Done(hand_off(state, req, body).await),
            Err(e) => return Target::Done(resolve_error(e).error_response()),
        }
    }
}
