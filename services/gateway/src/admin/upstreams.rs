//! `/admin/v1/tenants/{id}/upstreams`: the status of each configured upstream as the cluster
//! saw it — reachable or not (its latest exchange, on any node), the last error, the last
//! success, how many tools, resources and prompts it last listed. Nodes report what they see
//! (`upstream/health.rs`) at most a second late; this node's unreported facts are flushed first.

use std::collections::HashMap;

use actix_web::{HttpRequest, HttpResponse, web};
use marina_control::Report;
use marina_core::settings::UpstreamSettings;
use serde::Serialize;
use utoipa::ToSchema;

use super::AdminState;
use super::openapi::{Forbidden, NotFound, TenantPath, Unauthorized, Unavailable};
use super::problem::Problem;

/// One configured upstream as the cluster last saw it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamStatus {
    /// Its configured name (`builtin` for Marina's built-in tools).
    name: String,
    /// `mcp`, `http` or `builtin`.
    kind: &'static str,
    /// Its configured URL; null for the built-in tools.
    #[schema(required = true)]
    url: Option<String>,
    /// The outcome of its latest exchange on any node; null before any.
    #[schema(required = true)]
    reachable: Option<bool>,
    #[schema(required = true)]
    last_error: Option<String>,
    /// Unix ms.
    #[schema(required = true)]
    last_error_ms: Option<u64>,
    /// Unix ms.
    #[schema(required = true)]
    last_success_ms: Option<u64>,
    /// Tools it last listed (after its include/exclude filters); null before any listing.
    #[schema(required = true)]
    tools: Option<u64>,
    #[schema(required = true)]
    resources: Option<u64>,
    #[schema(required = true)]
    prompts: Option<u64>,
    /// The node that saw its latest exchange.
    #[schema(required = true)]
    node: Option<String>,
}

/// The status of a tenant's upstreams.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpstreamStatusList {
    items: Vec<UpstreamStatus>,
}

/// Upstream status
///
/// Each configured upstream as the cluster last saw it (at most a second or two behind).
#[utoipa::path(
    get, path = "/tenants/{id}/upstreams", operation_id = "getUpstreamStatus", tag = "upstreams",
    params(TenantPath),
    responses(
        (status = 200, description = "Its upstreams, in configuration order", body = UpstreamStatusList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub async fn status(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, Problem> {
    state.auth.for_tenant(&req, &state.tenants, &id).await?;
    let Some(served) = state.tenants.get(&id) else {
        return Err(Problem::not_found(format!("no tenant {id}")));
    };
    let node = super::node_id(&state.node.config.instance);
    let tenants = &state.tenants;
    if let Err(e) = state
        .health
        .flush(node, state.reports.as_ref(), |t| tenants.get(t).is_some())
        .await
    {
        tracing::debug!(error = %e, "this node's upstream reports not flushed");
    }
    let mut facts: HashMap<(String, String), Report> = HashMap::new();
    for r in state.reports.get(&id).await? {
        facts.insert((r.upstream.clone(), r.fact.clone()), r);
    }
    let tenant = &served.tenant;
    let items = tenant
        .settings
        .upstreams
        .iter()
        .zip(&tenant.providers)
        .map(|(u, provider)| match u {
            UpstreamSettings::Builtin { .. } => UpstreamStatus {
                name: "builtin".into(),
                kind: "builtin",
                url: None,
                reachable: Some(true),
                last_error: None,
                last_error_ms: None,
                last_success_ms: None,
                tools: Some(provider.tools().len() as u64),
                resources: None,
                prompts: None,
                node: None,
            },
            UpstreamSettings::Http(s) => observed(&s.name, "http", &s.url, &facts),
            UpstreamSettings::Mcp(s) => observed(&s.name, "mcp", &s.url, &facts),
        })
        .collect();
    Ok(HttpResponse::Ok().json(UpstreamStatusList { items }))
}

/// The status of upstream `name` from the cluster's latest `facts`.
fn observed(
    name: &str,
    kind: &'static str,
    url: &str,
    facts: &HashMap<(String, String), Report>,
) -> UpstreamStatus {
    let fact = |f: &str| facts.get(&(name.to_owned(), f.to_owned()));
    let ok = fact("ok");
    let error = fact("error");
    // An error's value is `<node>|<message>`.
    let (error_node, message) = match error {
        Some(e) => e
            .value
            .split_once('|')
            .map_or((None, Some(e.value.clone())), |(n, m)| {
                (Some(n.to_owned()), Some(m.to_owned()))
            }),
        None => (None, None),
    };
    let (reachable, node) = match (ok, error) {
        (None, None) => (None, None),
        (Some(o), e) if e.is_none_or(|e| o.at_ms >= e.at_ms) => (Some(true), Some(o.value.clone())),
        _ => (Some(false), error_node),
    };
    let count = |f: &str| fact(f).and_then(|r| r.value.parse::<u64>().ok());
    UpstreamStatus {
        name: name.to_owned(),
        kind,
        url: Some(url.to_owned()),
        reachable,
        last_error: message,
        last_error_ms: error.map(|e| e.at_ms),
        last_success_ms: ok.map(|o| o.at_ms),
        // An HTTP tool is one tool, whatever was seen of it.
        tools: if kind == "http" { Some(1) } else { count("tools") },
        resources: count("resources"),
        prompts: count("prompts"),
        node,
    }
}
