//! Models, versions, approvals and aliases.

use axum::extract::State;
use axum::Json;

use super::Errors;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath};
use crate::views::{AliasView, ModelList, ModelView, RejectBody, SetAliasBody, VersionList, VersionView};
use crate::AppState;

/// Every registered model, by name.
#[utoipa::path(
    get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "Models", body = ModelList), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn list_models(State(state): State<AppState>) -> ApiResult<Json<ModelList>> {
    let models = state.store.list_models().await?;
    Ok(Json(ModelList {
        items: models.into_iter().map(|m| ModelView::new(m, None)).collect(),
    }))
}

/// One model with its aliases.
#[utoipa::path(
    get, path = "/v1/models/{name}", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "The model", body = ModelView), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn get_model(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ModelView>> {
    let model = state.store.get_model(&name).await?;
    let aliases = state.store.list_aliases(&name).await?;
    Ok(Json(ModelView::new(model, Some(aliases))))
}

/// A model's versions, oldest first.
#[utoipa::path(
    get, path = "/v1/models/{name}/versions", tag = "models",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "Versions", body = VersionList), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn list_versions(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<VersionList>> {
    state.store.get_model(&name).await?;
    let versions = state.store.list_versions(&name).await?;
    Ok(Json(VersionList {
        items: versions.into_iter().map(VersionView::from).collect(),
    }))
}

/// One version with its manifest.
#[utoipa::path(
    get, path = "/v1/models/{name}/versions/{number}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("number" = i64, Path, description = "Version number")),
    responses((status = 200, description = "The version", body = VersionView), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn get_version(
    State(state): State<AppState>,
    ApiPath((name, number)): ApiPath<(String, i64)>,
) -> ApiResult<Json<VersionView>> {
    Ok(Json(state.store.get_version_by_number(&name, number).await?.into()))
}

/// Approve a version awaiting approval: publish it and complete its requests.
#[utoipa::path(
    post, path = "/v1/models/{name}/versions/{number}/approve", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("number" = i64, Path, description = "Version number")),
    responses((status = 200, description = "The published version", body = VersionView), Errors),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn approve_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, number)): ApiPath<(String, i64)>,
) -> ApiResult<Json<VersionView>> {
    let version = state.store.get_version_by_number(&name, number).await?;
    Ok(Json(
        state.store.approve_version(version.id, &caller.actor()).await?.into(),
    ))
}

/// Reject a version awaiting approval; its requests fail with `reason`.
#[utoipa::path(
    post, path = "/v1/models/{name}/versions/{number}/reject", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("number" = i64, Path, description = "Version number")),
    request_body = RejectBody,
    responses((status = 200, description = "The rejected version", body = VersionView), Errors),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn reject_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, number)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<RejectBody>,
) -> ApiResult<Json<VersionView>> {
    if body.reason.trim().is_empty() || body.reason.len() > 2000 {
        return Err(crate::ApiError::validation(vec![crate::FieldError::new(
            "reason",
            "1 to 2000 bytes",
        )]));
    }
    let version = state.store.get_version_by_number(&name, number).await?;
    Ok(Json(
        state
            .store
            .reject_version(version.id, &caller.actor(), &body.reason)
            .await?
            .into(),
    ))
}

/// Point an alias at a published version. Moving `production` back is
/// refused (409, `missing` requests listed) when it would undo fulfilled
/// deletion requests, unless they are all named in `reapplied`.
#[utoipa::path(
    put, path = "/v1/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path, description = "Model name"), ("alias" = String, Path, description = "Alias")),
    request_body = SetAliasBody,
    responses((status = 200, description = "The alias", body = AliasView), Errors),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn set_alias(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<SetAliasBody>,
) -> ApiResult<Json<AliasView>> {
    let version = state.store.get_version_by_number(&name, body.version).await?;
    let alias = state
        .store
        .set_alias(&name, &alias, version.id, &caller.actor(), &body.reapplied)
        .await?;
    Ok(Json(alias.into()))
}
