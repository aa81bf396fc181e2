//! Structured logs through `tracing`: human or JSON lines, filter from settings or `RUST_LOG`.
//! Request spans carry `request_id`, `tenant` and `session`; tokens and session secrets are never
//! recorded (session ids are logged only as a short non-reversible tag, see [`session_tag`]).

use std::io::IsTerminal as _;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::settings::LogFormat;

/// Install the global subscriber once. Later calls are ignored (tests start many apps).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// A short tag naming a session in logs without revealing the id (which is a bearer secret for
/// its stream): the first 8 characters only.
pub fn session_tag(id: &str) -> &str {
    crate::protocol::truncate(id, 8)
}
