//! CORS for browser-based MCP clients. A preflight from an origin the tenant allows is answered
//! with the methods and headers MCP needs; its responses let the page read `Mcp-Session-Id`,
//! `MCP-Protocol-Version` and `WWW-Authenticate`. A disallowed origin gets no CORS grant — its
//! preflight a 403, its requests the 403 of the Origin check. Hand-written rather than
//! `actix-cors`: the allowed origins are per tenant and are the same list the DNS-rebinding
//! check uses.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, VARY};
use actix_web::{HttpRequest, HttpResponse};
use marina_core::protocol::{RpcError, code};
use marina_core::settings::TenantSettings;

/// Methods of the MCP endpoint.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Request headers a client of the MCP endpoint sends.
const ALLOW_HEADERS: &str = "accept, authorization, content-type, last-event-id, mcp-protocol-version, mcp-session-id, x-api-key, x-request-id";
/// Response headers a browser page must be able to read.
const EXPOSE_HEADERS: &str =
    "mcp-session-id, mcp-protocol-version, www-authenticate, retry-after, x-request-id";
/// How long a browser may cache a preflight answer.
const MAX_AGE: &str = "600";

/// Grant `origin` access to a response.
pub fn grant(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(HeaderName::from_static("access-control-allow-origin"), v);
    }
    headers.insert(
        HeaderName::from_static("access-control-expose-headers"),
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(VARY, HeaderValue::from_static("origin"));
}

/// `OPTIONS /t/{tenant}/mcp`.
pub fn preflight(req: &HttpRequest, tenant: &TenantSettings) -> HttpResponse {
    if req.headers().get("origin").is_none() {
        // Not a CORS request: say what the endpoint supports.
        return HttpResponse::NoContent()
            .insert_header(("Allow", METHODS))
            .finish();
    }
    let Some(origin) = crate::origin::allowed_origin(req, tenant) else {
        tracing::info!("CORS preflight from a disallowed origin");
        return HttpResponse::build(StatusCode::FORBIDDEN)
            .json(RpcError::new(code::INVALID_REQUEST, "forbidden: origin not allowed").to_response(None));
    };
    let mut resp = HttpResponse::NoContent()
        .insert_header(("access-control-allow-methods", METHODS))
        .insert_header(("access-control-allow-headers", ALLOW_HEADERS))
        .insert_header(("access-control-max-age", MAX_AGE))
        .finish();
    grant(resp.headers_mut(), origin);
    resp
}
