//! DELETE: end the session. Every key of it is removed; later requests with its id get 404.

use actix_web::{HttpRequest, HttpResponse, web};
use marina_actors::Terminate;
use marina_telemetry::traces;

use super::{Answer, admit, ask, protocol_header, session_header};
use crate::reply::Refusal;
use crate::state::AppState;

/// `DELETE /t/{tenant}/mcp`: served inside its SERVER span when traces are on
/// (`observe::http_span`).
pub async fn delete(
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
    // Not rate-limited: ending a session frees what it holds (see `charge`).
    let (t, caller) = admit(state, req, tenant).await?;
    let version = protocol_header(req)?;
    let id = session_header(req)?;
    super::tag_session(span, &id);
    if let Answer::Done(resp) = ask(
        state,
        req,
        &t.id,
        &id,
        Terminate {
            protocol_version: version,
            owner: caller.owner(),
        },
    )
    .await?
    {
        return Ok(resp);
    }
    tracing::info!("session deleted");
    Ok(HttpResponse::Ok().finish())
}
