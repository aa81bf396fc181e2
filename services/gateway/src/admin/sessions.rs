//! `/admin/v1/tenants/{id}/sessions`: a tenant's live sessions across the cluster — list, inspect,
//! end one or all of a principal's. A session is named by its tag, the first 8 characters of its
//! id, as in the logs: the id itself is never shown (it names the session's streams). Ending a
//! session deletes its keys and stops its actor on whichever node runs it; every node answers
//! 404 for it from then on.

use actix_web::{HttpRequest, HttpResponse, web};
use marina_core::domain::SessionId;
use marina_core::store::{SessionRecord, SessionStore};
use marina_core::telemetry::session_tag;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, TenantPath, Unauthorized, Unavailable};
use super::problem::Problem;
use super::tenants::audit;

/// Sessions of one tenant an administrator's request looks at, at most.
const MAX_SCAN: usize = 100_000;
/// Page size: default and maximum.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// `?principal=&limit=&after=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sessions of this subject.
    principal: Option<String>,
    /// Sessions per page: 1-1000, default 100.
    #[param(minimum = 0)]
    limit: Option<usize>,
    /// The tag after which the page starts (the previous page's `next`).
    after: Option<String>,
}

/// `?principal=`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PrincipalQuery {
    /// The subject whose sessions end (required).
    principal: Option<String>,
}

/// Who a session is bound to.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPrincipal {
    /// Who vouched for the subject: an OAuth issuer, `api-key` or `anonymous`.
    issuer: String,
    subject: String,
}

/// A live session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// Its tag: the first 8 characters of its id, as in the logs.
    id: String,
    /// Null on a tenant without authentication.
    #[schema(required = true)]
    principal: Option<SessionPrincipal>,
    protocol_version: String,
    /// As the client sent it in `initialize`.
    #[schema(value_type = Object)]
    client_info: Value,
    /// Unix ms.
    created_ms: u64,
    /// Unix ms (its last write: within a tenth of the idle TTL of its last use).
    last_used_ms: u64,
    /// Unix ms: its absolute end, whatever the activity.
    expires_ms: u64,
    /// The node running its actor; null when none does (passivated).
    #[schema(required = true)]
    node: Option<String>,
}

/// A page of sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionPage {
    items: Vec<SessionSummary>,
    /// The `after` of the next page; null on the last one.
    #[schema(required = true)]
    next: Option<String>,
}

/// One session in detail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    #[serde(flatten)]
    summary: SessionSummary,
    /// Set by `logging/setLevel`.
    #[schema(required = true)]
    log_level: Option<String>,
    /// `notifications/initialized` received.
    initialized: bool,
    #[schema(value_type = Object)]
    client_capabilities: Value,
    /// Upstream MCP servers it has a session with.
    upstreams: Vec<String>,
    inflight_calls: usize,
}

/// How many sessions ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Terminated {
    terminated: u64,
}

/// A live session of tenant `id`, loaded.
struct Found {
    id: SessionId,
    rec: SessionRecord,
}

/// The tenant's sessions in tag order, from the store's index (records not loaded yet).
async fn indexed(store: &dyn SessionStore, tenant: &str) -> Result<Vec<SessionId>, Problem> {
    let mut ids = store.tenant_sessions(tenant, MAX_SCAN).await?;
    ids.sort_by(|a, b| {
        session_tag(a.as_str())
            .cmp(session_tag(b.as_str()))
            .then(a.cmp(b))
    });
    Ok(ids)
}

/// Load session `id` if it still lives and belongs to `tenant`.
async fn load(store: &dyn SessionStore, tenant: &str, id: SessionId) -> Result<Option<Found>, Problem> {
    let rec = store.load_session(&id).await?;
    Ok(rec
        .filter(|r| r.tenant == tenant && r.expires_at_ms > marina_core::store::now_ms())
        .map(|rec| Found { id, rec }))
}

fn subject_is(rec: &SessionRecord, subject: &str) -> bool {
    rec.principal.as_ref().is_some_and(|p| p.subject == subject)
}

/// The node running a session's actor (the node id of its lease holder), if any runs one.
async fn node_of(store: &dyn SessionStore, id: &SessionId) -> Result<Option<String>, Problem> {
    Ok(store
        .lease_holder(id)
        .await?
        .map(|instance| super::node_id(&instance).to_owned()))
}

async fn summary(store: &dyn SessionStore, s: &Found) -> Result<SessionSummary, Problem> {
    Ok(SessionSummary {
        id: session_tag(s.id.as_str()).to_owned(),
        principal: s.rec.principal.as_ref().map(|p| SessionPrincipal {
            issuer: p.issuer.clone(),
            subject: p.subject.clone(),
        }),
        protocol_version: s.rec.protocol_version.clone(),
        client_info: s.rec.client_info.clone(),
        created_ms: s.rec.created_at_ms,
        last_used_ms: s.rec.last_used_ms.max(s.rec.created_at_ms),
        expires_ms: s.rec.expires_at_ms,
        node: node_of(store, &s.id).await?,
    })
}

/// The one live session of `tenant` tagged `tag`.
async fn find(state: &AdminState, tenant: &str, tag: &str) -> Result<Found, Problem> {
    let store = state.node.store.as_ref();
    let mut found = None;
    for id in indexed(store, tenant).await? {
        if session_tag(id.as_str()) != tag {
            continue;
        }
        if let Some(s) = load(store, tenant, id).await? {
            if found.is_some() {
                // 48 random bits: two live sessions of one tenant sharing them is all but
                // impossible, but never act on the wrong one.
                return Err(Problem::new(
                    actix_web::http::StatusCode::CONFLICT,
                    "Ambiguous session tag",
                    format!("more than one session of tenant {tenant} is tagged {tag}"),
                ));
            }
            found = Some(s);
        }
    }
    found.ok_or_else(|| Problem::not_found(format!("tenant {tenant} has no live session {tag}")))
}

/// List a tenant's sessions
///
/// Its live sessions, whichever node runs them, in tag order, a page at a time.
#[utoipa::path(
    get, path = "/tenants/{id}/sessions", operation_id = "listSessions", tag = "sessions",
    params(TenantPath, ListQuery),
    responses(
        (status = 200, description = "A page of sessions", body = SessionPage),
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
    id: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, Problem> {
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!("limit must be 1..={MAX_PAGE}")).with_field("limit"));
    }
    let store = state.node.store.as_ref();
    let mut items = Vec::new();
    let mut more = false;
    for sid in indexed(store, &id).await? {
        if q.after.as_deref().is_some_and(|a| session_tag(sid.as_str()) <= a) {
            continue;
        }
        let Some(s) = load(store, &id, sid).await? else {
            continue;
        };
        if q.principal.as_deref().is_some_and(|p| !subject_is(&s.rec, p)) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(summary(store, &s).await?);
    }
    let next = more.then(|| items.last().map(|i| i.id.clone())).flatten();
    Ok(HttpResponse::Ok().json(SessionPage { items, next }))
}

/// Inspect a session
#[utoipa::path(
    get, path = "/tenants/{id}/sessions/{sid}", operation_id = "getSession", tag = "sessions",
    params(TenantPath, ("sid" = String, Path, description = "The session's tag (8 characters)")),
    responses(
        (status = 200, description = "The session", body = SessionDetail),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, tag) = path.into_inner();
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let s = find(&state, &id, &tag).await?;
    Ok(HttpResponse::Ok().json(SessionDetail {
        summary: summary(state.node.store.as_ref(), &s).await?,
        log_level: s.rec.log_level.clone(),
        initialized: s.rec.initialized,
        client_capabilities: s.rec.client_capabilities.clone(),
        upstreams: s.rec.upstreams.keys().cloned().collect(),
        inflight_calls: s.rec.inflight.len(),
    }))
}

/// End a session
///
/// Its keys are deleted and its actor stops on whichever node runs it; every node answers 404
/// for it from then on.
#[utoipa::path(
    delete, path = "/tenants/{id}/sessions/{sid}", operation_id = "endSession", tag = "sessions",
    params(TenantPath, ("sid" = String, Path, description = "The session's tag (8 characters)")),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    )
)]
pub async fn end(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, tag) = path.into_inner();
    let admin = state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let s = find(&state, &id, &tag).await?;
    state.node.end_session(&s.id, &s.rec).await?;
    let change = json!({"session": tag, "principal": s.rec.principal.as_ref().map(|p| &p.subject)});
    audit(&state, &admin, "session.end", &id, change).await;
    Ok(HttpResponse::NoContent().finish())
}

/// End a principal's sessions
///
/// Every live session of the subject `principal`; how many ended.
#[utoipa::path(
    delete, path = "/tenants/{id}/sessions", operation_id = "endPrincipalSessions", tag = "sessions",
    params(TenantPath, PrincipalQuery),
    responses(
        (status = 200, description = "How many ended", body = Terminated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn end_principal(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    q: web::Query<PrincipalQuery>,
) -> Result<HttpResponse, Problem> {
    let admin = state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let Some(subject) = q.principal.as_deref().filter(|p| !p.is_empty()) else {
        return Err(
            Problem::bad_request("name the principal whose sessions end: ?principal=SUBJECT")
                .with_field("principal"),
        );
    };
    let store = state.node.store.as_ref();
    let mut ended = 0u64;
    for sid in indexed(store, &id).await? {
        if let Some(s) = load(store, &id, sid).await?
            && subject_is(&s.rec, subject)
        {
            state.node.end_session(&s.id, &s.rec).await?;
            ended += 1;
        }
    }
    audit(
        &state,
        &admin,
        "session.end_principal",
        &id,
        json!({"principal": subject, "terminated": ended}),
    )
    .await;
    Ok(HttpResponse::Ok().json(Terminated { terminated: ended }))
}
