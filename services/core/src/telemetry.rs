//! Structured logs through `tracing`: human or JSON lines, filter from settings or `RUST_LOG`.
//! Request spans carry `request_id`, `tenant` and `session` (and `trace_id`/`span_id` when the
//! request is traced); tokens and session secrets are never recorded (session ids are logged
//! only as a short non-reversible tag, see [`session_tag`]). Traces (OpenTelemetry) are started
//! here too when configured, but they are not `tracing` spans (`marina_telemetry::traces`).

use std::io::IsTerminal as _;

use marina_telemetry::traces;
use tracing_subscriber::{EnvFilter, Layer as _, fmt, prelude::*};

use crate::settings::LogFormat;

/// Install the global subscriber once. Later calls are ignored (tests start many apps).
/// `traces`: the process's traces, if it may have them (off unless an endpoint is configured).
pub fn init(format: LogFormat, filter: &str, traces: Option<&traces::Config>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let failed = traces.map(traces::init).and_then(Result::err);
    let registry = tracing_subscriber::registry();
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Human => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if let Some(e) = failed {
        tracing::warn!(error = %e, "traces are off");
    }
}

/// Start the process's traces after [`init`] (which was given none): a node knows its id, the
/// spans' `service.instance.id`, only once its listener is bound. A failure is logged, and
/// traces stay off.
pub fn init_traces(config: &traces::Config) {
    if let Err(e) = traces::init(config) {
        tracing::warn!(error = %e, "traces are off");
    }
}

/// Export the traces still buffered (at process exit).
pub fn shutdown() {
    traces::shutdown();
}

/// A short tag naming a session in logs without revealing the id (which is a bearer secret for
/// its stream): the first 8 characters only.
pub fn session_tag(id: &str) -> &str {
    crate::protocol::truncate(id, 8)
}
