//! The one error type of the API, [`ApiError`], and its RFC 9457
//! `application/problem+json` body, [`Problem`]. Store errors are mapped by
//! [`grin_store::Error::http_status`]; a 5xx never carries the internal
//! cause, which is logged with `tracing` instead.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field (`items[3].text`), or a header / query name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` for plain HTTP statuses).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Field-level validation errors (422).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub type_: &'static str,
    pub detail: Option<String>,
    pub errors: Vec<FieldError>,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            type_: "about:blank",
            detail: Some(detail.into()),
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, what)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, detail);
        e.type_ = "urn:grin:problem:unauthenticated";
        e.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"grin\""),
        ));
        e
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::FORBIDDEN, detail);
        e.type_ = "urn:grin:problem:forbidden";
        e
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(StatusCode::CONFLICT, detail);
        e.type_ = "urn:grin:problem:conflict";
        e
    }

    /// 422 with field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            type_: "urn:grin:problem:validation",
            detail: Some("the request is not valid; see errors".into()),
            errors,
            headers: Vec::new(),
        }
    }

    /// 500 (or 503) whose cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log")
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: self.type_.to_owned(),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
        }
    }
}

impl From<grin_store::Error> for ApiError {
    fn from(e: grin_store::Error) -> Self {
        use grin_store::Error as E;
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match &e {
            E::Invalid { field, reason } => ApiError::validation(vec![FieldError::new(*field, reason.clone())]),
            E::RollbackRefused { missing, .. } => {
                let mut err = ApiError::conflict(e.to_string());
                err.type_ = "urn:grin:problem:rollback-refused";
                err.errors = missing
                    .iter()
                    .map(|id| FieldError::new("reapplied", format!("request {id} would be undone")))
                    .collect();
                err
            }
            E::IdempotencyMismatch { .. } => {
                let mut err = ApiError::conflict(
                    "this Idempotency-Key was already used for a different request body".to_string(),
                );
                err.type_ = "urn:grin:problem:idempotency-mismatch";
                err
            }
            _ if status.is_server_error() => ApiError::internal(&e),
            // 404 and 409 messages name entities and states, never payloads.
            _ => {
                let mut err = ApiError::new(status, e.to_string());
                if status == StatusCode::CONFLICT {
                    err.type_ = "urn:grin:problem:conflict";
                }
                err
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
