//! The metrics step of the request path: an MCP request (either era) is timed from the moment
//! its method is known until its result, error or `202` is sent, and its outcome is read from the
//! answer itself — the JSON body, or the response event of its SSE stream — so no handler
//! records anything by hand (`mcp_server_operation_duration_seconds`,
//! `marina_request_processing_seconds`).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpResponse;
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::CONTENT_TYPE;
use bytes::Bytes;
use marina_telemetry::{Outcome, ServerOperation, Target};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::reply::Refusal;

/// Start timing `message` (one JSON-RPC message, not a batch) received for `tenant`.
/// `header_version` is the request's `MCP-Protocol-Version`.
pub fn begin(tenant: &str, message: &Value, header_version: Option<&str>) -> Option<ServerOperation> {
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
    Some(marina_telemetry::metrics().server_operation(tenant, method, target, version))
}

/// Record `op` with the outcome of `answer` (now, or when its SSE stream carries the response).
pub fn finish(
    op: Option<ServerOperation>,
    answer: Result<HttpResponse, Refusal>,
) -> Result<HttpResponse, Refusal> {
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
    op: Option<ServerOperation>,
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
