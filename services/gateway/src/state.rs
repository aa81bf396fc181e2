//! What every handler shares.

use std::sync::Arc;

use marina_actors::Node;

/// Header marking a request forwarded by a peer node (so it is never forwarded again).
pub const FORWARDED: &str = "x-marina-forwarded";

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
    /// Every tenant's authentication.
    pub auth: Arc<crate::authn::Authenticators>,
}
