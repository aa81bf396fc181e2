//! Marina's MCP data plane: the tenant endpoints (`/t/{tenant}/mcp`), their HTTP rules (Accept,
//! Content-Type, body limits, protocol-version header, Origin/Host), SSE delivery, forwarding to
//! the node that holds a session, probes, and the tool sources (`upstream/`).

pub mod admin;
mod authn;
mod cluster;
mod cors;
mod forward;
mod limits;
pub mod modern;
pub mod observe;
mod origin;
mod proxy;
mod reply;
mod routes;
mod sse;
pub mod startup;
mod state;
pub mod tenants;
pub mod upstream;

pub use startup::{Application, ConfigError};
