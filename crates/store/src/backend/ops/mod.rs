//! Store operations, written once against `super::Db` (see `backend/mod.rs`).
//!
//! Conventions: timestamps come from [`now`] (application clock, truncated to
//! microseconds so they round-trip exactly through both databases); every
//! state change writes its audit records in the same transaction, appended
//! last; row locks are taken in the order model, job, request.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Db, WriteTx, FOR_UPDATE, PG, SKIP_LOCKED};
use crate::backend::{Ctx, WORK_CHANNEL};
use crate::digest::{canonical_json, hmac_hex};
use crate::{Error, Job, JobState, Result};

mod audit;
mod corpus;
mod jobs;
mod keys;
mod opendsr;
mod registry;
mod requests;

/// A connection of this backend (what a transaction or pooled connection
/// dereferences to).
type Conn = <Db as sqlx::Database>::Connection;

/// One backend's connection pool plus the shared context.
#[derive(Clone)]
pub(crate) struct Ops {
    pub(crate) pool: sqlx::Pool<Db>,
    pub(crate) ctx: Arc<Ctx>,
}

const REQUEST_COLUMNS: &str = "id, client_id, idempotency_key, model_name, subject_hmac, \
     payload_digest, method_overrides, callback_url, status, cancel_requested, error, \
     result_version_id, created_at, updated_at, finished_at, purged_at";

const JOB_COLUMNS: &str = "id, model_name, target_alias, method_overrides, state, attempts, \
     max_attempts, run_after, lease_expires_at, heartbeat_at, worker_id, progress_stage, \
     progress_percent, progress_message, cancel_requested, last_error, base_version_id, \
     result_version_id, created_at, updated_at, started_at, finished_at";

const VERSION_COLUMNS: &str = "id, model_name, number, parent_id, job_id, location, config, \
     seed, metrics, certificate, fulfilled_request_ids, status, created_at, decided_at, \
     decided_by";

const MODEL_COLUMNS: &str = "name, base_checkpoint, architecture, prompt_template, \
     retain_corpus, holdout_corpus, default_config, gates, created_at, updated_at";

/// The current time at the databases' common precision (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn delta(d: Duration, field: &'static str) -> Result<TimeDelta> {
    TimeDelta::from_std(d).map_err(|_| Error::invalid(field, "duration out of range"))
}

fn worker_actor(worker_id: &str) -> String {
    format!("worker:{worker_id}")
}

/// Caps a page size to 1..=1000.
fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Ops {
    /// HMAC-SHA256 under the server secret.
    pub(crate) fn hmac(&self, data: &[u8]) -> String {
        hmac_hex(&self.ctx.opts.hmac_secret, data)
    }

    /// HMAC of a JSON value's canonical text.
    pub(crate) fn hmac_json(&self, value: &serde_json::Value) -> String {
        self.hmac(canonical_json(value).as_bytes())
    }

    /// Wakes waiters in this process (after a commit that queued work).
    fn wake_local(&self) {
        self.ctx.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Local watch receiver for [`crate::WorkWaiter`].
    pub(crate) fn wake_receiver(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ctx.wake.subscribe()
    }
}

/// Tells idle workers in other processes that work was queued (delivered by
/// Postgres at commit). SQLite workers poll.
async fn notify_work(tx: &mut WriteTx) -> Result<()> {
    if PG {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(WORK_CHANNEL)
            .execute(&mut *tx.tx)
            .await?;
    }
    Ok(())
}

/// Locks the model row (Postgres) and checks that the model exists.
async fn lock_model(tx: &mut WriteTx, name: &str) -> Result<()> {
    let sql = format!("SELECT name FROM models WHERE name = $1{FOR_UPDATE}");
    sqlx::query_scalar::<_, String>(&sql)
        .bind(name)
        .fetch_optional(&mut *tx.tx)
        .await?
        .map(|_| ())
        .ok_or_else(|| Error::not_found("model", name))
}

/// Locks and reads a job.
async fn lock_job(tx: &mut WriteTx, id: Uuid) -> Result<Job> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{FOR_UPDATE}");
    sqlx::query_as::<_, Job>(&sql)
        .bind(id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| Error::not_found("job", id))
}

/// The job must be running under this worker's lease.
fn ensure_owner(job: &Job, worker_id: &str) -> Result<()> {
    if job.state == JobState::Running && job.worker_id.as_deref() == Some(worker_id) {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            job_id: job.id,
            worker_id: worker_id.to_owned(),
        })
    }
}
