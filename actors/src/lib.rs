//! Marina's actix actors.
//!
//! - [`SessionActor`]: one per live MCP session, on exactly one node of the cluster at a time (a
//!   lease with a fencing token in the store). It owns the session's streams, runs its calls and
//!   writes every change through to the store.
//! - [`Node`]: this node's view — the registry of local actors, activation from the store,
//!   finding the holder of a session that lives elsewhere, and draining.

mod node;
mod session;

pub use node::{Node, NodeConfig, ResolveError, Resolved};
pub use session::{
    Describe, Dispatch, Drain, Ended, FeatureCaller, Features, Frame, Lost, OpenStream, Rejection, Reply,
    SessionActor, StreamHandle, Terminate,
};
