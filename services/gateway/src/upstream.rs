//! Tool sources of a tenant, one file per upstream kind. Each implements
//! [`marina_core::tools::ToolProvider`]; [`providers`] builds a tenant's list from its settings.

pub mod builtin;
pub mod egress;
pub mod health;
pub mod http_tool;
pub mod mcp;
pub mod transport;

use std::sync::Arc;

use marina_core::settings::UpstreamSettings;
use marina_core::tools::ToolProvider;

/// What every upstream of this node shares: the guarded HTTP client and the egress policy.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Egress policy (SSRF guard).
    pub policy: egress::Policy,
    /// HTTP client with the guarded resolver.
    pub client: reqwest::Client,
    /// The same, lean, for MCP upstreams' POSTs (`transport.rs`).
    pub transport: transport::Transport,
    /// What this node sees of every upstream.
    pub health: Arc<health::HealthBook>,
}

/// An upstream's configured URL: it must parse and be http or https (configuration errors name
/// `what`, e.g. `mcp upstream files`).
pub fn http_url(what: &str, url: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("{what}: invalid url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{what}: the url must be http or https"));
    }
    Ok(url)
}

/// The headers an upstream gets on every request: its static headers and its bearer token (from an
/// environment variable or a file) — the tenant's credentials, never the client's. `what` names the
/// upstream in error messages.
pub fn credential_headers(
    what: &str,
    headers: &std::collections::BTreeMap<String, String>,
    bearer_env: Option<&str>,
    bearer_file: Option<&std::path::Path>,
) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let k =
            HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("{what}: invalid header name {k:?}"))?;
        let v = HeaderValue::from_str(v).map_err(|_| format!("{what}: invalid value for header {k}"))?;
        out.insert(k, v);
    }
    let token = match (bearer_env, bearer_file) {
        (Some(var), None) => {
            Some(std::env::var(var).map_err(|_| format!("{what}: environment variable {var} is not set"))?)
        }
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("{what}: cannot read bearer_file {}: {e}", path.display()))?,
        ),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(format!("{what}: give bearer_env or bearer_file, not both")),
    };
    if let Some(t) = token {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
            .map_err(|_| format!("{what}: the bearer token is not a valid header value"))?;
        v.set_sensitive(true);
        out.insert(AUTHORIZATION, v);
    }
    Ok(out)
}

/// Build the providers configured for a tenant.
pub fn providers(
    tenant: &str,
    upstreams: &[UpstreamSettings],
    shared: &Upstreams,
) -> Result<Vec<Arc<dyn ToolProvider>>, String> {
    upstreams
        .iter()
        .map(|u| match u {
            UpstreamSettings::Builtin { tools } => {
                builtin::Builtin::new(tools.as_deref()).map(|b| Arc::new(b) as Arc<dyn ToolProvider>)
            }
            UpstreamSettings::Http(s) => http_tool::HttpTool::new(s, shared.client.clone(), shared.policy)
                .map(|t| Arc::new(t.with_health(shared.health.of(tenant, &s.name))) as Arc<dyn ToolProvider>),
            UpstreamSettings::Mcp(s) => mcp::McpUpstream::new(s, shared)
                .map(|t| Arc::new(t.with_health(shared.health.of(tenant, &s.name))) as Arc<dyn ToolProvider>),
        })
        .collect()
}
