//! HTTP routes: the MCP endpoint and the probes.

pub mod health;
pub mod mcp;
