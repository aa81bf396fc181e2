//! A tenant at run time: its settings and its tool catalog.

use crate::settings::TenantSettings;
use crate::tools::Catalog;

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    /// Tenant id (the `{tenant}` of `/t/{tenant}/mcp`).
    pub id: String,
    /// Origins, hosts, limits.
    pub settings: TenantSettings,
    /// Its tools.
    pub catalog: Catalog,
}
