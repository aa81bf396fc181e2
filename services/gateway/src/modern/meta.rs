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
pub const MISSING_CAPABILITY: i64 = code::MISSING_CAPABILITY;

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

/// The error for a request whose `_meta` lacks what every 2026-07-28 request carries.
fn meta_invalid(what: &str) -> RpcError {
    RpcError::invalid_params(format!(
        "every request must carry params._meta with {PROTOCOL_VERSION} (a string) and {CLIENT_CAPABILITIES} (an object): {what}"
    ))
}

/// Read the request's `_meta` (every request carries one, `server/discover` too). The version is
/// read as given: [`check_version`] decides whether it is served, after the routing headers were
/// compared with it.
pub fn parse(message: &Value) -> Result<RequestMeta, RpcError> {
    let Some(meta) = message
        .get("params")
        .and_then(|p| p.get("_meta"))
        .filter(|m| m.is_object())
    else {
        return Err(meta_invalid("_meta is missing"));
    };
    let Some(version) = meta.get(PROTOCOL_VERSION).and_then(Value::as_str) else {
        return Err(meta_invalid("the protocol version is missing"));
    };
    let client_capabilities = match meta.get(CLIENT_CAPABILITIES) {
        Some(c @ Value::Object(_)) => c.clone(),
        _ => return Err(meta_invalid("the client capabilities are missing")),
    };
    let log_level = match meta.get(LOG_LEVEL) {
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
        version: version.to_owned(),
        client_capabilities,
        client_info: meta.get(CLIENT_INFO).cloned().unwrap_or(Value::Null),
        log_level,
    })
}

/// Is the request's version one Marina serves statelessly? (`-32022` otherwise.)
pub fn check_version(meta: &RequestMeta) -> Result<(), RpcError> {
    if is_modern(&meta.version) {
        Ok(())
    } else {
        Err(unsupported(Some(&meta.version)))
    }
}

/// The error for a request that needs a capability the client did not declare.
pub fn missing_capability(capability: &str) -> RpcError {
    RpcError::new(
        MISSING_CAPABILITY,
        format!("this request needs the client capability {capability:?}"),
    )
    // A `ClientCapabilities` object naming what is missing, as the schema defines it.
    .with_data(json!({"requiredCapabilities": {capability: {}}}))
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
    fn every_request_carries_a_version_and_capabilities_and_the_rest_is_read() {
        let m = parse(&msg(
            json!({PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {"sampling": {}},
            CLIENT_INFO: {"name": "c"}, LOG_LEVEL: "warning"}),
        ))
        .unwrap();
        assert_eq!(m.version, "2026-07-28");
        assert!(check_version(&m).is_ok());
        assert_eq!(m.client_capabilities, json!({"sampling": {}}));
        assert_eq!(m.client_info["name"], "c");
        assert_eq!(m.log_level.as_deref(), Some("warning"));

        let old = parse(&msg(
            json!({PROTOCOL_VERSION: "1900-01-01", CLIENT_CAPABILITIES: {}}),
        ))
        .unwrap();
        let e = check_version(&old).unwrap_err();
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
        for missing in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
            msg(json!({CLIENT_CAPABILITIES: {}})),
            msg(json!({PROTOCOL_VERSION: "2026-07-28"})),
        ] {
            assert_eq!(
                parse(&missing).unwrap_err().code,
                code::INVALID_PARAMS,
                "{missing}"
            );
        }
        let bad_level = parse(&msg(
            json!({PROTOCOL_VERSION: "2026-07-28", CLIENT_CAPABILITIES: {}, LOG_LEVEL: "loud"}),
        ));
        assert_eq!(bad_level.unwrap_err().code, code::INVALID_PARAMS);
    }
}
