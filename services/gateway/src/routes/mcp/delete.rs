//! DELETE: end the session. Every key of it is removed; later requests with its id get 404.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use marina_actors::{Rejection, Terminate};

use super::{
    MOVE_ATTEMPTS, Target, actor_gone, preflight, protocol_header, rejection, route, session_header,
};
use crate::reply::Refusal;
use crate::state::AppState;

/// `DELETE /t/{tenant}/mcp`
pub async fn delete(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Refusal> {
    let t = preflight(&state, &req, &tenant)?;
    let version = protocol_header(&req)?;
    let id = session_header(&req)?;
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    let terminate = Terminate {
        protocol_version: version,
    };
    let mut attempts = 0;
    loop {
        let addr = match route(&state, &req, &t.id, &id, Bytes::new()).await {
            Target::Local(a) => a,
            Target::Done(resp) => return Ok(resp),
        };
        match addr.send(terminate.clone()).await.map_err(|_| actor_gone())? {
            Err(Rejection::Moved) if attempts < MOVE_ATTEMPTS => attempts += 1,
            other => break other.map_err(rejection)?,
        }
    }
    tracing::info!("session deleted");
    Ok(HttpResponse::Ok().finish())
}
