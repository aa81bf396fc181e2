//! `/admin/v1/tenants/{id}/api-keys`: create a tenant API key (returned once; only its SHA-256
//! is stored, in the tenant document's `auth.api_keys` like a configured one), list them (never a
//! secret; with each key's last use across the cluster) and revoke one. A revoked key is refused
//! on every node within a second.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use marina_auth::{digest, generate_key, key_id};
use marina_control::Expect;
use serde_json::{Value, json};

use super::AdminState;
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

/// `GET …/api-keys`.
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
    let items: Vec<Value> = served
        .tenant
        .settings
        .auth
        .iter()
        .flat_map(|a| &a.api_keys)
        .map(|k| {
            let kid = key_id(&k.sha256);
            json!({
                "id": kid,
                "subject": k.subject,
                "roles": k.roles,
                "expires": k.expires.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                "lastUsedMs": used.get(&kid),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"items": items})))
}

/// `POST …/api-keys {subject, roles?, expires?}`: 201 with the key, shown this once.
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
    Ok(HttpResponse::Created()
        .insert_header(("etag", format!("\"{version}\"")))
        .json(json!({
            "id": kid,
            "key": key,
            "subject": entry["subject"],
            "roles": entry.get("roles").cloned().unwrap_or(json!([])),
            "expires": entry.get("expires"),
        })))
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

/// `DELETE …/api-keys/{key}`: 204.
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
