//! The metrics and traces step of the request path: an MCP request (either era) is timed from the
//! moment its method is known until its result, error or `202` is sent, and its outcome is read
//! from the answer itself — the JSON body, or the response event of its SSE stream — so no handler
//! records anything by hand (`mcp_server_operation_duration_seconds`,
//! `marina_request_processing_seconds`). The same operation is the request's SERVER span when
//! traces are on (docs/operations.md, "Tracing"): it ends when the metric is recorded, with the
//! same outcome as its `error.type`.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::CONTENT_TYPE;
use bytes::Bytes;
use marina_telemetry::{Outcome, ServerOperation, Target, UpstreamWait, traces};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::reply::Refusal;

/// An MCP operation being served: its metric and, when traces are on, its SERVER span.
pub struct Operation {
    metric: ServerOperation,
    span: traces::Span,
}

impl Operation {
    /// The clock of this request's upstream waits.
    pub fn wait(&self) -> UpstreamWait {
        self.metric.wait()
    }
    /// The SERVER span (disabled when traces are off): the request is served inside it, so
    /// upstream calls become its children.
    pub fn span(&self) -> &traces::Span {
        &self.span
    }
    /// The session is known: tag the span with it (never the id itself, a bearer secret).
    pub fn session(&self, tag: &str) {
        self.span.set("mcp.session.id", tag.to_owned());
    }
    /// Record the operation with `outcome` (and end its span). One that is dropped instead is
    /// not recorded (its span ends without an outcome).
    pub fn finish(self, outcome: Outcome) {
        if outcome.is_error() {
            self.span.record_error(outcome.label());
        }
        self.metric.finish(outcome);
    }
}

/// Start timing `message` (one JSON-RPC message, not a batch) received for `tenant` in `req`;
/// `from_peer`: a peer node forwarded it (authenticated), so its trace headers are that node's.
pub fn begin(
    tenant: &str,
    message: &Value,
    req: &actix_web::HttpRequest,
    from_peer: impl FnOnce() -> bool,
) -> Option<Operation> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let header_version = header("mcp-protocol-version");
    let method = message.get("method")?.as_str()?;
    let params = message.get("params");
    let name = || params.and_then(|p| p.get("name")).and_then(Value::as_str);
    let target = match method {
        "tools/call" => name().map_or(Target::None, Target::Tool),
        "prompts/get" => name().map_or(Target::None, Target::Prompt),
        _ => Target::None,
    };
    let meta_version = params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
        .and_then(Value::as_str);
    let requested = (method == "initialize")
        .then(|| {
            params
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str)
        })
        .flatten();
    let version = meta_version.or(header_version).or(requested);
    let metric = marina_telemetry::metrics().server_operation(tenant, method, target, version);
    let span = if traces::enabled() {
        // A forwarded request continues the forwarding node's span; any other one gets the
        // client's context as the settings say.
        let (client, from_peer) = match traces::extract(None, header("traceparent"), header("tracestate"))
            .filter(|_| from_peer())
        {
            Some(peer) => (Some(peer), true),
            None => (
                traces::extract(
                    params.and_then(|p| p.get("_meta")),
                    header("traceparent"),
                    header("tracestate"),
                ),
                false,
            ),
        };
        let span = server_span(tenant, message, method, target, version, client, from_peer);
        // The request's log lines (its `request` span) name the trace they belong to; formatted
        // only if a log line is written.
        if let Some((trace_id, span_id)) = span.ids() {
            let request = tracing::Span::current();
            request.record("trace_id", tracing::field::display(trace_id));
            request.record("span_id", tracing::field::display(span_id));
        }
        span
    } else {
        traces::Span::none()
    };
    Some(Operation { metric, span })
}

/// The SERVER span of an MCP request, named and tagged after the OpenTelemetry MCP conventions.
fn server_span(
    tenant: &str,
    message: &Value,
    method: &str,
    target: Target<'_>,
    version: Option<&str>,
    client: Option<traces::SpanContext>,
    from_peer: bool,
) -> traces::Span {
    use traces::KeyValue;
    let (tool, name) = match target {
        Target::Tool(n) => (Some(n), Some(n)),
        Target::Prompt(n) => (None, Some(n)),
        Target::None => (None, None),
    };
    let mut attributes = Vec::with_capacity(7);
    attributes.push(KeyValue::new("mcp.method.name", traces::method_value(method)));
    if let Some(t) = tool {
        attributes.push(KeyValue::new(
            "gen_ai.tool.name",
            marina_core::protocol::truncate(t, 128).to_owned(),
        ));
    }
    // The id of a request (a notification has none), as the conventions want it: a string.
    match message.get("id") {
        Some(Value::String(s)) => attributes.push(KeyValue::new(
            "jsonrpc.request.id",
            marina_core::protocol::truncate(s, 128).to_owned(),
        )),
        Some(Value::Number(n)) => attributes.push(KeyValue::new("jsonrpc.request.id", n.to_string())),
        _ => {}
    }
    if let Some(v) = version {
        attributes.push(KeyValue::new(
            "mcp.protocol.version",
            marina_core::protocol::truncate(v, 32).to_owned(),
        ));
    }
    attributes.push(KeyValue::new("marina.tenant", tenant.to_owned()));
    traces::server(traces::span_name(method, name), attributes, client, from_peer)
}

/// Record `op` with the outcome of `answer` (now, or when its SSE stream carries the response).
pub fn finish(op: Option<Operation>, answer: Result<HttpResponse, Refusal>) -> Result<HttpResponse, Refusal> {
    let Some(op) = op else {
        return answer;
    };
    let res = match answer {
        Err(refusal) => {
            op.finish(Outcome::Code(refusal.code()));
            return Err(refusal);
        }
        Ok(res) => res,
    };
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if content_type.starts_with("text/event-stream") {
        return Ok(res.map_body(|_, body| BoxBody::new(WatchedStream { body, op: Some(op) })));
    }
    if !content_type.starts_with("application/json") {
        op.finish(Outcome::Ok);
        return Ok(res);
    }
    let (res, body) = res.into_parts();
    match body.try_into_bytes() {
        Ok(bytes) => {
            op.finish(outcome(&bytes).unwrap_or(Outcome::Ok));
            Ok(res.set_body(BoxBody::new(bytes)))
        }
        Err(body) => {
            op.finish(Outcome::Ok);
            Ok(res.set_body(body))
        }
    }
}

/// The route of the MCP endpoint, as the HTTP conventions name it (`http.route`).
const MCP_ROUTE: &str = "/t/{tenant}/mcp";

/// The SERVER span of a request of the MCP endpoint that is no MCP message — a GET (open or
/// resume a stream) or a DELETE (end the session) — when traces are on; they are not MCP
/// operations, so they get no metric here. Named after the OpenTelemetry HTTP conventions,
/// `{method} /t/{tenant}/mcp` (the route, not the tenant), with `http.request.method`,
/// `http.route` and `marina.tenant` (a tenant this node serves; nothing a client made up). Its
/// parent or link is the context of the `traceparent`/`tracestate` headers, as for a POST;
/// `from_peer`: a peer node forwarded the request (authenticated), so those headers are that
/// node's span. The handler runs inside it (`Span::within`), tags it with the session
/// (`mcp.session.id`, the tag) and ends it with [`http_finish`].
pub fn http_span(
    state: &crate::state::AppState,
    tenant: &str,
    req: &actix_web::HttpRequest,
    from_peer: impl FnOnce() -> bool,
) -> traces::Span {
    use traces::KeyValue;
    if !traces::enabled() {
        return traces::Span::none();
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let client = traces::extract(None, header("traceparent"), header("tracestate"));
    let from_peer = client.is_some() && from_peer();
    // The conventions' names: a method they do not know is `_OTHER`, its span `HTTP {route}`.
    let (name, method) = match req.method().as_str() {
        "GET" => ("GET /t/{tenant}/mcp", "GET"),
        "DELETE" => ("DELETE /t/{tenant}/mcp", "DELETE"),
        "POST" => ("POST /t/{tenant}/mcp", "POST"),
        _ => ("HTTP /t/{tenant}/mcp", marina_telemetry::OTHER),
    };
    let mut attributes = Vec::with_capacity(3);
    attributes.push(KeyValue::new("http.request.method", method));
    attributes.push(KeyValue::new("http.route", MCP_ROUTE));
    if let Some(t) = state.node.tenant(tenant) {
        attributes.push(KeyValue::new("marina.tenant", t.id.clone()));
    }
    let span = traces::server(name.into(), attributes, client, from_peer);
    // The request's log lines name the trace, as for an MCP operation.
    if let Some((trace_id, span_id)) = span.ids() {
        let request = tracing::Span::current();
        request.record("trace_id", tracing::field::display(trace_id));
        request.record("span_id", tracing::field::display(span_id));
    }
    span
}

/// End the span of [`http_span`] with the handler's `answer`: `http.response.status_code`, and
/// for a refusal (or a peer's answer of 4xx/5xx to a forwarded request) `error.type` = the
/// status code and status `ERROR`. For a GET that is when the stream is open (and any replay
/// is under way), not when the long-lived stream ends.
pub fn http_finish(span: &traces::Span, answer: &Result<HttpResponse, Refusal>) {
    if !traces::enabled() {
        return;
    }
    let status = match answer {
        Ok(res) => res.status(),
        Err(refusal) => actix_web::ResponseError::status_code(refusal),
    };
    span.set("http.response.status_code", i64::from(status.as_u16()));
    if status.is_client_error() || status.is_server_error() {
        span.record_error(status.as_str().to_owned());
    }
}

/// What the outcome-bearing parts of a JSON-RPC message look like (everything else skipped).
#[derive(Deserialize)]
struct Probe {
    method: Option<IgnoredAny>,
    error: Option<ErrorProbe>,
    result: Option<ResultProbe>,
}

#[derive(Deserialize)]
struct ErrorProbe {
    code: i64,
}

#[derive(Deserialize)]
struct ResultProbe {
    #[serde(rename = "isError")]
    is_error: Option<bool>,
}

/// The outcome a JSON-RPC response carries; `None` for anything else (a request or
/// notification on the stream, a batch, a body that is not a response).
fn outcome(json: &[u8]) -> Option<Outcome> {
    let p: Probe = serde_json::from_slice(json).ok()?;
    if p.method.is_some() {
        return None;
    }
    match (p.error, p.result) {
        (Some(e), _) => Some(Outcome::Code(e.code)),
        (None, Some(ResultProbe { is_error: Some(true) })) => Some(Outcome::ToolError),
        (None, Some(_)) => Some(Outcome::Ok),
        (None, None) => None,
    }
}

/// An SSE body that records its operation when the response event passes. A stream that ends
/// before it (client gone, drain, failover: the client resumes elsewhere) records nothing.
struct WatchedStream {
    body: BoxBody,
    op: Option<Operation>,
}

impl WatchedStream {
    fn watch(&mut self, chunk: &Bytes) {
        if self.op.is_none() {
            return;
        }
        let text = String::from_utf8_lossy(chunk);
        for line in text.lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if let Some(o) = outcome(data.as_bytes())
                && let Some(op) = self.op.take()
            {
                op.finish(o);
                return;
            }
        }
    }
}

impl MessageBody for WatchedStream {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let next = Pin::new(&mut self.body).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            let chunk = chunk.clone();
            self.watch(&chunk);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_responses_only() {
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Some(Outcome::Ok)
        );
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#),
            Some(Outcome::ToolError)
        );
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"x"}}"#),
            Some(Outcome::Code(-32602))
        );
        assert_eq!(
            outcome(br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#),
            None
        );
        assert_eq!(outcome(br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#), None);
        assert_eq!(outcome(b""), None);
    }
}
