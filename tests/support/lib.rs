//! Test support: a real `redis-server` on a free port, Marina in-process (port 0) or as `marina`
//! processes, and a small MCP-over-HTTP client that speaks raw JSON-RPC and SSE.
//!
//! Everything binds to loopback, every wait is bounded, and every process is killed on drop.

pub mod balancer;
pub mod client;
pub mod procs;

pub use balancer::start_balancer;
pub use client::{Mcp, SseEvent, read_events};
pub use procs::{
    MarinaProc, OidcIssuer, RedisServer, TestApp, UpstreamPeer, free_port, marina_bin, spawn_app,
    spawn_app_with,
};
