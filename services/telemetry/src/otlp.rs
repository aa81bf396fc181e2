//! The OTLP/HTTP span exporter: batches of the SDK's finished spans, written straight into the
//! OTLP protobuf wire format (`opentelemetry/proto/collector/trace/v1`) and POSTed to the
//! collector.
//!
//! Why not `opentelemetry-otlp`'s exporter: it first converts every span into the generated
//! `opentelemetry-proto` structs — a new `String` for every attribute key and value, a `Vec`
//! for every id — and then encodes those, computing nested lengths level by level. At 100 %
//! sampling that exporter thread was the largest share of a sampled request's trace cost
//! (docs/benchmarks.md, "The price of telemetry"). Here each span is encoded once, from the
//! borrowed span data, into one buffer per batch. The test below decodes what is written with
//! `opentelemetry-proto`'s own types and compares it with that crate's conversion of the same
//! spans, field for field.
//!
//! Settings follow the OTLP exporter specification: the endpoint (`telemetry.otlp_endpoint`,
//! else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, else `OTEL_EXPORTER_OTLP_ENDPOINT` +
//! `/v1/traces`), headers (`OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, `key=value` pairs, values
//! percent-decoded) and timeout (`OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`, ms, 10 s by default).
//! Only `http/protobuf` without compression is spoken; asking for anything else is an error (the
//! node then runs without traces and says why) rather than spans sent in a form the collector
//! does not expect.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::encoding::{WireType, encode_key, encode_varint};

/// Where and how spans are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The full URL spans are POSTed to.
    pub url: String,
    /// Extra request headers (e.g. a collector's API key).
    pub headers: Vec<(String, String)>,
    /// How long one export may take.
    pub timeout: Duration,
}

impl Target {
    /// The target for `endpoint` (a collector's base URL) or, without one, for the standard
    /// variables read through `var`.
    pub fn resolve(endpoint: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |k: &str| var(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let signal = |k: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_TRACES_{k}")).or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{k}")))
        };
        let url = match (endpoint, var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
            (Some(base), _) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, Some(url)) => url,
            (None, None) => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                Some(base) => format!("{}/v1/traces", base.trim_end_matches('/')),
                None => "http://localhost:4318/v1/traces".to_owned(),
            },
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("the OTLP endpoint {url:?} is not an http(s) URL"));
        }
        if let Some(p) = signal("PROTOCOL").filter(|p| p != "http/protobuf") {
            return Err(format!("OTLP protocol {p:?} is not supported; use http/protobuf"));
        }
        if let Some(c) = signal("COMPRESSION").filter(|c| c != "none") {
            return Err(format!("OTLP compression {c:?} is not supported; use none"));
        }
        let timeout = match signal("TIMEOUT") {
            None => Duration::from_secs(10),
            Some(ms) => Duration::from_millis(
                ms.parse()
                    .map_err(|_| format!("the OTLP timeout {ms:?} is not a number of milliseconds"))?,
            ),
        };
        let mut headers = Vec::new();
        for pair in signal("HEADERS").iter().flat_map(|h| h.split(',')) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(format!("the OTLP header {pair:?} is not key=value"));
            };
            let value = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| format!("the OTLP header {:?} is not UTF-8 once decoded", k.trim()))?;
            headers.push((k.trim().to_owned(), value.into_owned()));
        }
        Ok(Self {
            url,
            headers,
            timeout,
        })
    }
}

/// The exporter the batch processor calls (on its own thread, outside any async runtime, so a
/// blocking HTTP client is the right one).
#[derive(Debug)]
pub struct OtlpExporter {
    client: reqwest::blocking::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
    resource: Resource,
}

impl OtlpExporter {
    /// An exporter to `target`.
    pub fn new(target: &Target) -> Result<Self, String> {
        let url = reqwest::Url::parse(&target.url)
            .map_err(|e| format!("the OTLP endpoint {:?}: {e}", target.url))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &target.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("the OTLP header name {k:?} is not valid"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("the value of OTLP header {k:?} is not valid"))?;
            headers.insert(name, value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-protobuf"),
        );
        // A blocking client owns a runtime of its own, which may be neither built nor dropped
        // on a thread that runs one (traces start inside the node's runtime): built on a
        // thread of its own.
        let timeout = target.timeout;
        let client = std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
        })
        .join()
        .map_err(|_| "cannot build the OTLP HTTP client".to_owned())?
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(Self {
            client,
            url,
            headers,
            timeout: target.timeout,
            resource: Resource::builder_empty().build(),
        })
    }

    /// POST one encoded batch. What the specification calls retryable — a transport failure,
    /// 429, 502, 503, 504 — is tried again after 100, 200, 400 ms while the export's timeout
    /// allows; anything else fails the batch at once.
    fn send(&self, body: bytes::Bytes) -> OTelSdkResult {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(100);
        loop {
            let failure = match self
                .client
                .post(self.url.clone())
                .headers(self.headers.clone())
                .body(body.clone())
                .send()
            {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let failure = format!("the OTLP collector answered HTTP {status}");
                    if ![429, 502, 503, 504].contains(&status) {
                        return Err(OTelSdkError::InternalFailure(failure));
                    }
                    failure
                }
                Err(e) => format!("OTLP export failed: {e}"),
            };
            if std::time::Instant::now() + backoff >= deadline || backoff > Duration::from_millis(400) {
                return Err(OTelSdkError::InternalFailure(failure));
            }
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = bytes::Bytes::from(encode_request(&batch, &self.resource));
        self.send(body)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// An `ExportTraceServiceRequest` holding `spans` under `resource`, one `ScopeSpans` per
/// instrumentation scope (in the order the scopes first appear).
pub fn encode_request(spans: &[SpanData], resource: &Resource) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256 + spans.len() * 320);
    // ExportTraceServiceRequest.resource_spans = 1
    message(&mut buf, 1, |buf| {
        // ResourceSpans.resource = 1
        message(buf, 1, |buf| {
            for (k, v) in resource.iter() {
                // Resource.attributes = 1
                key_value(buf, 1, k.as_str(), v);
            }
        });
        let mut scopes: Vec<&opentelemetry::InstrumentationScope> = Vec::new();
        for span in spans {
            if !scopes.contains(&&span.instrumentation_scope) {
                scopes.push(&span.instrumentation_scope);
            }
        }
        for scope in scopes {
            // ResourceSpans.scope_spans = 2
            message(buf, 2, |buf| {
                // ScopeSpans.scope = 1
                message(buf, 1, |buf| {
                    string(buf, 1, scope.name());
                    string(buf, 2, scope.version().unwrap_or_default());
                    for kv in scope.attributes() {
                        key_value(buf, 3, kv.key.as_str(), &kv.value);
                    }
                });
                for span in spans.iter().filter(|s| &s.instrumentation_scope == scope) {
                    // ScopeSpans.spans = 2
                    message(buf, 2, |buf| encode_span(buf, span));
                }
                // ScopeSpans.schema_url = 3
                string(buf, 3, scope.schema_url().unwrap_or_default());
            });
        }
        // ResourceSpans.schema_url = 3
        string(buf, 3, resource.schema_url().unwrap_or_default());
    });
    buf
}

/// The fields of one `Span` message.
fn encode_span(buf: &mut Vec<u8>, span: &SpanData) {
    let sc = &span.span_context;
    bytes(buf, 1, &sc.trace_id().to_bytes());
    bytes(buf, 2, &sc.span_id().to_bytes());
    string(buf, 3, &sc.trace_state().header());
    if span.parent_span_id != SpanId::INVALID {
        bytes(buf, 4, &span.parent_span_id.to_bytes());
    }
    string(buf, 5, &span.name);
    let kind: u64 = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    varint(buf, 6, kind);
    fixed64(buf, 7, nanos(span.start_time));
    fixed64(buf, 8, nanos(span.end_time));
    for kv in &span.attributes {
        key_value(buf, 9, kv.key.as_str(), &kv.value);
    }
    varint(buf, 10, u64::from(span.dropped_attributes_count));
    for event in span.events.iter() {
        // Span.events = 11: Event { time_unix_nano = 1, name = 2, attributes = 3, dropped = 4 }
        message(buf, 11, |buf| {
            fixed64(buf, 1, nanos(event.timestamp));
            string(buf, 2, &event.name);
            for kv in &event.attributes {
                key_value(buf, 3, kv.key.as_str(), &kv.value);
            }
            varint(buf, 4, u64::from(event.dropped_attributes_count));
        });
    }
    varint(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        // Span.links = 13: Link { trace_id = 1, span_id = 2, trace_state = 3, attributes = 4,
        // dropped = 5, flags = 6 }
        message(buf, 13, |buf| {
            let lc = &link.span_context;
            bytes(buf, 1, &lc.trace_id().to_bytes());
            bytes(buf, 2, &lc.span_id().to_bytes());
            string(buf, 3, &lc.trace_state().header());
            for kv in &link.attributes {
                key_value(buf, 4, kv.key.as_str(), &kv.value);
            }
            varint(buf, 5, u64::from(link.dropped_attributes_count));
            fixed32(buf, 6, flags(lc, lc.is_remote()));
        });
    }
    varint(buf, 14, u64::from(span.links.dropped_count));
    // Span.status = 15: Status { message = 2, code = 3 }, always present.
    message(buf, 15, |buf| {
        let (code, description) = match &span.status {
            Status::Unset => (0, ""),
            Status::Ok => (1, ""),
            Status::Error { description } => (2, description.as_ref()),
        };
        string(buf, 2, description);
        varint(buf, 3, code);
    });
    fixed32(buf, 16, flags(sc, span.parent_span_is_remote));
}

/// `Span.flags`/`Link.flags`: the W3C trace flags, and whether the parent (the linked span)
/// is remote — with the bit saying that this is known.
fn flags(sc: &SpanContext, remote: bool) -> u32 {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    u32::from(sc.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Field `tag` holding a nested message written by `body`: its length is only known once it is
/// written, so the length prefix is put in front of it afterwards.
fn message(buf: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
    encode_key(tag, WireType::LengthDelimited, buf);
    let start = buf.len();
    body(buf);
    let len = buf.len() - start;
    let mut prefix = [0_u8; 10];
    let mut free = &mut prefix[..];
    encode_varint(len as u64, &mut free);
    let n = 10 - free.len();
    buf.extend_from_slice(&prefix[..n]);
    buf[start..].rotate_right(n);
}

/// A `KeyValue` in field `tag`: `key = 1`, `value = 2` (an `AnyValue`).
fn key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: &Value) {
    message(buf, tag, |buf| {
        string(buf, 1, key);
        message(buf, 2, |buf| any_value(buf, value));
    });
}

/// The fields of an `AnyValue`: one member of its `value` oneof, written even when it is the
/// default (a oneof member is present or not).
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            encode_key(2, WireType::Varint, buf);
            encode_varint(u64::from(*b), buf);
        }
        Value::I64(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
        Value::F64(f) => {
            encode_key(4, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => {
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(s.as_str().len() as u64, buf);
            buf.extend_from_slice(s.as_str().as_bytes());
        }
        Value::Array(array) => {
            // AnyValue.array_value = 5: ArrayValue { values = 1 }
            message(buf, 5, |buf| {
                let mut each = |v: Value| message(buf, 1, |buf| any_value(buf, &v));
                match array {
                    Array::Bool(vs) => vs.iter().for_each(|v| each(Value::Bool(*v))),
                    Array::I64(vs) => vs.iter().for_each(|v| each(Value::I64(*v))),
                    Array::F64(vs) => vs.iter().for_each(|v| each(Value::F64(*v))),
                    Array::String(vs) => vs.iter().for_each(|v| each(Value::String(v.clone()))),
                    // A kind of array this version does not know: written as its text.
                    other => each(Value::String(other.to_string().into())),
                }
            });
        }
        // A kind of value this version does not know: written as its text.
        other => {
            let text = other.to_string();
            encode_key(1, WireType::LengthDelimited, buf);
            encode_varint(text.len() as u64, buf);
            buf.extend_from_slice(text.as_bytes());
        }
    }
}

/// A `string` field (proto3: left out when empty).
fn string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    bytes(buf, tag, s.as_bytes());
}

/// A `bytes` field (proto3: left out when empty).
fn bytes(buf: &mut Vec<u8>, tag: u32, b: &[u8]) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(b.len() as u64, buf);
        buf.extend_from_slice(b);
    }
}

/// A varint field (proto3: left out when zero).
fn varint(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// A `fixed64` field (proto3: left out when zero).
fn fixed64(buf: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `fixed32` field (proto3: left out when zero).
fn fixed32(buf: &mut Vec<u8>, tag: u32, v: u32) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceFlags, TraceId, TraceState};
    use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message as _;

    use super::*;

    fn context(trace: u128, span: u64, sampled: bool, remote: bool, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            remote,
            state.parse::<TraceState>().unwrap(),
        )
    }

    fn span(
        name: &'static str,
        kind: SpanKind,
        scope: &InstrumentationScope,
        parent: Option<(u64, bool)>,
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789);
        let dropped = if kind == SpanKind::Client { 5 } else { 0 };
        let mut events = SpanEvents::default();
        let mut links = SpanLinks::default();
        if kind == SpanKind::Server {
            events.events.push(Event::new(
                "exception",
                start + Duration::from_micros(5),
                vec![
                    KeyValue::new("exception.message", "boom"),
                    KeyValue::new("n", 0_i64),
                ],
                2,
            ));
            events.dropped_count = 3;
            let mut link = Link::with_context(context(7, 8, true, true, "k=v"));
            link.attributes = vec![KeyValue::new("why", "client context")];
            link.dropped_attributes_count = 1;
            links.links.push(link);
            links
                .links
                .push(Link::with_context(context(9, 10, false, false, "")));
            links.dropped_count = 4;
        }
        SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c,
                0xb7ad6b7169203331,
                true,
                false,
                "a=1,b=2",
            ),
            parent_span_id: parent.map_or(SpanId::INVALID, |(p, _)| SpanId::from(p)),
            parent_span_is_remote: parent.is_some_and(|(_, r)| r),
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: start + Duration::from_micros(250),
            attributes,
            dropped_attributes_count: dropped,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }

    /// What `opentelemetry-proto` makes of the same spans: the reference.
    fn reference(spans: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
        let resource = ResourceAttributesWithSchema::from(resource);
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(spans, &resource),
        }
    }

    #[test]
    fn what_is_written_decodes_to_what_opentelemetry_proto_converts() {
        let marina = InstrumentationScope::builder("marina").build();
        let other = InstrumentationScope::builder("other")
            .with_version("1.2")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", true)])
            .build();
        let every_value = vec![
            KeyValue::new("mcp.method.name", "tools/call"),
            KeyValue::new("owned", "x".repeat(300)),
            KeyValue::new("empty", ""),
            KeyValue::new("yes", true),
            KeyValue::new("no", false),
            KeyValue::new("zero", 0_i64),
            KeyValue::new("negative", -42_i64),
            KeyValue::new("ratio", 0.25_f64),
            KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
            KeyValue::new("ints", Value::Array(Array::I64(vec![0, 1, -1]))),
            KeyValue::new("floats", Value::Array(Array::F64(vec![1.5]))),
            KeyValue::new(
                "strings",
                Value::Array(Array::String(vec![StringValue::from("a"), StringValue::from("")])),
            ),
        ];
        let spans = vec![
            span(
                "tools/call echo",
                SpanKind::Server,
                &marina,
                Some((0x1111, true)),
                every_value,
                Status::error("upstream failed"),
            ),
            span(
                "tools/call echo",
                SpanKind::Client,
                &marina,
                Some((0x2222, false)),
                vec![],
                Status::Unset,
            ),
            span(
                "load_session",
                SpanKind::Internal,
                &other,
                None,
                vec![],
                Status::Ok,
            ),
            span("x", SpanKind::Producer, &marina, None, vec![], Status::Unset),
            span("y", SpanKind::Consumer, &other, None, vec![], Status::Unset),
        ];
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "marina"),
                KeyValue::new("service.instance.id", "node-a"),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.30.0")
            .build();
        let written = encode_request(&spans, &resource);
        let decoded =
            ExportTraceServiceRequest::decode(written.as_slice()).expect("a valid protobuf message");
        assert_eq!(decoded, reference(spans, &resource));
        // And an empty resource and batch.
        let empty = Resource::builder_empty().build();
        let decoded = ExportTraceServiceRequest::decode(encode_request(&[], &empty).as_slice()).unwrap();
        assert_eq!(decoded, reference(Vec::new(), &empty));
    }

    #[test]
    fn long_nested_messages_get_multi_byte_lengths() {
        let scope = InstrumentationScope::builder("marina").build();
        let spans: Vec<SpanData> = (0..200)
            .map(|i| {
                span(
                    "s",
                    SpanKind::Server,
                    &scope,
                    None,
                    vec![
                        KeyValue::new("i", i64::from(i)),
                        KeyValue::new("big", "y".repeat(20_000)),
                    ],
                    Status::Unset,
                )
            })
            .collect();
        let resource = Resource::builder().build();
        let decoded =
            ExportTraceServiceRequest::decode(encode_request(&spans, &resource).as_slice()).unwrap();
        assert_eq!(decoded, reference(spans, &resource));
    }

    /// A collector on a free loopback port answering each export with the next of `statuses`
    /// (then 200); its URL and the number of exports it received.
    fn collector(statuses: Vec<u16>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = received.clone();
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut reader = BufReader::new(conn);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_ok());
                count.fetch_add(1, Ordering::SeqCst);
                let status = statuses.next().unwrap_or(200);
                let _ = reader.get_mut().write_all(
                    format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        (url, received)
    }

    fn exporter(url: &str) -> OtlpExporter {
        OtlpExporter::new(&Target {
            url: url.into(),
            headers: vec![],
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn retryable_answers_are_tried_again_and_others_fail_the_batch() {
        use std::sync::atomic::Ordering;
        let body = || bytes::Bytes::from(encode_request(&[], &Resource::builder().build()));
        let (url, received) = collector(vec![503, 429]);
        assert!(exporter(&url).send(body()).is_ok());
        assert_eq!(received.load(Ordering::SeqCst), 3);
        let (url, received) = collector(vec![400]);
        let e = exporter(&url).send(body()).unwrap_err();
        assert!(e.to_string().contains("HTTP 400"), "{e}");
        assert_eq!(received.load(Ordering::SeqCst), 1);
        // Retries are bounded: four attempts, then the batch fails.
        let (url, received) = collector(vec![503; 10]);
        assert!(exporter(&url).send(body()).is_err());
        assert_eq!(received.load(Ordering::SeqCst), 4);
    }

    fn resolve(endpoint: Option<&str>, vars: &[(&str, &str)]) -> Result<Target, String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        Target::resolve(endpoint, |k| vars.get(k).cloned())
    }

    #[test]
    fn the_target_follows_the_exporter_specification() {
        let t = resolve(
            Some("http://collector:4318/"),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x/y")],
        )
        .unwrap();
        assert_eq!(t.url, "http://collector:4318/v1/traces");
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert!(t.headers.is_empty());
        // The signal's own endpoint is used as given; the general one gets the signal's path.
        let t = resolve(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c/custom"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other"),
            ],
        )
        .unwrap();
        assert_eq!(t.url, "https://c/custom");
        let t = resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap();
        assert_eq!(t.url, "http://c:4318/v1/traces");
        assert_eq!(resolve(None, &[]).unwrap().url, "http://localhost:4318/v1/traces");
        // Headers (percent-decoded values) and timeout; the signal's variables win.
        let t = resolve(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_HEADERS", "ignored=1"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                    "api-key=s%20ecret, x-tenant = ops",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ],
        )
        .unwrap();
        assert_eq!(
            t.headers,
            vec![
                ("api-key".into(), "s ecret".into()),
                ("x-tenant".into(), "ops".into())
            ]
        );
        assert_eq!(t.timeout, Duration::from_millis(2500));
        // What cannot be honoured is refused, with the reason.
        for (vars, reason) in [
            (&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")][..], "protocol"),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")][..],
                "compression",
            ),
            (&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")][..], "timeout"),
            (&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")][..], "header"),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")][..],
                "http(s) URL",
            ),
        ] {
            let e = resolve(None, vars).unwrap_err();
            assert!(e.contains(reason), "{vars:?}: {e}");
        }
        assert!(
            resolve(
                None,
                &[
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                    ("OTEL_EXPORTER_OTLP_COMPRESSION", "none")
                ]
            )
            .is_ok()
        );
    }
}
