//! What every handler shares.

use std::sync::Arc;

use marina_actors::Node;

/// The request's id (from `X-Request-Id` or generated), for audit events of later steps.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Shared application state.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This node.
    pub node: Arc<Node>,
    /// HTTP client for forwarding to peers.
    pub http: reqwest::Client,
    /// HTTP client for handing requests to peers while draining: no pooled connections, so a
    /// hand-off never picks one whose task lived on a worker that has stopped already.
    pub handoff: reqwest::Client,
    /// Every tenant's authentication.
    pub auth: Arc<crate::authn::Authenticators>,
    /// Rate limits (Redis-shared, or in memory on a single node).
    pub limiter: Arc<dyn marina_limits::RateLimiter>,
    /// Session caps (the same backend).
    pub caps: Arc<dyn marina_core::caps::Caps>,
    /// The rate buckets of recent (tenant, principal, tool)s.
    pub buckets: Arc<crate::limits::BucketMemo>,
    /// The cluster secret (forwarded requests).
    pub cluster: crate::cluster::ClusterKey,
    /// Serve MCP 2026-07-28 (stateless) requests (`server.stateless_era`).
    pub stateless_era: bool,
    /// Seals the `requestState` of multi round-trip requests.
    pub sealer: Arc<crate::modern::mrtr::Sealer>,
    /// Stateless calls waiting here for their client's answer.
    pub parked: Arc<crate::modern::park::ParkedCalls>,
    /// What tenants' upstreams announce, for this node's `subscriptions/listen` streams.
    pub watchers: Arc<crate::modern::watch::Watchers>,
    /// Recent tool indexes of stateless callers.
    pub indexes: Arc<crate::modern::cache::IndexCache>,
    /// Stateless callers' upstream sessions this node keeps (written through to the store).
    pub upstream_sessions: Arc<crate::modern::cache::UpstreamSessions>,
}
