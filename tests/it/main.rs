//! Marina's integration tests: one binary, one module per concern.

mod admin;
mod admin_cli;
mod arguments;
mod auth;
mod cluster;
mod config_examples;
mod conformance_cluster;
mod drain;
mod errors;
mod http_tool;
mod limits;
mod logs;
mod mcp_upstream;
mod mcp_upstream_failures;
mod metrics;
mod oauth;
mod origins;
mod outage;
mod protocol;
mod rbac;
mod stateless;
mod store_redis;
mod tls;
mod traces;
