//! The router and the OpenAPI document, built together from the handlers'
//! `#[utoipa::path]` annotations (utoipa-axum), plus the layers every route
//! shares: auth (roles read from the document), metrics, problem+json for
//! every error the framework itself produces (404, 405, 413, timeouts,
//! panics), body limit, timeout, request ids and tracing.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoResponses, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, AccessTable};
use crate::error::{ApiError, Problem, PROBLEM_JSON};
use crate::{metrics, AppState};

mod audit;
mod corpus;
mod health;
mod models;
pub(crate) mod opendsr;
mod requests;

/// Error responses every authenticated operation may give.
#[allow(dead_code)]
#[derive(IntoResponses)]
pub(crate) enum Errors {
    /// Malformed input (bad JSON syntax, invalid UTF-8).
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] Problem),
    /// Missing, unknown or revoked API key.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// The key's role may not call this operation.
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// No such resource (or not visible to this key).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
    /// Conflicting state (idempotency key reuse, invalid transition, refused rollback).
    #[response(status = 409, content_type = "application/problem+json")]
    Conflict(Problem),
    /// Request body over the size limit.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// Body not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    UnsupportedMediaType(Problem),
    /// Validation failed; `errors` names the fields.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// Internal error (details are logged, never sent).
    #[response(status = 500, content_type = "application/problem+json")]
    Internal(Problem),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GRIN unlearning service",
        version = "0.1.0",
        description = "Make a trained language model forget specific data on request, and prove it.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    tags(
        (name = "deletion-requests", description = "Submit and follow deletion requests"),
        (name = "jobs", description = "The work queue"),
        (name = "models", description = "Models, versions and aliases"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "corpus", description = "A model's training corpus: rows tagged with the data subjects they concern"),
        (name = "opendsr", description = "OpenDSR (formerly OpenGDPR) processor API: erasure requests by data subject identity, signed responses and callbacks"),
        (name = "operations", description = "Health, readiness and metrics")
    )
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some(
            "An API key. The scopes listed by an operation's requirement are the roles allowed to call it \
             (submitter, reader, admin)."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(requests::create_request, requests::list_requests))
        .routes(routes!(requests::get_request))
        .routes(routes!(requests::cancel_request))
        .routes(routes!(requests::request_events))
        .routes(routes!(requests::request_certificate))
        .routes(routes!(requests::list_jobs))
        .routes(routes!(requests::get_job))
        .routes(routes!(models::list_models))
        .routes(routes!(models::get_model))
        .routes(routes!(models::list_versions))
        .routes(routes!(models::get_version))
        .routes(routes!(models::approve_version))
        .routes(routes!(models::reject_version))
        .routes(routes!(models::set_alias))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::export_audit))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(corpus::corpus_stats))
        .routes(routes!(corpus::corpus_lookup))
        .routes(routes!(opendsr::discovery))
        .routes(routes!(opendsr::processor_certificate))
        .routes(routes!(opendsr::create_opendsr))
        .routes(routes!(opendsr::status_opendsr, opendsr::cancel_opendsr))
        .routes(routes!(opendsr::create_opengdpr))
        .routes(routes!(opendsr::status_opengdpr, opendsr::cancel_opengdpr))
}

/// Operations that stream a large request body: served without the request
/// timeout (they bound their own idle time).
fn streaming_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(corpus::upload_corpus))
}

/// The OpenAPI 3.1 document of the API (what `openapi.yaml` holds).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().merge(streaming_router()).into_openapi()
}

pub(crate) fn build(state: AppState) -> Router {
    let table = Arc::new(AccessTable::from_openapi(&openapi()));
    let (router, _) = api_router().split_for_parts();
    let (streaming, _) = streaming_router().split_for_parts();
    let limits = state.limits.clone();
    let guard = |r: Router<AppState>| {
        r.route_layer(from_fn_with_state((state.clone(), table.clone()), auth::require_role))
            .route_layer(from_fn_with_state(state.metrics.clone(), metrics::track_http))
    };
    guard(router)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.request_timeout,
        ))
        .merge(guard(streaming))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_panic| {
            ApiError::internal(&"handler panicked").into_response()
        }))
        .layer(map_response(problemize))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Turns any error response that is not yet a problem document (axum's 405,
/// the timeout's 503, ...) into one, keeping its headers (e.g. `Allow`).
/// OpenDSR errors keep the specification's shape.
async fn problemize(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let is_opendsr = response.extensions().get::<opendsr::SpecErrorBody>().is_some();
    if status.as_u16() < 400 || is_problem || is_opendsr {
        return response;
    }
    let (mut parts, _body) = response.into_parts();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not support the method",
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large",
        StatusCode::SERVICE_UNAVAILABLE => "the server could not answer in time",
        _ => "the request failed",
    };
    let problem = ApiError::new(status, detail).problem();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, serde_json::to_vec(&problem).unwrap_or_default().into())
}
