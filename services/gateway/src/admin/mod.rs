//! The admin API (control plane), on its own listener (`admin.bind`), served by every node from
//! the shared store, versioned under `/admin/v1`. Each request goes through the same steps:
//! authenticate the administrator (`auth.rs`), then the handler; every error is a problem
//! document (`problem.rs`).

mod audit;
mod auth;
mod explain;
mod keys;
mod metrics;
mod openapi;
mod problem;
mod sessions;
mod tenants;
mod upstreams;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use marina_control::{AuditLog, KeyUsage, TenantDocs};

pub use auth::AdminAuth;
pub use problem::Problem;

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Who may administer.
    pub auth: Arc<AdminAuth>,
    /// The tenants served.
    pub tenants: Arc<crate::tenants::Registry>,
    /// The stored tenant documents.
    pub docs: Arc<dyn TenantDocs>,
    /// Who changed what.
    pub audit: Arc<dyn AuditLog>,
    /// When tenants' API keys were last used.
    pub usage: Arc<dyn KeyUsage>,
    /// This node: the session store and the sessions running here.
    pub node: Arc<marina_actors::Node>,
    /// What the nodes saw of the tenants' upstreams.
    pub reports: Arc<dyn marina_control::UpstreamReports>,
    /// What this node saw of them, not yet reported.
    pub health: Arc<crate::upstream::health::HealthBook>,
    /// Where the control plane keeps its data: `redis` (the cluster's) or `memory` (this node's
    /// alone, lost when it stops) — said on every answer (`Marina-Store`).
    pub store: &'static str,
}

/// The node id of an instance name (`<node id>/<boot nonce>`).
pub fn node_id(instance: &str) -> &str {
    instance.rsplit_once('/').map_or(instance, |(id, _)| id)
}

impl AdminState {
    /// Is `id` a tenant of the configuration file (read-only here)?
    fn file_tenant(&self, id: &str) -> bool {
        self.tenants
            .get(id)
            .is_some_and(|s| s.source == crate::tenants::Source::File)
    }

    /// The administrator of tenant `id` behind `req`, for a write: refused (409) for a tenant of
    /// the configuration file.
    async fn writable(&self, req: &actix_web::HttpRequest, id: &str) -> Result<auth::Admin, Problem> {
        let admin = self.auth.for_tenant(req, &self.tenants, id).await?;
        if self.file_tenant(id) {
            return Err(tenants::read_only(id));
        }
        Ok(admin)
    }
}

/// The admin API's server on `listener` (two workers: it is not on the hot path).
pub fn server(state: AdminState, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::DefaultHeaders::new().add(("Marina-Store", state.store)))
            .app_data(web::Data::new(state.clone()))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|e, _| Problem::bad_request(format!("bad query: {e}")).into()),
            )
            .service(
                web::scope("/admin/v1")
                    // Every route here is in the OpenAPI document (`openapi.rs` says how; its test
                    // reads this list). The document itself is served without authentication: it
                    // describes the API and holds no tenant data, and tools (client generators,
                    // schemathesis) fetch it before they hold a key.
                    .route("/openapi.json", web::get().to(openapi::document))
                    .route("/tenants", web::get().to(tenants::list))
                    .route("/tenants/{id}", web::get().to(tenants::get))
                    .route("/tenants/{id}", web::put().to(tenants::put))
                    .route("/tenants/{id}", web::patch().to(tenants::patch))
                    .route("/tenants/{id}", web::delete().to(tenants::delete))
                    .route("/tenants/{id}/explain", web::post().to(explain::explain))
                    .route("/tenants/{id}/api-keys", web::get().to(keys::list))
                    .route("/tenants/{id}/api-keys", web::post().to(keys::create))
                    .route("/tenants/{id}/api-keys/{key}", web::delete().to(keys::revoke))
                    .route("/tenants/{id}/sessions", web::get().to(sessions::list))
                    .route(
                        "/tenants/{id}/sessions",
                        web::delete().to(sessions::end_principal),
                    )
                    .route("/tenants/{id}/sessions/{sid}", web::get().to(sessions::get))
                    .route("/tenants/{id}/sessions/{sid}", web::delete().to(sessions::end))
                    .route("/tenants/{id}/upstreams", web::get().to(upstreams::status))
                    .route("/audit", web::get().to(audit::list)),
            )
            // Unauthenticated, outside the API (and its OpenAPI document, whose server is
            // /admin/v1): what Prometheus scrapes.
            .route("/metrics", web::get().to(metrics::metrics))
            .default_service(web::to(|| async {
                Problem::not_found("no such admin resource").error_response_owned()
            }))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run();
    Ok(server)
}

impl Problem {
    fn error_response_owned(self) -> HttpResponse {
        actix_web::ResponseError::error_response(&self)
    }
}
