//! GET: open the session's standalone stream (server-initiated messages), or resume any stream of
//! the session with `Last-Event-ID` — replaying exactly the rest of that stream, then following it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use marina_actors::OpenStream;
use marina_core::domain::{EventId, GET_STREAM};
use marina_core::protocol::code;

use super::{Answer, accepts, admit, ask, charge, header, protocol_header, session_header};
use crate::reply::Refusal;
use crate::sse::{self, SseOptions};
use crate::state::AppState;

/// `GET /t/{tenant}/mcp`
pub async fn get(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let (t, caller) = admit(&state, &req, &tenant).await?;
    charge(&state, &req, &t, &caller, None, None).await?;
    if !accepts(&req, "text/event-stream") {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must list text/event-stream",
        ));
    }
    let version = protocol_header(&req)?;
    let id = session_header(&req)?;
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    let last_event_id = match header(&req, "last-event-id") {
        None => None,
        Some(raw) => Some(
            EventId::parse(raw)
                .ok_or_else(|| Refusal::bad_request(code::INVALID_REQUEST, "malformed Last-Event-ID"))?,
        ),
    };
    let resumed = last_event_id.is_some();
    sse::room("get")?;
    let open = OpenStream {
        last_event_id,
        protocol_version: version,
        owner: caller.owner(),
        access: caller.access(),
    };
    let handle = match ask(&state, &req, &t.id, &id, open).await? {
        Answer::Local(h) => h,
        Answer::Done(resp) => return Ok(resp),
    };
    let kind = if handle.stream == GET_STREAM {
        "get"
    } else {
        "post"
    };
    if resumed {
        marina_telemetry::metrics().sse_replay(kind, handle.backlog.len());
    }
    let s = state.node.sessions();
    // A resumed POST stream keeps the POST-stream duration limit; the GET stream has none.
    let max = (resumed && handle.stream != GET_STREAM)
        .then(|| std::time::Duration::from_millis(s.max_post_stream_ms));
    Ok(sse::response(
        handle,
        SseOptions {
            retry_ms: s.retry_ms,
            max_duration: max,
            until: caller.principal.as_ref().and_then(|p| p.expires_at),
        },
        kind,
    ))
}
