//! The corpus index: retain-corpus rows with the subjects they mention.
//! Rows are keyed by an HMAC of their canonical JSON, so inserting a row
//! twice is harmless and a forgotten row (data erased, digest kept) cannot
//! be inserted again.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::requests::paginate;
use super::{audit, is_hex_digest, lock_model, now, page_limit, Ops, WriteTx};
use crate::{AuditEntry, CorpusRow, DeletionRequest, Error, NewCorpusRow, Page, Result};

const CORPUS_COLUMNS: &str = "id, model_name, row_digest, row_data, subject_hmacs, created_at, \
     forgotten_at, forgotten_by";

impl Ops {
    pub(crate) async fn insert_corpus_rows(&self, model: &str, rows: &[NewCorpusRow], actor: &str) -> Result<u64> {
        for row in rows {
            if let Some(bad) = row.subject_hmacs.iter().find(|s| !is_hex_digest(s)) {
                return Err(Error::invalid(
                    "subject_hmacs",
                    format!("{} bytes: not a lowercase hex HMAC-SHA256 digest", bad.len()),
                ));
            }
        }
        let now = now();
        let mut tx = self.begin_write().await?;
        lock_model(&mut tx, model).await?;
        let mut inserted = 0;
        for row in rows {
            let digest = self.hmac_json(&row.data);
            let mut subjects = row.subject_hmacs.clone();
            subjects.sort();
            subjects.dedup();
            let id: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO corpus_rows (id, model_name, row_digest, row_data, subject_hmacs, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (model_name, row_digest) DO NOTHING RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(model)
            .bind(&digest)
            .bind(Json(&row.data))
            .bind(Json(&subjects))
            .bind(now)
            .fetch_optional(&mut *tx.tx)
            .await?;
            let Some(id) = id else { continue };
            inserted += 1;
            for subject in &subjects {
                sqlx::query("INSERT INTO corpus_subjects (row_id, subject_hmac) VALUES ($1, $2)")
                    .bind(id)
                    .bind(subject)
                    .execute(&mut *tx.tx)
                    .await?;
            }
        }
        if inserted > 0 {
            let entries = [AuditEntry::new(
                actor,
                "corpus.rows_inserted",
                "model",
                model,
                json!({"rows": inserted}),
            )];
            audit::append(&mut tx, &entries).await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub(crate) async fn rows_for_subject(&self, model: &str, subject_hmac: &str) -> Result<Vec<CorpusRow>> {
        let sql = format!(
            "SELECT {CORPUS_COLUMNS} FROM corpus_rows WHERE model_name = $1 \
             AND forgotten_at IS NULL AND id IN \
             (SELECT row_id FROM corpus_subjects WHERE subject_hmac = $2) ORDER BY id"
        );
        Ok(sqlx::query_as(&sql)
            .bind(model)
            .bind(subject_hmac)
            .fetch_all(&self.pool)
            .await?)
    }

    pub(crate) async fn count_rows_for_subject(&self, model: &str, subject_hmac: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM corpus_rows WHERE model_name = $1 AND forgotten_at IS NULL \
             AND id IN (SELECT row_id FROM corpus_subjects WHERE subject_hmac = $2)",
        )
        .bind(model)
        .bind(subject_hmac)
        .fetch_one(&self.pool)
        .await?)
    }

    pub(crate) async fn list_retain_rows(
        &self,
        model: &str,
        exclude_subjects: &[String],
        exclude_digests: &[String],
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<CorpusRow>> {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!(
            "SELECT {CORPUS_COLUMNS} FROM corpus_rows WHERE forgotten_at IS NULL AND model_name = "
        ));
        q.push_bind(model.to_owned());
        if !exclude_subjects.is_empty() {
            q.push(" AND id NOT IN (SELECT row_id FROM corpus_subjects WHERE subject_hmac IN (");
            let mut list = q.separated(", ");
            for s in exclude_subjects {
                list.push_bind(s.clone());
            }
            q.push("))");
        }
        if !exclude_digests.is_empty() {
            q.push(" AND row_digest NOT IN (");
            let mut list = q.separated(", ");
            for d in exclude_digests {
                list.push_bind(d.clone());
            }
            q.push(")");
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        let limit = page_limit(limit);
        q.push(" ORDER BY id LIMIT ").push_bind(limit + 1);
        let rows: Vec<CorpusRow> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(rows, limit, |r| r.id))
    }
}

/// The dataset rows inside a forget payload: the payload itself when it is
/// an array, or its `rows` member when that is an array.
pub(crate) fn payload_rows(payload: &Value) -> &[Value] {
    match payload {
        Value::Array(rows) => rows,
        Value::Object(map) => match map.get("rows") {
            Some(Value::Array(rows)) => rows,
            _ => &[],
        },
        _ => &[],
    }
}

/// Marks the corpus rows a fulfilled request removed from the model as
/// forgotten (their data erased): the rows of its subject, and rows equal
/// to a row of its forget payload. Must run before the payload is purged.
pub(super) async fn forget_rows_of(
    ops: &Ops,
    tx: &mut WriteTx,
    request: &DeletionRequest,
    actor: &str,
    now: DateTime<Utc>,
    entries: &mut Vec<AuditEntry>,
) -> Result<()> {
    let mut forgotten = 0;
    if let Some(subject) = &request.subject_hmac {
        forgotten += sqlx::query(
            "UPDATE corpus_rows SET row_data = NULL, forgotten_at = $1, forgotten_by = $2 \
             WHERE model_name = $3 AND forgotten_at IS NULL AND id IN \
             (SELECT row_id FROM corpus_subjects WHERE subject_hmac = $4)",
        )
        .bind(now)
        .bind(request.id)
        .bind(&request.model_name)
        .bind(subject)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
    }
    let payload: Option<Json<Value>> = sqlx::query_scalar("SELECT forget_payload FROM deletion_requests WHERE id = $1")
        .bind(request.id)
        .fetch_one(&mut *tx.tx)
        .await?;
    if let Some(Json(payload)) = payload {
        for row in payload_rows(&payload) {
            forgotten += sqlx::query(
                "UPDATE corpus_rows SET row_data = NULL, forgotten_at = $1, forgotten_by = $2 \
                 WHERE model_name = $3 AND row_digest = $4 AND forgotten_at IS NULL",
            )
            .bind(now)
            .bind(request.id)
            .bind(&request.model_name)
            .bind(ops.hmac_json(row))
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        }
    }
    if forgotten > 0 {
        entries.push(AuditEntry::new(
            actor,
            "corpus.rows_forgotten",
            "deletion_request",
            request.id,
            json!({"rows": forgotten}),
        ));
    }
    Ok(())
}
