//! A tenant at run time: its settings and its tool providers.

use crate::settings::TenantSettings;
use crate::tools::Providers;

/// One tenant, ready to serve.
#[derive(Debug)]
pub struct Tenant {
    /// Tenant id (the `{tenant}` of `/t/{tenant}/mcp`).
    pub id: String,
    /// Origins, hosts, limits.
    pub settings: TenantSettings,
    /// Its tool sources, in configuration order.
    pub providers: Providers,
    /// Its policy; `None`: every caller may use everything (a tenant without `rbac`).
    pub authorizer: Option<std::sync::Arc<dyn crate::access::Authorizer>>,
    /// Its tools' compiled input schemas.
    pub schemas: crate::schema::ArgumentCheck,
}
