//! The data of a job: the forget set (from the requests' payloads and the
//! corpus rows of their subjects), the retain set (the model's retain
//! corpus minus the forget rows, the job's subjects, and everything earlier
//! requests removed) and the optional holdout set.
//!
//! Items are identified by [`Store::row_digest`] (HMAC-SHA256 of the item's
//! canonical JSON under the server secret): those digests go into the
//! certificate and are compared across requests; item text is never logged
//! and error messages name requests, item positions and files only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use grin::data::{Dataset, Row};
use grin_store::{Model, PageRequest, RequestFilter, RequestPayload, RequestStatus, Store};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The forget set of a job.
#[derive(Debug, Default)]
pub(crate) struct ForgetSet {
    pub rows: Vec<Row>,
    /// One digest per row (same order), unique.
    pub digests: Vec<String>,
    /// Requests that contributed at least one row, sorted.
    pub fulfilled: Vec<Uuid>,
    /// Subject HMACs of the job's subject-based requests.
    pub subjects: Vec<String>,
}

/// A location as stored in the registry (`file:///abs`, or a plain path).
pub fn local_path(location: &str) -> PathBuf {
    PathBuf::from(location.strip_prefix("file://").unwrap_or(location))
}

/// The dataset rows inside a forget payload: the payload itself when it is
/// an array, or its `rows` member (the store's convention).
fn payload_items(payload: &Value) -> Option<&[Value]> {
    match payload {
        Value::Array(rows) => Some(rows),
        Value::Object(map) => match map.get("rows") {
            Some(Value::Array(rows)) => Some(rows),
            _ => None,
        },
        _ => None,
    }
}

fn parse_row(value: &Value) -> Option<Row> {
    serde_json::from_value(value.clone()).ok()
}

/// Builds the forget set from the payloads of the job's running requests.
pub(crate) async fn forget_set(store: &Store, model: &str, payloads: &[RequestPayload]) -> Result<ForgetSet> {
    let mut set = ForgetSet::default();
    let mut seen = BTreeSet::new();
    let mut push = |set: &mut ForgetSet, row: Row, digest: String| {
        if seen.insert(digest.clone()) {
            set.rows.push(row);
            set.digests.push(digest);
        }
    };
    for p in payloads {
        let mut contributed = 0usize;
        if let Some(payload) = p.forget_payload.as_ref().filter(|v| !v.is_null()) {
            let items = payload_items(payload).ok_or_else(|| {
                Error::Permanent(format!(
                    "request {}: the forget payload must be an array of dataset rows (or an object with a `rows` array)",
                    p.request_id
                ))
            })?;
            for (i, item) in items.iter().enumerate() {
                let row = parse_row(item).ok_or_else(|| {
                    Error::Permanent(format!(
                        "request {}: forget item {i} is not a dataset row (expected {{question, answer, ...}} or {{text}})",
                        p.request_id
                    ))
                })?;
                push(&mut set, row, store.row_digest(item));
                contributed += 1;
            }
        }
        if let Some(subject) = &p.subject_hmac {
            set.subjects.push(subject.clone());
            for r in store.rows_for_subject(model, subject).await? {
                let Some(data) = &r.row_data else { continue };
                let row = parse_row(data).ok_or_else(|| {
                    Error::Permanent(format!("corpus row {} of model {model} is not a dataset row", r.id))
                })?;
                push(&mut set, row, r.row_digest.clone());
                contributed += 1;
            }
        }
        if contributed > 0 {
            set.fulfilled.push(p.request_id);
        }
    }
    set.fulfilled.sort();
    set.subjects.sort();
    set.subjects.dedup();
    Ok(set)
}

/// Builds the retain set: the model's corpus rows (the store already drops
/// forgotten rows; the job's subjects and forget rows are excluded here),
/// or, when the model has no corpus rows, its `retain_corpus` file minus
/// every row a fulfilled request of the model removed.
pub(crate) async fn retain_set(store: &Store, model: &Model, forget: &ForgetSet) -> Result<Dataset> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_retain_rows(&model.name, &forget.subjects, &forget.digests, after, 1000)
            .await?;
        for r in &page.items {
            let Some(data) = &r.row_data else { continue };
            let row = parse_row(data).ok_or_else(|| {
                Error::Permanent(format!(
                    "corpus row {} of model {} is not a dataset row",
                    r.id, model.name
                ))
            })?;
            rows.push(row);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    if !rows.is_empty() {
        return Ok(Dataset::new(format!("corpus of model {}", model.name), rows));
    }
    let Some(location) = &model.retain_corpus else {
        return Err(Error::Permanent(format!(
            "model {} has no retain data: no corpus rows are left and no retain_corpus file is registered",
            model.name
        )));
    };
    let path = local_path(location);
    let (subjects, digests) = earlier_exclusions(store, &model.name, forget).await?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let values = parse_values(&path, &text)?;
    let mut rows = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let row = parse_row(value)
            .ok_or_else(|| Error::Permanent(format!("{}: row {} is not a dataset row", path.display(), i + 1)))?;
        if digests.contains(&store.row_digest(value)) {
            continue;
        }
        if let Some(subject) = row.subject() {
            if subjects.contains(&store.hmac(subject.as_bytes())) {
                continue;
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::Permanent(format!(
            "{}: no retain rows left after removing the forgotten ones",
            path.display()
        )));
    }
    Ok(Dataset::new(path.display().to_string(), rows))
}

/// Subjects and item digests removed from the model so far (succeeded
/// requests' subjects; the forget digests in its versions' certificates),
/// plus this job's.
async fn earlier_exclusions(
    store: &Store,
    model: &str,
    forget: &ForgetSet,
) -> Result<(BTreeSet<String>, BTreeSet<String>)> {
    let mut subjects: BTreeSet<String> = forget.subjects.iter().cloned().collect();
    let mut digests: BTreeSet<String> = forget.digests.iter().cloned().collect();
    let filter = RequestFilter {
        status: Some(RequestStatus::Succeeded),
        model_name: Some(model.to_owned()),
        ..RequestFilter::default()
    };
    let mut page = PageRequest {
        after: None,
        limit: 1000,
    };
    loop {
        let got = store.list_requests(&filter, page).await?;
        subjects.extend(got.items.iter().filter_map(|r| r.subject_hmac.clone()));
        match got.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    for v in store.list_versions(model).await? {
        let listed = v
            .certificate
            .as_ref()
            .and_then(|c| c.pointer("/certificate/forget_digests"))
            .and_then(Value::as_array);
        for d in listed.into_iter().flatten() {
            if let Some(d) = d.as_str() {
                digests.insert(d.to_owned());
            }
        }
    }
    Ok((subjects, digests))
}

/// JSON Lines, or one JSON array.
fn parse_values(path: &Path, text: &str) -> Result<Vec<Value>> {
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|e| Error::Permanent(format!("{}: not a JSON array of rows: {e}", path.display())));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line)
            .map_err(|_| Error::Permanent(format!("{}: line {} is not valid JSON", path.display(), i + 1)))?;
        out.push(value);
    }
    Ok(out)
}

/// Loads the model's holdout file, if it has one.
pub(crate) fn holdout_set(model: &Model) -> Result<Option<Dataset>> {
    match &model.holdout_corpus {
        None => Ok(None),
        Some(location) => grin::data::load_dataset(&local_path(location))
            .map(Some)
            .map_err(|e| Error::grin("holdout", e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn locations_and_payload_shapes() {
        assert_eq!(local_path("file:///a/b"), PathBuf::from("/a/b"));
        assert_eq!(local_path("/a/b"), PathBuf::from("/a/b"));
        assert_eq!(payload_items(&json!([1, 2])).unwrap().len(), 2);
        assert_eq!(payload_items(&json!({"rows": [1]})).unwrap().len(), 1);
        assert!(payload_items(&json!("x")).is_none());
        assert!(parse_row(&json!({"question": "q", "answer": "a"})).is_some());
        assert!(parse_row(&json!({"text": "t"})).is_some());
        assert!(parse_row(&json!({"foo": 1})).is_none());
    }

    #[test]
    fn jsonl_and_arrays() {
        let p = Path::new("x.jsonl");
        assert_eq!(
            parse_values(p, "{\"text\":\"a\"}\n\n{\"text\":\"b\"}\n").unwrap().len(),
            2
        );
        assert_eq!(parse_values(p, "[{\"text\":\"a\"}]").unwrap().len(), 1);
        let err = parse_values(p, "{\"text\":\"secret\"\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && !err.contains("secret"), "{err}");
    }
}
