//! Label values, bounded by construction: every value a metric can carry comes from a fixed set,
//! from the node's configuration (tenants, upstreams), or from a capped set of published names.

use std::collections::HashSet;
use std::sync::Mutex;

/// The value of any label whose input is outside its known set.
pub const OTHER: &str = "_OTHER";

/// The MCP methods of the specification's revisions (both eras); any other is [`OTHER`].
const METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "roots/list",
    "sampling/createMessage",
    "elicitation/create",
    "server/discover",
    "subscriptions/listen",
    "tasks/get",
    "tasks/result",
    "tasks/list",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
    "notifications/tools/list_changed",
    "notifications/resources/list_changed",
    "notifications/resources/updated",
    "notifications/prompts/list_changed",
    "notifications/elicitation/complete",
    "notifications/tasks/status",
    "notifications/subscriptions/acknowledged",
];

/// The protocol revisions Marina knows (either era); any other is [`OTHER`].
const VERSIONS: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
];

/// `mcp_method_name`: the method if the specification names it, else [`OTHER`].
pub fn method(m: &str) -> &'static str {
    METHODS.iter().find(|k| **k == m).copied().unwrap_or(OTHER)
}

/// `mcp_protocol_version`: a known revision, empty when none was given, else [`OTHER`].
pub fn protocol_version(v: Option<&str>) -> &'static str {
    match v {
        None | Some("") => "",
        Some(v) => VERSIONS.iter().find(|k| **k == v).copied().unwrap_or(OTHER),
    }
}

/// How an MCP operation ended (`error_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A result (or, for a notification, its acceptance).
    Ok,
    /// A JSON-RPC error with this code.
    Code(i64),
    /// A `tools/call` result with `isError: true`.
    ToolError,
    /// Anything else that failed (a transport failure, a malformed answer).
    Other,
}

impl Outcome {
    /// The label value: empty on success; the code as a string for the JSON-RPC reserved range
    /// (`-32768..=-32000`), where every code of MCP and of Marina lies; `tool_error`; else
    /// [`OTHER`] (an upstream's own codes are unbounded).
    pub fn label(self) -> String {
        match self {
            Self::Ok => String::new(),
            Self::Code(c) if (-32768..=-32000).contains(&c) => c.to_string(),
            Self::ToolError => "tool_error".to_owned(),
            Self::Code(_) | Self::Other => OTHER.to_owned(),
        }
    }
    /// Did the operation fail?
    pub fn is_error(self) -> bool {
        self != Self::Ok
    }

    /// The outcome a JSON-RPC response carries: its error's code (an error without a numeric
    /// code is [`Self::Other`]), [`Self::ToolError`] for a result with `isError: true`, else
    /// [`Self::Ok`]; `None` for anything that is not a response (a request or notification, a
    /// batch, a message with neither `result` nor `error`). For a response already parsed; the
    /// gateway reads the outcome of a response it only has as bytes without building a `Value`.
    pub fn of_response(message: &serde_json::Value) -> Option<Self> {
        if message.get("method").is_some() {
            return None;
        }
        match (message.get("error"), message.get("result")) {
            (Some(e), _) => Some(
                e.get("code")
                    .and_then(serde_json::Value::as_i64)
                    .map_or(Self::Other, Self::Code),
            ),
            (None, Some(r)) if r.get("isError") == Some(&serde_json::Value::Bool(true)) => {
                Some(Self::ToolError)
            }
            (None, Some(_)) => Some(Self::Ok),
            (None, None) => None,
        }
    }
}

/// A tool or prompt name, as far as a metric may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// No target (methods other than `tools/call` and `prompts/get`).
    None,
    /// A tool the request named.
    Tool(&'a str),
    /// A prompt the request named.
    Prompt(&'a str),
}

/// The names one node may carry as label values: at most `cap` distinct (tenant, kind, name)
/// triples, admitted first come first served for the life of the process. Past the cap, a new
/// name is [`OTHER`]; a name admitted once keeps its series.
#[derive(Debug)]
pub struct NamedTargets {
    cap: usize,
    admitted: Mutex<HashSet<(String, bool, String)>>,
}

impl NamedTargets {
    /// A set holding at most `cap` names.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            admitted: Mutex::new(HashSet::new()),
        }
    }

    /// The label value for `name` (a tool when `tool`, else a prompt) of `tenant`.
    pub fn label(&self, tenant: &str, tool: bool, name: &str) -> String {
        if !plausible_name(name) {
            return OTHER.to_owned();
        }
        let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let key = (tenant.to_owned(), tool, name.to_owned());
        if admitted.contains(&key) {
            return name.to_owned();
        }
        if admitted.len() >= self.cap {
            return OTHER.to_owned();
        }
        admitted.insert(key);
        name.to_owned()
    }

    /// How many names are admitted.
    pub fn len(&self) -> usize {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Is no name admitted?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A name of the shape the specification allows for tools (`[A-Za-z0-9_.-]{1,128}`, with `/`
/// for prompts published by name); anything else cannot have been published.
fn plausible_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

/// `http_response_status_class`: `1xx` … `5xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `http_request_method`: the standard methods, else [`OTHER`].
pub fn http_method(m: &str) -> &'static str {
    const KNOWN: &[&str] = &["GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"];
    KNOWN.iter().find(|k| **k == m).copied().unwrap_or(OTHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_and_versions_are_other() {
        assert_eq!(method("tools/call"), "tools/call");
        assert_eq!(method("tools/call2"), OTHER);
        assert_eq!(protocol_version(Some("2025-06-18")), "2025-06-18");
        assert_eq!(protocol_version(Some("1999-01-01")), OTHER);
        assert_eq!(protocol_version(None), "");
    }

    #[test]
    fn error_types_are_bounded() {
        assert_eq!(Outcome::Ok.label(), "");
        assert_eq!(Outcome::Code(-32602).label(), "-32602");
        assert_eq!(Outcome::Code(12345).label(), OTHER);
        assert_eq!(Outcome::ToolError.label(), "tool_error");
    }

    #[test]
    fn outcomes_are_read_from_responses_only() {
        use serde_json::json;
        let of = |v: serde_json::Value| Outcome::of_response(&v);
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": 1, "result": {}})),
            Some(Outcome::Ok)
        );
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}})),
            Some(Outcome::Ok)
        );
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": true}})),
            Some(Outcome::ToolError)
        );
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": "x"}})),
            Some(Outcome::Code(-32602))
        );
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "id": 1, "error": {"message": "no code"}})),
            Some(Outcome::Other)
        );
        assert_eq!(
            of(json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {}})),
            None
        );
        assert_eq!(of(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})), None);
        assert_eq!(of(json!([{"jsonrpc": "2.0", "id": 1, "result": {}}])), None);
        assert_eq!(of(json!({"jsonrpc": "2.0", "id": 1})), None);
    }

    #[test]
    fn names_past_the_cap_are_other_and_admitted_names_stay() {
        let t = NamedTargets::new(2);
        assert_eq!(t.label("a", true, "x"), "x");
        assert_eq!(t.label("a", true, "y"), "y");
        assert_eq!(t.label("a", true, "z"), OTHER);
        assert_eq!(t.label("b", true, "x"), OTHER);
        assert_eq!(t.label("a", true, "x"), "x");
        assert_eq!(t.label("a", true, "bad name\n"), OTHER);
        assert_eq!(t.len(), 2);
    }
}
