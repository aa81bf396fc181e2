//! The 2026-07-28 routing headers: what a stateless request says in its HTTP headers must be what
//! its body says, since load balancers and gateways route on the headers and Marina executes the
//! body. `MCP-Protocol-Version` and `Mcp-Method` on every request, `Mcp-Name` on `tools/call`,
//! `resources/read` and `prompts/get`, `Mcp-Param-{Name}` for the arguments a tool marks with
//! `x-mcp-header`. A missing, repeated, malformed or contradicting header is a 400 with
//! `HeaderMismatch` (-32020).

use actix_web::HttpRequest;
use base64::Engine as _;
use marina_core::protocol::RpcError;
use serde_json::Value;

/// `HeaderMismatch`.
pub const HEADER_MISMATCH: i64 = -32020;

fn mismatch(message: String) -> RpcError {
    RpcError::new(HEADER_MISMATCH, format!("Header mismatch: {message}"))
}

/// The one value of header `name` (decoded from the `=?base64?…?=` form), `None` when absent.
fn single(req: &HttpRequest, name: &str) -> Result<Option<String>, RpcError> {
    let mut values = req.headers().get_all(name);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(mismatch(format!("{name} is repeated")));
    }
    let raw = first
        .to_str()
        .map_err(|_| mismatch(format!("{name} is not visible ASCII (use the =?base64?…?= form)")))?;
    decode(raw)
        .map(Some)
        .ok_or_else(|| mismatch(format!("{name} holds a malformed =?base64?…?= value")))
}

/// A header value, decoded when it has the Base64 sentinel form.
fn decode(raw: &str) -> Option<String> {
    match raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(raw.to_owned()),
    }
}

fn required(req: &HttpRequest, name: &str, body: &str) -> Result<(), RpcError> {
    match single(req, name)? {
        None => Err(mismatch(format!("{name} is missing (the body says {body:?})"))),
        Some(v) if v == body => Ok(()),
        Some(v) => Err(mismatch(format!(
            "{name} header value {:?} does not match body value {:?}",
            marina_core::protocol::truncate(&v, 128),
            marina_core::protocol::truncate(body, 128)
        ))),
    }
}

/// Check the standard headers of a stateless request (`version`: its `_meta` version).
pub fn check(req: &HttpRequest, method: &str, params: &Value, version: &str) -> Result<(), RpcError> {
    required(req, "mcp-protocol-version", version)?;
    required(req, "mcp-method", method)?;
    let name = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => return Ok(()),
    };
    match name.and_then(Value::as_str) {
        Some(n) => required(req, "mcp-name", n),
        // The body is malformed; the method's own checks say how.
        None => Ok(()),
    }
}

/// The `x-mcp-header` marks of a tool's `inputSchema`: (header name, property path), reachable
/// through `properties` alone.
fn marks(schema: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(s: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (k, sub) in props {
            path.push(k.clone());
            if let Some(h) = sub.get("x-mcp-header").and_then(Value::as_str) {
                out.push((h.to_owned(), path.clone()));
            }
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), &mut out);
    out
}

/// A header value as a 2026-07-28 client sends it: as it is when it is visible ASCII without
/// surrounding spaces, else in the `=?base64?…?=` form.
pub fn encode(value: &str) -> String {
    let plain = value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.starts_with("=?base64?");
    if plain {
        value.to_owned()
    } else {
        format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

/// Does a tool's `inputSchema` mark any argument with `x-mcp-header`?
pub fn has_marks(input_schema: &Value) -> bool {
    !marks(input_schema).is_empty()
}

/// The `Mcp-Param-{Name}` headers a 2026-07-28 client sends with a `tools/call` of a tool with
/// `input_schema` and these `arguments` (the client side of [`check_params`]).
pub fn param_headers(input_schema: &Value, arguments: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, path) in marks(input_schema) {
        let mut value = Some(arguments);
        for k in &path {
            value = value.and_then(|v| v.get(k));
        }
        let text = match value {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Bool(_) | Value::Number(_))) => v.to_string(),
            _ => continue,
        };
        // A name that cannot be a header name is not sent (the upstream refuses such a tool).
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            continue;
        }
        out.push((format!("mcp-param-{name}"), encode(&text)));
    }
    out
}

/// Check the `Mcp-Param-{Name}` headers of a `tools/call` against its `arguments`: every marked
/// argument present in the body must be mirrored, with the same value (integers compared as
/// numbers).
pub fn check_params(req: &HttpRequest, input_schema: &Value, arguments: &Value) -> Result<(), RpcError> {
    for (name, path) in marks(input_schema) {
        let header = format!("mcp-param-{}", name.to_ascii_lowercase());
        let mut value = Some(arguments);
        for k in &path {
            value = value.and_then(|v| v.get(k));
        }
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(got) = single(req, &header)? else {
            return Err(mismatch(format!("Mcp-Param-{name} is missing")));
        };
        let same = match value {
            Value::String(s) => got == *s,
            Value::Bool(b) => got == b.to_string(),
            Value::Number(n) => got
                .parse::<f64>()
                .ok()
                .zip(n.as_f64())
                .is_some_and(|(a, b)| a == b),
            _ => false, // only primitives may be marked
        };
        if !same {
            return Err(mismatch(format!(
                "Mcp-Param-{name} does not match the argument {}",
                path.join(".")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use serde_json::json;

    fn req(headers: &[(&str, &str)]) -> HttpRequest {
        let mut r = TestRequest::post();
        for (k, v) in headers {
            r = r.append_header((*k, *v));
        }
        r.to_http_request()
    }

    #[test]
    fn headers_must_be_present_single_and_equal_to_the_body() {
        let ok = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ];
        let params = json!({"name": "echo"});
        assert!(check(&req(&ok), "tools/call", &params, "2026-07-28").is_ok());
        // The name in Base64 (as for non-ASCII names) is decoded before comparing.
        let b64 = [ok[0], ok[1], ("mcp-name", "=?base64?ZWNobw==?=")];
        assert!(check(&req(&b64), "tools/call", &params, "2026-07-28").is_ok());
        for bad in [
            vec![ok[0], ok[1]],                                // Mcp-Name missing
            vec![ok[0], ("mcp-method", "tools/list"), ok[2]],  // contradicts
            vec![ok[0], ok[1], ok[2], ("mcp-name", "echo")],   // repeated
            vec![ok[1], ok[2]],                                // version missing
            vec![ok[0], ok[1], ("mcp-name", "=?base64?!!?=")], // malformed
        ] {
            let e = check(&req(&bad), "tools/call", &params, "2026-07-28").unwrap_err();
            assert_eq!(e.code, HEADER_MISMATCH, "{bad:?}");
        }
    }

    #[test]
    fn marked_arguments_are_mirrored_in_param_headers() {
        let schema = json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"}}},
        }});
        let args = json!({"region": "us-west1", "opts": {"n": 42}});
        let good = req(&[("mcp-param-region", "us-west1"), ("mcp-param-n", "42.0")]);
        assert!(check_params(&good, &schema, &args).is_ok());
        let missing = req(&[("mcp-param-region", "us-west1")]);
        assert_eq!(
            check_params(&missing, &schema, &args).unwrap_err().code,
            HEADER_MISMATCH
        );
        let wrong = req(&[("mcp-param-region", "eu"), ("mcp-param-n", "42")]);
        assert_eq!(
            check_params(&wrong, &schema, &args).unwrap_err().code,
            HEADER_MISMATCH
        );
        // An argument left out is not expected.
        assert!(check_params(&req(&[]), &schema, &json!({})).is_ok());
    }
}
