//! Forwarding a request to the node that holds its session's live actor. The request goes out
//! as it came in (same method, path, MCP headers, `Host` and `Origin` so the holder re-checks
//! them), marked as forwarded so it is never forwarded twice; the answer — JSON or an SSE
//! stream — is streamed back unchanged.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::TryStreamExt as _;

use crate::cluster::FORWARDED;
use crate::reply::Refusal;
use crate::state::AppState;

/// Live peers a hand-off tries before it gives up.
const HANDOFF_ATTEMPTS: usize = 3;

/// Request headers a forwarded request keeps.
const PASS_REQUEST: [&str; 13] = [
    "accept",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    // The routing headers of 2026-07-28 requests (and `mcp-param-*`, below): the holder checks
    // them against the body again.
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "origin",
    "host",
    // The client's credentials: the holder authenticates the request itself.
    "authorization",
    "x-api-key",
    "x-request-id",
    "user-agent",
];
/// Response headers passed back.
const PASS_RESPONSE: [&str; 6] = [
    "content-type",
    "mcp-session-id",
    "retry-after",
    "cache-control",
    "allow",
    "www-authenticate",
];

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The holder could not be reached (it may have died): wait for its lease to expire.
    #[error("peer unreachable: {0}")]
    Unreachable(reqwest::Error),
}

/// Send `req` (with `body`) to the peer at `base_url` and relay its answer.
pub async fn forward(
    state: &AppState,
    req: &HttpRequest,
    base_url: &str,
    body: Bytes,
) -> Result<HttpResponse, ForwardError> {
    send(&state.http, state, req, base_url, body).await
}

async fn send(
    client: &reqwest::Client,
    state: &AppState,
    req: &HttpRequest,
    base_url: &str,
    body: Bytes,
) -> Result<HttpResponse, ForwardError> {
    let url = format!("{}{}", base_url.trim_end_matches('/'), req.uri().path());
    let method =
        reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut out = client
        .request(method, url)
        .header(FORWARDED, state.cluster.sign(&state.node.config.instance, req));
    for name in PASS_REQUEST {
        for v in req.headers().get_all(name) {
            out = out.header(name, v.as_bytes());
        }
    }
    for (name, v) in req.headers() {
        if name.as_str().starts_with("mcp-param-") {
            out = out.header(name.as_str(), v.as_bytes());
        }
    }
    if marina_telemetry::traces::enabled() {
        // The holder's span of the request continues this node's (the client's own context is
        // in the body's `_meta`, or was in headers the holder does not need).
        let mut trace = reqwest::header::HeaderMap::new();
        marina_telemetry::traces::inject_headers(&mut trace);
        out = out.headers(trace);
    }
    if !body.is_empty() {
        out = out.body(body);
    }
    let resp = out.send().await.map_err(ForwardError::Unreachable)?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    for name in PASS_RESPONSE {
        if let Some(v) = resp.headers().get(name) {
            builder.insert_header((name, v.as_bytes()));
        }
    }
    // A stream cut by the holder's death just ends here; the client resumes with Last-Event-ID.
    let stream = resp
        .bytes_stream()
        .map_err(|e| actix_web::error::ErrorBadGateway(e.to_string()));
    Ok(builder.streaming(stream))
}

/// This node is draining and serving `req` would need it to take a new lease or create a
/// session: hand the request to a live peer (in the directory, not shutting down) and relay its
/// answer, as for any forwarded request. Also for a request a peer forwarded here — a draining
/// node only hands on to nodes that are not, so it never loops. Only with no reachable live peer
/// is it refused: 503 with `Retry-After`.
pub async fn hand_off(state: &AppState, req: &HttpRequest, body: Bytes) -> HttpResponse {
    match state.node.live_peers().await {
        Ok(peers) => {
            for peer in peers.iter().take(HANDOFF_ATTEMPTS) {
                // A fresh connection: at the end of a drain this node's workers stop one by one,
                // and a pooled connection driven by a stopped one fails unsent.
                match send(&state.handoff, state, req, &peer.url, body.clone()).await {
                    Ok(resp) => {
                        tracing::debug!(peer = peer.instance, "draining: request handed to a live peer");
                        return resp;
                    }
                    Err(ForwardError::Unreachable(e)) => {
                        tracing::info!(peer = peer.instance, error = ?e, "draining: peer unreachable; trying another");
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "draining: node directory unavailable"),
    }
    actix_web::ResponseError::error_response(&Refusal::unavailable(
        "this node is shutting down and no live peer could take the request; retry",
    ))
}
