//! HTTP answers of the MCP endpoint: JSON-RPC bodies with the right status, never an empty 500.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpResponse, ResponseError};
use marina_core::protocol::{RequestId, RpcError, code};
use serde_json::Value;

/// A JSON body with a status.
pub fn json(status: StatusCode, body: &Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json")
        // `to_vec` rather than `to_string`: it skips the `fmt::Write` adapter.
        .body(serde_json::to_vec(body).unwrap_or_default())
}

/// A refused request: an HTTP status plus a JSON-RPC error body (with the request's id when it
/// is known). Handlers return it with `?`.
#[derive(Debug, Clone)]
pub struct Refusal {
    status: StatusCode,
    id: Option<RequestId>,
    code: i64,
    message: String,
    /// What few refusals carry (boxed: refusals travel in `Result`s everywhere).
    extra: Option<Box<Extra>>,
}

/// The rarer parts of a refusal.
#[derive(Debug, Clone, Default)]
struct Extra {
    /// `WWW-Authenticate` challenge (401).
    challenge: Option<String>,
    /// `error.data`.
    data: Option<Value>,
    /// Further headers (rate-limit state).
    headers: Vec<(&'static str, String)>,
}

impl Refusal {
    /// Any status and code.
    pub fn new(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self {
            status,
            id: None,
            code,
            message: message.into(),
            extra: None,
        }
    }
    /// 429: a rate limit; the client may retry after `retry_after_ms`.
    pub fn rate_limited(
        message: impl Into<String>,
        retry_after_ms: u64,
        data: Value,
        headers: Vec<(&'static str, String)>,
    ) -> Self {
        let mut headers = headers;
        headers.push(("retry-after", retry_after_ms.div_ceil(1000).max(1).to_string()));
        Self {
            extra: Some(Box::new(Extra {
                data: Some(data),
                headers,
                challenge: None,
            })),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code::RATE_LIMITED, message)
        }
    }
    /// The JSON-RPC error object (for an item of a batch).
    pub fn rpc_error(&self) -> RpcError {
        let e = RpcError::new(self.code, self.message.clone());
        match self.extra.as_ref().and_then(|x| x.data.as_ref()) {
            Some(d) => e.with_data(d.clone()),
            None => e,
        }
    }
    /// An authentication failure (401, 403 insufficient scope, 503 issuer unreachable) with its
    /// `WWW-Authenticate` challenge.
    pub fn auth(status: StatusCode, message: impl Into<String>, challenge: String) -> Self {
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => code::SERVICE_UNAVAILABLE,
            _ => code::UNAUTHORIZED,
        };
        Self {
            extra: Some(Box::new(Extra {
                challenge: Some(challenge),
                ..Extra::default()
            })),
            ..Self::new(status, code, message)
        }
    }
    /// The JSON-RPC error code.
    pub fn code(&self) -> i64 {
        self.code
    }
    /// Attach the request id.
    pub fn with_id(mut self, id: Option<&RequestId>) -> Self {
        self.id = id.cloned();
        self
    }
    /// 400.
    pub fn bad_request(code: i64, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 404: unknown tenant or session; the client must start a new session.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code::INVALID_REQUEST, message)
    }
    /// 503 (with `Retry-After`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::SERVICE_UNAVAILABLE,
            message,
        )
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = json(self.status, &self.rpc_error().to_response(self.id.as_ref()));
        let extra = self.extra.as_deref().cloned().unwrap_or_default();
        for (name, value) in &extra.headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                r.headers_mut()
                    .insert(actix_web::http::header::HeaderName::from_static(name), v);
            }
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(v) = extra
            .challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            r.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        r
    }
}
