//! Marina's traces: OpenTelemetry spans exported over OTLP/HTTP (protobuf) by the SDK's batch
//! processor, which runs on its own thread (no async runtime of its own). `docs/operations.md`
//! ("Tracing") is the contract for span names, attributes and settings.
//!
//! The spans are built with the OpenTelemetry API directly — not as `tracing` spans turned into
//! OpenTelemetry ones by a layer, which cost a sampled request about as much CPU as the rest of
//! its telemetry (every attribute went through a visitor into a new `String`, and every poll of
//! every future inside a span entered and left it in the layer). A [`Span`] is an OpenTelemetry
//! `Context` holding the span; [`Span::within`] makes it the current context while a future
//! runs, so what that future starts (an upstream request, a store round trip) is its child. When
//! traces are off nothing here is installed: every span is [`Span::none`] and every helper
//! returns at once.
//!
//! Context propagation follows W3C Trace Context, in `params._meta` (SEP-414) and in HTTP headers.

use std::borrow::Cow;
use std::future::Future;
use std::sync::OnceLock;

use futures_util::future::Either;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{
    Link, SpanBuilder, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, Value as AttributeValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serde_json::Value;

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::SpanContext;

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
/// The tracer every span comes from, once traces are on.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
/// Whether client contexts are linked rather than adopted; set once traces are on.
static LINK: OnceLock<bool> = OnceLock::new();

/// Are traces on in this process?
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// A span of the process's traces, or none (traces off; a store call outside any trace). Cheap
/// to clone (an `Arc`); the span ends when its last clone is dropped.
#[derive(Clone, Debug, Default)]
pub struct Span(Option<Context>);

impl Span {
    /// No span: inside it, nothing is traced and nothing is carried.
    pub fn none() -> Self {
        Self(None)
    }

    /// Run `fut` inside this span (its context is the current one while `fut` is polled), so
    /// that what it starts is the span's child; without a span, `fut` as it is.
    pub fn within<F: Future>(self, fut: F) -> Either<WithContext<F>, F> {
        match self.0 {
            Some(cx) => Either::Left(fut.with_context(cx)),
            None => Either::Right(fut),
        }
    }

    /// Set attribute `key` (one the conventions name; none when traces are off).
    pub fn set(&self, key: &'static str, value: impl Into<AttributeValue>) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Mark the span (a SERVER, CLIENT or store span) as failed with `error_type`
    /// (`error.type`).
    pub fn record_error(&self, error_type: impl Into<AttributeValue>) {
        if let Some(cx) = &self.0 {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(""));
        }
    }

    /// The trace and span ids of the span when it is sampled: what its log lines name.
    pub fn ids(&self) -> Option<(TraceId, SpanId)> {
        let cx = self.0.as_ref()?;
        let span = cx.span();
        let sc = span.span_context();
        (sc.is_valid() && sc.is_sampled()).then(|| (sc.trace_id(), sc.span_id()))
    }
}

/// `fut.in_span(span)`: [`Span::within`], written after the future.
pub trait InSpan: Future + Sized {
    /// Run this future inside `span`.
    fn in_span(self, span: Span) -> Either<WithContext<Self>, Self> {
        span.within(self)
    }
}

impl<F: Future> InSpan for F {}

/// The current span (for work that continues elsewhere: another task, an actor); none when
/// traces are off or no span is current, so that nothing is carried or entered.
pub fn current() -> Span {
    if !enabled() {
        return Span::none();
    }
    let cx = Context::current();
    if cx.has_active_span() {
        Span(Some(cx))
    } else {
        Span::none()
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

/// Build the exporter and the tracer provider; `Ok(false)` when traces are off (no endpoint).
/// Call once per process.
pub fn init(config: &Config) -> Result<bool, String> {
    if !endpoint_configured(config) {
        return Ok(false);
    }
    let target = crate::otlp::Target::resolve(config.endpoint.as_deref(), |k| std::env::var(k).ok())?;
    let exporter = crate::otlp::OtlpExporter::new(&target)?;
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
    let _ = TRACER.set(tracer);
    Ok(true)
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

/// Start a span of `kind` named `name` as a child of `parent` (a root span when `parent` has
/// none), with `attributes` and `links`.
fn start(
    tracer: &SdkTracer,
    name: Cow<'static, str>,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    parent: &Context,
) -> Span {
    let builder = SpanBuilder::from_name(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .with_links(links);
    Span(Some(parent.with_span(tracer.build_with_context(builder, parent))))
}

/// The SERVER span of a request, named `name`, with `attributes`. `client`: the context the
/// request carried — its parent (`client_context = "parent"`), or linked from a new trace
/// (`"link"`), so that a tenant's client cannot choose Marina's trace ids or sampling;
/// `from_peer`: a peer node forwarded the request (authenticated), so `client` is that node's
/// span and the parent whatever the mode.
pub fn server(
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    client: Option<SpanContext>,
    from_peer: bool,
) -> Span {
    let Some(tracer) = TRACER.get() else {
        return Span::none();
    };
    let link = !from_peer && LINK.get().copied().unwrap_or(false);
    server_span(tracer, name, attributes, client, link)
}

fn server_span(
    tracer: &SdkTracer,
    name: Cow<'static, str>,
    attributes: Vec<KeyValue>,
    client: Option<SpanContext>,
    link: bool,
) -> Span {
    let (links, parent) = match client {
        Some(client) if link => (vec![Link::with_context(client)], Context::new()),
        Some(client) => (Vec::new(), Context::new().with_remote_span_context(client)),
        None => (Vec::new(), Context::new()),
    };
    start(tracer, name, SpanKind::Server, attributes, links, &parent)
}

/// A CLIENT span named `name`, with `attributes`, child of the current span (a root span
/// outside any).
pub fn client(name: Cow<'static, str>, attributes: Vec<KeyValue>) -> Span {
    let Some(tracer) = TRACER.get() else {
        return Span::none();
    };
    start(
        tracer,
        name,
        SpanKind::Client,
        attributes,
        Vec::new(),
        &Context::current(),
    )
}

/// The span of one store operation (`operation` of store `system`, e.g. `redis`), when the caller
/// is in a trace; none otherwise (the node's own background round trips are not traced: they
/// would be a root span each). Its attributes are static strings: nothing is allocated for them.
pub fn store_span(operation: &'static str, system: &'static str) -> Span {
    let Some(tracer) = TRACER.get() else {
        return Span::none();
    };
    let parent = Context::current();
    if !parent.span().span_context().is_valid() {
        return Span::none();
    }
    start(
        tracer,
        Cow::Borrowed(operation),
        SpanKind::Client,
        vec![
            KeyValue::new("db.system.name", system),
            KeyValue::new("db.operation.name", operation),
        ],
        Vec::new(),
        &parent,
    )
}

/// A span's name after the MCP conventions: `{mcp.method.name} {target}`, the target being the
/// tool or prompt the request names; a method of the specification without a target is not
/// copied.
pub fn span_name(method: &str, target: Option<&str>) -> Cow<'static, str> {
    match target {
        Some(t) => Cow::Owned(format!("{method} {t}")),
        None => match crate::labels::method(method) {
            crate::labels::OTHER => Cow::Owned(method.to_owned()),
            known => Cow::Borrowed(known),
        },
    }
}

/// `mcp.method.name`: a method of the specification is not copied (sampled requests build one
/// or two of these each); any other (a client's own, at most 128 characters) is.
pub fn method_value(method: &str) -> AttributeValue {
    match crate::labels::method(method) {
        crate::labels::OTHER => AttributeValue::from(truncate(method, 128).to_owned()),
        known => AttributeValue::from(known),
    }
}

/// The first `max` characters of `s`.
fn truncate(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
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

/// `span`'s context as W3C Trace Context fields: `traceparent`, and `tracestate` if it has one.
fn fields(span: &Span) -> Option<(String, Option<String>)> {
    let cx = span.0.as_ref()?;
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let flags = sc.trace_flags() & TraceFlags::SAMPLED;
    let traceparent = traceparent(sc.trace_id(), sc.span_id(), flags.to_u8());
    let tracestate = sc.trace_state().header();
    Some((traceparent, (!tracestate.is_empty()).then_some(tracestate)))
}

/// `00-{trace id}-{span id}-{flags}` in lower-case hex, written directly (the formatting
/// machinery's padded `{:032x}` cost more than the rest of an injection).
fn traceparent(trace: TraceId, span: SpanId, flags: u8) -> String {
    fn hex(out: &mut String, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    hex(&mut out, &trace.to_bytes());
    out.push('-');
    hex(&mut out, &span.to_bytes());
    out.push('-');
    hex(&mut out, &[flags]);
    out
}

/// Put `span`'s context in a request's `params._meta` (SEP-414), replacing the client's: in
/// `link` mode the client's `baggage` goes too, so nothing a tenant's client set travels on
/// unchanged.
pub fn inject_meta(span: &Span, params: &mut Value) {
    let Some((traceparent, tracestate)) = fields(span) else {
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
    meta.insert("traceparent".into(), Value::String(traceparent));
    if let Some(state) = tracestate {
        meta.insert("tracestate".into(), Value::String(state));
    }
}

/// Put the current span's context in an outgoing request's headers (`traceparent`,
/// `tracestate`).
pub fn inject_headers(headers: &mut http::HeaderMap) {
    let Some((traceparent, tracestate)) = fields(&current()) else {
        return;
    };
    headers.remove("tracestate");
    if let Ok(v) = http::HeaderValue::from_str(&traceparent) {
        headers.insert("traceparent", v);
    }
    if let Some(Ok(v)) = tracestate.map(|s| http::HeaderValue::from_str(&s)) {
        headers.insert("tracestate", v);
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
        let exporter = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let span = server_span(
            &provider.tracer("t"),
            "mcp.server".into(),
            Vec::new(),
            Some(client.clone()),
            link,
        );
        drop(span);
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
    fn injected_fields_are_what_the_propagator_writes() {
        use std::collections::HashMap;
        let provider = SdkTracerProvider::builder().build();
        let client = extract(None, Some(A), Some("k=v")).unwrap();
        let span = server_span(&provider.tracer("t"), "s".into(), Vec::new(), Some(client), false);
        let mut expected = HashMap::new();
        TraceContextPropagator::new().inject_context(span.0.as_ref().unwrap(), &mut expected);
        let (traceparent, tracestate) = fields(&span).unwrap();
        assert_eq!(Some(&traceparent), expected.get("traceparent"));
        assert_eq!(tracestate.as_deref(), Some("k=v"));
        assert_eq!(expected.get("tracestate").map(String::as_str), Some("k=v"));
        assert!(fields(&Span::none()).is_none());
    }

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(span_name("tools/call", Some("echo")), "tools/call echo");
        assert_eq!(span_name("tools/list", None), "tools/list");
        assert!(matches!(span_name("tools/list", None), Cow::Borrowed(_)));
        assert_eq!(span_name("x/custom", None), "x/custom");
        assert_eq!(method_value("tools/call").as_str(), "tools/call");
        let long = "m".repeat(200);
        assert_eq!(method_value(&long).as_str().len(), 128);
    }
}
