//! The corpus registry of a model: streaming JSON Lines uploads of dataset
//! rows tagged with the subjects they concern, counts, and look-ups by
//! subject identity. The corpus is the model's retain source; the subject
//! tags let deletion requests (and OpenDSR erasures) find a subject's rows.
//!
//! Identities are turned into HMAC tags as each line is read (see
//! [`crate::identity`]) and removed from the row before it is stored. Error
//! messages name line numbers and fields, never row text or identities.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use futures::StreamExt;
use grin_store::{CorpusInsert, NewCorpusRow};
use serde_json::{Map, Value};

use super::Errors;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::extract::{ApiJson, ApiPath};
use crate::identity::{tags_of, Identity};
use crate::views::{CorpusLine, CorpusLookup, CorpusLookupView, CorpusRowView, CorpusStatsView, CorpusUploadView};
use crate::AppState;

/// Rows written per transaction.
const BATCH: usize = 500;
/// Most identities on one row or in one look-up.
const MAX_IDENTITIES: usize = 32;

/// Upload corpus rows (JSON Lines, streamed).
///
/// Each line is a dataset row (`{"question", "answer", ...}` or
/// `{"text"}`, extra fields kept) with an optional `subject_identities`
/// array: OpenDSR identity objects (`identity_type`, `identity_value`,
/// `identity_format` raw / sha256 / md5 / sha1) or plain strings. Rows are
/// idempotent by digest (uploading a file again is safe; a known row gains
/// new tags); rows about a subject already erased from this model are
/// stored forgotten. Rows are committed in batches of 500: on a bad line the
/// answer is 422 naming it, and the rows before it are kept. Not subject to
/// the request timeout (a stalled upload is cut after it).
#[utoipa::path(
    post, path = "/v1/models/{name}/corpus", tag = "corpus",
    params(("name" = String, Path, description = "Model name")),
    request_body(
        description = "JSON Lines: one dataset row per line",
        content(
            (String = "application/x-ndjson"),
            (CorpusLine = "application/json")
        )
    ),
    responses((status = 200, description = "Stored", body = CorpusUploadView), Errors),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn upload_corpus(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    request: Request,
) -> ApiResult<Json<CorpusUploadView>> {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !matches!(
        media.as_str(),
        "application/x-ndjson"
            | "application/jsonl"
            | "application/jsonlines"
            | "application/json-lines"
            | "application/json"
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/x-ndjson (JSON Lines)",
        ));
    }
    model_exists(&state, &name).await?;
    let mut upload = Upload {
        state: &state,
        model: &name,
        actor: caller.actor(),
        batch: Vec::new(),
        done: CorpusInsert::default(),
        received: 0,
        line: 0,
    };
    let limits = state.limits.clone();
    let mut stream = request.into_body().into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut total: u64 = 0;
    loop {
        let next = tokio::time::timeout(limits.request_timeout, stream.next())
            .await
            .map_err(|_| {
                upload.failed(ApiError::bad_request(
                    "the upload stalled; send it again (it is idempotent)",
                ))
            })?;
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(_)) => return Err(upload.failed(ApiError::bad_request("could not read the request body"))),
        };
        total += chunk.len() as u64;
        if total > limits.max_corpus_bytes {
            let e = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("an upload may carry at most {} bytes", limits.max_corpus_bytes),
            );
            return Err(upload.stop(e).await);
        }
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos;
            let line = pending[start..end].to_vec();
            start = end + 1;
            upload.read_line(&line).await?;
        }
        pending.drain(..start);
        if pending.len() > limits.max_corpus_line_bytes {
            upload.line += 1;
            let e = line_error(
                upload.line,
                format!("longer than {} bytes", limits.max_corpus_line_bytes),
            );
            return Err(upload.stop(e).await);
        }
    }
    if !pending.is_empty() {
        upload.read_line(&pending).await?;
    }
    upload.flush().await?;
    tracing::info!(
        model = %name,
        received = upload.received,
        inserted = upload.done.inserted,
        duplicates = upload.done.duplicates,
        suppressed = upload.done.suppressed,
        "corpus upload stored"
    );
    Ok(Json(CorpusUploadView {
        model: name.clone(),
        received: upload.received,
        inserted: upload.done.inserted,
        duplicates: upload.done.duplicates,
        suppressed: upload.done.suppressed,
    }))
}

/// An upload in progress.
struct Upload<'a> {
    state: &'a AppState,
    model: &'a str,
    actor: String,
    batch: Vec<NewCorpusRow>,
    done: CorpusInsert,
    received: u64,
    line: u64,
}

impl Upload<'_> {
    async fn read_line(&mut self, bytes: &[u8]) -> ApiResult<()> {
        self.line += 1;
        let text = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let row = match serde_json::from_slice::<Value>(text) {
            Err(_) => Err("not valid JSON".to_string()),
            Ok(value) => corpus_row(value, &self.state.store),
        };
        match row {
            Ok(row) => {
                self.received += 1;
                self.batch.push(row);
                if self.batch.len() >= BATCH {
                    self.flush().await?;
                }
                Ok(())
            }
            Err(why) => Err(self.stop(line_error(self.line, why)).await),
        }
    }

    async fn flush(&mut self) -> ApiResult<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        let done = self
            .state
            .store
            .insert_corpus_batch(self.model, &rows, &self.actor)
            .await?;
        self.done.inserted += done.inserted;
        self.done.duplicates += done.duplicates;
        self.done.suppressed += done.suppressed;
        Ok(())
    }

    /// Stores the rows read before a failure, then reports it with what was
    /// kept.
    async fn stop(&mut self, e: ApiError) -> ApiError {
        match self.flush().await {
            Ok(()) => self.failed(e),
            Err(flush) => flush,
        }
    }

    fn failed(&self, mut e: ApiError) -> ApiError {
        let kept = self.done.inserted + self.done.duplicates + self.done.suppressed;
        let detail = e.detail.take().unwrap_or_default();
        e.detail = Some(format!(
            "{detail} ({kept} rows before it were stored; uploading the file again is safe)"
        ));
        e
    }
}

fn line_error(line: u64, why: impl Into<String>) -> ApiError {
    let mut e = ApiError::validation(vec![FieldError::new(format!("line {line}"), why)]);
    e.detail = Some(format!("line {line} is not a valid corpus row"));
    e
}

/// A line's row without its identities, and their tags; or why it is not a
/// row (never quoting it).
fn corpus_row(value: Value, store: &grin_store::Store) -> Result<NewCorpusRow, String> {
    let Value::Object(mut obj) = value else {
        return Err("must be a JSON object (a dataset row)".into());
    };
    let identities = match obj.remove("subject_identities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            if items.len() > MAX_IDENTITIES {
                return Err(format!("subject_identities: at most {MAX_IDENTITIES}"));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    Identity::parse(item, true).map_err(|e| format!("subject_identities[{i}]: {}", e.message))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err("subject_identities: must be an array".into()),
    };
    check_row(&obj)?;
    Ok(NewCorpusRow {
        data: Value::Object(obj),
        subject_hmacs: tags_of(&identities, store),
    })
}

/// The dataset row rules of the worker's loader: a QA row (`question` and
/// `answer`) or a document (`text`); optional fields typed.
fn check_row(obj: &Map<String, Value>) -> Result<(), String> {
    let string = |field: &str, required: bool| -> Result<(), String> {
        match obj.get(field) {
            None | Some(Value::Null) if required => Err(format!("missing field {field:?}")),
            None | Some(Value::Null) => Ok(()),
            Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field {field:?} is empty")),
            Some(Value::String(_)) => Ok(()),
            Some(_) => Err(format!("field {field:?} must be a string")),
        }
    };
    let list = |field: &str| -> Result<(), String> {
        match obj.get(field) {
            None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => Ok(()),
            Some(_) => Err(format!("field {field:?} must be a string or a list of strings")),
        }
    };
    if obj.contains_key("question") || obj.contains_key("answer") {
        string("question", true)?;
        string("answer", true)?;
        string("paraphrased_answer", false)?;
        list("perturbed_answer")?;
        list("keywords")?;
    } else if obj.contains_key("text") {
        string("text", true)?;
    } else {
        return Err("a row needs \"question\" and \"answer\", or \"text\"".into());
    }
    string("subject", false)
}

async fn model_exists(state: &AppState, name: &str) -> ApiResult<()> {
    match state.store.get_model(name).await {
        Ok(_) => Ok(()),
        Err(grin_store::Error::NotFound { .. } | grin_store::Error::Invalid { .. }) => {
            Err(ApiError::not_found(format!("model {name:?} not found")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Row counts of a model's corpus: all, live (the retain corpus), forgotten.
#[utoipa::path(
    get, path = "/v1/models/{name}/corpus", tag = "corpus",
    params(("name" = String, Path, description = "Model name")),
    responses((status = 200, description = "Counts", body = CorpusStatsView), Errors),
    security(("bearer" = ["reader", "admin"]))
)]
pub(crate) async fn corpus_stats(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<CorpusStatsView>> {
    model_exists(&state, &name).await?;
    let stats = state.store.corpus_stats(&name).await?;
    Ok(Json(CorpusStatsView {
        model: name,
        rows: stats.rows,
        live: stats.live,
        forgotten: stats.forgotten,
    }))
}

/// Count and list the live rows about data subjects, given by identity
/// (in the body, so identities stay out of URLs and access logs).
#[utoipa::path(
    post, path = "/v1/models/{name}/corpus/lookup", tag = "corpus",
    params(("name" = String, Path, description = "Model name")),
    request_body = CorpusLookup,
    responses((status = 200, description = "The rows", body = CorpusLookupView), Errors),
    security(("bearer" = ["admin"]))
)]
pub(crate) async fn corpus_lookup(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<CorpusLookup>,
) -> ApiResult<Json<CorpusLookupView>> {
    let mut errors = Vec::new();
    if body.subject_identities.is_empty() || body.subject_identities.len() > MAX_IDENTITIES {
        errors.push(FieldError::new(
            "subject_identities",
            format!("give 1 to {MAX_IDENTITIES} identities"),
        ));
    }
    let mut identities = Vec::new();
    for (i, item) in body.subject_identities.iter().enumerate().take(MAX_IDENTITIES) {
        match Identity::parse(item, true) {
            Ok(identity) => identities.push(identity),
            Err(e) => errors.push(FieldError::new(format!("subject_identities[{i}]"), e.message)),
        }
    }
    let limit = body.limit.unwrap_or(50);
    if limit == 0 || limit > state.limits.max_page_size {
        errors.push(FieldError::new(
            "limit",
            format!("must be between 1 and {}", state.limits.max_page_size),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    model_exists(&state, &name).await?;
    let tags = tags_of(&identities, &state.store);
    let (count, rows) = state.store.corpus_rows_for_subjects(&name, &tags, limit).await?;
    Ok(Json(CorpusLookupView {
        model: name,
        count,
        rows: rows
            .into_iter()
            .map(|r| CorpusRowView {
                id: r.id,
                row_digest: r.row_digest,
                created_at: r.created_at,
                data: r.row_data.unwrap_or(Value::Null),
            })
            .collect(),
    }))
}
