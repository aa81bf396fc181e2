//! Errors of the admin API: RFC 9457 problem documents (`application/problem+json`) that name
//! the offending field, never an empty body or a stack trace.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

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

    /// The same problem, naming `field` (a query parameter or a document path) as at fault.
    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
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

    pub(super) fn body(&self) -> ProblemDocument {
        ProblemDocument {
            kind: "about:blank",
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            field: self.field.clone(),
            errors: self.field.as_ref().map(|f| {
                vec![FieldError {
                    field: f.clone(),
                    detail: self.detail.clone(),
                }]
            }),
        }
    }
}

/// An RFC 9457 problem document, as every error of the admin API is sent
/// (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "not found", "status": 404, "detail": "no tenant acme"}))]
pub struct ProblemDocument {
    /// Always `about:blank`: `title` and `status` say what happened.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: &'static str,
    /// A short summary (`invalid document`, `bad request`, `not found`, …).
    title: &'static str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What is wrong, for a person.
    detail: String,
    /// The field at fault, as a path into the request's document (`auth.api_keys[0].sha256`;
    /// empty for the whole document). Only when a field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<String>,
    /// The fields at fault, with what is wrong with each. Only when a field is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errors: Option<Vec<FieldError>>,
}

/// One field at fault.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    /// A path into the request's document.
    field: String,
    /// What is wrong with it.
    detail: String,
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
        r.body(serde_json::to_string(&self.body()).unwrap_or_default())
    }
}

impl From<marina_core::store::StoreError> for Problem {
    fn from(e: marina_core::store::StoreError) -> Self {
        tracing::warn!(error = %e, "admin API: store error");
        Self::unavailable()
    }
}
