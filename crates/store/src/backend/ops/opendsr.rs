//! OpenDSR (OpenGDPR) processor requests and their status-callback outbox.
//!
//! An OpenDSR request is stored once per `(client_id, subject_request_id)`
//! (idempotent: the same id with another body digest is
//! [`Error::IdempotencyMismatch`]). It resolves to deletion requests, made
//! through [`Ops::create_request`] by the caller and linked here. Its status
//! only moves forward (pending -> in_progress -> completed | cancelled); each
//! move enqueues one callback per URL in the same transaction, so a status
//! is announced exactly when it is recorded. Callbacks are claimed with a
//! lease (`FOR UPDATE SKIP LOCKED` on Postgres), in order per request and
//! URL, and retried until delivered or given up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use uuid::Uuid;

use super::{audit, check_len, delta, now, Ops, WriteTx, FOR_UPDATE, REQUEST_COLUMNS, SKIP_LOCKED};
use crate::{
    AuditEntry, CallbackOutcome, DeletionRequest, Error, NewCallback, NewOpenDsrRequest, OpenDsrCallback,
    OpenDsrRequest, OpenDsrStatus, Result,
};

const OPENDSR_COLUMNS: &str = "id, client_id, subject_request_id, body_digest, regulation, \
     subject_request_type, api_version, submitted_time, received_time, expected_completion_time, \
     status_callback_urls, targets, request_ids, status, resolved_at, cancel_requested_at, \
     created_at, updated_at";

const CALLBACK_COLUMNS: &str = "id, opendsr_id, url, request_status, body, attempts, next_attempt_at, \
     delivered_at, failed_at, last_error, created_at";

impl Ops {
    pub(crate) async fn create_opendsr_request(
        &self,
        new: &NewOpenDsrRequest,
        actor: &str,
    ) -> Result<(OpenDsrRequest, bool)> {
        check_len("client_id", &new.client_id, 200)?;
        check_len("subject_request_id", &new.subject_request_id, 200)?;
        check_len("subject_request_type", &new.subject_request_type, 64)?;
        check_len("api_version", &new.api_version, 32)?;
        if let Some(t) = new.targets.iter().find(|t| !super::is_hex_digest(&t.subject_hmac)) {
            return Err(Error::invalid(
                "targets",
                format!("{} bytes: not a lowercase hex HMAC-SHA256 digest", t.subject_hmac.len()),
            ));
        }
        let mut tx = self.begin_write().await?;
        if let Some(existing) = find_by_srid(&mut tx, &new.client_id, &new.subject_request_id).await? {
            return same_body_or_conflict(existing, new);
        }
        let now = now();
        let id = Uuid::now_v7();
        let nothing = new.targets.is_empty();
        let status = if nothing {
            OpenDsrStatus::Completed
        } else {
            OpenDsrStatus::Pending
        };
        let no_ids: Vec<Uuid> = Vec::new();
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO opendsr_requests (id, client_id, subject_request_id, body_digest, regulation, \
             subject_request_type, api_version, submitted_time, received_time, expected_completion_time, \
             status_callback_urls, targets, request_ids, status, resolved_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
             ON CONFLICT (client_id, subject_request_id) DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(&new.client_id)
        .bind(&new.subject_request_id)
        .bind(&new.body_digest)
        .bind(&new.regulation)
        .bind(&new.subject_request_type)
        .bind(&new.api_version)
        .bind(new.submitted_time)
        .bind(new.received_time)
        .bind(new.expected_completion_time)
        .bind(Json(&new.status_callback_urls))
        .bind(Json(&new.targets))
        .bind(Json(&no_ids))
        .bind(status)
        .bind(nothing.then_some(now))
        .bind(now)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if inserted.is_none() {
            // A concurrent create with the same id won.
            let existing = find_by_srid(&mut tx, &new.client_id, &new.subject_request_id)
                .await?
                .ok_or_else(|| Error::not_found("OpenDSR request", &new.subject_request_id))?;
            return same_body_or_conflict(existing, new);
        }
        enqueue(&mut tx, id, status, &new.initial_callbacks, now).await?;
        let mut subject_hmacs: Vec<&str> = new.targets.iter().map(|t| t.subject_hmac.as_str()).collect();
        subject_hmacs.sort_unstable();
        subject_hmacs.dedup();
        let mut models: Vec<&str> = new.targets.iter().map(|t| t.model_name.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        let mut entries = vec![AuditEntry::new(
            actor,
            "opendsr.received",
            "opendsr_request",
            id,
            json!({
                "client_id": new.client_id,
                "subject_request_id": new.subject_request_id,
                "subject_request_type": new.subject_request_type,
                "regulation": new.regulation,
                "body_digest": new.body_digest,
                "models": models,
                "subject_hmacs": subject_hmacs,
                "callbacks": new.status_callback_urls.len(),
            }),
        )];
        if nothing {
            entries.push(AuditEntry::new(
                actor,
                "opendsr.nothing_to_forget",
                "opendsr_request",
                id,
                json!({"status": status}),
            ));
        }
        let record = fetch(&mut tx, id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok((record, true))
    }

    pub(crate) async fn get_opendsr_request(&self, id: Uuid) -> Result<OpenDsrRequest> {
        let sql = format!("SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE id = $1");
        sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("OpenDSR request", id))
    }

    pub(crate) async fn find_opendsr_request(
        &self,
        client_id: Option<&str>,
        subject_request_id: &str,
    ) -> Result<Option<OpenDsrRequest>> {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!(
            "SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE subject_request_id = "
        ));
        q.push_bind(subject_request_id.to_owned());
        if let Some(client) = client_id {
            q.push(" AND client_id = ").push_bind(client.to_owned());
        }
        q.push(" ORDER BY id DESC LIMIT 1");
        Ok(q.build_query_as().fetch_optional(&self.pool).await?)
    }

    pub(crate) async fn link_opendsr_requests(
        &self,
        id: Uuid,
        request_ids: &[Uuid],
        actor: &str,
    ) -> Result<OpenDsrRequest> {
        let mut tx = self.begin_write().await?;
        let record = lock(&mut tx, id).await?;
        if record.resolved_at.is_some() {
            return Ok(record);
        }
        if request_ids.len() != record.targets.len() {
            return Err(Error::invalid(
                "request_ids",
                format!(
                    "{} deletion requests for {} targets",
                    request_ids.len(),
                    record.targets.len()
                ),
            ));
        }
        let now = now();
        sqlx::query("UPDATE opendsr_requests SET request_ids = $2, resolved_at = $3, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(Json(request_ids))
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
        let entries = [AuditEntry::new(
            actor,
            "opendsr.resolved",
            "opendsr_request",
            id,
            json!({"deletion_request_ids": request_ids}),
        )];
        let record = fetch(&mut tx, id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub(crate) async fn request_opendsr_cancel(&self, id: Uuid, actor: &str) -> Result<OpenDsrRequest> {
        let mut tx = self.begin_write().await?;
        let record = lock(&mut tx, id).await?;
        if record.cancel_requested_at.is_some() {
            return Ok(record);
        }
        if record.status != OpenDsrStatus::Pending {
            return Err(Error::InvalidState {
                entity: "OpenDSR request",
                id: record.subject_request_id.clone(),
                state: record.status.to_string(),
                action: "cancel (only pending requests can be cancelled)",
            });
        }
        let now = now();
        sqlx::query("UPDATE opendsr_requests SET cancel_requested_at = $2, updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
        let entries = [AuditEntry::new(
            actor,
            "opendsr.cancel_requested",
            "opendsr_request",
            id,
            json!({"subject_request_id": record.subject_request_id}),
        )];
        let record = fetch(&mut tx, id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub(crate) async fn transition_opendsr(
        &self,
        id: Uuid,
        from: OpenDsrStatus,
        to: OpenDsrStatus,
        callbacks: &[NewCallback],
        details: Value,
        actor: &str,
    ) -> Result<Option<OpenDsrRequest>> {
        if from.is_final() || to.rank() <= from.rank() {
            return Err(Error::invalid(
                "status",
                format!("an OpenDSR request cannot move from {from} to {to}"),
            ));
        }
        let mut tx = self.begin_write().await?;
        let record = lock(&mut tx, id).await?;
        if record.status != from {
            return Ok(None);
        }
        let now = now();
        sqlx::query("UPDATE opendsr_requests SET status = $2, updated_at = $3 WHERE id = $1")
            .bind(id)
            .bind(to)
            .bind(now)
            .execute(&mut *tx.tx)
            .await?;
        enqueue(&mut tx, id, to, callbacks, now).await?;
        let mut details = match details {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        details.insert("from".into(), json!(from));
        details.insert("to".into(), json!(to));
        details.insert("callbacks".into(), json!(callbacks.len()));
        let entries = [AuditEntry::new(
            actor,
            "opendsr.status_changed",
            "opendsr_request",
            id,
            Value::Object(details),
        )];
        let record = fetch(&mut tx, id).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(Some(record))
    }

    pub(crate) async fn open_opendsr_requests(&self, limit: u32) -> Result<Vec<OpenDsrRequest>> {
        let sql = format!(
            "SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE status IN ('pending', 'in_progress') \
             ORDER BY id LIMIT $1"
        );
        Ok(sqlx::query_as(&sql)
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(&self.pool)
            .await?)
    }

    pub(crate) async fn deletion_requests_by_ids(&self, ids: &[Uuid]) -> Result<Vec<DeletionRequest>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!(
            "SELECT {REQUEST_COLUMNS} FROM deletion_requests WHERE id IN ("
        ));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        q.push(") ORDER BY id");
        Ok(q.build_query_as().fetch_all(&self.pool).await?)
    }

    pub(crate) async fn count_rows_forgotten_by(&self, request_ids: &[Uuid]) -> Result<i64> {
        if request_ids.is_empty() {
            return Ok(0);
        }
        let mut q = sqlx::QueryBuilder::<super::Db>::new("SELECT COUNT(*) FROM corpus_rows WHERE forgotten_by IN (");
        let mut list = q.separated(", ");
        for id in request_ids {
            list.push_bind(*id);
        }
        q.push(")");
        Ok(q.build_query_scalar().fetch_one(&self.pool).await?)
    }

    pub(crate) async fn claim_opendsr_callbacks(&self, lease: Duration, limit: u32) -> Result<Vec<OpenDsrCallback>> {
        let now = now();
        let until = now + delta(lease, "lease")?;
        let mut tx = self.begin_write().await?;
        // Due, and every earlier callback of the same request and URL is
        // finished (delivered or given up): a receiver sees the states in order.
        let sql = format!(
            "UPDATE opendsr_callbacks SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE id IN (SELECT c.id FROM opendsr_callbacks c \
               WHERE c.delivered_at IS NULL AND c.failed_at IS NULL AND c.next_attempt_at <= $2 \
               AND NOT EXISTS (SELECT 1 FROM opendsr_callbacks e WHERE e.opendsr_id = c.opendsr_id \
                 AND e.url = c.url AND e.id < c.id AND e.delivered_at IS NULL AND e.failed_at IS NULL) \
               ORDER BY c.next_attempt_at, c.id LIMIT $3{SKIP_LOCKED}) \
             RETURNING {CALLBACK_COLUMNS}"
        );
        let mut claimed: Vec<OpenDsrCallback> = sqlx::query_as(&sql)
            .bind(until)
            .bind(now)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *tx.tx)
            .await?;
        tx.commit().await?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    pub(crate) async fn finish_opendsr_callback(
        &self,
        id: Uuid,
        outcome: &CallbackOutcome,
        actor: &str,
    ) -> Result<OpenDsrCallback> {
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {CALLBACK_COLUMNS} FROM opendsr_callbacks WHERE id = $1{FOR_UPDATE}");
        let callback: OpenDsrCallback = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| Error::not_found("OpenDSR callback", id))?;
        if callback.delivered_at.is_some() || callback.failed_at.is_some() {
            return Ok(callback);
        }
        let now = now();
        let mut entries = Vec::new();
        match outcome {
            CallbackOutcome::Delivered => {
                sqlx::query("UPDATE opendsr_callbacks SET delivered_at = $2, last_error = NULL WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx.tx)
                    .await?;
                entries.push(AuditEntry::new(
                    actor,
                    "opendsr.callback_delivered",
                    "opendsr_request",
                    callback.opendsr_id,
                    json!({"callback_id": id, "request_status": callback.request_status, "attempts": callback.attempts}),
                ));
            }
            CallbackOutcome::Retry { at, error } => {
                sqlx::query("UPDATE opendsr_callbacks SET next_attempt_at = $2, last_error = $3 WHERE id = $1")
                    .bind(id)
                    .bind(at_least(*at, now))
                    .bind(truncate(error))
                    .execute(&mut *tx.tx)
                    .await?;
            }
            CallbackOutcome::GiveUp { error } => {
                sqlx::query("UPDATE opendsr_callbacks SET failed_at = $2, last_error = $3 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .bind(truncate(error))
                    .execute(&mut *tx.tx)
                    .await?;
                entries.push(AuditEntry::new(
                    actor,
                    "opendsr.callback_failed",
                    "opendsr_request",
                    callback.opendsr_id,
                    json!({"callback_id": id, "request_status": callback.request_status, "attempts": callback.attempts}),
                ));
            }
        }
        let sql = format!("SELECT {CALLBACK_COLUMNS} FROM opendsr_callbacks WHERE id = $1");
        let callback = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx.tx).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(callback)
    }

    pub(crate) async fn opendsr_callbacks(&self, opendsr_id: Uuid) -> Result<Vec<OpenDsrCallback>> {
        let sql = format!("SELECT {CALLBACK_COLUMNS} FROM opendsr_callbacks WHERE opendsr_id = $1 ORDER BY id");
        Ok(sqlx::query_as(&sql).bind(opendsr_id).fetch_all(&self.pool).await?)
    }
}

async fn find_by_srid(tx: &mut WriteTx, client_id: &str, srid: &str) -> Result<Option<OpenDsrRequest>> {
    let sql = format!(
        "SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE client_id = $1 AND subject_request_id = $2{FOR_UPDATE}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(client_id)
        .bind(srid)
        .fetch_optional(&mut *tx.tx)
        .await?)
}

fn same_body_or_conflict(existing: OpenDsrRequest, new: &NewOpenDsrRequest) -> Result<(OpenDsrRequest, bool)> {
    if existing.body_digest == new.body_digest {
        Ok((existing, false))
    } else {
        Err(Error::IdempotencyMismatch {
            idempotency_key: new.subject_request_id.clone(),
            existing_id: existing.id,
        })
    }
}

async fn lock(tx: &mut WriteTx, id: Uuid) -> Result<OpenDsrRequest> {
    let sql = format!("SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE id = $1{FOR_UPDATE}");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx.tx)
        .await?
        .ok_or_else(|| Error::not_found("OpenDSR request", id))
}

async fn fetch(tx: &mut WriteTx, id: Uuid) -> Result<OpenDsrRequest> {
    let sql = format!("SELECT {OPENDSR_COLUMNS} FROM opendsr_requests WHERE id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx.tx).await?)
}

async fn enqueue(
    tx: &mut WriteTx,
    opendsr_id: Uuid,
    status: OpenDsrStatus,
    callbacks: &[NewCallback],
    now: DateTime<Utc>,
) -> Result<()> {
    for cb in callbacks {
        check_len("callback url", &cb.url, 2048)?;
        sqlx::query(
            "INSERT INTO opendsr_callbacks (id, opendsr_id, url, request_status, body, attempts, \
             next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
        )
        .bind(Uuid::now_v7())
        .bind(opendsr_id)
        .bind(&cb.url)
        .bind(status)
        .bind(&cb.body)
        .bind(now)
        .execute(&mut *tx.tx)
        .await?;
    }
    Ok(())
}

fn at_least(at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
    at.max(now)
}

fn truncate(error: &str) -> String {
    error.chars().take(500).collect()
}
