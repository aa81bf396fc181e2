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

/// A `marina.yaml` holding `yaml` in a new temporary directory: the directory (removed when
/// dropped, so keep it alive while a node reads the file) and the file's path.
pub fn config_file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("marina.yaml");
    std::fs::write(&path, yaml).expect("the configuration file is written");
    (dir, path)
}
