//! Marina's metrics: one Prometheus registry per process, a typed recording API so that every
//! call site is one line, and label values bounded here (see [`labels`]) rather than at the call
//! sites. `docs/operations.md` ("Metrics reference") is the contract for names, labels and
//! buckets; this crate is its only implementation. Its traces (OpenTelemetry) are [`traces`],
//! exported by `otlp`.

mod labels;
mod metrics;
mod otlp;
pub mod traces;

pub use labels::{NamedTargets, OTHER, Outcome, Target};
pub use metrics::{
    AtCap, DEFAULT_MAX_NAMED_TARGETS, Metrics, ServerOperation, SseStream, UpstreamWait, metrics, recording,
    set_recording,
};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
