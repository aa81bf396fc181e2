//! HTTP answers of the MCP endpoint: JSON-RPC bodies with the right status, never an empty 500.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use marina_core::protocol::{RequestId, RpcError, code};
use serde_json::Value;

/// A JSON body with a status.
pub fn json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// A JSON-RPC error body with a status. `id` only when the request's id is known.
pub fn error(status: StatusCode, id: Option<&RequestId>, code: i64, message: &str) -> HttpResponse {
    json(status, &RpcError::new(code, message).to_response(id))
}

/// 400 with a JSON-RPC error.
pub fn bad_request(id: Option<&RequestId>, code: i64, message: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, id, code, message)
}

/// 404: unknown tenant or session. The client must start a new session.
pub fn not_found(message: &str) -> HttpResponse {
    error(StatusCode::NOT_FOUND, None, code::INVALID_REQUEST, message)
}

/// 503 with a JSON-RPC error and a `Retry-After`.
pub fn unavailable(message: &str) -> HttpResponse {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        code::SERVICE_UNAVAILABLE,
        message,
    );
    r.headers_mut().insert(
        actix_web::http::header::RETRY_AFTER,
        actix_web::http::header::HeaderValue::from_static("1"),
    );
    r
}
