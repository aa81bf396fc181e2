//! GET: open the session's standalone stream (server-initiated messages), or resume any stream of
//! the session with `Last-Event-ID` — replaying exactly the rest of that stream, then following it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use marina_actors::OpenStream;
use marina_core::domain::EventId;
use marina_core::protocol::code;

use super::{
    Target, accepts, header, preflight, protocol_header, rejection, route, session_header,
};
use crate::reply;
use crate::sse::{self, SseOptions};
use crate::state::AppState;

/// `GET /t/{tenant}/mcp`
pub async fn get(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = match preflight(&state, &req, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !accepts(&req, "text/event-stream") {
        return reply::error(
            StatusCode::NOT_ACCEPTABLE,
            None,
            code::INVALID_REQUEST,
            "Accept must list text/event-stream",
        );
    }
    let version = match protocol_header(&req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match session_header(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    let last_event_id = match header(&req, "last-event-id") {
        None => None,
        Some(raw) => match EventId::parse(raw) {
            Some(e) => Some(e),
            None => {
                return reply::bad_request(None, code::INVALID_REQUEST, "malformed Last-Event-ID");
            }
        },
    };
    let addr = match route(&state, &req, &t.id, &id, Bytes::new()).await {
        Target::Local(a) => a,
        Target::Done(resp) => return resp,
    };
    let resumed = last_event_id.is_some();
    match addr
        .send(OpenStream {
            last_event_id,
            protocol_version: version,
        })
        .await
    {
        Ok(Ok(handle)) => {
            let s = state.node.sessions();
            // A resumed POST stream keeps the POST-stream duration limit; the GET stream has none.
            let max = (resumed && handle.stream != 0)
                .then(|| std::time::Duration::from_millis(s.max_post_stream_ms));
            sse::response(
                handle,
                SseOptions {
                    retry_ms: s.retry_ms,
                    max_duration: max,
                },
            )
        }
        Ok(Err(r)) => rejection(r),
        Err(_) => reply::unavailable("session actor stopped; retry"),
    }
}
