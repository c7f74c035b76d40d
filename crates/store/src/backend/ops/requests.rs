//! Deletion requests: idempotent creation (coalesced into queued jobs),
//! cancellation, payload access for the worker, payload purges, listings.

use serde_json::{json, Value};
use sqlx::{FromRow, Row};
use uuid::Uuid;

use super::jobs::{active_requests, insert_job};
use super::{
    audit, check_len, is_hex_digest, lock_job, notify_work, now, page_limit, Ops, WriteTx, FOR_UPDATE, JOB_COLUMNS,
    REQUEST_COLUMNS,
};
use crate::digest::{canonical_json, sha256_hex};
use crate::{
    AuditEntry, DeletionRequest, Error, Job, JobState, NewRequest, Page, PageRequest, RequestFilter, RequestPayload,
    RequestStatus, Result,
};

/// Statuses whose payload the retention window purges.
const RETAINED_STATUSES: &str = "('failed', 'cancelled')";

impl Ops {
    pub(crate) async fn create_request(&self, new: &NewRequest) -> Result<(DeletionRequest, bool)> {
        check_len("client_id", &new.client_id, 200)?;
        check_len("idempotency_key", &new.idempotency_key, 255)?;
        check_len("model_name", &new.model_name, 200)?;
        if let Some(subject) = &new.subject_hmac {
            if !is_hex_digest(subject) {
                return Err(Error::invalid(
                    "subject_hmac",
                    "must be a lowercase hex HMAC-SHA256 digest, never the identity itself",
                ));
            }
        }
        let payload = new.forget_payload.as_ref().filter(|v| !v.is_null());
        if payload.is_none() && new.subject_hmac.is_none() {
            return Err(Error::invalid(
                "forget_payload",
                "a request needs a forget payload, a subject, or both",
            ));
        }
        let overrides = match &new.method_overrides {
            Value::Null => json!({}),
            Value::Object(_) => new.method_overrides.clone(),
            _ => return Err(Error::invalid("method_overrides", "must be a JSON object")),
        };
        if let Some(url) = &new.callback_url {
            check_len("callback_url", url, 2048)?;
        }
        let body_digest = self.hmac_json(&json!({
            "model_name": new.model_name,
            "subject_hmac": new.subject_hmac,
            "forget_payload": payload,
            "method_overrides": overrides,
            "callback_url": new.callback_url,
        }));
        let payload_digest = self.hmac_json(payload.unwrap_or(&Value::Null));
        let batch_key = sha256_hex(canonical_json(&overrides).as_bytes());

        let mut tx = self.begin_write().await?;
        super::lock_model(&mut tx, &new.model_name).await?;
        if let Some(existing) = find_by_key(&mut tx, new).await? {
            return same_body_or_conflict(existing, &body_digest, new);
        }
        let now = now();
        let id = Uuid::now_v7();
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO deletion_requests (id, client_id, idempotency_key, body_digest, \
             model_name, subject_hmac, forget_payload, payload_digest, method_overrides, \
             callback_url, status, cancel_requested, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', FALSE, $11, $11) \
             ON CONFLICT (client_id, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(&new.client_id)
        .bind(&new.idempotency_key)
        .bind(&body_digest)
        .bind(&new.model_name)
        .bind(&new.subject_hmac)
        .bind(payload.map(sqlx::types::Json))
        .bind(&payload_digest)
        .bind(sqlx::types::Json(&overrides))
        .bind(&new.callback_url)
        .bind(now)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if inserted.is_none() {
            // A concurrent create with the same key (for another model) won.
            let existing = find_by_key(&mut tx, new)
                .await?
                .ok_or_else(|| Error::not_found("deletion request", &new.idempotency_key))?;
            return same_body_or_conflict(existing, &body_digest, new);
        }

        // Coalesce: join a queued, never-attempted job of the same model and
        // method overrides that still has room; otherwise start a new job.
        let sql = format!(
            "SELECT j.id FROM jobs j WHERE j.model_name = $1 AND j.state = 'queued' \
             AND j.attempts = 0 AND j.batch_key = $2 AND j.target_alias = $3 \
             AND (SELECT COUNT(*) FROM job_requests jr WHERE jr.job_id = j.id) < $4 \
             ORDER BY j.id LIMIT 1{FOR_UPDATE}"
        );
        let open_job: Option<Uuid> = sqlx::query_scalar(&sql)
            .bind(&new.model_name)
            .bind(&batch_key)
            .bind(crate::PRODUCTION)
            .bind(self.ctx.opts.queue.max_batch.max(1))
            .fetch_optional(&mut *tx.tx)
            .await?;
        let mut entries = Vec::new();
        let job_id = match open_job {
            Some(job_id) => job_id,
            None => {
                let job_id = insert_job(
                    &mut tx,
                    &new.model_name,
                    &overrides,
                    &batch_key,
                    self.ctx.opts.queue.max_attempts,
                    now,
                )
                .await?;
                entries.push(AuditEntry::new(
                    format!("client:{}", new.client_id),
                    "job.created",
                    "job",
                    job_id,
                    json!({"model_name": new.model_name}),
                ));
                job_id
            }
        };
        sqlx::query("INSERT INTO job_requests (job_id, request_id) VALUES ($1, $2)")
            .bind(job_id)
            .bind(id)
            .execute(&mut *tx.tx)
            .await?;
        entries.push(AuditEntry::new(
            format!("client:{}", new.client_id),
            "request.created",
            "deletion_request",
            id,
            json!({
                "model_name": new.model_name,
                "client_id": new.client_id,
                "subject_hmac": new.subject_hmac,
                "payload_digest": payload_digest,
                "job_id": job_id,
            }),
        ));
        notify_work(&mut tx).await?;
        let request = fetch_request(&mut tx, id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        self.wake_local();
        Ok((request, true))
    }

    pub(crate) async fn get_request(&self, id: Uuid) -> Result<DeletionRequest> {
        let sql = format!("SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE id = $1");
        sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("deletion request", id))
    }

    pub(crate) async fn list_requests(
        &self,
        filter: &RequestFilter,
        page: PageRequest,
    ) -> Result<Page<DeletionRequest>> {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE 1 = 1"
        ));
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status);
        }
        if let Some(model) = &filter.model_name {
            q.push(" AND model_name = ").push_bind(model.clone());
        }
        if let Some(client) = &filter.client_id {
            q.push(" AND client_id = ").push_bind(client.clone());
        }
        if let Some(subject) = &filter.subject_hmac {
            q.push(" AND subject_hmac = ").push_bind(subject.clone());
        }
        if let Some(from) = filter.created_from {
            q.push(" AND created_at >= ").push_bind(from);
        }
        if let Some(before) = filter.created_before {
            q.push(" AND created_at < ").push_bind(before);
        }
        if let Some(after) = page.after {
            q.push(" AND id < ").push_bind(after);
        }
        let limit = page_limit(page.limit);
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit + 1);
        let items: Vec<DeletionRequest> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(items, limit, |r| r.id))
    }

    pub(crate) async fn requests_for_job(&self, job_id: Uuid) -> Result<Vec<DeletionRequest>> {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE id IN \
             (SELECT request_id FROM job_requests WHERE job_id = $1) ORDER BY id"
        );
        Ok(sqlx::query_as(&sql).bind(job_id).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn jobs_for_request(&self, request_id: Uuid) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id IN \
             (SELECT job_id FROM job_requests WHERE request_id = $1) ORDER BY id"
        );
        Ok(sqlx::query_as(&sql).bind(request_id).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn job_payloads(&self, job_id: Uuid, worker_id: &str) -> Result<Vec<RequestPayload>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let job: Job = sqlx::query_as(&sql)
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))?;
        super::ensure_owner(&job, worker_id)?;
        Ok(sqlx::query_as(
            "SELECT id AS request_id, subject_hmac, forget_payload, method_overrides \
             FROM deletion_requests WHERE status = 'running' AND id IN \
             (SELECT request_id FROM job_requests WHERE job_id = $1) ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub(crate) async fn cancel_request(&self, id: Uuid, actor: &str) -> Result<DeletionRequest> {
        // The request's active job is looked up before it is locked; if a
        // concurrent claim or cancellation moved the request meanwhile, look
        // again.
        for _ in 0..3 {
            let mut tx = self.begin_write().await?;
            let job_id = active_job_of(&mut tx, id).await?;
            let job = match job_id {
                Some(job_id) => Some(lock_job(&mut tx, job_id).await?),
                None => None,
            };
            let request = lock_request(&mut tx, id).await?;
            if active_job_of(&mut tx, id).await? != job_id {
                continue;
            }
            let now = now();
            let mut entries = Vec::new();
            match (request.status, job) {
                (RequestStatus::Cancelled, _) => return Ok(request),
                (RequestStatus::Running, Some(_)) if request.cancel_requested => return Ok(request),
                (RequestStatus::Queued, Some(job)) if job.state == JobState::Queued => {
                    cancel_queued_request(&mut tx, &job, id, actor, now, &mut entries).await?;
                }
                (RequestStatus::Running, Some(job)) if job.state == JobState::Running => {
                    sqlx::query(
                        "UPDATE deletion_requests SET cancel_requested = TRUE, updated_at = $2 \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                    sqlx::query("UPDATE jobs SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1")
                        .bind(job.id)
                        .bind(now)
                        .execute(&mut *tx.tx)
                        .await?;
                    entries.push(AuditEntry::new(
                        actor,
                        "request.cancel_requested",
                        "deletion_request",
                        id,
                        json!({"job_id": job.id}),
                    ));
                }
                (status, _) => {
                    return Err(Error::InvalidState {
                        entity: "deletion request",
                        id: id.to_string(),
                        state: status.to_string(),
                        action: "cancel",
                    })
                }
            }
            let request = fetch_request(&mut tx, id).await?;
            audit::append(&mut tx, &entries).await?;
            tx.commit().await?;
            return Ok(request);
        }
        Err(Error::Constraint {
            kind: "concurrent update",
            constraint: None,
        })
    }

    pub(crate) async fn purge_payloads_for_job(&self, job_id: Uuid, actor: &str) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM deletion_requests WHERE forget_payload IS NOT NULL \
             AND status IN ('succeeded', 'nothing_to_forget', 'failed', 'cancelled') \
             AND id IN (SELECT request_id FROM job_requests WHERE job_id = $1) ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&mut *tx.tx)
        .await?;
        let mut entries = Vec::new();
        let purged = purge_payloads(&mut tx, &ids, actor, "job ended", now(), &mut entries).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        if purged > 0 {
            self.after_purge().await;
        }
        Ok(purged)
    }

    pub(crate) async fn purge_expired(&self, window: std::time::Duration, actor: &str) -> Result<u64> {
        let now = now();
        let cutoff = now - super::delta(window, "window")?;
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT id FROM deletion_requests WHERE forget_payload IS NOT NULL \
             AND status IN {RETAINED_STATUSES} AND finished_at < $1 ORDER BY id"
        );
        let ids: Vec<Uuid> = sqlx::query_scalar(&sql).bind(cutoff).fetch_all(&mut *tx.tx).await?;
        let mut entries = Vec::new();
        let purged = purge_payloads(&mut tx, &ids, actor, "retention window elapsed", now, &mut entries).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        if purged > 0 {
            self.after_purge().await;
        }
        Ok(purged)
    }
}

/// Splits one page off a listing fetched with `limit + 1` rows.
pub(super) fn paginate<T>(mut items: Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
    } else {
        None
    };
    Page { items, next }
}

async fn find_by_key(tx: &mut WriteTx, new: &NewRequest) -> Result<Option<(DeletionRequest, String)>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS}, body_digest FROM deletion_requests \
         WHERE client_id = $1 AND idempotency_key = $2"
    );
    let row = sqlx::query(&sql)
        .bind(&new.client_id)
        .bind(&new.idempotency_key)
        .fetch_optional(&mut *tx.tx)
        .await?;
    match row {
        Some(row) => {
            let request = DeletionRequest::from_row(&row)?;
            let digest: String = row.try_get("body_digest")?;
            Ok(Some((request, digest)))
        }
        None => Ok(None),
    }
}

fn same_body_or_conflict(
    (existing, digest): (DeletionRequest, String),
    body_digest: &str,
    new: &NewRequest,
) -> Result<(DeletionRequest, bool)> {
    if digest == body_digest {
        Ok((existing, false))
    } else {
        Err(Error::IdempotencyMismatch {
            idempotency_key: new.idempotency_key.clone(),
            existing_id: existing.id,
        })
    }
}

pub(super) async fn fetch_request(tx: &mut WriteTx, id: Uuid) -> Result<DeletionRequest> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE id = $1");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| Error::not_found("deletion request", id))
}

async fn lock_request(tx: &mut WriteTx, id: Uuid) -> Result<DeletionRequest> {
    let sql = format!("SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE id = $1{FOR_UPDATE}");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| Error::not_found("deletion request", id))
}

/// The queued or running job that currently serves the request.
async fn active_job_of(tx: &mut WriteTx, request_id: Uuid) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT jr.job_id FROM job_requests jr JOIN jobs j ON j.id = jr.job_id \
         WHERE jr.request_id = $1 AND j.state IN ('queued', 'running') \
         ORDER BY jr.job_id DESC LIMIT 1",
    )
    .bind(request_id)
    .fetch_optional(&mut *tx.tx)
    .await?)
}

/// Cancels a queued request at once: it leaves its job, and a job left with
/// no request is cancelled too.
pub(super) async fn cancel_queued_request(
    tx: &mut WriteTx,
    job: &Job,
    request_id: Uuid,
    actor: &str,
    now: chrono::DateTime<chrono::Utc>,
    entries: &mut Vec<AuditEntry>,
) -> Result<()> {
    sqlx::query(
        "UPDATE deletion_requests SET status = 'cancelled', finished_at = $2, updated_at = $2 \
         WHERE id = $1",
    )
    .bind(request_id)
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    sqlx::query("DELETE FROM job_requests WHERE job_id = $1 AND request_id = $2")
        .bind(job.id)
        .bind(request_id)
        .execute(&mut *tx.tx)
        .await?;
    entries.push(AuditEntry::new(
        actor,
        "request.cancelled",
        "deletion_request",
        request_id,
        json!({"job_id": job.id, "job_state": "queued"}),
    ));
    if active_requests(tx, job.id).await?.is_empty() {
        sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = $2, updated_at = $2 WHERE id = $1")
            .bind(job.id)
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
        entries.push(AuditEntry::new(
            actor,
            "job.cancelled",
            "job",
            job.id,
            json!({"from_state": "queued"}),
        ));
    }
    Ok(())
}

/// Erases the forget payloads of `ids` (keeping their digests), one audit
/// record per erased payload. Returns how many were erased.
pub(super) async fn purge_payloads(
    tx: &mut WriteTx,
    ids: &[Uuid],
    actor: &str,
    reason: &str,
    now: chrono::DateTime<chrono::Utc>,
    entries: &mut Vec<AuditEntry>,
) -> Result<u64> {
    let mut purged = 0;
    for &id in ids {
        let digest: Option<String> = sqlx::query_scalar(
            "UPDATE deletion_requests SET forget_payload = NULL, purged_at = $2, updated_at = $2 \
             WHERE id = $1 AND forget_payload IS NOT NULL RETURNING payload_digest",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if let Some(digest) = digest {
            purged += 1;
            entries.push(AuditEntry::new(
                actor,
                "request.payload_purged",
                "deletion_request",
                id,
                json!({"payload_digest": digest, "reason": reason}),
            ));
        }
    }
    Ok(purged)
}
