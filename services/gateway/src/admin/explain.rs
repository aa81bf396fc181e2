//! `POST /admin/v1/tenants/{id}/explain {subject, roles?, object, action}`: the decision of the
//! tenant's policy, the rule that made it and the role chain that led there — the same engine as
//! `marina policy explain`.

use actix_web::{HttpRequest, HttpResponse, web};
use marina_core::access::Access;
use serde_json::json;

use super::AdminState;
use super::problem::Problem;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    subject: String,
    #[serde(default)]
    roles: Vec<String>,
    /// `tool:<name>`, `resource:<uri>`, `prompt:<name>`.
    object: String,
    /// `call`, `read`, `get`, `list`.
    action: String,
}

/// Explain a decision.
pub async fn explain(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, Problem> {
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let ask: Ask = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("expected {{subject, roles?, object, action}}: {e}")))?;
    let Some(served) = state.tenants.get(&id) else {
        return Err(Problem::not_found(format!("no tenant {id}")));
    };
    let Some(rbac) = &served.tenant.settings.rbac else {
        return Ok(HttpResponse::Ok().json(json!({
            "decision": "allow", "rule": null, "chain": [],
            "reason": "the tenant has no policy: every authenticated caller may use everything",
        })));
    };
    let policy = marina_policy::TenantPolicy::new(&rbac.policy)
        .await
        .map_err(|e| Problem::bad_request(format!("the tenant's policy does not build: {e}")))?;
    let ex = policy.explain(&Access::new(ask.subject, ask.roles), &ask.object, &ask.action);
    Ok(HttpResponse::Ok().json(json!({
        "decision": if ex.allowed { "allow" } else { "deny" },
        "rule": ex.rule.map(|r| r.to_string()),
        "chain": ex.chain,
    })))
}
