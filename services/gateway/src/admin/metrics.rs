//! `GET /metrics`: the node's metrics in Prometheus text format. Served on the admin listener
//! only (never the public one) and without authentication, like the probes: a scrape holds no
//! secret (no session id, principal, token or argument is ever a label value).

use actix_web::HttpResponse;

/// `GET /metrics`
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(marina_telemetry::CONTENT_TYPE)
        .body(marina_telemetry::metrics().render())
}
