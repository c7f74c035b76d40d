//! The job queue: claim, lease renewal, progress, completion (with the
//! idempotent publish), failure with backoff, cancellation, the reaper.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use serde_json::{json, Value};
use uuid::Uuid;

use super::registry::{insert_version, move_alias, version_by_id};
use super::requests::{paginate, purge_payloads};
use super::{
    audit, delta, ensure_owner, lock_job, lock_model, notify_work, now, page_limit, worker_actor, Ops, WriteTx,
    JOB_COLUMNS, REQUEST_COLUMNS, SKIP_LOCKED,
};
use crate::error::is_unique_violation;
use crate::{
    AuditEntry, ClaimedJob, DeletionRequest, Error, Heartbeat, Job, JobFilter, JobState, ModelVersion, NewVersion,
    Page, PageRequest, Progress, RequestStatus, Result, VersionStatus,
};

/// How often a claim retries after losing a race for a model to another
/// worker (Postgres only: the one-running-job-per-model index refused it).
const CLAIM_RETRIES: usize = 5;

impl Ops {
    pub(crate) async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        super::check_len("worker_id", worker_id, 200)?;
        let lease = delta(lease, "lease")?;
        // One statement picks and takes the oldest runnable job of a model
        // that has no running job and no version awaiting approval. On
        // Postgres, SKIP LOCKED lets concurrent claimers pass over each
        // other's candidates; on SQLite the write transaction excludes them.
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker_id = $1, \
             lease_expires_at = $2, heartbeat_at = $3, updated_at = $3, \
             started_at = COALESCE(started_at, $3), progress_stage = NULL, \
             progress_percent = NULL, progress_message = NULL, \
             base_version_id = (SELECT a.version_id FROM aliases a \
                 WHERE a.model_name = jobs.model_name AND a.alias = jobs.target_alias) \
             WHERE id = (SELECT j.id FROM jobs j WHERE j.state = 'queued' AND j.run_after <= $3 \
                 AND NOT EXISTS (SELECT 1 FROM jobs r \
                     WHERE r.model_name = j.model_name AND r.state = 'running') \
                 AND NOT EXISTS (SELECT 1 FROM model_versions v \
                     WHERE v.model_name = j.model_name AND v.status = 'awaiting_approval') \
                 ORDER BY j.run_after, j.id LIMIT 1{SKIP_LOCKED}) \
             AND state = 'queued' RETURNING {JOB_COLUMNS}"
        );
        for _ in 0..CLAIM_RETRIES {
            let mut tx = self.begin_write().await?;
            let now = now();
            let claimed = sqlx::query_as::<_, Job>(&sql)
                .bind(worker_id)
                .bind(now + lease)
                .bind(now)
                .fetch_optional(&mut *tx.tx)
                .await;
            let job = match claimed {
                Ok(Some(job)) => job,
                Ok(None) => return Ok(None),
                // Another worker started a job of the same model first.
                Err(e) if is_unique_violation(&e, "jobs_one_running_per_model") => continue,
                Err(e) => return Err(e.into()),
            };
            sqlx::query(
                "UPDATE deletion_requests SET status = 'running', updated_at = $2 \
                 WHERE status = 'queued' AND id IN \
                 (SELECT request_id FROM job_requests WHERE job_id = $1)",
            )
            .bind(job.id)
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
            let requests = active_requests(&mut tx, job.id).await?;
            let entries = [AuditEntry::new(
                worker_actor(worker_id),
                "job.claimed",
                "job",
                job.id,
                json!({
                    "attempt": job.attempts,
                    "base_version_id": job.base_version_id,
                    "request_ids": requests.iter().map(|r| r.id).collect::<Vec<_>>(),
                }),
            )];
            audit::append(&mut tx, &entries).await?;
            tx.commit().await?;
            return Ok(Some(ClaimedJob { job, requests }));
        }
        Ok(None)
    }

    pub(crate) async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration) -> Result<Heartbeat> {
        let lease = delta(lease, "lease")?;
        let now = now();
        let cancel: Option<bool> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $3, heartbeat_at = $4, updated_at = $4 \
             WHERE id = $1 AND state = 'running' AND worker_id = $2 RETURNING cancel_requested",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(now + lease)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match cancel {
            Some(cancel_requested) => Ok(Heartbeat { cancel_requested }),
            None => Err(Error::LeaseLost {
                job_id,
                worker_id: worker_id.to_owned(),
            }),
        }
    }

    pub(crate) async fn update_progress(&self, job_id: Uuid, worker_id: &str, progress: &Progress) -> Result<()> {
        super::check_len("progress.stage", &progress.stage, 100)?;
        let percent = if progress.percent.is_finite() {
            progress.percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let updated = sqlx::query(
            "UPDATE jobs SET progress_stage = $3, progress_percent = $4, progress_message = $5, \
             updated_at = $6 WHERE id = $1 AND state = 'running' AND worker_id = $2",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(&progress.stage)
        .bind(percent)
        .bind(&progress.message)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::LeaseLost {
                job_id,
                worker_id: worker_id.to_owned(),
            });
        }
        Ok(())
    }

    pub(crate) async fn complete_job(
        &self,
        job_id: Uuid,
        worker_id: &str,
        version: Option<NewVersion>,
    ) -> Result<Option<ModelVersion>> {
        let actor = worker_actor(worker_id);
        let mut tx = self.begin_write().await?;
        let model: String = sqlx::query_scalar("SELECT model_name FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))?;
        lock_model(&mut tx, &model).await?;
        let job = lock_job(&mut tx, job_id).await?;
        if job.state == JobState::Succeeded {
            // Already published (a repeated call): the same answer again.
            return match job.result_version_id {
                Some(id) => Ok(Some(version_by_id(&mut tx.tx, id).await?)),
                None => Ok(None),
            };
        }
        ensure_owner(&job, worker_id)?;
        let requests = active_requests(&mut tx, job_id).await?;
        let now = now();
        let mut entries = Vec::new();

        let mut published = None;
        let mut fulfilled: Vec<Uuid> = Vec::new();
        let mut fulfilled_status = RequestStatus::Succeeded;
        if let Some(mut new) = version {
            if new.model_name != job.model_name {
                return Err(Error::invalid("version.model_name", "differs from the job's model"));
            }
            match new.job_id {
                Some(id) if id != job_id => return Err(Error::invalid("version.job_id", "names another job")),
                _ => new.job_id = Some(job_id),
            }
            if new.parent_id.is_none() {
                new.parent_id = job.base_version_id;
            }
            if let Some(stray) = new
                .fulfilled_request_ids
                .iter()
                .find(|id| !requests.iter().any(|r| r.id == **id))
            {
                return Err(Error::invalid(
                    "version.fulfilled_request_ids",
                    format!("request {stray} is not served by job {job_id}"),
                ));
            }
            let (version, _) = insert_version(&mut tx, &new, &actor, &mut entries).await?;
            fulfilled = version.fulfilled_request_ids.clone();
            match version.status {
                VersionStatus::Published => {
                    move_alias(&mut tx, &version, &job.target_alias, &actor, &[], &mut entries).await?;
                }
                VersionStatus::AwaitingApproval => {
                    fulfilled_status = RequestStatus::AwaitingApproval;
                }
                VersionStatus::Rejected => {
                    return Err(Error::invalid(
                        "version.status",
                        "a job cannot publish a rejected version",
                    ))
                }
            }
            published = Some(version);
        }

        let mut finished = Vec::new();
        for request in &requests {
            let (status, version_id) = if fulfilled.contains(&request.id) {
                (fulfilled_status, published.as_ref().map(|v| v.id))
            } else {
                (RequestStatus::NothingToForget, None)
            };
            set_request_outcome(&mut tx, request.id, status, version_id, None, now).await?;
            entries.push(AuditEntry::new(
                &actor,
                format!("request.{status}"),
                "deletion_request",
                request.id,
                json!({"job_id": job_id, "version_id": version_id}),
            ));
            if status == RequestStatus::Succeeded {
                super::corpus::forget_rows_of(self, &mut tx, request, &actor, now, &mut entries).await?;
            }
            if status.is_terminal() {
                finished.push(request.id);
            }
        }
        let purged = purge_payloads(&mut tx, &finished, &actor, "job ended", now, &mut entries).await?;

        sqlx::query(
            "UPDATE jobs SET state = 'succeeded', result_version_id = $2, finished_at = $3, \
             updated_at = $3, lease_expires_at = NULL WHERE id = $1",
        )
        .bind(job_id)
        .bind(published.as_ref().map(|v| v.id))
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
        entries.push(AuditEntry::new(
            &actor,
            "job.succeeded",
            "job",
            job_id,
            json!({
                "attempt": job.attempts,
                "version_id": published.as_ref().map(|v| v.id),
                "version_number": published.as_ref().map(|v| v.number),
            }),
        ));
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        if purged > 0 {
            self.after_purge().await;
        }
        Ok(published)
    }

    pub(crate) async fn fail_job(&self, job_id: Uuid, worker_id: &str, error: &str, retryable: bool) -> Result<Job> {
        let actor = worker_actor(worker_id);
        let mut tx = self.begin_write().await?;
        let job = lock_job(&mut tx, job_id).await?;
        ensure_owner(&job, worker_id)?;
        let now = now();
        let mut entries = Vec::new();
        if job.cancel_requested {
            self.finish_cancel(&mut tx, &job, Some(error), &actor, now, &mut entries)
                .await?;
        } else if retryable && job.attempts < job.max_attempts {
            self.requeue(&mut tx, &job, error, &actor, now, &mut entries).await?;
        } else {
            fail_for_good(&mut tx, &job, error, &actor, now, &mut entries).await?;
        }
        let job = lock_job(&mut tx, job_id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        self.wake_local();
        Ok(job)
    }

    pub(crate) async fn release_job(&self, job_id: Uuid, worker_id: &str, reason: &str) -> Result<Job> {
        let actor = worker_actor(worker_id);
        let mut tx = self.begin_write().await?;
        let job = lock_job(&mut tx, job_id).await?;
        ensure_owner(&job, worker_id)?;
        let now = now();
        let mut entries = Vec::new();
        if job.cancel_requested {
            self.finish_cancel(&mut tx, &job, Some(reason), &actor, now, &mut entries)
                .await?;
        } else {
            // The attempt did not fail: give it back, and make the job
            // runnable at once (no backoff) for the next worker.
            return_to_queue(&mut tx, job.id, true, now, reason, now).await?;
            entries.push(AuditEntry::new(
                &actor,
                "job.released",
                "job",
                job.id,
                json!({"attempt": job.attempts, "reason": reason}),
            ));
            notify_work(&mut tx).await?;
        }
        let job = lock_job(&mut tx, job_id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        self.wake_local();
        Ok(job)
    }

    pub(crate) async fn acknowledge_cancel(&self, job_id: Uuid, worker_id: &str) -> Result<Job> {
        let actor = worker_actor(worker_id);
        let mut tx = self.begin_write().await?;
        let job = lock_job(&mut tx, job_id).await?;
        ensure_owner(&job, worker_id)?;
        if !job.cancel_requested {
            return Err(Error::InvalidState {
                entity: "job",
                id: job_id.to_string(),
                state: "running without a cancellation request".into(),
                action: "acknowledge a cancellation",
            });
        }
        let mut entries = Vec::new();
        self.finish_cancel(&mut tx, &job, None, &actor, now(), &mut entries)
            .await?;
        let job = lock_job(&mut tx, job_id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        self.wake_local();
        Ok(job)
    }

    pub(crate) async fn cancel_job(&self, job_id: Uuid, actor: &str) -> Result<Job> {
        let mut tx = self.begin_write().await?;
        let job = lock_job(&mut tx, job_id).await?;
        let now = now();
        let mut entries = Vec::new();
        match job.state {
            JobState::Cancelled => return Ok(job),
            JobState::Queued => {
                for request in active_requests(&mut tx, job_id).await? {
                    super::requests::cancel_queued_request(&mut tx, &job, request.id, actor, now, &mut entries).await?;
                }
            }
            JobState::Running => {
                if job.cancel_requested {
                    return Ok(job);
                }
                sqlx::query(
                    "UPDATE deletion_requests SET cancel_requested = TRUE, updated_at = $2 \
                     WHERE status IN ('queued', 'running') AND id IN \
                     (SELECT request_id FROM job_requests WHERE job_id = $1)",
                )
                .bind(job_id)
                .bind(now)
                .execute(&mut *tx.tx)
                .await?;
                sqlx::query("UPDATE jobs SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1")
                    .bind(job_id)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                entries.push(AuditEntry::new(actor, "job.cancel_requested", "job", job_id, json!({})));
            }
            state => {
                return Err(Error::InvalidState {
                    entity: "job",
                    id: job_id.to_string(),
                    state: state.to_string(),
                    action: "cancel",
                })
            }
        }
        let job = lock_job(&mut tx, job_id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub(crate) async fn reap_expired(&self) -> Result<Vec<Job>> {
        const ACTOR: &str = "reaper";
        let mut tx = self.begin_write().await?;
        let now = now();
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_expires_at < $1 \
             ORDER BY id{SKIP_LOCKED}"
        );
        let expired: Vec<Job> = sqlx::query_as(&sql).bind(now).fetch_all(&mut *tx.tx).await?;
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        let mut reaped = Vec::with_capacity(expired.len());
        for job in &expired {
            tracing::warn!(job_id = %job.id, attempt = job.attempts, "lease expired");
            if job.cancel_requested {
                self.finish_cancel(&mut tx, job, Some("lease expired"), ACTOR, now, &mut entries)
                    .await?;
            } else if job.attempts < job.max_attempts {
                self.requeue(&mut tx, job, "lease expired", ACTOR, now, &mut entries)
                    .await?;
            } else {
                let error = format!("lease expired on attempt {}/{}", job.attempts, job.max_attempts);
                fail_for_good(&mut tx, job, &error, ACTOR, now, &mut entries).await?;
            }
            reaped.push(lock_job(&mut tx, job.id).await?);
        }
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        self.wake_local();
        Ok(reaped)
    }

    pub(crate) async fn get_job(&self, id: Uuid) -> Result<Job> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("job", id))
    }

    pub(crate) async fn list_jobs(&self, filter: &JobFilter, page: PageRequest) -> Result<Page<Job>> {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state);
        }
        if let Some(model) = &filter.model_name {
            q.push(" AND model_name = ").push_bind(model.clone());
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
        let items: Vec<Job> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(paginate(items, limit, |j| j.id))
    }

    /// Exponential backoff with jitter: base * 2^(attempts-1), capped, then
    /// scaled by a uniform factor in [0.5, 1] so retries spread out.
    fn backoff(&self, attempts: i64) -> TimeDelta {
        let queue = &self.ctx.opts.queue;
        let exponent = attempts.saturating_sub(1).clamp(0, 30) as i32;
        let raw = queue.backoff_base.as_secs_f64() * 2f64.powi(exponent);
        let capped = raw.min(queue.backoff_max.as_secs_f64());
        let jittered = capped * rand::thread_rng().gen_range(0.5..=1.0);
        TimeDelta::microseconds((jittered * 1e6) as i64)
    }

    /// Running -> queued after a retryable failure or an expired lease.
    async fn requeue(
        &self,
        tx: &mut WriteTx,
        job: &Job,
        error: &str,
        actor: &str,
        now: DateTime<Utc>,
        entries: &mut Vec<AuditEntry>,
    ) -> Result<()> {
        let run_after = now + self.backoff(job.attempts);
        return_to_queue(tx, job.id, false, run_after, error, now).await?;
        entries.push(AuditEntry::new(
            actor,
            "job.retry_scheduled",
            "job",
            job.id,
            json!({
                "attempt": job.attempts,
                "max_attempts": job.max_attempts,
                "run_after": crate::audit::format_at(run_after),
            }),
        ));
        notify_work(tx).await
    }

    /// Running -> cancelled. Requests whose client asked to cancel are
    /// cancelled; the others go back to the queue in a new job.
    async fn finish_cancel(
        &self,
        tx: &mut WriteTx,
        job: &Job,
        error: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
        entries: &mut Vec<AuditEntry>,
    ) -> Result<()> {
        let requests = active_requests(tx, job.id).await?;
        let (cancelled, kept): (Vec<_>, Vec<_>) = requests.into_iter().partition(|r| r.cancel_requested);
        for request in &cancelled {
            set_request_outcome(tx, request.id, RequestStatus::Cancelled, None, None, now).await?;
            entries.push(AuditEntry::new(
                actor,
                "request.cancelled",
                "deletion_request",
                request.id,
                json!({"job_id": job.id, "job_state": "running"}),
            ));
        }
        let mut requeued_to = None;
        if !kept.is_empty() {
            let batch_key = sqlx::query_scalar::<_, String>("SELECT batch_key FROM jobs WHERE id = $1")
                .bind(job.id)
                .fetch_one(&mut *tx.tx)
                .await?;
            let new_job = insert_job(
                tx,
                &job.model_name,
                &job.method_overrides,
                &batch_key,
                job.max_attempts,
                now,
            )
            .await?;
            for request in &kept {
                sqlx::query("INSERT INTO job_requests (job_id, request_id) VALUES ($1, $2)")
                    .bind(new_job)
                    .bind(request.id)
                    .execute(&mut *tx.tx)
                    .await?;
                sqlx::query("UPDATE deletion_requests SET status = 'queued', updated_at = $2 WHERE id = $1")
                    .bind(request.id)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                entries.push(AuditEntry::new(
                    actor,
                    "request.requeued",
                    "deletion_request",
                    request.id,
                    json!({"from_job_id": job.id, "to_job_id": new_job}),
                ));
            }
            notify_work(tx).await?;
            requeued_to = Some(new_job);
        }
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $2, updated_at = $2, \
             lease_expires_at = NULL, last_error = COALESCE($3, last_error) WHERE id = $1",
        )
        .bind(job.id)
        .bind(now)
        .bind(error)
        .execute(&mut *tx.tx)
        .await?;
        entries.push(AuditEntry::new(
            actor,
            "job.cancelled",
            "job",
            job.id,
            json!({
                "from_state": "running",
                "cancelled_requests": cancelled.len(),
                "requeued_to_job_id": requeued_to,
            }),
        ));
        Ok(())
    }
}

/// Inserts a queued job; returns its id.
pub(super) async fn insert_job(
    tx: &mut WriteTx,
    model: &str,
    method_overrides: &Value,
    batch_key: &str,
    max_attempts: i64,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, model_name, target_alias, method_overrides, batch_key, state, \
         attempts, max_attempts, run_after, cancel_requested, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'queued', 0, $6, $7, FALSE, $7, $7)",
    )
    .bind(id)
    .bind(model)
    .bind(crate::PRODUCTION)
    .bind(sqlx::types::Json(method_overrides))
    .bind(batch_key)
    .bind(max_attempts.max(1))
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    Ok(id)
}

/// The queued or running requests a job serves.
pub(super) async fn active_requests(tx: &mut WriteTx, job_id: Uuid) -> Result<Vec<DeletionRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM deletion_requests \
         WHERE status IN ('queued', 'running') AND id IN \
         (SELECT request_id FROM job_requests WHERE job_id = $1) ORDER BY id"
    );
    Ok(sqlx::query_as(&sql).bind(job_id).fetch_all(&mut *tx.tx).await?)
}

/// Sets a request's status after its job ended (or its version was decided).
pub(super) async fn set_request_outcome(
    tx: &mut WriteTx,
    id: Uuid,
    status: RequestStatus,
    version_id: Option<Uuid>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let finished_at = status.is_terminal().then_some(now);
    sqlx::query(
        "UPDATE deletion_requests SET status = $2, result_version_id = COALESCE($3, result_version_id), \
         error = $4, finished_at = $5, updated_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(version_id)
    .bind(error)
    .bind(finished_at)
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}

/// Running -> failed, with every request it served.
async fn fail_for_good(
    tx: &mut WriteTx,
    job: &Job,
    error: &str,
    actor: &str,
    now: DateTime<Utc>,
    entries: &mut Vec<AuditEntry>,
) -> Result<()> {
    for request in active_requests(tx, job.id).await? {
        set_request_outcome(tx, request.id, RequestStatus::Failed, None, Some(error), now).await?;
        entries.push(AuditEntry::new(
            actor,
            "request.failed",
            "deletion_request",
            request.id,
            json!({"job_id": job.id}),
        ));
    }
    sqlx::query(
        "UPDATE jobs SET state = 'failed', finished_at = $2, updated_at = $2, \
         lease_expires_at = NULL, last_error = $3 WHERE id = $1",
    )
    .bind(job.id)
    .bind(now)
    .bind(error)
    .execute(&mut *tx.tx)
    .await?;
    entries.push(AuditEntry::new(
        actor,
        "job.failed",
        "job",
        job.id,
        json!({"attempts": job.attempts, "max_attempts": job.max_attempts}),
    ));
    Ok(())
}

/// Running -> queued: the job runnable from `run_after` (the attempt it was
/// on given back when `uncount`), its running requests queued again.
async fn return_to_queue(
    tx: &mut WriteTx,
    job_id: Uuid,
    uncount: bool,
    run_after: DateTime<Utc>,
    error: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'queued', attempts = attempts - $5, run_after = $2, worker_id = NULL, \
         lease_expires_at = NULL, heartbeat_at = NULL, last_error = $3, updated_at = $4 \
         WHERE id = $1",
    )
    .bind(job_id)
    .bind(run_after)
    .bind(error)
    .bind(now)
    .bind(i64::from(uncount))
    .execute(&mut *tx.tx)
    .await?;
    sqlx::query(
        "UPDATE deletion_requests SET status = 'queued', updated_at = $2 \
         WHERE status = 'running' AND id IN \
         (SELECT request_id FROM job_requests WHERE job_id = $1)",
    )
    .bind(job_id)
    .bind(now)
    .execute(&mut *tx.tx)
    .await?;
    Ok(())
}
