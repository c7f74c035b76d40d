//! The OpenDSR (formerly OpenGDPR) processor API, under `/opendsr/v1`:
//! discovery, the processor certificate, and the request routes under both
//! names, `opendsr_requests` and the older `opengdpr_requests`.
//!
//! Errors from these handlers use the specification's shape (§7.5) with
//! `Content-Type: application/json`: validation errors are 400, an unknown
//! `subject_request_id` 404. Authentication stays the API's (`Bearer` keys;
//! 401/403 are problem documents), which the specification leaves to the
//! processor. Identities are validated and turned into HMAC tags at once;
//! they are never logged, stored or echoed in errors.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use grin_store::{NewCallback, NewOpenDsrRequest, OpenDsrRequest, OpenDsrStatus};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::IntoResponses;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::Problem;
use crate::extract::ApiPath;
use crate::identity::{tags_of, Identity, IDENTITY_FORMATS, IDENTITY_TYPES};
use crate::opendsr::{
    callback_body, choose_targets, processor_status, rfc3339, API_VERSION, BASE_PATH, DOMAIN_HEADERS, ERASURE,
    REQUEST_TYPES, SIGNATURE_HEADERS,
};
use crate::views::{
    DiscoveryView, OpenDsrCancelledView, OpenDsrCreatedView, OpenDsrErrorBody, OpenDsrErrorDetail, OpenDsrErrorObject,
    OpenDsrRequestBody, OpenDsrStatusView, SupportedIdentity,
};
use crate::AppState;

/// Marks a response whose error body is in the OpenDSR shape, so that the
/// router's problem+json conversion leaves it alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpecErrorBody;

/// Most identities in one request.
const MAX_IDENTITIES: usize = 32;
/// Most callback URLs in one request.
const MAX_CALLBACKS: usize = 10;

/// Error responses of the OpenDSR request routes.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub(crate) enum DsrErrors {
    /// Not valid (the OpenDSR error object names each problem), an
    /// unsupported request type, identity type or format, a reused
    /// `subject_request_id` with another body, or a state that does not
    /// allow the action.
    #[response(status = 400, content_type = "application/json")]
    BadRequest(#[to_schema] OpenDsrErrorBody),
    /// Missing, unknown or revoked API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not call this operation.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No request with this `subject_request_id` (visible to this key).
    #[response(status = 404, content_type = "application/json")]
    NotFound(OpenDsrErrorBody),
    /// Body over the size limit.
    #[response(status = 413, content_type = "application/json")]
    TooLarge(OpenDsrErrorBody),
    /// Body not `application/json`.
    #[response(status = 415, content_type = "application/json")]
    UnsupportedMediaType(OpenDsrErrorBody),
    /// Internal error (details are logged, never sent).
    #[response(status = 500, content_type = "application/json")]
    Internal(OpenDsrErrorBody),
}

/// An error in the OpenDSR shape.
#[derive(Debug)]
pub(crate) struct DsrError {
    status: StatusCode,
    message: String,
    errors: Vec<OpenDsrErrorDetail>,
}

fn detail(domain: &str, reason: &str, message: impl Into<String>) -> OpenDsrErrorDetail {
    OpenDsrErrorDetail {
        domain: domain.into(),
        reason: reason.into(),
        message: message.into(),
    }
}

impl DsrError {
    fn new(status: StatusCode, domain: &str, reason: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        DsrError {
            status,
            errors: vec![detail(domain, reason, message.clone())],
            message,
        }
    }

    fn validation(errors: Vec<OpenDsrErrorDetail>) -> Self {
        let message = match errors.as_slice() {
            [one] => one.message.clone(),
            _ => format!("the request is not valid: {} problems; see errors", errors.len()),
        };
        DsrError {
            status: StatusCode::BAD_REQUEST,
            message,
            errors,
        }
    }

    fn not_found() -> Self {
        DsrError::new(
            StatusCode::NOT_FOUND,
            "Request",
            "not_found",
            "no request with this subject_request_id",
        )
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error in the OpenDSR API");
        DsrError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server",
            "internal_error",
            "internal error; see the server log",
        )
    }
}

impl From<grin_store::Error> for DsrError {
    fn from(e: grin_store::Error) -> Self {
        match e {
            grin_store::Error::IdempotencyMismatch { .. } => DsrError::new(
                StatusCode::BAD_REQUEST,
                "Validation",
                "duplicate_subject_request_id",
                "subject_request_id was already used for a different request",
            ),
            grin_store::Error::InvalidState { state, .. } => DsrError::new(
                StatusCode::BAD_REQUEST,
                "Request",
                "invalid_state",
                format!("the request is {state}: only pending requests can be cancelled"),
            ),
            grin_store::Error::NotFound { .. } => DsrError::not_found(),
            other => DsrError::internal(&other),
        }
    }
}

impl IntoResponse for DsrError {
    fn into_response(self) -> Response {
        let body = OpenDsrErrorBody {
            error: OpenDsrErrorObject {
                code: self.status.as_u16(),
                message: self.message,
                errors: self.errors,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response.extensions_mut().insert(SpecErrorBody);
        response
    }
}

type DsrResult<T> = Result<T, DsrError>;

/// A JSON response signed with the processor key.
async fn signed(state: &AppState, status: StatusCode, body: &impl Serialize) -> DsrResult<Response> {
    let bytes = serde_json::to_vec(body).map_err(|e| DsrError::internal(&e))?;
    let key = state.opendsr.key().await.map_err(|e| DsrError::internal(&e))?;
    let signature = HeaderValue::from_str(&key.sign(&bytes)).map_err(|e| DsrError::internal(&e))?;
    let domain =
        HeaderValue::from_str(&state.opendsr.settings().processor_domain).map_err(|e| DsrError::internal(&e))?;
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for name in DOMAIN_HEADERS {
        headers.insert(name, domain.clone());
    }
    for name in SIGNATURE_HEADERS {
        headers.insert(name, signature.clone());
    }
    Ok(response)
}

// ---- discovery and certificate -----------------------------------------------

/// OpenDSR discovery (§6): API version, supported identities (every type,
/// in every format), request types (`erasure`) and the certificate URL.
#[utoipa::path(
    get, path = "/opendsr/v1/discovery", tag = "opendsr",
    responses((status = 200, description = "What this processor supports", body = DiscoveryView))
)]
pub(crate) async fn discovery(State(state): State<AppState>, headers: HeaderMap) -> Json<DiscoveryView> {
    let base = match &state.opendsr.settings().public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(|h| format!("http://{h}"))
            .unwrap_or_default(),
    };
    let supported_identities = IDENTITY_TYPES
        .iter()
        .flat_map(|t| {
            IDENTITY_FORMATS.iter().map(move |f| SupportedIdentity {
                identity_type: (*t).to_owned(),
                identity_format: (*f).to_owned(),
            })
        })
        .collect();
    Json(DiscoveryView {
        api_version: API_VERSION.into(),
        supported_identities,
        supported_subject_request_types: vec![ERASURE.into()],
        processor_certificate: format!("{base}{BASE_PATH}/processor_certificate.pem"),
    })
}

/// The X.509 certificate (PEM) of the key that signs responses and
/// callbacks (the `processor_certificate` of discovery).
#[utoipa::path(
    get, path = "/opendsr/v1/processor_certificate.pem", tag = "opendsr",
    responses(
        (status = 200, description = "The certificate", content_type = "application/x-pem-file", body = String),
        (status = 500, description = "No key could be loaded or generated", content_type = "application/json",
         body = OpenDsrErrorBody)
    )
)]
pub(crate) async fn processor_certificate(State(state): State<AppState>) -> DsrResult<Response> {
    let key = state.opendsr.key().await.map_err(|e| DsrError::internal(&e))?;
    let mut response = key.certificate_pem().to_owned().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-pem-file"));
    Ok(response)
}

// ---- requests ------------------------------------------------------------------

/// Which name a request route was called by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    /// `/opendsr_requests`: `regulation` is required.
    OpenDsr,
    /// `/opengdpr_requests` (OpenGDPR 0.1): `regulation` is optional.
    OpenGdpr,
}

/// Submit an erasure request (OpenDSR §7).
///
/// The identities are resolved through the corpus of every model (or the
/// models named by this processor's extension): each model holding rows
/// about them gets a deletion request. With no rows anywhere the request is
/// `completed` at once (nothing to forget). Idempotent on
/// `subject_request_id`: the same id and body return the same answer
/// (`Idempotent-Replayed: true`); another body is 400.
#[utoipa::path(
    post, path = "/opendsr/v1/opendsr_requests", tag = "opendsr",
    request_body = OpenDsrRequestBody,
    responses(
        (status = 201, description = "Received (signed)", body = OpenDsrCreatedView, headers(
            ("X-OpenDSR-Processor-Domain" = String, description = "The processor domain"),
            ("X-OpenDSR-Signature" = String, description = "Base64 RSA-SHA256 signature of the body"),
            ("X-OpenGDPR-Processor-Domain" = String, description = "The same, OpenGDPR name"),
            ("X-OpenGDPR-Signature" = String, description = "The same, OpenGDPR name")
        )),
        DsrErrors
    ),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn create_opendsr(State(state): State<AppState>, caller: Caller, request: Request) -> Response {
    create(&state, &caller, request, Flavour::OpenDsr)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Submit an erasure request under the OpenGDPR route name (`regulation`
/// optional); otherwise as `POST /opendsr/v1/opendsr_requests`.
#[utoipa::path(
    post, path = "/opendsr/v1/opengdpr_requests", tag = "opendsr",
    request_body = OpenDsrRequestBody,
    responses(
        (status = 201, description = "Received (signed)", body = OpenDsrCreatedView, headers(
            ("X-OpenDSR-Processor-Domain" = String, description = "The processor domain"),
            ("X-OpenDSR-Signature" = String, description = "Base64 RSA-SHA256 signature of the body"),
            ("X-OpenGDPR-Processor-Domain" = String, description = "The same, OpenGDPR name"),
            ("X-OpenGDPR-Signature" = String, description = "The same, OpenGDPR name")
        )),
        DsrErrors
    ),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn create_opengdpr(State(state): State<AppState>, caller: Caller, request: Request) -> Response {
    create(&state, &caller, request, Flavour::OpenGdpr)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The status of a request (§8), signed. Submitters see their own.
#[utoipa::path(
    get, path = "/opendsr/v1/opendsr_requests/{id}", tag = "opendsr",
    params(("id" = String, Path, description = "The subject_request_id")),
    responses((status = 200, description = "Its status (signed)", body = OpenDsrStatusView), DsrErrors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn status_opendsr(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Response {
    status(&state, &caller, &id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The status of a request, OpenGDPR route name.
#[utoipa::path(
    get, path = "/opendsr/v1/opengdpr_requests/{id}", tag = "opendsr",
    params(("id" = String, Path, description = "The subject_request_id")),
    responses((status = 200, description = "Its status (signed)", body = OpenDsrStatusView), DsrErrors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn status_opengdpr(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Response {
    status(&state, &caller, &id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Cancel a request while it is `pending` (§9); 400 once work started or it
/// finished.
#[utoipa::path(
    delete, path = "/opendsr/v1/opendsr_requests/{id}", tag = "opendsr",
    params(("id" = String, Path, description = "The subject_request_id")),
    responses((status = 202, description = "Cancelled (signed)", body = OpenDsrCancelledView), DsrErrors),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn cancel_opendsr(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Response {
    cancel(&state, &caller, &id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Cancel a request, OpenGDPR route name.
#[utoipa::path(
    delete, path = "/opendsr/v1/opengdpr_requests/{id}", tag = "opendsr",
    params(("id" = String, Path, description = "The subject_request_id")),
    responses((status = 202, description = "Cancelled (signed)", body = OpenDsrCancelledView), DsrErrors),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn cancel_opengdpr(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Response {
    cancel(&state, &caller, &id)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A request body that passed validation.
struct Parsed {
    subject_request_id: String,
    regulation: Option<String>,
    submitted_time: DateTime<Utc>,
    identities: Vec<Identity>,
    api_version: String,
    callback_urls: Vec<String>,
    /// From this processor's extension.
    models: Option<Vec<String>>,
    extensions: Value,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

async fn read_body(state: &AppState, request: Request) -> DsrResult<(axum::body::Bytes, Value)> {
    if !is_json(request.headers()) {
        return Err(DsrError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Validation",
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    let limit = state.limits.max_body_bytes;
    let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|_| {
        DsrError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Validation",
            "too_large",
            format!("the request body is over {limit} bytes"),
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
        DsrError::new(
            StatusCode::BAD_REQUEST,
            "Validation",
            "malformed_json",
            "the request body is not valid JSON",
        )
    })?;
    Ok((bytes, value))
}

fn parse(value: &Value, flavour: Flavour, domain: &str) -> Result<Parsed, Vec<OpenDsrErrorDetail>> {
    let mut errors = Vec::new();
    let invalid = |errors: &mut Vec<OpenDsrErrorDetail>, field: &str, reason: &str, msg: &str| {
        errors.push(detail("Validation", reason, format!("{field}: {msg}")));
    };
    let Some(obj) = value.as_object() else {
        return Err(vec![detail(
            "Validation",
            "invalid_value",
            "the request body must be a JSON object",
        )]);
    };
    let string = |errors: &mut Vec<OpenDsrErrorDetail>, field: &str, required: bool| -> Option<String> {
        match obj.get(field) {
            None | Some(Value::Null) => {
                if required {
                    errors.push(detail("Validation", "required", format!("{field} field is required")));
                }
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(detail(
                    "Validation",
                    "invalid_type",
                    format!("{field}: must be a string"),
                ));
                None
            }
        }
    };

    let srid = string(&mut errors, "subject_request_id", true).and_then(|s| match Uuid::parse_str(s.trim()) {
        Ok(u) => Some(u.hyphenated().to_string()),
        Err(_) => {
            invalid(&mut errors, "subject_request_id", "invalid_value", "must be a UUID");
            None
        }
    });
    if let Some(t) = string(&mut errors, "subject_request_type", true) {
        if t == ERASURE {
        } else if REQUEST_TYPES.contains(&t.as_str()) {
            errors.push(detail(
                "Request",
                "unsupported_request_type",
                format!("subject_request_type {t:?} is not supported: this processor fulfils erasure requests only"),
            ));
        } else {
            invalid(
                &mut errors,
                "subject_request_type",
                "invalid_value",
                "must be erasure, access or portability",
            );
        }
    }
    let regulation = string(&mut errors, "regulation", flavour == Flavour::OpenDsr).and_then(|r| {
        let r = r.to_ascii_lowercase();
        if r == "gdpr" || r == "ccpa" {
            Some(r)
        } else {
            invalid(&mut errors, "regulation", "invalid_value", "must be gdpr or ccpa");
            None
        }
    });
    let submitted_time =
        string(&mut errors, "submitted_time", true).and_then(|t| match DateTime::parse_from_rfc3339(t.trim()) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                invalid(
                    &mut errors,
                    "submitted_time",
                    "invalid_value",
                    "must be an RFC 3339 date-time",
                );
                None
            }
        });
    let api_version = string(&mut errors, "api_version", false).and_then(|v| {
        if v.is_empty() || v.len() > 16 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
            invalid(
                &mut errors,
                "api_version",
                "invalid_value",
                "must be a version such as 1.0",
            );
            None
        } else {
            Some(v)
        }
    });

    let mut identities = Vec::new();
    match obj.get("subject_identities") {
        None | Some(Value::Null) => {
            errors.push(detail("Validation", "required", "subject_identities field is required"))
        }
        Some(Value::Array(items)) if items.is_empty() => invalid(
            &mut errors,
            "subject_identities",
            "required",
            "at least one identity is required",
        ),
        Some(Value::Array(items)) if items.len() > MAX_IDENTITIES => invalid(
            &mut errors,
            "subject_identities",
            "invalid_value",
            &format!("at most {MAX_IDENTITIES} identities"),
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                match Identity::parse(item, false) {
                    Ok(identity) => identities.push(identity),
                    Err(e) => {
                        let domain = if e.reason.starts_with("unsupported") {
                            "Identity"
                        } else {
                            "Validation"
                        };
                        let field = if e.part == "identity" {
                            format!("subject_identities[{i}]")
                        } else {
                            format!("subject_identities[{i}].{}", e.part)
                        };
                        errors.push(detail(domain, e.reason, format!("{field}: {}", e.message)));
                    }
                }
            }
        }
        Some(_) => invalid(&mut errors, "subject_identities", "invalid_type", "must be an array"),
    }

    let mut callback_urls = Vec::new();
    match obj.get("status_callback_urls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.len() > MAX_CALLBACKS => invalid(
            &mut errors,
            "status_callback_urls",
            "invalid_value",
            &format!("at most {MAX_CALLBACKS} URLs"),
        ),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("status_callback_urls[{i}]");
                match item.as_str() {
                    None => invalid(&mut errors, &field, "invalid_type", "must be a string"),
                    Some(url) => match crate::callbacks::check_url(url) {
                        Ok(()) if !callback_urls.iter().any(|u| u == url) => callback_urls.push(url.to_owned()),
                        Ok(()) => {}
                        Err(why) => invalid(&mut errors, &field, "invalid_value", &why),
                    },
                }
            }
        }
        Some(_) => invalid(&mut errors, "status_callback_urls", "invalid_type", "must be an array"),
    }

    let mut models = None;
    let extensions = obj.get("extensions").cloned().unwrap_or(Value::Null);
    match &extensions {
        Value::Null => {}
        Value::Object(map) => match map.get(domain) {
            None | Some(Value::Null) => {}
            Some(Value::Object(ours)) => {
                if let Some(extra) = ours.keys().find(|k| k.as_str() != "models") {
                    invalid(
                        &mut errors,
                        &format!("extensions.{domain}"),
                        "invalid_value",
                        &format!("unknown field {extra:?} (this processor reads only \"models\")"),
                    );
                }
                match ours.get("models") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(names)) if !names.is_empty() && names.iter().all(Value::is_string) => {
                        models = Some(names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect());
                    }
                    Some(_) => invalid(
                        &mut errors,
                        &format!("extensions.{domain}.models"),
                        "invalid_value",
                        "must be a non-empty array of model names",
                    ),
                }
            }
            Some(_) => invalid(
                &mut errors,
                &format!("extensions.{domain}"),
                "invalid_type",
                "must be an object",
            ),
        },
        _ => invalid(&mut errors, "extensions", "invalid_type", "must be an object"),
    }

    match (srid, submitted_time) {
        (Some(subject_request_id), Some(submitted_time)) if errors.is_empty() => Ok(Parsed {
            subject_request_id,
            regulation,
            submitted_time,
            identities,
            api_version: api_version.unwrap_or_else(|| API_VERSION.into()),
            callback_urls,
            models,
            extensions,
        }),
        _ => Err(errors),
    }
}

async fn create(state: &AppState, caller: &Caller, request: Request, flavour: Flavour) -> DsrResult<Response> {
    let settings = state.opendsr.settings();
    let (raw, value) = read_body(state, request).await?;
    let parsed = parse(&value, flavour, &settings.processor_domain).map_err(DsrError::validation)?;
    let store = &state.store;

    // Which models: this processor's extension, else the configured list,
    // else every model.
    let models: Option<Vec<String>> = match (&parsed.models, &settings.models) {
        (Some(named), _) => {
            let mut errors = Vec::new();
            for (i, name) in named.iter().enumerate() {
                match store.get_model(name).await {
                    Ok(_) => {}
                    Err(grin_store::Error::NotFound { .. } | grin_store::Error::Invalid { .. }) => errors.push(detail(
                        "Validation",
                        "invalid_value",
                        format!("extensions.{}.models[{i}]: no such model", settings.processor_domain),
                    )),
                    Err(e) => return Err(e.into()),
                }
            }
            if !errors.is_empty() {
                return Err(DsrError::validation(errors));
            }
            Some(named.clone())
        }
        (None, Some(configured)) => Some(configured.clone()),
        (None, None) => None,
    };
    let tags = tags_of(&parsed.identities, store);
    let rows: Vec<_> = store
        .subject_rows(&tags)
        .await?
        .into_iter()
        .filter(|r| models.as_ref().is_none_or(|m| m.contains(&r.model_name)))
        .collect();
    let targets = choose_targets(&rows, &tags);
    drop(rows);

    let body_digest = store.row_digest(&json!({
        "subject_request_id": parsed.subject_request_id,
        "subject_request_type": ERASURE,
        "regulation": parsed.regulation,
        "submitted_time": rfc3339(parsed.submitted_time),
        "identities": parsed.identities.iter().map(Identity::canonical).collect::<Vec<_>>(),
        "api_version": parsed.api_version,
        "status_callback_urls": parsed.callback_urls,
        "extensions": parsed.extensions,
    }));
    let received = grin_store_now();
    let expected =
        received + chrono::TimeDelta::from_std(settings.expected_completion).unwrap_or(chrono::TimeDelta::zero());
    let initial = if targets.is_empty() {
        OpenDsrStatus::Completed
    } else {
        OpenDsrStatus::Pending
    };
    let proto = OpenDsrRequest {
        id: Uuid::nil(),
        client_id: caller.client_id(),
        subject_request_id: parsed.subject_request_id.clone(),
        body_digest: body_digest.clone(),
        regulation: parsed.regulation.clone(),
        subject_request_type: ERASURE.into(),
        api_version: parsed.api_version.clone(),
        submitted_time: parsed.submitted_time,
        received_time: received,
        expected_completion_time: expected,
        status_callback_urls: parsed.callback_urls.clone(),
        targets: Vec::new(),
        request_ids: Vec::new(),
        status: initial,
        resolved_at: None,
        cancel_requested_at: None,
        created_at: received,
        updated_at: received,
    };
    let results = (initial == OpenDsrStatus::Completed).then_some(0);
    let initial_callbacks = parsed
        .callback_urls
        .iter()
        .map(|url| NewCallback {
            url: url.clone(),
            body: callback_body(&proto, initial, url, results),
        })
        .collect();
    let new = NewOpenDsrRequest {
        client_id: proto.client_id.clone(),
        subject_request_id: parsed.subject_request_id.clone(),
        body_digest,
        regulation: parsed.regulation.clone(),
        subject_request_type: ERASURE.into(),
        api_version: parsed.api_version.clone(),
        submitted_time: parsed.submitted_time,
        received_time: received,
        expected_completion_time: expected,
        status_callback_urls: parsed.callback_urls.clone(),
        targets,
        initial_callbacks,
    };
    let (record, created) = store.create_opendsr_request(&new, &caller.actor()).await?;
    tracing::info!(
        opendsr_id = %record.id,
        targets = record.targets.len(),
        created,
        status = %record.status,
        "OpenDSR erasure request received"
    );
    // Make its deletion requests now; the dispatcher retries on failure.
    if let Err(e) = state.opendsr.refresh(store, record.clone()).await {
        tracing::warn!(opendsr_id = %record.id, error = %e, "resolving an OpenDSR request failed; the dispatcher will retry");
    }
    let view = OpenDsrCreatedView {
        controller_id: record.client_id.clone(),
        expected_completion_time: rfc3339(record.expected_completion_time),
        received_time: rfc3339(record.received_time),
        encoded_request: base64::engine::general_purpose::STANDARD.encode(&raw),
        subject_request_id: record.subject_request_id.clone(),
    };
    let mut response = signed(state, StatusCode::CREATED, &view).await?;
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn grin_store_now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// The request with this id visible to the caller: its own, or (readers and
/// admins) anyone's.
async fn visible(state: &AppState, caller: &Caller, id: &str, any_client: bool) -> DsrResult<OpenDsrRequest> {
    let Ok(srid) = Uuid::parse_str(id.trim()) else {
        return Err(DsrError::not_found());
    };
    let srid = srid.hyphenated().to_string();
    let client = caller.client_id();
    if let Some(own) = state.store.find_opendsr_request(Some(&client), &srid).await? {
        return Ok(own);
    }
    if any_client {
        if let Some(other) = state.store.find_opendsr_request(None, &srid).await? {
            return Ok(other);
        }
    }
    Err(DsrError::not_found())
}

async fn refreshed(state: &AppState, record: OpenDsrRequest) -> OpenDsrRequest {
    let fallback = record.clone();
    match state.opendsr.refresh(&state.store, record).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(opendsr_id = %fallback.id, error = %e, "refreshing an OpenDSR request failed");
            fallback
        }
    }
}

async fn status(state: &AppState, caller: &Caller, id: &str) -> DsrResult<Response> {
    let record = visible(state, caller, id, caller.reads_all()).await?;
    let record = refreshed(state, record).await;
    let requests = state.store.deletion_requests_by_ids(&record.request_ids).await?;
    let results_count = match record.status {
        OpenDsrStatus::Completed => Some(state.store.count_rows_forgotten_by(&record.request_ids).await?),
        _ => None,
    };
    let mut extensions = serde_json::Map::new();
    extensions.insert(
        state.opendsr.settings().processor_domain.clone(),
        json!({
            "status": processor_status(&record, &requests),
            "deletion_request_ids": record.request_ids,
        }),
    );
    let view = OpenDsrStatusView {
        controller_id: record.client_id.clone(),
        expected_completion_time: rfc3339(record.expected_completion_time),
        subject_request_id: record.subject_request_id.clone(),
        request_status: record.status.as_str().to_owned(),
        api_version: record.api_version.clone(),
        results_url: None,
        results_count,
        extensions: Value::Object(extensions),
    };
    signed(state, StatusCode::OK, &view).await
}

async fn cancel(state: &AppState, caller: &Caller, id: &str) -> DsrResult<Response> {
    let received = grin_store_now();
    let record = visible(state, caller, id, caller.reads_all()).await?;
    let record = refreshed(state, record).await;
    if record.cancel_requested_at.is_none() {
        if record.status != OpenDsrStatus::Pending {
            return Err(DsrError::new(
                StatusCode::BAD_REQUEST,
                "Request",
                "invalid_state",
                format!(
                    "the request is {}: only pending requests can be cancelled",
                    record.status
                ),
            ));
        }
        let marked = state.store.request_opendsr_cancel(record.id, &caller.actor()).await?;
        tracing::info!(opendsr_id = %marked.id, "OpenDSR cancellation requested");
        refreshed(state, marked).await;
    }
    let view = OpenDsrCancelledView {
        controller_id: record.client_id.clone(),
        subject_request_id: record.subject_request_id.clone(),
        received_time: rfc3339(received),
        api_version: record.api_version.clone(),
    };
    signed(state, StatusCode::ACCEPTED, &view).await
}
