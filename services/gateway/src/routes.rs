//! HTTP routes: the MCP endpoint, the OAuth protected-resource metadata, and the probes.

pub mod health;
pub mod mcp;
pub mod well_known;
