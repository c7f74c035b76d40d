//! The corpus index: retain-corpus rows with the subjects they mention.
//! Rows are keyed by an HMAC of their canonical JSON, so inserting a row
//! twice is harmless and a forgotten row (data erased, digest kept) cannot
//! be inserted again.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::requests::paginate;
use super::{audit, is_hex_digest, lock_model, now, page_limit, Ops, WriteTx, FOR_UPDATE};
use crate::{
    AuditEntry, CorpusInsert, CorpusRow, CorpusStats, DeletionRequest, Error, NewCorpusRow, Page, Result, SubjectRowRef,
};

const CORPUS_COLUMNS: &str = "id, model_name, row_digest, row_data, subject_hmacs, created_at, \
     forgotten_at, forgotten_by";

impl Ops {
    pub(crate) async fn insert_corpus_rows(&self, model: &str, rows: &[NewCorpusRow], actor: &str) -> Result<u64> {
        let done = self.insert_corpus_batch(model, rows, actor).await?;
        Ok(done.inserted + done.suppressed)
    }

    /// Inserts rows (idempotent by digest). A row whose digest is already
    /// stored gains the new subject tags. A row about a subject whose
    /// erasure from this model already succeeded is stored forgotten (data
    /// erased, digest and tags kept), and so is a stored live row that gains
    /// such a tag: no row about an erased subject enters a later retain set.
    pub(crate) async fn insert_corpus_batch(
        &self,
        model: &str,
        rows: &[NewCorpusRow],
        actor: &str,
    ) -> Result<CorpusInsert> {
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
        let mut done = CorpusInsert::default();
        for row in rows {
            let digest = self.hmac_json(&row.data);
            let mut subjects = row.subject_hmacs.clone();
            subjects.sort();
            subjects.dedup();
            let erased_by = erasure_of(&mut tx, model, &subjects).await?;
            let id: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO corpus_rows (id, model_name, row_digest, row_data, subject_hmacs, \
                 created_at, forgotten_at, forgotten_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (model_name, row_digest) DO NOTHING RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(model)
            .bind(&digest)
            .bind(erased_by.is_none().then_some(Json(&row.data)))
            .bind(Json(&subjects))
            .bind(now)
            .bind(erased_by.map(|_| now))
            .bind(erased_by)
            .fetch_optional(&mut *tx.tx)
            .await?;
            match id {
                Some(id) => {
                    for subject in &subjects {
                        sqlx::query("INSERT INTO corpus_subjects (row_id, subject_hmac) VALUES ($1, $2)")
                            .bind(id)
                            .bind(subject)
                            .execute(&mut *tx.tx)
                            .await?;
                    }
                    if erased_by.is_some() {
                        done.suppressed += 1;
                    } else {
                        done.inserted += 1;
                    }
                }
                None => {
                    done.duplicates += 1;
                    if !subjects.is_empty() && add_tags(&mut tx, model, &digest, &subjects, erased_by, now).await? {
                        done.suppressed += 1;
                    }
                }
            }
        }
        if done.inserted + done.suppressed > 0 {
            let entries = [AuditEntry::new(
                actor,
                "corpus.rows_inserted",
                "model",
                model,
                json!({"rows": done.inserted, "suppressed": done.suppressed, "duplicates": done.duplicates}),
            )];
            audit::append(&mut tx, &entries).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    pub(crate) async fn corpus_stats(&self, model: &str) -> Result<CorpusStats> {
        Ok(sqlx::query_as(
            "SELECT COUNT(*) AS \"rows\", \
             COALESCE(SUM(CASE WHEN forgotten_at IS NULL THEN 1 ELSE 0 END), 0) AS live, \
             COALESCE(SUM(CASE WHEN forgotten_at IS NULL THEN 0 ELSE 1 END), 0) AS forgotten \
             FROM corpus_rows WHERE model_name = $1",
        )
        .bind(model)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Live rows of `model` tagged with any of `subject_hmacs`: how many,
    /// and the first `limit` in insertion order.
    pub(crate) async fn corpus_rows_for_subjects(
        &self,
        model: &str,
        subject_hmacs: &[String],
        limit: u32,
    ) -> Result<(i64, Vec<CorpusRow>)> {
        if subject_hmacs.is_empty() {
            return Ok((0, Vec::new()));
        }
        let filter = |q: &mut sqlx::QueryBuilder<'_, super::Db>| {
            q.push(" FROM corpus_rows WHERE forgotten_at IS NULL AND model_name = ");
            q.push_bind(model.to_owned());
            q.push(" AND id IN (SELECT row_id FROM corpus_subjects WHERE subject_hmac IN (");
            let mut list = q.separated(", ");
            for s in subject_hmacs {
                list.push_bind(s.clone());
            }
            q.push("))");
        };
        let mut q = sqlx::QueryBuilder::<super::Db>::new("SELECT COUNT(*)");
        filter(&mut q);
        let count: i64 = q.build_query_scalar().fetch_one(&self.pool).await?;
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!("SELECT {CORPUS_COLUMNS}"));
        filter(&mut q);
        q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
        let rows = q.build_query_as().fetch_all(&self.pool).await?;
        Ok((count, rows))
    }

    /// Every live row (of any model) tagged with one of `subject_hmacs`.
    pub(crate) async fn subject_rows(&self, subject_hmacs: &[String]) -> Result<Vec<SubjectRowRef>> {
        if subject_hmacs.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = sqlx::QueryBuilder::<super::Db>::new(
            "SELECT r.model_name AS model_name, s.subject_hmac AS subject_hmac, r.id AS row_id \
             FROM corpus_subjects s JOIN corpus_rows r ON r.id = s.row_id \
             WHERE r.forgotten_at IS NULL AND s.subject_hmac IN (",
        );
        let mut list = q.separated(", ");
        for s in subject_hmacs {
            list.push_bind(s.clone());
        }
        q.push(") ORDER BY r.model_name, r.id, s.subject_hmac");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
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

/// A succeeded deletion request of `model` about one of `subjects`, if any.
async fn erasure_of(tx: &mut WriteTx, model: &str, subjects: &[String]) -> Result<Option<Uuid>> {
    if subjects.is_empty() {
        return Ok(None);
    }
    let mut q = sqlx::QueryBuilder::<super::Db>::new(
        "SELECT id FROM deletion_requests WHERE status = 'succeeded' AND model_name = ",
    );
    q.push_bind(model.to_owned());
    q.push(" AND subject_hmac IN (");
    let mut list = q.separated(", ");
    for s in subjects {
        list.push_bind(s.clone());
    }
    q.push(") ORDER BY id LIMIT 1");
    Ok(q.build_query_scalar().fetch_optional(&mut *tx.tx).await?)
}

/// Adds `subjects` to the stored row with this digest. Forgets the row when
/// it is live and one of them was erased (`erased_by`); returns whether it
/// did.
async fn add_tags(
    tx: &mut WriteTx,
    model: &str,
    digest: &str,
    subjects: &[String],
    erased_by: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let sql = format!(
        "SELECT id, subject_hmacs, forgotten_at FROM corpus_rows WHERE model_name = $1 AND row_digest = $2{FOR_UPDATE}"
    );
    let (id, Json(mut tags), forgotten_at): (Uuid, Json<Vec<String>>, Option<DateTime<Utc>>) = sqlx::query_as(&sql)
        .bind(model)
        .bind(digest)
        .fetch_one(&mut *tx.tx)
        .await?;
    let before = tags.len();
    for subject in subjects {
        if !tags.contains(subject) {
            tags.push(subject.clone());
            sqlx::query("INSERT INTO corpus_subjects (row_id, subject_hmac) VALUES ($1, $2)")
                .bind(id)
                .bind(subject)
                .execute(&mut *tx.tx)
                .await?;
        }
    }
    if tags.len() == before {
        return Ok(false);
    }
    tags.sort();
    sqlx::query("UPDATE corpus_rows SET subject_hmacs = $2 WHERE id = $1")
        .bind(id)
        .bind(Json(&tags))
        .execute(&mut *tx.tx)
        .await?;
    let Some(request) = erased_by.filter(|_| forgotten_at.is_none()) else {
        return Ok(false);
    };
    sqlx::query("UPDATE corpus_rows SET row_data = NULL, forgotten_at = $2, forgotten_by = $3 WHERE id = $1")
        .bind(id)
        .bind(now)
        .bind(request)
        .execute(&mut *tx.tx)
        .await?;
    Ok(true)
}
