//! DELETE: end the session. Every key of it is removed; later requests with its id get 404.

use actix_web::{HttpRequest, HttpResponse, web};
use marina_actors::Terminate;

use super::{Answer, admit, ask, protocol_header, session_header};
use crate::reply::Refusal;
use crate::state::AppState;

/// `DELETE /t/{tenant}/mcp`
pub async fn delete(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    // Not rate-limited: ending a session frees what it holds (see `charge`).
    let (t, caller) = admit(&state, &req, &tenant).await?;
    let version = protocol_header(&req)?;
    let id = session_header(&req)?;
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    if let Answer::Done(resp) = ask(
        &state,
        &req,
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
