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

impl Tenant {
    /// May `access` do `action` on `object`? Everything, on a tenant without a policy. Both eras
    /// ask this one question (lists are filtered by it, requests for one item decided by it).
    pub fn permits(&self, access: &crate::access::Access, object: &str, action: &str) -> bool {
        self.authorizer
            .as_ref()
            .is_none_or(|a| a.allows(access, object, action))
    }

    /// Why `arguments` cannot be passed to `tool` (its `inputSchema` refuses them, or cannot be
    /// compiled) — `None` when they can, or the tenant leaves checking to its tools. A tool
    /// error's text (not a protocol error), so a model can correct its call.
    pub fn argument_problem(
        &self,
        tool: &crate::tools::ToolDef,
        arguments: Option<&serde_json::Value>,
    ) -> Option<String> {
        use crate::schema::Invalid;
        if !self.settings.validate_arguments {
            return None;
        }
        let schema = tool.definition.get("inputSchema")?;
        let none = serde_json::Value::Object(serde_json::Map::new());
        let args = match arguments {
            Some(a @ serde_json::Value::Object(_)) => a,
            _ => &none,
        };
        match self.schemas.check(schema, args) {
            Ok(()) => None,
            Err(Invalid::Arguments(p)) => Some(format!("invalid arguments: {}", p.join("; "))),
            Err(Invalid::Schema) => {
                Some("the tool's input schema is not a valid JSON Schema; it cannot be called".to_owned())
            }
        }
    }
}
