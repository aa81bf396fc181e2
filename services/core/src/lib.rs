//! Marina's core: configuration, domain types, the MCP/JSON-RPC envelope, the session store
//! (in-memory and Redis), the tool interface every upstream kind implements, and telemetry.

pub mod access;
pub mod caps;
pub mod domain;
pub mod protocol;
pub mod schema;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod tools;
