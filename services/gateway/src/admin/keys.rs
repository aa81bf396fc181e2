//! `/admin/v1/tenants/{id}/api-keys`: create a tenant API key (returned once; only its SHA-256
//! is stored, in the tenant document's `auth.api_keys` like a configured one), list them (never a
//! secret; with each key's last use across the cluster) and revoke one. A revoked key is refused
//! on every node within a second.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use marina_auth::{digest, generate_key, key_id};
use marina_control::Expect;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::AdminState;
use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, TenantPath, Unauthorized,
    Unavailable,
};
use super::problem::Problem;
use super::tenants::{parse_body, write, write_error};

/// Attempts of a key write that raced another write of the tenant.
const ATTEMPTS: usize = 3;

fn keys_of(doc: &Value) -> Vec<Value> {
    doc.pointer("/auth/api_keys")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A tenant's API key, without its secret.
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyInfo {
    /// The first 16 hex digits of the key's SHA-256.
    #[schema(example = "3f2a9c01d4e5b6a7")]
    id: String,
    subject: String,
    roles: Vec<String>,
    /// RFC 3339; null: never expires.
    #[schema(required = true)]
    expires: Option<String>,
    /// The last time any node accepted the key (Unix ms); null when never used.
    #[schema(required = true)]
    last_used_ms: Option<u64>,
}

/// A tenant's API keys.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ApiKeyList {
    items: Vec<ApiKeyInfo>,
}

/// What a new key is for.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"subject": "ci-bot", "roles": ["operator"], "expires": "2027-06-30T00:00:00Z"}))]
#[allow(dead_code)] // documentation only: the fields are checked as the tenant document's
pub struct NewApiKey {
    /// Who presents the key.
    subject: String,
    /// Its roles.
    #[schema(nullable = false)]
    roles: Option<Vec<String>>,
    /// When it stops being accepted (RFC 3339).
    expires: Option<String>,
}

/// A key just made: the only time its secret is shown.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The first 16 hex digits of the key's SHA-256.
    id: String,
    /// The key itself (`mk_…`); only its SHA-256 is stored.
    key: String,
    subject: String,
    roles: Vec<String>,
    /// RFC 3339; null: never expires.
    #[schema(required = true)]
    expires: Option<String>,
}

/// A key's path: its tenant and its id.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // documentation only: the handler takes (id, key)
pub struct KeyPath {
    /// The tenant's id.
    id: String,
    /// The key's id: the first 16 hex digits of its SHA-256 (as listed; any other value is a 404).
    #[param(pattern = "^[0-9a-f]{16}$", example = "3f2a9c01d4e5b6a7")]
    key: String,
}

/// List a tenant's API keys
///
/// Never a secret; with each key's last use across the cluster.
#[utoipa::path(
    get, path = "/tenants/{id}/api-keys", operation_id = "listApiKeys", tag = "api-keys",
    params(TenantPath),
    responses(
        (status = 200, description = "The tenant's keys", body = ApiKeyList),
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
) -> Result<HttpResponse, Problem> {
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let Some(served) = state.tenants.get(&id) else {
        return Err(Problem::not_found(format!("no tenant {id}")));
    };
    let used = state.usage.get(&id).await?;
    let items = served
        .tenant
        .settings
        .auth
        .iter()
        .flat_map(|a| &a.api_keys)
        .map(|k| {
            let kid = key_id(&k.sha256);
            ApiKeyInfo {
                last_used_ms: used.get(&kid).copied(),
                id: kid,
                subject: k.subject.clone(),
                roles: k.roles.clone(),
                expires: k
                    .expires
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(ApiKeyList { items }))
}

/// Create a tenant API key
///
/// 201 with the key, shown this once; only its SHA-256 is stored, in the tenant document's
/// `auth.api_keys`. An invalid field is a 400 naming it.
#[utoipa::path(
    post, path = "/tenants/{id}/api-keys", operation_id = "createApiKey", tag = "api-keys",
    params(TenantPath),
    request_body(content = NewApiKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The key, shown this once", body = CreatedApiKey,
            headers(("ETag" = String, description = "The tenant document's new version")),
            links(("revoke" = (operation_id = "revokeApiKey", description = "Revoke this key",
                parameters(("id" = "$request.path.id"), ("key" = "$response.body#/id")))))),
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
pub async fn create(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, Problem> {
    let id = id.into_inner();
    let admin = state.writable(&req, &id).await?;
    let ask = parse_body(body).await?;
    let unknown: Vec<&String> = ask
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| !["subject", "roles", "expires"].contains(&k.as_str()))
        .collect();
    if let Some(k) = unknown.first() {
        return Err(Problem::invalid(crate::tenants::Invalid {
            field: (*k).clone(),
            detail: "unknown field; expected subject, roles, expires".into(),
        }));
    }
    let key = generate_key();
    let mut entry = json!({"subject": ask["subject"], "sha256": digest(&key)});
    if let Some(roles) = ask.get("roles") {
        entry["roles"] = roles.clone();
    }
    if let Some(expires) = ask.get("expires") {
        entry["expires"] = expires.clone();
    }
    let kid = key_id(&digest(&key));
    let change = json!({"id": kid, "subject": ask["subject"], "roles": entry.get("roles")});
    let version = edit_keys(&state, &admin, &id, "api_key.create", change, |keys| {
        keys.push(entry.clone());
        Ok(Some(keys.len() - 1))
    })
    .await?;
    // The write checked the entry as the document's: subject a string, roles strings, expires
    // an RFC 3339 time or null.
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    Ok(HttpResponse::Created()
        .insert_header(("etag", format!("\"{version}\"")))
        .json(CreatedApiKey {
            id: kid,
            key,
            subject: entry["subject"].as_str().unwrap_or_default().to_owned(),
            roles: strings(entry.get("roles")),
            expires: entry.get("expires").and_then(Value::as_str).map(str::to_owned),
        }))
}

/// Change tenant `id`'s keys with `edit` and write the document (checked, audited, applied),
/// again on the current version if another write came in between. `edit` returns the index of
/// the entry the request describes, if any: a problem with one of its fields is named as the
/// request's own field.
async fn edit_keys(
    state: &AdminState,
    admin: &super::auth::Admin,
    id: &str,
    action: &str,
    change: Value,
    edit: impl Fn(&mut Vec<Value>) -> Result<Option<usize>, Problem>,
) -> Result<u64, Problem> {
    for attempt in 1..=ATTEMPTS {
        let Some(current) = state.docs.get(id).await? else {
            return Err(Problem::not_found(format!("no tenant {id}")));
        };
        let mut doc = current.doc;
        let mut keys = keys_of(&doc);
        let requested = edit(&mut keys)?;
        if !doc.get("auth").is_some_and(Value::is_object) {
            doc["auth"] = json!({});
        }
        doc["auth"]["api_keys"] = Value::Array(keys);
        let expect = Expect::Version(current.version);
        match write(state, admin, id, &doc, expect, action, change.clone()).await {
            Ok(version) => return Ok(version),
            Err(p) if p.status() == StatusCode::PRECONDITION_FAILED && attempt < ATTEMPTS => {}
            Err(p) => {
                return Err(match requested {
                    Some(i) => p.with_field_prefix(&format!("auth.api_keys[{i}].")),
                    None => p,
                });
            }
        }
    }
    Err(write_error(marina_control::WriteError::Conflict { current: 0 }))
}

/// Revoke a tenant API key
///
/// Refused on every node within a second.
#[utoipa::path(
    delete, path = "/tenants/{id}/api-keys/{key}", operation_id = "revokeApiKey", tag = "api-keys",
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 503, response = Unavailable),
    )
)]
pub async fn revoke(
    req: HttpRequest,
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, Problem> {
    let (id, kid) = path.into_inner();
    let admin = state.writable(&req, &id).await?;
    let gone = Problem::not_found(format!("tenant {id} has no key {kid}"));
    edit_keys(
        &state,
        &admin,
        &id,
        "api_key.revoke",
        json!({"id": kid}),
        |keys| {
            let before = keys.len();
            keys.retain(|k| k["sha256"].as_str().is_none_or(|d| key_id(d) != kid));
            if keys.len() == before {
                return Err(gone.clone());
            }
            Ok(None)
        },
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
