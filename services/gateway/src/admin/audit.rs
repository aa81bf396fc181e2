//! `GET /admin/v1/audit?tenant=&since=&limit=`: who changed what and when, oldest first.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::openapi::{BadRequest, Forbidden, NotFound, Unauthorized, Unavailable};
use super::problem::Problem;

/// Largest page.
const MAX_PAGE: usize = 1000;

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Only this tenant's changes (which its tenant administrators may read); without it, every
    /// change (platform administrators only).
    tenant: Option<String>,
    /// From this time on: RFC 3339 (`2026-12-01T00:00:00Z`) or Unix milliseconds; default:
    /// everything kept.
    since: Option<String>,
    /// Entries per answer: 1-1000, default 100 (other values are clamped).
    #[param(minimum = 0)]
    limit: Option<usize>,
}

/// One administrative change (`marina_control::AuditEntry` as it is sent).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AuditEntry, example = json!({"atMs": 1764690000000_u64, "actor": "ops", "action": "tenant.patch", "tenant": "acme", "change": {"version": 43, "change": {"disabled": true}}}))]
#[allow(dead_code)] // documentation only: the entries are marina_control's
pub struct AuditEntryDoc {
    /// When (Unix ms).
    at_ms: u64,
    /// Who: the administrator's subject (`<tenant>/<subject>` for a tenant administrator).
    actor: String,
    /// What: `tenant.create`, `tenant.replace`, `tenant.patch`, `tenant.delete`,
    /// `api_key.create`, `api_key.revoke`, …
    action: String,
    /// The tenant concerned.
    tenant: String,
    /// What in it, when more precise than the tenant (a key id, a session).
    #[schema(nullable = false)]
    target: Option<String>,
    /// The change: the new version and the document or merge patch (key digests, never keys).
    change: Option<Value>,
}

/// Audit entries, oldest first.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<AuditEntryDoc>)]
    items: Vec<marina_control::AuditEntry>,
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

/// Read the audit log
///
/// Who changed what and when, oldest first: every write through the admin API.
#[utoipa::path(
    get, path = "/audit", operation_id = "listAudit", tag = "audit",
    params(Query),
    responses(
        (status = 200, description = "The entries, oldest first", body = AuditPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
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
    Ok(HttpResponse::Ok().json(AuditPage { items }))
}
