//! What a 2026-07-28 request says about itself in `params._meta`: its protocol version, the
//! client's capabilities and identity, and the log level it wants — the per-request replacement
//! of `initialize`.

use marina_core::protocol::{self, RpcError, code};
use serde_json::{Value, json};

/// The stateless revisions Marina serves.
pub const MODERN_VERSIONS: [&str; 1] = ["2026-07-28"];

/// `_meta` keys of the 2026-07-28 revision.
pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// The key results carry the server's identity under.
pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// `UnsupportedProtocolVersionError`.
pub const UNSUPPORTED_VERSION: i64 = -32022;
/// `MissingRequiredClientCapabilityError`.
pub const MISSING_CAPABILITY: i64 = -32021;

/// The request's own description of its client.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Its protocol version (a modern one).
    pub version: String,
    /// What the client can do (`{}` when it says nothing).
    pub client_capabilities: Value,
    /// Who the client is (`null` when it says nothing).
    pub client_info: Value,
    /// The least severe log level it wants `notifications/message` for; none unless it asks.
    pub log_level: Option<String>,
}

/// The protocol version a message declares in `params._meta`, if any.
pub fn declared_version(message: &Value) -> Option<&str> {
    message
        .get("params")?
        .get("_meta")?
        .get(PROTOCOL_VERSION)?
        .as_str()
}

/// Is `version` a stateless revision Marina serves?
pub fn is_modern(version: &str) -> bool {
    MODERN_VERSIONS.contains(&version)
}

/// Every version Marina serves, newest first: the stateless ones, then those of the sessionful
/// era (reached with `initialize`).
pub fn supported_versions() -> Vec<&'static str> {
    let mut all: Vec<&str> = MODERN_VERSIONS.to_vec();
    let mut legacy = protocol::SUPPORTED_VERSIONS.to_vec();
    legacy.reverse();
    all.extend(legacy);
    all
}

/// The error for a version Marina does not serve statelessly.
pub fn unsupported(requested: Option<&str>) -> RpcError {
    RpcError::new(UNSUPPORTED_VERSION, "Unsupported protocol version")
        .with_data(json!({"supported": supported_versions(), "requested": requested}))
}

/// Read the request's `_meta`. `server/discover` may come without a version (it asks which to
/// use); every other request must declare a modern one.
pub fn parse(message: &Value, discover: bool) -> Result<RequestMeta, RpcError> {
    let meta = message.get("params").and_then(|p| p.get("_meta"));
    let field = |k: &str| meta.and_then(|m| m.get(k));
    let version = match field(PROTOCOL_VERSION) {
        Some(Value::String(v)) if is_modern(v) => v.clone(),
        None if discover => MODERN_VERSIONS[0].to_owned(),
        Some(Value::String(v)) => return Err(unsupported(Some(v))),
        _ => return Err(unsupported(None)),
    };
    let client_capabilities = match field(CLIENT_CAPABILITIES) {
        None | Some(Value::Null) => json!({}),
        Some(c @ Value::Object(_)) => c.clone(),
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
                "_meta[\"{CLIENT_CAPABILITIES}\"] must be an object"
            )));
        }
    };
    let log_level = match field(LOG_LEVEL) {
        None | Some(Value::Null) => None,
        Some(Value::String(l)) if protocol::log_level_rank(l).is_some() => Some(l.clone()),
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
                "_meta[\"{LOG_LEVEL}\"] must be one of {}",
                protocol::LOG_LEVELS.join(", ")
            )));
        }
    };
    Ok(RequestMeta {
        version,
        client_capabilities,
        client_info: field(CLIENT_INFO).cloned().unwrap_or(Value::Null),
        log_level,
    })
}

/// The error for a request that needs a capability the client did not declare.
pub fn missing_capability(capability: &str) -> RpcError {
    RpcError::new(
        MISSING_CAPABILITY,
        format!("this request needs the client capability {capability:?}"),
    )
    .with_data(json!({"requiredCapabilities": [capability]}))
}

/// Map a stateless request's protocol error to its HTTP status.
pub fn http_status(e: &RpcError) -> actix_web::http::StatusCode {
    use actix_web::http::StatusCode;
    match e.code {
        super::routing::HEADER_MISMATCH | UNSUPPORTED_VERSION | MISSING_CAPABILITY => StatusCode::BAD_REQUEST,
        code::PARSE_ERROR | code::INVALID_REQUEST => StatusCode::BAD_REQUEST,
        code::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(meta: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}})
    }

    #[test]
    fn a_modern_version_is_required_and_the_rest_is_read() {
        let m = parse(
            &msg(
                json!({PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {"sampling": {}},
                CLIENT_INFO: {"name": "c"}, LOG_LEVEL: "warning"}),
            ),
            false,
        )
        .unwrap();
        assert_eq!(m.version, "2026-07-28");
        assert_eq!(m.client_capabilities, json!({"sampling": {}}));
        assert_eq!(m.client_info["name"], "c");
        assert_eq!(m.log_level.as_deref(), Some("warning"));

        let e = parse(&msg(json!({PROTOCOL_VERSION: "1900-01-01"})), false).unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_VERSION);
        let data = e.data.unwrap();
        assert_eq!(data["requested"], "1900-01-01");
        assert_eq!(data["supported"][0], "2026-07-28");
        assert!(
            data["supported"]
                .as_array()
                .unwrap()
                .contains(&json!("2025-11-25"))
        );
        assert_eq!(
            parse(&msg(json!({})), false).unwrap_err().code,
            UNSUPPORTED_VERSION
        );
        assert!(
            parse(&msg(json!({})), true).is_ok(),
            "discover may ask without a version"
        );
        let bad_level = parse(
            &msg(json!({PROTOCOL_VERSION: "2026-07-28", LOG_LEVEL: "loud"})),
            false,
        );
        assert_eq!(bad_level.unwrap_err().code, code::INVALID_PARAMS);
    }
}
