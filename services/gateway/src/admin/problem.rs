//! Errors of the admin API: RFC 9457 problem documents (`application/problem+json`) that name
//! the offending field, never an empty body or a stack trace.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::tenants::Invalid;

/// A problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    /// The field at fault (a JSON path into the request's document), if one is.
    field: Option<String>,
}

impl Problem {
    /// Any status.
    pub fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            field: None,
        }
    }

    /// 400, naming the field.
    pub fn invalid(e: Invalid) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "invalid document",
            detail: e.detail,
            field: Some(e.field),
        }
    }

    /// 400 for a malformed request (not about a document field).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found", detail)
    }

    /// 503: the store cannot be reached.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store unavailable",
            "the configuration store cannot be reached; retry shortly",
        )
    }

    /// The same problem, its field named relative to what the caller sent: `prefix` removed
    /// (unchanged when the field is elsewhere).
    pub fn with_field_prefix(mut self, prefix: &str) -> Self {
        if let Some(rest) = self.field.as_deref().and_then(|f| f.strip_prefix(prefix)) {
            self.field = Some(rest.to_owned());
        }
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn body(&self) -> Value {
        let mut b = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(f) = &self.field {
            b["field"] = json!(f);
            b["errors"] = json!([{"field": f, "detail": self.detail}]);
        }
        b
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        r.content_type("application/problem+json");
        if self.status == StatusCode::UNAUTHORIZED {
            r.insert_header(("www-authenticate", "Bearer realm=\"marina-admin\""));
        }
        r.body(self.body().to_string())
    }
}

impl From<marina_core::store::StoreError> for Problem {
    fn from(e: marina_core::store::StoreError) -> Self {
        tracing::warn!(error = %e, "admin API: store error");
        Self::unavailable()
    }
}
