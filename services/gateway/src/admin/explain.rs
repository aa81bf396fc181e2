//! `POST /admin/v1/tenants/{id}/explain {subject, roles?, object, action}`: the decision of the
//! tenant's policy, the rule that made it and the role chain that led there — the same engine as
//! `marina policy explain`.

use actix_web::{HttpRequest, HttpResponse, web};
use marina_core::access::Access;
use utoipa::ToSchema;

use super::AdminState;
use super::openapi::{BadRequest, Forbidden, NotFound, PayloadTooLarge, TenantPath, Unauthorized};
use super::problem::Problem;
use super::tenants::read_body;

/// The question: may `subject` (with its credential's `roles`) do `action` on `object`?
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ExplainRequest, example = json!({"subject": "alice", "roles": [], "object": "tool:admin_reset", "action": "call"}))]
pub struct Ask {
    subject: String,
    /// The credential's roles.
    #[serde(default)]
    roles: Vec<String>,
    /// `tool:<name>`, `resource:<uri>`, `prompt:<name>`.
    object: String,
    /// `call`, `read`, `get`, `list`.
    action: String,
}

/// A decision.
#[derive(Debug, Clone, Copy, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// The policy's answer.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(example = json!({"decision": "deny", "rule": "p, operator, tool:admin_*, call, deny", "chain": ["alice", "admin", "operator"]}))]
pub struct Explanation {
    decision: Decision,
    /// The rule that decided; null when none did (the default) or the tenant has no policy.
    #[schema(required = true)]
    rule: Option<String>,
    /// The role chain from the subject to the rule's role.
    chain: Vec<String>,
    /// Why, when no policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<&'static str>,
}

/// Explain a policy decision
///
/// The tenant's policy answers for a subject (and credential roles), an object and an action,
/// with the rule that decided and the role chain that led to it. A tenant without a policy
/// allows everything to its authenticated callers.
#[utoipa::path(
    post, path = "/tenants/{id}/explain", operation_id = "explainDecision", tag = "policy",
    params(TenantPath),
    request_body(content = Ask, content_type = "application/json"),
    responses(
        (status = 200, description = "The decision", body = Explanation),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
    )
)]
pub async fn explain(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, Problem> {
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    // Read here rather than by a `Bytes` extractor, whose refusal of a large body is not a
    // problem document.
    let body = read_body(body).await?;
    let ask: Ask = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("expected {{subject, roles?, object, action}}: {e}")))?;
    let Some(served) = state.tenants.get(&id) else {
        return Err(Problem::not_found(format!("no tenant {id}")));
    };
    let Some(rbac) = &served.tenant.settings.rbac else {
        return Ok(HttpResponse::Ok().json(Explanation {
            decision: Decision::Allow,
            rule: None,
            chain: vec![],
            reason: Some("the tenant has no policy: every authenticated caller may use everything"),
        }));
    };
    let policy = marina_policy::TenantPolicy::new(&rbac.policy)
        .await
        .map_err(|e| Problem::bad_request(format!("the tenant's policy does not build: {e}")))?;
    let ex = policy.explain(&Access::new(ask.subject, ask.roles), &ask.object, &ask.action);
    Ok(HttpResponse::Ok().json(Explanation {
        decision: if ex.allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        rule: ex.rule.map(|r| r.to_string()),
        chain: ex.chain,
        reason: None,
    }))
}
