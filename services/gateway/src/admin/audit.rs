//! `GET /admin/v1/audit?tenant=&since=&limit=`: who changed what and when, oldest first.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::AdminState;
use super::problem::Problem;

/// Largest page.
const MAX_PAGE: usize = 1000;

#[derive(Debug, serde::Deserialize)]
pub struct Query {
    tenant: Option<String>,
    /// RFC 3339 time or Unix milliseconds; default: everything kept.
    since: Option<String>,
    limit: Option<usize>,
}

/// `since` as Unix milliseconds.
fn since_ms(s: Option<&str>) -> Result<u64, Problem> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(0);
    };
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        Problem::bad_request("since must be an RFC 3339 time (2026-12-01T00:00:00Z) or Unix milliseconds")
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

/// The audit entries.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AdminState>,
    q: web::Query<Query>,
) -> Result<HttpResponse, Problem> {
    match &q.tenant {
        Some(t) => state.auth.for_tenant(&req, &state.tenants, t).await?,
        None => state.auth.admin(&req).await?,
    };
    let since = since_ms(q.since.as_deref())?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let items = state.audit.list(q.tenant.as_deref(), since, limit).await?;
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}
