//! The audit log: pages, chain verification, JSON Lines export.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use grin_store::{AuditFilter, Error as StoreError};

use super::Errors;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::ApiQuery;
use crate::views::{AuditPage, AuditQuery, AuditRecordView, AuditVerification};
use crate::AppState;

fn filter_of(q: &AuditQuery) -> AuditFilter {
    AuditFilter {
        entity_kind: q.entity_kind.clone(),
        entity_id: q.entity_id.clone(),
        action: q.action.clone(),
    }
}

/// Audit records in `seq` order, after the cursor.
#[utoipa::path(
    get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "A page", body = AuditPage), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn list_audit(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > state.limits.max_page_size {
        return Err(ApiError::validation(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {}", state.limits.max_page_size),
        )]));
    }
    let after = q.after.unwrap_or(0).max(0);
    let items = state.store.list_audit(&filter_of(&q), after, limit).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|r| r.seq))
        .flatten();
    Ok(Json(AuditPage {
        items: items.into_iter().map(AuditRecordView::from).collect(),
        next,
    }))
}

/// Walks the whole hash chain.
#[utoipa::path(
    get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The verdict", body = AuditVerification), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn verify_audit(State(state): State<AppState>) -> ApiResult<Json<AuditVerification>> {
    Ok(Json(match state.store.verify_audit().await {
        Ok(head) => AuditVerification {
            valid: true,
            rows: Some(head.rows),
            head_hash: Some(head.head_hash),
            broken_seq: None,
            reason: None,
        },
        Err(StoreError::AuditChainBroken { seq, reason }) => AuditVerification {
            valid: false,
            rows: None,
            head_hash: None,
            broken_seq: Some(seq),
            reason: Some(reason),
        },
        Err(e) => return Err(e.into()),
    }))
}

/// The audit log as JSON Lines (one record per line), streamed.
#[utoipa::path(
    get, path = "/v1/audit/export", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "JSON Lines of AuditRecordView", content_type = "application/jsonl", body = String), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn export_audit(State(state): State<AppState>, ApiQuery(q): ApiQuery<AuditQuery>) -> Response {
    let filter = filter_of(&q);
    let start = q.after.unwrap_or(0).max(0);
    let stream = futures::stream::unfold(Some(start), move |cursor| {
        let state = state.clone();
        let filter = filter.clone();
        async move {
            let after = cursor?;
            match state.store.list_audit(&filter, after, 1000).await {
                Ok(items) if items.is_empty() => None,
                Ok(items) => {
                    let next = (items.len() == 1000).then(|| items.last().map(|r| r.seq)).flatten();
                    let mut chunk = Vec::new();
                    for r in items {
                        let _ = serde_json::to_writer(&mut chunk, &AuditRecordView::from(r));
                        chunk.push(b'\n');
                    }
                    Some((Ok::<_, std::io::Error>(chunk), next))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed mid-stream");
                    Some((Err(std::io::Error::other("audit export failed")), None))
                }
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/jsonl")], Body::from_stream(stream)).into_response()
}
