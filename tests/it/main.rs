//! Marina's integration tests: one binary, one module per concern.

mod cluster;
mod errors;
mod outage;
mod protocol;
mod store_redis;
