//! Audit log: sealed appends inside the caller's transaction, verification,
//! listing.

use uuid::Uuid;

use super::{now, page_limit, Ops, WriteTx, PG};
use crate::audit::{check_record, format_at, record_hash, GENESIS_HASH};
use crate::backend::AUDIT_LOCK_KEY;
use crate::digest::canonical_json;
use crate::{AuditEntry, AuditFilter, AuditHead, AuditRecord, Error, Result};

#[derive(sqlx::FromRow)]
struct RawRecord {
    seq: i64,
    id: Uuid,
    at: String,
    actor: String,
    action: String,
    entity_kind: String,
    entity_id: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl From<RawRecord> for AuditRecord {
    fn from(r: RawRecord) -> Self {
        AuditRecord {
            seq: r.seq,
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            entity_kind: r.entity_kind,
            entity_id: r.entity_id,
            details: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

const AUDIT_COLUMNS: &str = "seq, id, at, actor, action, entity_kind, entity_id, details, prev_hash, hash";

/// Seals `entries` onto the end of the chain inside `tx`. Call it as the
/// last statement before commit: on Postgres it takes the transaction-scoped
/// advisory lock that serialises audit writers until the commit; on SQLite
/// the write transaction already excludes other writers.
pub(super) async fn append(tx: &mut WriteTx, entries: &[AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if PG {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(AUDIT_LOCK_KEY)
            .execute(&mut *tx.tx)
            .await?;
    }
    let last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut *tx.tx)
        .await?;
    let (mut seq, mut prev_hash) = last.unwrap_or_else(|| (0, GENESIS_HASH.to_owned()));
    let at = format_at(now());
    for entry in entries {
        seq += 1;
        let mut record = AuditRecord {
            seq,
            id: Uuid::now_v7(),
            at: at.clone(),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            entity_kind: entry.entity_kind.clone(),
            entity_id: entry.entity_id.clone(),
            details: canonical_json(&entry.details),
            prev_hash,
            hash: String::new(),
        };
        record.hash = record_hash(&record);
        sqlx::query(
            "INSERT INTO audit_log (seq, id, at, actor, action, entity_kind, entity_id, \
             details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(record.seq)
        .bind(record.id)
        .bind(&record.at)
        .bind(&record.actor)
        .bind(&record.action)
        .bind(&record.entity_kind)
        .bind(&record.entity_id)
        .bind(&record.details)
        .bind(&record.prev_hash)
        .bind(&record.hash)
        .execute(&mut *tx.tx)
        .await?;
        prev_hash = record.hash;
    }
    Ok(())
}

impl Ops {
    pub(crate) async fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        append(&mut tx, std::slice::from_ref(&entry)).await?;
        tx.commit().await
    }

    pub(crate) async fn verify_audit(&self) -> Result<AuditHead> {
        const BATCH: i64 = 1000;
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2");
        let mut prev_hash = GENESIS_HASH.to_owned();
        let mut expected = 1_i64;
        loop {
            let rows: Vec<RawRecord> = sqlx::query_as(&sql)
                .bind(expected - 1)
                .bind(BATCH)
                .fetch_all(&self.pool)
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let record = AuditRecord::from(row);
                if let Err(reason) = check_record(&record, expected, &prev_hash) {
                    return Err(Error::AuditChainBroken {
                        seq: record.seq,
                        reason,
                    });
                }
                prev_hash = record.hash;
                expected += 1;
            }
        }
        Ok(AuditHead {
            rows: expected - 1,
            head_hash: prev_hash,
        })
    }

    pub(crate) async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        let mut q = sqlx::QueryBuilder::<super::Db>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > "));
        q.push_bind(after_seq);
        if let Some(kind) = &filter.entity_kind {
            q.push(" AND entity_kind = ").push_bind(kind.clone());
        }
        if let Some(id) = &filter.entity_id {
            q.push(" AND entity_id = ").push_bind(id.clone());
        }
        if let Some(action) = &filter.action {
            q.push(" AND action = ").push_bind(action.clone());
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(page_limit(limit));
        let rows: Vec<RawRecord> = q.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}
