//! API keys. Only the SHA-256 of a key's secret is stored; the secret is
//! shown once, when the key is created.

use rand::RngCore;
use serde_json::json;
use uuid::Uuid;

use super::{audit, check_len, now, Ops};
use crate::digest::sha256_hex;
use crate::{ApiKey, AuditEntry, Error, Result, Role};

const KEY_COLUMNS: &str = "id, name, role, created_at, revoked_at";

/// Prefix of every secret, so leaked keys are easy to scan for.
const SECRET_PREFIX: &str = "grin_";

impl Ops {
    pub(crate) async fn create_api_key(&self, name: &str, role: Role, actor: &str) -> Result<(ApiKey, String)> {
        check_len("name", name, 200)?;
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let secret = format!("{SECRET_PREFIX}{}", hex::encode(raw));
        let id = Uuid::now_v7();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, secret_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(name)
        .bind(role)
        .bind(sha256_hex(secret.as_bytes()))
        .bind(now())
        .execute(&mut *tx.tx)
        .await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let key: ApiKey = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx.tx).await?;
        let entries = [AuditEntry::new(
            actor,
            "api_key.created",
            "api_key",
            id,
            json!({"role": role}),
        )];
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    pub(crate) async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_sha256 = $1 AND revoked_at IS NULL");
        Ok(sqlx::query_as(&sql)
            .bind(sha256_hex(secret.as_bytes()))
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn revoke_api_key(&self, id: Uuid, actor: &str) -> Result<ApiKey> {
        let mut tx = self.begin_write().await?;
        let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now())
            .execute(&mut *tx.tx)
            .await?
            .rows_affected();
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1");
        let key: ApiKey = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| Error::not_found("api key", id))?;
        if revoked > 0 {
            let entries = [AuditEntry::new(actor, "api_key.revoked", "api_key", id, json!({}))];
            audit::append(&mut tx, &entries).await?;
        }
        tx.commit().await?;
        Ok(key)
    }
}
