//! The tool interface: what every upstream kind (built-in, later MCP servers and HTTP tools)
//! implements, and the per-tenant catalog the session actor dispatches through.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::protocol::RpcError;

/// One tool as published in `tools/list`.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// Tool name (unique within the tenant, `[A-Za-z0-9_.-]{1,128}`).
    pub name: String,
    /// The full `Tool` object sent to clients (name, description, inputSchema, annotations…).
    pub definition: Value,
}

impl ToolDef {
    /// A tool the gateway may safely re-run after a node failure: its annotations say read-only
    /// and idempotent. (Annotations are hints from the tool's owner; for built-ins we are the
    /// owner, and upstream kinds decide for their own tools.)
    pub fn replayable(&self) -> bool {
        let a = &self.definition["annotations"];
        a["readOnlyHint"] == Value::Bool(true) && a["idempotentHint"] == Value::Bool(true)
    }
}

/// What a running tool call can do towards its client. Messages go on the call's own stream.
#[async_trait(?Send)]
pub trait CallContext {
    /// Did the client declare this capability (top-level key of its `capabilities`)?
    fn client_supports(&self, capability: &str) -> bool;
    /// Send `notifications/progress` if the request carried a progress token.
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>);
    /// Send `notifications/message` if `level` is at or above the session's log level.
    async fn log(&self, level: &str, logger: &str, data: Value);
    /// Send a request to the client and wait for its answer (which may arrive at any node).
    async fn request_client(&self, method: &str, params: Value) -> Result<Value, RpcError>;
    /// Fires when the client cancels the request.
    fn cancellation(&self) -> CancellationToken;
}

/// A source of tools.
#[async_trait(?Send)]
pub trait ToolProvider: Send + Sync + std::fmt::Debug {
    /// The tools it offers.
    fn tools(&self) -> Vec<ToolDef>;
    /// Run one tool. Returns a `CallToolResult`; tool failures (including invalid arguments) are
    /// results with `isError: true`, protocol failures are `Err`.
    async fn call(&self, name: &str, arguments: Value, ctx: &dyn CallContext) -> Result<Value, RpcError>;
}

/// A tenant's tools, in deterministic (name) order, with the provider of each.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tools: Vec<ToolDef>,
    owners: HashMap<String, (usize, Arc<dyn ToolProvider>)>,
}

impl Catalog {
    /// Build a catalog from providers; a later provider cannot shadow an earlier tool's name.
    pub fn new(providers: Vec<Arc<dyn ToolProvider>>) -> Self {
        let mut tools: Vec<(ToolDef, Arc<dyn ToolProvider>)> = Vec::new();
        for p in providers {
            for t in p.tools() {
                if !tools.iter().any(|(d, _)| d.name == t.name) {
                    tools.push((t, p.clone()));
                }
            }
        }
        tools.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let owners = tools
            .iter()
            .enumerate()
            .map(|(i, (d, p))| (d.name.clone(), (i, p.clone())))
            .collect();
        Self {
            tools: tools.into_iter().map(|(d, _)| d).collect(),
            owners,
        }
    }

    /// All tools in order.
    pub fn tools(&self) -> &[ToolDef] {
        &self.tools
    }

    /// Look a tool up by name.
    pub fn get(&self, name: &str) -> Option<(&ToolDef, &Arc<dyn ToolProvider>)> {
        self.owners.get(name).map(|(i, p)| (&self.tools[*i], p))
    }
}
