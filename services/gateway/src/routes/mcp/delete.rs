//! DELETE: end the session. Every key of it is removed; later requests with its id get 404.

use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use marina_actors::Terminate;

use super::{Target, preflight, protocol_header, rejection, route, session_header};
use crate::reply;
use crate::state::AppState;

/// `DELETE /t/{tenant}/mcp`
pub async fn delete(
    req: HttpRequest,
    tenant: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let t = match preflight(&state, &req, &tenant) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let version = match protocol_header(&req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let id = match session_header(&req) {
        Ok(id) => id,
        Err(r) => return r,
    };
    tracing::Span::current().record("session", marina_core::telemetry::session_tag(id.as_str()));
    let addr = match route(&state, &req, &t.id, &id, Bytes::new()).await {
        Target::Local(a) => a,
        Target::Done(resp) => return resp,
    };
    match addr
        .send(Terminate {
            protocol_version: version,
        })
        .await
    {
        Ok(Ok(())) => {
            tracing::info!("session deleted");
            HttpResponse::Ok().finish()
        }
        Ok(Err(r)) => rejection(r),
        Err(_) => reply::unavailable("session actor stopped; retry"),
    }
}
