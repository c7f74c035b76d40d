//! Liveness, readiness and Prometheus metrics (public: no key needed).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::{ApiError, Problem};
use crate::views::Health;
use crate::AppState;

/// The process is up.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The database is reachable and migrated.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", content_type = "application/problem+json", body = Problem)
    )
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.list_models().await {
        Ok(_) => Json(Health { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unreachable or not migrated",
            )
            .into_response()
        }
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain", body = String),
        (status = 500, description = "The store could not be read", content_type = "application/problem+json", body = Problem)
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render(&state.store).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
