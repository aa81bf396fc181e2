//! Probes for load balancers and orchestrators.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// `GET /readyz`: ready for new work — the store answers and the node is not draining. It turns
/// 503 the moment SIGTERM arrives, so the balancer stops sending new work here.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.node.is_draining() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    match state.node.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "store unavailable"})),
    }
}
