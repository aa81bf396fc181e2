//! Probes for load balancers and orchestrators.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "alive"}))
}

/// `GET /readyz`: ready for new work — not draining, announced in the cluster (after a store
/// outage that lapsed the node's liveness, only once it has announced itself again and stopped
/// the actors of before the outage, so it can serve new and existing sessions), and the store
/// answers. It turns 503 the moment SIGTERM arrives, so the balancer stops sending new work here
/// (while the node still serves everything for `server.shutdown_delay_ms`, then drains).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.node.is_leaving() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
    if !state.node.is_live() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "rejoining"}));
    }
    match state.node.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(_) => HttpResponse::ServiceUnavailable().json(json!({"status": "store unavailable"})),
    }
}
