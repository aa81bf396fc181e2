//! GET: open the session's standalone stream (server-initiated messages), or resume any stream of
//! the session with `Last-Event-ID` — replaying exactly the rest of that stream, then following it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use marina_actors::{Frame, OpenStream};
use marina_core::domain::{EventId, GET_STREAM};
use marina_core::protocol::code;
use marina_telemetry::traces;

use super::{Answer, accepts, admit, ask, charge, header, protocol_header, session_header};
use crate::reply::Refusal;
use crate::sse::{self, SseOptions};
use crate::state::AppState;

/// `GET /t/{tenant}/mcp`: served inside its SERVER span when traces are on (`observe::http_span`),
/// which ends when the stream is open — its replay under way — not when the stream ends.
pub async fn get(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let span = crate::observe::http_span(&state, &tenant, &req, || super::forwarded(&state, &req));
    let answer = span.clone().within(serve(&req, &tenant, &state, &span)).await;
    crate::observe::http_finish(&span, &answer);
    answer
}

async fn serve(
    req: &HttpRequest,
    tenant: &str,
    state: &AppState,
    span: &traces::Span,
) -> Result<HttpResponse, Refusal> {
    let (t, caller) = admit(state, req, tenant).await?;
    charge(state, req, &t, &caller, None, None).await?;
    if !accepts(req, "text/event-stream") {
        return Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "Accept must list text/event-stream",
        ));
    }
    let version = protocol_header(req)?;
    let id = session_header(req)?;
    super::tag_session(span, &id);
    let last_event_id = match header(req, "last-event-id") {
        None => None,
        Some(raw) => Some(
            EventId::parse(raw)
                .ok_or_else(|| Refusal::bad_request(code::INVALID_REQUEST, "malformed Last-Event-ID"))?,
        ),
    };
    let resumed = last_event_id.is_some();
    span.set("marina.stream.resumed", resumed);
    sse::room("get")?;
    let open = OpenStream {
        last_event_id,
        protocol_version: version,
        owner: caller.owner(),
        access: caller.access(),
    };
    let handle = match ask(state, req, &t.id, &id, open).await? {
        Answer::Local(h) => h,
        Answer::Done(resp) => return Ok(resp),
    };
    let kind = if handle.stream == GET_STREAM {
        "get"
    } else {
        "post"
    };
    if resumed {
        // The stored events (a complete stream's backlog also ends with its end marker).
        let replayed = handle
            .backlog
            .iter()
            .filter(|f| matches!(f, Frame::Event { .. }))
            .count();
        marina_telemetry::metrics().sse_replay(kind, replayed);
        span.set(
            "marina.stream.replayed",
            i64::try_from(replayed).unwrap_or(i64::MAX),
        );
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
