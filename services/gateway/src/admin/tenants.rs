//! `/admin/v1/tenants`: create, read, replace, patch (JSON merge patch), delete and list tenant
//! documents. A write is checked exactly like the configuration file before anything is stored,
//! takes `If-Match` (a stale `ETag` → 412) or `If-None-Match: *` (create only), and is applied on
//! this node before the answer, on the others within a second.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use marina_control::{Expect, WriteError};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, TenantPath, Unauthorized,
    Unavailable,
};
use super::problem::Problem;
use crate::tenants::{Served, Source};

/// Largest tenant document accepted.
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Largest page of the list.
const MAX_PAGE: usize = 500;

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// What the write expects to find, from `If-Match` / `If-None-Match`.
fn expect(req: &HttpRequest) -> Result<Expect, Problem> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .map(|v| v.to_str().unwrap_or("\u{fffd}").trim())
    };
    match (h("if-match"), h("if-none-match")) {
        (Some(_), Some(_)) => Err(Problem::bad_request("send If-Match or If-None-Match, not both")),
        (Some("*"), None) => Ok(Expect::Any),
        (Some(tag), None) => tag
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Expect::Version)
            .ok_or_else(|| {
                Problem::bad_request("If-Match must be an ETag this API returned, such as \"42\"")
            }),
        (None, Some("*")) => Ok(Expect::Absent),
        (None, Some(_)) => Err(Problem::bad_request("If-None-Match takes only *")),
        (None, None) => Ok(Expect::Any),
    }
}

/// `If-Match`, as a header parameter of the document's writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: read by `expect`
pub struct IfMatch {
    /// Write only if the current version is this `ETag` (`"42"`), else 412; `*`: any version.
    /// Not with `If-None-Match`.
    #[param(
        rename = "If-Match",
        nullable = false,
        pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,18}")$"#
    )]
    if_match: Option<String>,
}

/// `If-None-Match`, as a header parameter of the document's writes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only: read by `expect`
pub struct IfNoneMatch {
    /// Only `*`: create only (412 if the tenant exists). Not with `If-Match`.
    #[param(rename = "If-None-Match", nullable = false, pattern = r"^\*$")]
    if_none_match: Option<String>,
}

/// A JSON merge patch (RFC 7396) of a tenant document: an object whose keys are the document's;
/// `null` removes one.
#[derive(ToSchema)]
#[schema(example = json!({"disabled": true}))]
#[allow(dead_code)] // documentation only
pub struct MergePatch(std::collections::BTreeMap<String, Value>);

fn check_id(id: &str) -> Result<(), Problem> {
    if marina_core::settings::valid_tenant_id(id) {
        Ok(())
    } else {
        Err(Problem::invalid(crate::tenants::Invalid {
            field: "id".into(),
            detail: "tenant ids are 1-64 characters of A-Z a-z 0-9 - _".into(),
        }))
    }
}

pub(super) fn read_only(id: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "read-only tenant",
        format!("tenant {id} is defined in the configuration file; change it there"),
    )
}

/// Read the body, refusing it past [`MAX_DOCUMENT`] without reading further.
pub(super) async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, Problem> {
    use futures_util::StreamExt as _;
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Problem::bad_request(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "document too large",
                format!("tenant documents are at most {MAX_DOCUMENT} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub(super) async fn parse_body(payload: web::Payload) -> Result<Value, Problem> {
    let body = read_body(payload).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Problem::bad_request(
            "the body must be a JSON object (a tenant document)",
        ));
    }
    Ok(v)
}

/// The write's outcome as HTTP.
pub(super) fn write_error(e: WriteError) -> Problem {
    match e {
        WriteError::Conflict { current: 0 } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed",
            "the tenant does not exist",
        ),
        WriteError::Conflict { current } => Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition failed",
            format!("the tenant changed meanwhile: its ETag is now {}", etag(current)),
        ),
        WriteError::Full => Problem::new(
            StatusCode::CONFLICT,
            "too many tenants",
            "the store holds admin.max_tenants tenants; delete one or raise the cap",
        ),
        WriteError::Store(e) => e.into(),
    }
}

/// A tenant document: the `tenants.<id>` section of the configuration file as JSON, with exactly
/// the same keys (docs/configuration.md). Unknown keys are refused; each key's value is checked
/// exactly like the file's (the answer to an invalid one is a 400 naming the field).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "auth": {"api_keys": [{"subject": "ci-bot", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "roles": ["operator"]}]},
    "rbac": {"policy": "p, operator, tool:*, call, allow"},
    "upstreams": [{"kind": "builtin", "tools": ["echo"]}],
    "limits": {"rate": {"tenant": "1000/s", "principal": "50/s"}}
}))]
#[allow(dead_code)] // documentation only: documents are handled as JSON values, checked by tenants::Builder
pub struct TenantDocument {
    /// Who may connect: `api_keys`, `oauth`, `anonymous`.
    auth: Option<Value>,
    /// What each role may see and use: `{"policy": "<casbin policy>"}`.
    rbac: Option<Value>,
    /// Tool sources, each with its `kind`: `builtin`, `http` or `mcp`.
    upstreams: Option<Value>,
    /// Rates and quotas.
    limits: Option<Value>,
    /// Origins allowed besides localhost ones: a list, or one comma-separated string.
    allowed_origins: Option<Value>,
    /// Hosts allowed besides localhost ones: a list, or one comma-separated string.
    allowed_hosts: Option<Value>,
    /// Proxies (CIDRs or addresses) whose `X-Forwarded-*` headers are believed.
    trusted_proxies: Option<Value>,
    /// Check `tools/call` arguments against the tool's `inputSchema` (default true).
    validate_arguments: Option<Value>,
    /// Suspended: every request is refused. Only platform administrators may change it.
    disabled: Option<Value>,
}

/// One tenant in the list.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantSummary {
    id: String,
    /// Where its document lives: `file` (the configuration file, read-only here) or `store`.
    source: Source,
    /// Its version in the store (its `ETag`); 0 for the file's.
    version: u64,
    /// Suspended.
    disabled: bool,
    /// When it was last written (Unix ms); 0 for the file's.
    updated_ms: u64,
}

/// A page of tenants.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct TenantPage {
    items: Vec<TenantSummary>,
    /// The `after` of the next page; null on the last one.
    #[schema(required = true)]
    next: Option<String>,
}

fn summary(s: &Served) -> TenantSummary {
    TenantSummary {
        id: s.tenant.id.clone(),
        source: s.source,
        version: s.version,
        disabled: s.tenant.settings.disabled,
        updated_ms: s.updated_ms,
    }
}

#[derive(Debug, serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Tenants per page: 1-500, default 100 (other values are clamped).
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// The last id of the previous page (its `next`).
    after: Option<String>,
}

/// List tenants
///
/// Tenants by id, a page at a time: what this node serves (every node converges to it within a
/// second of a write). Platform administrators only.
#[utoipa::path(
    get, path = "/tenants", operation_id = "listTenants", tag = "tenants",
    params(Page),
    responses(
        (status = 200, description = "A page of tenants, sorted by id", body = TenantPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
    )
)]
pub async fn list(
    req: HttpRequest,
    state: web::Data<AdminState>,
    page: web::Query<Page>,
) -> Result<HttpResponse, Problem> {
    state.auth.admin(&req).await?;
    // What this node serves: every node converges to it within a second of a write (and the
    // writing node applies its write before answering).
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let snapshot = state.tenants.snapshot();
    let mut ids: Vec<&String> = snapshot
        .keys()
        .filter(|id| page.after.as_ref().is_none_or(|a| id.as_str() > a.as_str()))
        .collect();
    ids.sort();
    let more = ids.len() > limit;
    let items = ids.iter().take(limit).map(|id| summary(&snapshot[*id])).collect();
    let next = more.then(|| ids[limit - 1].clone());
    Ok(HttpResponse::Ok().json(TenantPage { items, next }))
}

/// Read a tenant
///
/// The document exactly as written, with its `ETag`, or a configuration file's tenant (without
/// an `ETag`; `{}` for the embedded default tenant, which no file section describes).
#[utoipa::path(
    get, path = "/tenants/{id}", operation_id = "getTenant", tag = "tenants",
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant's document", body = TenantDocument,
            headers(
                ("ETag" = String, description = "The document's version (`\"42\"`); only for `Marina-Source: store`"),
                ("Marina-Source" = String, description = "`store` (the admin API's) or `file` (the configuration file's, read-only here)"),
            )),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    if let Some(s) = state.tenants.get(&id).filter(|s| s.source == Source::File) {
        // The embedded default tenant has no section in the file: nothing was written for it.
        let doc = if s.doc.is_null() { &json!({}) } else { &s.doc };
        return Ok(HttpResponse::Ok()
            .insert_header(("marina-source", "file"))
            .json(doc));
    }
    match state.docs.get(&id).await? {
        Some(t) => Ok(HttpResponse::Ok()
            .insert_header(("etag", etag(t.version)))
            .insert_header(("marina-source", "store"))
            .json(t.doc)),
        None => Err(Problem::not_found(format!("no tenant {id}"))),
    }
}

/// Record a change that was made (a failure to record it is logged, not the caller's error: the
/// change is in effect and the log line carries it).
pub(super) async fn audit(
    state: &AdminState,
    admin: &super::auth::Admin,
    action: &str,
    tenant: &str,
    change: Value,
) {
    let entry = marina_control::AuditEntry {
        at_ms: marina_core::store::now_ms(),
        actor: admin.subject.clone(),
        action: action.to_owned(),
        tenant: tenant.to_owned(),
        target: None,
        change,
    };
    if let Err(e) = state.audit.append(entry).await {
        tracing::warn!(error = %e, action, tenant, "admin change not recorded in the audit store");
    }
}

/// Check `doc`, store it for `id` as `expect`s, audit and apply it here; its new version.
pub(super) async fn write(
    state: &AdminState,
    admin: &super::auth::Admin,
    id: &str,
    doc: &Value,
    expect: Expect,
    action: &str,
    change: Value,
) -> Result<u64, Problem> {
    let builder = state.tenants.builder();
    let settings = crate::tenants::Builder::parse(doc).map_err(Problem::invalid)?;
    let disabled_now = state.tenants.get(id).is_some_and(|s| s.tenant.settings.disabled);
    if settings.disabled != disabled_now {
        admin.platform_only("suspend or resume tenants")?;
    }
    builder.check_addresses(&settings).map_err(Problem::invalid)?;
    builder.build(id, &settings).await.map_err(Problem::invalid)?;
    let version = state.docs.put(id, doc, expect).await.map_err(write_error)?;
    audit(
        state,
        admin,
        action,
        id,
        json!({"version": version, "change": change}),
    )
    .await;
    if let Err(e) = state.tenants.sync(state.docs.as_ref()).await {
        tracing::warn!(error = %e, "tenant stored but not yet applied here; the watcher will");
    }
    Ok(version)
}

/// The answer to a document write.
fn written(status: StatusCode, version: u64, doc: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("etag", etag(version)))
        .json(doc)
}

/// Create or replace a tenant
///
/// The document is checked exactly like the configuration file's before anything is stored.
/// `If-None-Match: *` creates only; `If-Match: "<etag>"` replaces only that version; without
/// either the write replaces whatever is there.
#[utoipa::path(
    put, path = "/tenants/{id}", operation_id = "putTenant", tag = "tenants",
    params(TenantPath, IfMatch, IfNoneMatch),
    request_body(content = TenantDocument, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced: the document as stored", body = TenantDocument,
            headers(("ETag" = String, description = "The new version"))),
        (status = 201, description = "Created: the document as stored", body = TenantDocument,
            headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn put(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    check_id(&id)?;
    let admin = state.writable(&req, &id).await?;
    let expect = expect(&req)?;
    let doc = parse_body(body).await?;
    let exists = state.docs.get(&id).await?.is_some();
    let (action, status) = if exists {
        ("tenant.replace", StatusCode::OK)
    } else {
        ("tenant.create", StatusCode::CREATED)
    };
    let version = write(&state, &admin, &id, &doc, expect, action, doc.clone()).await?;
    Ok(written(status, version, &doc))
}

/// Change some fields of a tenant
///
/// A JSON merge patch (RFC 7396) of the document: objects merge, `null` removes a key, anything
/// else replaces. Without `If-Match` it applies to the version it was computed on (a concurrent
/// write in between makes it fail with 412 rather than be lost).
#[utoipa::path(
    patch, path = "/tenants/{id}", operation_id = "patchTenant", tag = "tenants",
    params(TenantPath, IfMatch, IfNoneMatch),
    request_body(description = "A JSON merge patch of the tenant document", content(
        (MergePatch = "application/merge-patch+json"),
        (MergePatch = "application/json"),
    )),
    responses(
        (status = 200, description = "The patched document as stored", body = TenantDocument,
            headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
pub async fn patch(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let admin = state.writable(&req, &id).await?;
    let mut expect = expect(&req)?;
    let patch = parse_body(body).await?;
    let Some(current) = state.docs.get(&id).await? else {
        return Err(Problem::not_found(format!("no tenant {id}")));
    };
    // Without If-Match the patch still applies to the version it was computed on: a concurrent
    // write in between is refused, not lost.
    if expect == Expect::Any {
        expect = Expect::Version(current.version);
    }
    if let Expect::Version(v) = expect
        && v != current.version
    {
        return Err(write_error(WriteError::Conflict {
            current: current.version,
        }));
    }
    let mut doc = current.doc;
    json_patch::merge(&mut doc, &patch);
    let version = write(&state, &admin, &id, &doc, expect, "tenant.patch", patch).await?;
    Ok(written(StatusCode::OK, version, &doc))
}

/// Delete a tenant
///
/// Its endpoint answers 404 on every node within a second and its open streams end. Platform
/// administrators only.
#[utoipa::path(
    delete, path = "/tenants/{id}", operation_id = "deleteTenant", tag = "tenants",
    params(TenantPath, IfMatch, IfNoneMatch),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    )
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let admin = state.writable(&req, &id).await?;
    admin.platform_only("delete tenants")?;
    let expect = expect(&req)?;
    if !state.docs.delete(&id, expect).await.map_err(write_error)? {
        return Err(Problem::not_found(format!("no tenant {id}")));
    }
    audit(&state, &admin, "tenant.delete", &id, Value::Null).await;
    if let Err(e) = state.tenants.sync(state.docs.as_ref()).await {
        tracing::warn!(error = %e, "tenant deleted but not yet applied here; the watcher will");
    }
    Ok(HttpResponse::NoContent().finish())
}
