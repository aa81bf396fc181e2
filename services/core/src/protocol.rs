//! The MCP / JSON-RPC envelope: protocol versions, message classification and error bodies.
//!
//! Marina parses only what routing needs (method, id, a few params) and keeps every message as a
//! `serde_json::Value` so unknown fields and `_meta` pass through untouched.

use serde_json::{Map, Value, json};

/// Protocol revisions this gateway speaks, oldest first. The last one is what we counter-offer.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-03-26", "2025-06-18", "2025-11-25"];
/// The version a server assumes when a request carries no `MCP-Protocol-Version` header.
pub const DEFAULT_HEADER_VERSION: &str = "2025-03-26";
/// Our preferred (latest) sessionful revision.
pub const LATEST_VERSION: &str = "2025-11-25";

/// Is `v` one of the protocol versions we serve?
pub fn is_supported_version(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// Version negotiation (lifecycle.mdx): the requested version if we support it, otherwise our
/// latest — a counter-offer, never an error.
pub fn negotiate_version(requested: &str) -> &'static str {
    SUPPORTED_VERSIONS
        .iter()
        .copied()
        .find(|v| *v == requested)
        .unwrap_or(LATEST_VERSION)
}

/// SEP-1699 features (priming events, `retry`, server-initiated close) exist only from 2025-11-25;
/// older clients crash on an empty `data:` line.
pub fn supports_sse_polling(version: &str) -> bool {
    version >= "2025-11-25"
}

/// JSON-RPC batches are part of 2025-03-26 only.
pub fn supports_batches(version: &str) -> bool {
    version == "2025-03-26"
}

/// Standard JSON-RPC and MCP error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid JSON-RPC request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method or undeclared capability.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid params (unknown tool, bad cursor, bad log level).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP: resource not found.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Implementation-defined server error range: the session store is unavailable.
    pub const SERVICE_UNAVAILABLE: i64 = -32000;
    /// Implementation-defined: the request was interrupted by a node failure.
    pub const INTERRUPTED: i64 = -32001;
    /// Implementation-defined: the request was cancelled.
    pub const CANCELLED: i64 = -32003;
    /// Implementation-defined: the request is not authenticated (HTTP 401).
    pub const UNAUTHORIZED: i64 = -32004;
    /// Implementation-defined: a rate limit was hit (HTTP 429; `data.retryAfterMs`).
    pub const RATE_LIMITED: i64 = -32005;
    /// 2026-07-28 `MissingRequiredClientCapabilityError`: the request needs a capability the
    /// client did not declare.
    pub const MISSING_CAPABILITY: i64 = -32021;
}

/// A JSON-RPC request/notification id (string or integer, never null).
pub type RequestId = Value;

/// What kind of JSON-RPC message a body holds.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    /// Has `method` and a valid `id`.
    Request {
        /// The request id (string or integer).
        id: RequestId,
        /// The method name.
        method: String,
    },
    /// Has `method` and no `id`.
    Notification {
        /// The method name.
        method: String,
    },
    /// Has `id` and exactly one of `result` / `error`.
    Response {
        /// The id of the request this answers.
        id: RequestId,
    },
}

/// Why a message is not a valid JSON-RPC 2.0 message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidMessage {
    /// The id, when it could be read (so the error can carry it).
    pub id: Option<RequestId>,
    /// One concise sentence.
    pub reason: &'static str,
}

fn valid_id(v: &Value) -> bool {
    v.is_string() || v.is_i64() || v.is_u64()
}

/// Classify one JSON value as a JSON-RPC message.
pub fn classify(msg: &Value) -> Result<MessageKind, InvalidMessage> {
    let Some(obj) = msg.as_object() else {
        return Err(InvalidMessage {
            id: None,
            reason: "a JSON-RPC message must be a JSON object",
        });
    };
    let id = obj.get("id");
    let readable_id = id.filter(|v| valid_id(v)).cloned();
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(InvalidMessage {
            id: readable_id,
            reason: "the jsonrpc member must be \"2.0\"",
        });
    }
    match (obj.get("method"), id) {
        (Some(Value::String(method)), None) => Ok(MessageKind::Notification {
            method: method.clone(),
        }),
        (Some(Value::String(method)), Some(id)) => {
            if !valid_id(id) {
                return Err(InvalidMessage {
                    id: None,
                    reason: "a request id must be a string or an integer",
                });
            }
            if let Some(p) = obj.get("params")
                && !p.is_object()
                && !p.is_array()
            {
                return Err(InvalidMessage {
                    id: readable_id,
                    reason: "params must be an object",
                });
            }
            Ok(MessageKind::Request {
                id: id.clone(),
                method: method.clone(),
            })
        }
        (Some(_), _) => Err(InvalidMessage {
            id: readable_id,
            reason: "method must be a string",
        }),
        (None, Some(id)) if valid_id(id) => {
            let has_result = obj.contains_key("result");
            let has_error = obj.get("error").is_some_and(Value::is_object);
            if has_result ^ has_error {
                Ok(MessageKind::Response { id: id.clone() })
            } else {
                Err(InvalidMessage {
                    id: readable_id,
                    reason: "a response must carry exactly one of result or error",
                })
            }
        }
        _ => Err(InvalidMessage {
            id: None,
            reason: "not a JSON-RPC request, notification or response",
        }),
    }
}

/// A JSON-RPC error object ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Integer error code.
    pub code: i64,
    /// One concise sentence.
    pub message: String,
    /// Optional structured detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// Build an error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
    /// Attach `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    /// `-32602` invalid params.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }
    /// `-32601` method not found.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            code::METHOD_NOT_FOUND,
            format!("method not found: {}", truncate(method, 64)),
        )
    }
    /// `-32603` internal error (no details leak).
    pub fn internal() -> Self {
        Self::new(code::INTERNAL_ERROR, "internal error")
    }

    /// The error as a full JSON-RPC response. `id` is omitted when unknown (schema 2025-11-25).
    pub fn to_response(&self, id: Option<&RequestId>) -> Value {
        let mut err = Map::new();
        err.insert("code".into(), json!(self.code));
        err.insert("message".into(), json!(self.message));
        if let Some(d) = &self.data {
            err.insert("data".into(), d.clone());
        }
        let mut m = Map::new();
        m.insert("jsonrpc".into(), json!("2.0"));
        if let Some(id) = id {
            m.insert("id".into(), id.clone());
        }
        m.insert("error".into(), Value::Object(err));
        Value::Object(m)
    }
}

/// A successful JSON-RPC response.
pub fn result_response(id: &RequestId, result: Value) -> Value {
    message([("id", id.clone()), ("result", result)])
}

/// A JSON-RPC notification.
pub fn notification(method: &str, params: Value) -> Value {
    message([("method", Value::from(method)), ("params", params)])
}

/// A JSON-RPC request (server → client).
pub fn request(id: &RequestId, method: &str, params: Value) -> Value {
    message([
        ("id", id.clone()),
        ("method", Value::from(method)),
        ("params", params),
    ])
}

/// A JSON-RPC message of these members. Built by moving them in: `json!` would copy `result`
/// and `params` member by member (`to_value` of a `Value`), on every message relayed.
fn message<const N: usize>(members: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), Value::from("2.0"));
    for (k, v) in members {
        m.insert(k.into(), v);
    }
    Value::Object(m)
}

/// Cut a client-supplied string for inclusion in an error message.
pub fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// RFC 5424 log levels, in increasing severity, as MCP names them.
pub const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The client capability a server→client request needs (`elicitation/create` → `elicitation`).
pub fn capability_of(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// Severity rank of an MCP log level, or `None` if it is not one.
pub fn log_level_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|l| *l == level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_counter_offers_latest() {
        assert_eq!(negotiate_version("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate_version("1999-01-01"), "2025-11-25");
        assert_eq!(negotiate_version("2024-11-05"), "2025-11-25");
    }

    #[test]
    fn classify_messages() {
        let r = classify(&json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert_eq!(
            r,
            MessageKind::Request {
                id: json!(1),
                method: "ping".into()
            }
        );
        let n = classify(&json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(n, MessageKind::Notification { .. }));
        let resp = classify(&json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap();
        assert!(matches!(resp, MessageKind::Response { .. }));
        assert!(classify(&json!({"jsonrpc":"2.0","id":null,"method":"ping"})).is_err());
        assert!(classify(&json!({"jsonrpc":"1.0","id":1,"method":"ping"})).is_err());
        assert!(classify(&json!([1])).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","id":1,"result":{},"error":{}})).is_err());
        assert!(classify(&json!({"jsonrpc":"2.0","id":1,"method":"x","params":3})).is_err());
    }

    #[test]
    fn error_without_id_omits_it() {
        let v = RpcError::new(code::PARSE_ERROR, "bad").to_response(None);
        assert!(v.get("id").is_none());
        assert_eq!(v["error"]["code"], -32700);
    }
}
