//! `/.well-known/oauth-protected-resource/t/{tenant}/mcp`: RFC 9728 metadata of a tenant's MCP
//! endpoint (its `resource` is exactly the audience its tokens must carry), for tenants that
//! accept OAuth tokens. Clients find it through the `resource_metadata` of a 401 challenge.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

/// `GET /.well-known/oauth-protected-resource/t/{tenant}/mcp`
pub async fn protected_resource(tenant: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    match state.auth.tenant(&tenant).and_then(|a| a.resource_metadata()) {
        Some(doc) => HttpResponse::Ok()
            .insert_header(("Cache-Control", "max-age=300"))
            // Public metadata, read by browser-based clients from any origin.
            .insert_header(("Access-Control-Allow-Origin", "*"))
            .json(doc),
        None => HttpResponse::NotFound().json(json!({"error": "not found"})),
    }
}
