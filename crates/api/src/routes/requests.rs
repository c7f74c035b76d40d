//! Deletion requests (create, read, list, cancel, SSE events, certificate)
//! and jobs (list, read).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use grin_store::{DeletionRequest, Job, JobFilter, JobState, NewRequest, PageRequest, RequestFilter, RequestStatus};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Errors;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::views::{
    CreateDeletionRequest, DeletionRequestPage, DeletionRequestView, ForgetItem, JobListQuery, JobPage, JobView,
    RequestListQuery,
};
use crate::{AppState, Limits};

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Submit a deletion request.
///
/// Stored durably and queued; answers at once. With an `Idempotency-Key`
/// header, the same key and body return the same request (202,
/// `Idempotent-Replayed: true`); the same key with another body is 409.
#[utoipa::path(
    post, path = "/v1/deletion-requests", tag = "deletion-requests",
    request_body = CreateDeletionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe (at most 255 characters)")),
    responses((status = 202, description = "Accepted", body = DeletionRequestView), Errors),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn create_request(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateDeletionRequest>,
) -> ApiResult<Response> {
    let mut errors = validate(&body, &state.limits);
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => Uuid::new_v4().to_string(),
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_owned(),
            _ => {
                errors.push(FieldError::new("Idempotency-Key", "1 to 255 visible ASCII characters"));
                String::new()
            }
        },
    };
    if body.callback_url.is_some() && state.callbacks.is_none() {
        errors.push(FieldError::new(
            "callback_url",
            "callbacks are not enabled on this server",
        ));
    }
    match state.store.get_model(&body.model).await {
        Ok(_) => {}
        Err(grin_store::Error::NotFound { .. }) => errors.push(FieldError::new("model", "no such model")),
        Err(e) if e.http_status() == 422 => errors.push(FieldError::new("model", "not a valid model name")),
        Err(e) => return Err(e.into()),
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let payload = (!body.items.is_empty()).then(|| serde_json::to_value(&body.items).unwrap_or(Value::Null));
    let new = NewRequest {
        client_id: caller.client_id(),
        idempotency_key: key,
        model_name: body.model.clone(),
        subject_hmac: body.subject.as_ref().map(|s| state.store.hmac(s.as_bytes())),
        forget_payload: payload,
        method_overrides: body
            .method
            .as_ref()
            .map_or_else(|| json!({}), |m| serde_json::to_value(m).unwrap_or_else(|_| json!({}))),
        callback_url: body.callback_url.clone(),
    };
    let (request, created) = state.store.create_request(&new).await?;
    if created {
        tracing::info!(request_id = %request.id, model = %request.model_name, "deletion request accepted");
        if let (Some(hub), Some(_)) = (&state.callbacks, &request.callback_url) {
            hub.watch(&request);
        }
    }
    let location = HeaderValue::from_str(&format!("/v1/deletion-requests/{}", request.id)).ok();
    let view = DeletionRequestView::new(request, None);
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if !created {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Field-level checks of a new request (the model's existence aside).
pub(crate) fn validate(body: &CreateDeletionRequest, limits: &Limits) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let max = limits.max_text_bytes;
    let mut text = |field: String, value: &str, errors: &mut Vec<FieldError>| {
        if value.trim().is_empty() {
            errors.push(FieldError::new(field, "must not be empty"));
        } else if value.len() > max {
            errors.push(FieldError::new(field, format!("longer than {max} bytes")));
        }
    };
    if body.model.is_empty() {
        errors.push(FieldError::new("model", "must not be empty"));
    }
    if body.items.is_empty() && body.subject.is_none() {
        errors.push(FieldError::new("items", "give at least one item, a subject, or both"));
    }
    if body.items.len() > limits.max_items {
        errors.push(FieldError::new(
            "items",
            format!("at most {} items per request", limits.max_items),
        ));
    } else {
        for (i, item) in body.items.iter().enumerate() {
            check_item(i, item, limits, &mut errors, &mut text);
        }
    }
    if let Some(subject) = &body.subject {
        text("subject".into(), subject, &mut errors);
    }
    if let Some(m) = &body.method {
        if let Some(steps) = m.max_steps {
            if steps == 0 || steps > limits.max_steps {
                errors.push(FieldError::new(
                    "method.max_steps",
                    format!("must be between 1 and {}", limits.max_steps),
                ));
            }
        }
        if let Some(lr) = m.learning_rate {
            if !(lr > 0.0 && lr <= limits.max_learning_rate) {
                errors.push(FieldError::new(
                    "method.learning_rate",
                    format!("must be > 0 and <= {}", limits.max_learning_rate),
                ));
            }
        }
        if let Some(sigma) = m.noise_sigma {
            if !(0.0..=limits.max_noise_sigma).contains(&sigma) {
                errors.push(FieldError::new(
                    "method.noise_sigma",
                    format!("must be between 0 and {}", limits.max_noise_sigma),
                ));
            }
        }
    }
    if let Some(url) = &body.callback_url {
        if let Err(reason) = crate::callbacks::check_url(url) {
            errors.push(FieldError::new("callback_url", reason));
        }
    }
    errors
}

fn check_item(
    i: usize,
    item: &ForgetItem,
    limits: &Limits,
    errors: &mut Vec<FieldError>,
    text: &mut impl FnMut(String, &str, &mut Vec<FieldError>),
) {
    let at = |f: &str| format!("items[{i}].{f}");
    match (&item.question, &item.answer, &item.text) {
        (Some(q), Some(a), None) => {
            text(at("question"), q, errors);
            text(at("answer"), a, errors);
        }
        (None, None, Some(t)) => {
            text(at("text"), t, errors);
            if item.paraphrased_answer.is_some() || item.perturbed_answer.is_some() {
                errors.push(FieldError::new(at("text"), "a text item has no answers"));
            }
        }
        _ => errors.push(FieldError::new(
            format!("items[{i}]"),
            "give either `question` and `answer`, or `text`",
        )),
    }
    if let Some(p) = &item.paraphrased_answer {
        text(at("paraphrased_answer"), p, errors);
    }
    for (name, list) in [
        ("perturbed_answer", &item.perturbed_answer),
        ("keywords", &item.keywords),
    ] {
        if let Some(list) = list {
            if list.len() > limits.max_list_len {
                errors.push(FieldError::new(
                    at(name),
                    format!("at most {} entries", limits.max_list_len),
                ));
            }
            for (j, s) in list.iter().enumerate().take(limits.max_list_len) {
                text(format!("items[{i}].{name}[{j}]"), s, errors);
            }
        }
    }
}

/// List deletion requests, newest first (submitters see their own).
#[utoipa::path(
    get, path = "/v1/deletion-requests", tag = "deletion-requests",
    params(RequestListQuery),
    responses((status = 200, description = "A page", body = DeletionRequestPage), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn list_requests(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<RequestListQuery>,
) -> ApiResult<Json<DeletionRequestPage>> {
    let status = match &q.status {
        None => None,
        Some(s) => Some(
            s.parse::<RequestStatus>()
                .map_err(|_| ApiError::validation(vec![FieldError::new("status", "unknown status")]))?,
        ),
    };
    let filter = RequestFilter {
        status,
        model_name: q.model.clone(),
        client_id: (!caller.reads_all()).then(|| caller.client_id()),
        subject_hmac: None,
        created_from: q.created_from,
        created_before: q.created_before,
    };
    let page = state
        .store
        .list_requests(&filter, page_request(q.after, q.limit, &state.limits)?)
        .await?;
    Ok(Json(DeletionRequestPage {
        items: page
            .items
            .into_iter()
            .map(|r| DeletionRequestView::new(r, None))
            .collect(),
        next: page.next,
    }))
}

pub(crate) fn page_request(after: Option<Uuid>, limit: Option<u32>, limits: &Limits) -> ApiResult<PageRequest> {
    let limit = limit.unwrap_or(50);
    if limit == 0 || limit > limits.max_page_size {
        return Err(ApiError::validation(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {}", limits.max_page_size),
        )]));
    }
    Ok(PageRequest { after, limit })
}

/// A request visible to the caller (a submitter's own), or 404.
async fn visible_request(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<DeletionRequest> {
    let request = state.store.get_request(id).await?;
    if !caller.reads_all() && request.client_id != caller.client_id() {
        return Err(ApiError::not_found(format!("deletion request {id} not found")));
    }
    Ok(request)
}

async fn current_job(state: &AppState, id: Uuid) -> ApiResult<Option<Job>> {
    Ok(state.store.jobs_for_request(id).await?.pop())
}

/// One deletion request, with its current job's progress.
#[utoipa::path(
    get, path = "/v1/deletion-requests/{id}", tag = "deletion-requests",
    params(("id" = Uuid, Path, description = "Request id")),
    responses((status = 200, description = "The request", body = DeletionRequestView), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn get_request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<DeletionRequestView>> {
    let request = visible_request(&state, &caller, id).await?;
    let job = current_job(&state, id).await?;
    Ok(Json(DeletionRequestView::new(request, job.as_ref())))
}

/// Cancel a deletion request: queued ones at once; running ones when the
/// worker notices (`cancel_requested`). Finished requests: 409.
#[utoipa::path(
    post, path = "/v1/deletion-requests/{id}/cancel", tag = "deletion-requests",
    params(("id" = Uuid, Path, description = "Request id")),
    responses((status = 202, description = "Cancelled or cancellation requested", body = DeletionRequestView), Errors),
    security(("bearer" = ["submitter", "admin"]))
)]
pub(crate) async fn cancel_request(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, Json<DeletionRequestView>)> {
    visible_request(&state, &caller, id).await?;
    let request = state.store.cancel_request(id, &caller.actor()).await?;
    let job = current_job(&state, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(DeletionRequestView::new(request, job.as_ref())),
    ))
}

/// The unlearning certificate of a fulfilled request (404 until there is one).
#[utoipa::path(
    get, path = "/v1/deletion-requests/{id}/certificate", tag = "deletion-requests",
    params(("id" = Uuid, Path, description = "Request id")),
    responses((status = 200, description = "The certificate (JSON, as the worker issued it)", body = Object), Errors),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn request_certificate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Value>> {
    let request = visible_request(&state, &caller, id).await?;
    let no_cert = || ApiError::not_found(format!("no certificate yet: the request is {}", request.status));
    let version_id = request.result_version_id.ok_or_else(no_cert)?;
    let version = state.store.get_version(version_id).await?;
    version.certificate.map(Json).ok_or_else(no_cert)
}

/// The current job's state, stage, percent and message.
type JobProgress = (JobState, Option<String>, Option<f64>, Option<String>);

/// What an SSE stream compares between polls.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    status: RequestStatus,
    job: Option<JobProgress>,
}

/// Server-Sent Events: `status` on every status change, `progress` on every
/// progress report of the current job, and a final `terminal` event, after
/// which the stream ends. Event ids grow monotonically (the time of the last
/// change, in microseconds); reconnecting with `Last-Event-ID` resumes
/// after that point (earlier states are not replayed).
#[utoipa::path(
    get, path = "/v1/deletion-requests/{id}/events", tag = "deletion-requests",
    params(
        ("id" = Uuid, Path, description = "Request id"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")
    ),
    responses(
        (status = 200, description = "An event stream; each event's data is a DeletionRequestView",
         content_type = "text/event-stream", body = String),
        Errors
    ),
    security(("bearer" = ["submitter", "reader", "admin"]))
)]
pub(crate) async fn request_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    visible_request(&state, &caller, id).await?;
    let last_id: i64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1);
    let interval = state.limits.sse_poll_interval;
    let init = (state, id, last_id, None::<Snapshot>, false);
    let stream = futures::stream::unfold(init, move |(state, id, last_id, prev, done)| async move {
        if done {
            return None;
        }
        loop {
            let polled = match state.store.get_request(id).await {
                Ok(r) => current_job(&state, id).await.map(|j| (r, j)),
                Err(e) => Err(ApiError::from(e)),
            };
            let Ok((request, job)) = polled else {
                tracing::warn!(request_id = %id, "SSE poll failed; ending the stream");
                return None;
            };
            let event_id = std::iter::once(request.updated_at)
                .chain(job.iter().map(|j| j.updated_at))
                .max()
                .map_or(0, |t| t.timestamp_micros());
            let snapshot = Snapshot {
                status: request.status,
                job: job.as_ref().map(|j| {
                    (
                        j.state,
                        j.progress_stage.clone(),
                        j.progress_percent,
                        j.progress_message.clone(),
                    )
                }),
            };
            let terminal = request.status.is_terminal();
            if event_id > last_id && prev.as_ref() != Some(&snapshot) {
                let kind = if terminal {
                    "terminal"
                } else if prev.as_ref().is_none_or(|p| p.status != snapshot.status) {
                    "status"
                } else {
                    "progress"
                };
                let view = DeletionRequestView::new(request, job.as_ref());
                let event = Event::default()
                    .event(kind)
                    .id(event_id.to_string())
                    .json_data(&view)
                    .unwrap_or_else(|_| Event::default().event(kind));
                return Some((Ok(event), (state, id, event_id, Some(snapshot), terminal)));
            }
            if terminal {
                // Already delivered before the client reconnected.
                return None;
            }
            tokio::time::sleep(interval).await;
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// List jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(JobListQuery),
    responses((status = 200, description = "A page", body = JobPage), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> ApiResult<Json<JobPage>> {
    let job_state = match &q.state {
        None => None,
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|_| ApiError::validation(vec![FieldError::new("state", "unknown state")]))?,
        ),
    };
    let filter = JobFilter {
        state: job_state,
        model_name: q.model.clone(),
        created_from: q.created_from,
        created_before: q.created_before,
    };
    let page = state
        .store
        .list_jobs(&filter, page_request(q.after, q.limit, &state.limits)?)
        .await?;
    Ok(Json(JobPage {
        items: page.items.into_iter().map(JobView::from).collect(),
        next: page.next,
    }))
}

/// One job: stage, percent, attempts, worker and timings.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = JobView), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn get_job(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> ApiResult<Json<JobView>> {
    Ok(Json(state.store.get_job(id).await?.into()))
}
