//! The tool interface: what every upstream kind (built-in, HTTP tools, MCP servers) implements, the
//! session context a provider sees, and the per-session tool index the session actor dispatches
//! through.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
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

/// A session with an upstream MCP server, owned by the downstream session and kept in its record
/// so that any node continues it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamSession {
    /// `MCP-Session-Id` the upstream issued (`None` for a stateless upstream).
    pub id: Option<String>,
    /// Protocol version negotiated with the upstream.
    pub protocol_version: String,
}

/// What a provider sees of the session it serves.
#[async_trait(?Send)]
pub trait SessionContext {
    /// A key naming this session (to serialize per-session work; not the session id itself).
    fn session_key(&self) -> String;
    /// The capabilities the client declared in `initialize`.
    fn client_capabilities(&self) -> Value;
    /// Did the client declare this capability (top-level key of its `capabilities`)?
    fn client_supports(&self, capability: &str) -> bool {
        self.client_capabilities()
            .get(capability)
            .is_some_and(|v| !v.is_null())
    }
    /// The log level the client set with `logging/setLevel`, if any.
    fn log_level(&self) -> Option<String>;
    /// Are this context's upstream sessions shared by requests of differing capabilities (a
    /// principal's stateless requests)? Then an upstream session declares every capability that
    /// can be relayed, and each question is checked against its own request's capabilities.
    fn upstream_sessions_shared(&self) -> bool {
        false
    }
    /// This session's session with upstream `upstream`, if one was established.
    fn upstream_session(&self, upstream: &str) -> Option<UpstreamSession>;
    /// Remember (or forget, with `None`) the session with `upstream`; written through.
    async fn set_upstream_session(
        &self,
        upstream: &str,
        session: Option<UpstreamSession>,
    ) -> Result<(), RpcError>;
}

/// What a running tool call can do towards its client. Messages go on the call's own stream.
#[async_trait(?Send)]
pub trait CallContext: SessionContext {
    /// The progress token of the call, if the client asked for progress.
    fn progress_token(&self) -> Option<Value>;
    /// Send `notifications/progress` if the request carried a progress token.
    async fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>);
    /// Send `notifications/message` if `level` is at or above the session's log level.
    async fn log(&self, level: &str, logger: &str, data: Value);
    /// Send a request to the client and wait for its answer (which may arrive at any node).
    async fn request_client(&self, method: &str, params: Value) -> Result<Value, RpcError>;
    /// Fires when the client cancels the request.
    fn cancellation(&self) -> CancellationToken;
    /// The call waited `waited` on an upstream (subtracted from the request's duration for
    /// Marina's own processing time). Contexts that time nothing ignore it.
    fn upstream_waited(&self, _waited: std::time::Duration) {}
    /// Send a notification on this context's stream (the GET stream outside a call).
    async fn notify(&self, method: &str, params: Value);
    /// The session's tool list changed upstream: rebuild it on next use.
    fn tools_changed(&self);
    /// A follower (`ToolProvider::follow`) has its upstream stream open: what the upstream
    /// announces from now on reaches this context.
    fn stream_opened(&self) {}
    /// Does the client take `input_required` results itself (a 2026-07-28 request)? Then an
    /// upstream's `input_required` is passed on; otherwise its questions are put to the client
    /// with [`Self::request_client`] and the upstream is retried with the answers.
    fn passes_input_required(&self) -> bool {
        false
    }
    /// For a retry of a call that an upstream answered `input_required`: the params to add to
    /// the upstream request (`inputResponses`, the upstream's `requestState`).
    fn continuation(&self) -> Option<Value> {
        None
    }
}

/// A source of tools.
#[async_trait(?Send)]
pub trait ToolProvider: Send + Sync + std::fmt::Debug {
    /// The tools known from configuration (used to check names at start; an upstream whose tools
    /// are discovered at run time returns none here).
    fn tools(&self) -> Vec<ToolDef>;
    /// The tools offered to this session.
    async fn list_tools(&self, _ctx: &dyn SessionContext) -> Result<Vec<ToolDef>, RpcError> {
        Ok(self.tools())
    }
    /// The source's configured name (upstream MCP servers: the name namespaced resource URIs
    /// carry, `marina://<name>/<uri>`).
    fn name(&self) -> &str {
        ""
    }
    /// Does this source serve resources, prompts and completion (an upstream MCP server)?
    fn serves_features(&self) -> bool {
        false
    }
    /// Does this source keep sessions with an upstream server (`SessionContext::upstream_session`)?
    /// A stateless request loads its principal's upstream sessions only when one of its tenant's
    /// sources does.
    fn keeps_upstream_sessions(&self) -> bool {
        false
    }
    /// May a call be run again from the start to put the client's answers to its questions
    /// (`request_client`) to it — it asks the same questions in the same order and does nothing
    /// before its last answer that a re-run would repeat? Stateless (2026-07-28) calls answer
    /// such a source's questions with multi round-trip requests; any other source's questions
    /// fail there until they can be parked.
    fn replays_questions(&self) -> bool {
        false
    }
    /// Every item of a list of resources, resource templates or prompts (`method` is
    /// `resources/list`, `resources/templates/list` or `prompts/list`), all pages read, prompts
    /// under their published names.
    async fn list_feature(&self, _method: &str, _ctx: &dyn SessionContext) -> Result<Vec<Value>, RpcError> {
        Ok(Vec::new())
    }
    /// Relay a resources/prompts/completion request (`params` already carrying published names)
    /// and return its result.
    async fn request_feature(
        &self,
        method: &str,
        _params: Value,
        _ctx: &dyn SessionContext,
    ) -> Result<Value, RpcError> {
        Err(RpcError::method_not_found(method))
    }
    /// Follow the source's server-initiated messages for this session (an upstream's GET stream)
    /// until the future is dropped; `ctx` targets the session's GET stream.
    async fn follow(&self, _ctx: &dyn CallContext) {}
    /// The client set its log level: pass it on (upstream MCP servers filter at the source).
    async fn set_log_level(&self, _level: &str, _ctx: &dyn SessionContext) {}
    /// The client's roots changed (`notifications/roots/list_changed`): tell the source, so an
    /// upstream that cached them asks again. Sources without a session ignore it.
    async fn roots_changed(&self, _ctx: &dyn SessionContext) {}
    /// Run one tool. Returns a `CallToolResult`; tool failures (including invalid arguments) are
    /// results with `isError: true`, protocol failures are `Err`.
    async fn call(&self, name: &str, arguments: Value, ctx: &dyn CallContext) -> Result<Value, RpcError>;
}

/// A session's view of its tenant's tools, in deterministic (name) order, with the provider of
/// each (an index into the tenant's providers). A later provider cannot shadow an earlier tool.
#[derive(Debug, Clone, Default)]
pub struct ToolIndex {
    tools: Vec<ToolDef>,
    owners: HashMap<String, (usize, usize)>,
}

impl ToolIndex {
    /// Index the lists of `providers` (position = provider index).
    pub fn new(lists: Vec<Vec<ToolDef>>) -> Self {
        let mut tools: Vec<(ToolDef, usize)> = Vec::new();
        for (p, list) in lists.into_iter().enumerate() {
            for t in list {
                if !tools.iter().any(|(d, _)| d.name == t.name) {
                    tools.push((t, p));
                }
            }
        }
        tools.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let owners = tools
            .iter()
            .enumerate()
            .map(|(i, (d, p))| (d.name.clone(), (i, *p)))
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

    /// A tool and the index of its provider.
    pub fn get(&self, name: &str) -> Option<(&ToolDef, usize)> {
        self.owners.get(name).map(|(i, p)| (&self.tools[*i], *p))
    }
}

/// The providers of a tenant.
pub type Providers = Vec<Arc<dyn ToolProvider>>;
