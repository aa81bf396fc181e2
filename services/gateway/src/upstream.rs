//! Tool sources of a tenant, one file per upstream kind. Each implements
//! [`marina_core::tools::ToolProvider`]; [`providers`] builds a tenant's list from its settings.

pub mod builtin;

use std::sync::Arc;

use marina_core::settings::UpstreamSettings;
use marina_core::tools::ToolProvider;

/// Build the providers configured for a tenant.
pub fn providers(upstreams: &[UpstreamSettings]) -> Result<Vec<Arc<dyn ToolProvider>>, String> {
    upstreams
        .iter()
        .map(|u| match u {
            UpstreamSettings::Builtin { tools } => {
                builtin::Builtin::new(tools.as_deref()).map(|b| Arc::new(b) as Arc<dyn ToolProvider>)
            }
        })
        .collect()
}
