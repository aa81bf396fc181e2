//! Tool sources of a tenant, one file per upstream kind. Each implements
//! [`marina_core::tools::ToolProvider`]; [`providers`] builds a tenant's list from its settings.

pub mod builtin;
pub mod egress;
pub mod http_tool;

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
}

/// Build the providers configured for a tenant.
pub fn providers(
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
                .map(|t| Arc::new(t) as Arc<dyn ToolProvider>),
        })
        .collect()
}
