//! Marina's traces: OpenTelemetry spans exported over OTLP/HTTP (protobuf) by the SDK's batch
//! processor, which runs on its own thread (no async runtime of its own). `docs/operations.md`
//! ("Tracing") is the contract for span names, attributes and settings.
//!
//! The spans are `tracing` spans of target [`TARGET`], turned into OpenTelemetry spans by the
//! layer [`init`] returns; the log output never shows them (the logging layer filters that
//! target out), so a request's log lines keep their `request` span. When traces are off nothing
//! here is installed: the spans are disabled at their call site and every helper returns at once.
//!
//! Context propagation follows W3C Trace Context, in `params._meta` (SEP-414) and in HTTP headers.

use std::collections::HashMap;
use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::Value;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of the spans exported as OpenTelemetry spans (and of nothing else).
pub const TARGET: &str = "marina::otel";

/// What the process's traces need to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The collector's base URL (spans go to `/v1/traces`); `None`: the `OTEL_EXPORTER_OTLP_*`
    /// variables decide, and without them traces are off.
    pub endpoint: Option<String>,
    /// Fraction of new traces sampled (parent-based).
    pub sampling_ratio: f64,
    /// A client's context is linked to, not the parent of, the request's span.
    pub link_client_context: bool,
    /// `service.instance.id`.
    pub instance: String,
    /// `service.version`.
    pub version: String,
}

/// The process's tracer provider, once traces are on (for [`shutdown`]).
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// Whether client contexts are linked rather than adopted; set once traces are on.
static LINK: OnceLock<bool> = OnceLock::new();

/// Are traces on in this process?
pub fn enabled() -> bool {
    LINK.get().is_some()
}

/// The current span when traces are on (for work that continues elsewhere: another task, an
/// actor), a disabled one otherwise — so that, off, nothing is carried or entered.
pub fn current() -> tracing::Span {
    if enabled() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}

/// Is an endpoint configured, in `config` or in the standard environment variables?
fn endpoint_configured(config: &Config) -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled
        && (config.endpoint.is_some()
            || set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Build the exporter and the tracer provider and return the layer that turns spans of
/// [`TARGET`] into OpenTelemetry spans; `Ok(None)` when traces are off. Call once per process.
pub fn init<S>(config: &Config) -> Result<Option<impl Layer<S>>, String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !endpoint_configured(config) {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(base) = &config.endpoint {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let resource = Resource::builder()
        .with_service_name("marina")
        .with_attributes([
            KeyValue::new("service.instance.id", config.instance.clone()),
            KeyValue::new("service.version", config.version.clone()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sampling_ratio,
        ))))
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    let tracer = provider.tracer("marina");
    if PROVIDER.set(provider).is_err() {
        return Err("traces are initialised once per process".into());
    }
    let _ = LINK.set(config.link_client_context);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // The spans carry what the conventions name; code locations and threads are noise.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO)),
    ))
}

/// Export what is buffered and stop the exporter (at process exit; the SDK gives up after 5 s,
/// so an unreachable collector delays the exit by that much at most).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get()
        && let Err(e) = p.shutdown()
    {
        eprintln!("marina: traces not all exported at exit: {e}");
    }
}

/// The span of one store operation (`operation` of store `system`, e.g. `redis`), when the caller
/// is in a trace; a disabled span otherwise (the node's own background round trips are not
/// traced: they would be a root span each).
pub fn store_span(operation: &'static str, system: &'static str) -> tracing::Span {
    if !enabled()
        || !tracing::Span::current()
            .context()
            .span()
            .span_context()
            .is_valid()
    {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "db",
        otel.name = operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = system,
        db.operation.name = operation,
        error.type = tracing::field::Empty,
    )
}

/// Mark `span` (a SERVER, CLIENT or store span) as failed with `error_type` (`error.type`).
pub fn record_error(span: &tracing::Span, error_type: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// A span's name after the MCP conventions: `{mcp.method.name} {target}`, the target being the
/// tool or prompt the request names.
pub fn span_name(method: &str, target: Option<&str>) -> String {
    match target {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    }
}

/// A `traceparent` (with its `tracestate`) as a propagator reads it.
struct Carrier<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" => self.tracestate,
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let carrier = Carrier {
        traceparent: traceparent?,
        tracestate,
    };
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The client's trace context: `_meta.traceparent`/`tracestate` of the request's params first
/// (SEP-414), else the HTTP headers. An invalid value is ignored, never an error.
pub fn extract(
    meta: Option<&Value>,
    traceparent: Option<&str>,
    tracestate: Option<&str>,
) -> Option<SpanContext> {
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    parse(field("traceparent"), field("tracestate")).or_else(|| parse(traceparent, tracestate))
}

/// Give a new server `span` the client's context: its parent (`client_context = "parent"`), or
/// a link from a new trace (`"link"`), so that a tenant's client cannot choose Marina's trace
/// ids or sampling. Call before the span is entered.
pub fn adopt(span: &tracing::Span, client: Option<SpanContext>) {
    adopt_as(span, client, LINK.get().copied().unwrap_or(false));
}

/// Make `parent` the parent of a new server `span` whatever the mode: for a request a peer node
/// forwarded (authenticated), whose headers carry the forwarding node's span.
pub fn join(span: &tracing::Span, parent: SpanContext) {
    adopt_as(span, Some(parent), false);
}

fn adopt_as(span: &tracing::Span, client: Option<SpanContext>, link: bool) {
    let Some(client) = client else {
        return;
    };
    if link {
        span.add_link(client);
    } else {
        let _ = span.set_parent(Context::new().with_remote_span_context(client));
    }
}

/// The trace and span ids of `span` (hex) when it is sampled: what its log lines name.
pub fn ids(span: &tracing::Span) -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// `span`'s context as W3C Trace Context fields (`traceparent`, and `tracestate` if any).
fn fields(span: &tracing::Span) -> Option<HashMap<String, String>> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    // The propagator writes an empty `tracestate` for a span without one: no such field.
    fields.retain(|_, v| !v.is_empty());
    Some(fields)
}

/// Put `span`'s context in a request's `params._meta` (SEP-414), replacing the client's: in
/// `link` mode the client's `baggage` goes too, so nothing a tenant's client set travels on
/// unchanged.
pub fn inject_meta(span: &tracing::Span, params: &mut Value) {
    let Some(fields) = fields(span) else {
        return;
    };
    let Some(params) = params.as_object_mut() else {
        return;
    };
    let meta = params
        .entry("_meta")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    meta.remove("tracestate");
    if LINK.get().copied().unwrap_or(false) {
        meta.remove("baggage");
    }
    for (k, v) in fields {
        meta.insert(k, Value::String(v));
    }
}

/// Put the current span's context in an outgoing request's headers (`traceparent`,
/// `tracestate`).
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let Some(fields) = fields(&current()) else {
        return;
    };
    headers.remove("tracestate");
    for (k, v) in fields {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const B: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace_of(sc: &SpanContext) -> String {
        sc.trace_id().to_string()
    }

    #[test]
    fn meta_first_then_header_and_garbage_is_ignored() {
        let meta = json!({"traceparent": A, "tracestate": "k=v"});
        let sc = extract(Some(&meta), Some(B), None).unwrap();
        assert_eq!(trace_of(&sc), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.trace_state().get("k"), Some("v"));
        assert!(sc.is_remote());
        // No `_meta` context: the header's.
        let sc = extract(Some(&json!({})), Some(B), None).unwrap();
        assert_eq!(trace_of(&sc), "4bf92f3577b34da6a3ce929d0e0e4736");
        let sc = extract(None, Some(B), Some("x=y")).unwrap();
        assert_eq!(sc.trace_state().get("x"), Some("y"));
        // Garbage in `_meta` falls back to the header; garbage everywhere is nothing.
        for bad in [
            json!({"traceparent": "00-zz-yy-01"}),
            json!({"traceparent": 7}),
            json!({"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"}),
            json!("not an object"),
        ] {
            let sc = extract(Some(&bad), Some(B), None).unwrap();
            assert_eq!(trace_of(&sc), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
            assert!(extract(Some(&bad), Some("garbage"), None).is_none(), "{bad}");
        }
        assert!(extract(None, None, Some("k=v")).is_none());
    }

    /// Collects what the SDK exports.
    #[derive(Debug, Clone, Default)]
    struct Collect(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Collect {
        async fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> opentelemetry_sdk::error::OTelSdkResult {
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    /// The server span a request with `client`'s context gets, in `link` mode or not.
    fn served(client: &SpanContext, link: bool) -> opentelemetry_sdk::trace::SpanData {
        use tracing_subscriber::prelude::*;
        let exporter = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("mcp.server", otel.kind = "server");
            adopt_as(&span, Some(client.clone()), link);
            span.in_scope(|| {});
        });
        let spans = exporter.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 1, "{spans:?}");
        spans.into_iter().next().unwrap()
    }

    #[test]
    fn parent_mode_joins_the_client_trace_and_link_mode_starts_a_new_one() {
        let client = extract(None, Some(A), Some("k=v")).unwrap();
        let joined = served(&client, false);
        assert_eq!(joined.span_context.trace_id(), client.trace_id());
        assert_eq!(joined.parent_span_id, client.span_id());
        assert!(joined.links.links.is_empty());
        // The client's tracestate travels on with its trace.
        assert_eq!(joined.span_context.trace_state().get("k"), Some("v"));

        let linked = served(&client, true);
        assert_ne!(linked.span_context.trace_id(), client.trace_id());
        assert_eq!(linked.parent_span_id, opentelemetry::trace::SpanId::INVALID);
        assert_eq!(linked.span_context.trace_state().get("k"), None);
        let links: Vec<_> = linked
            .links
            .links
            .iter()
            .map(|l| l.span_context.clone())
            .collect();
        assert_eq!(links, vec![client]);
    }

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(span_name("tools/call", Some("echo")), "tools/call echo");
        assert_eq!(span_name("tools/list", None), "tools/list");
    }
}
