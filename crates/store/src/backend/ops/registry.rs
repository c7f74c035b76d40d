//! The model registry: models, immutable versions with their file
//! manifests, aliases guarded by the rollback rule, approval decisions.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::json;
use sqlx::types::Json;
use uuid::Uuid;

use super::jobs::set_request_outcome;
use super::requests::purge_payloads;
use super::{
    audit, check_len, is_hex_digest, lock_model, now, Conn, Ops, WriteTx, FOR_UPDATE, MODEL_COLUMNS, REQUEST_COLUMNS,
    VERSION_COLUMNS,
};
use crate::{
    Alias, AuditEntry, DeletionRequest, Error, FileEntry, Model, ModelVersion, NewModel, NewVersion, RequestStatus,
    Result, VersionStatus, PRODUCTION,
};

const ALIAS_COLUMNS: &str = "model_name, alias, version_id, updated_at, updated_by";

impl Ops {
    pub(crate) async fn create_model(&self, new: &NewModel, actor: &str) -> Result<Model> {
        check_len("name", &new.name, 100)?;
        if !new
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(Error::invalid("name", "use letters, digits, '-', '_' and '.' only"));
        }
        check_len("base_checkpoint", &new.base_checkpoint, 4096)?;
        check_len("architecture", &new.architecture, 200)?;
        check_len("prompt_template", &new.prompt_template, 10_000)?;
        let now = now();
        let mut tx = self.begin_write().await?;
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO models (name, base_checkpoint, architecture, prompt_template, \
             retain_corpus, holdout_corpus, default_config, gates, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (name) DO NOTHING RETURNING name",
        )
        .bind(&new.name)
        .bind(&new.base_checkpoint)
        .bind(&new.architecture)
        .bind(&new.prompt_template)
        .bind(&new.retain_corpus)
        .bind(&new.holdout_corpus)
        .bind(Json(&new.default_config))
        .bind(Json(&new.gates))
        .bind(now)
        .fetch_optional(&mut *tx.tx)
        .await?;
        if inserted.is_none() {
            return Err(Error::AlreadyExists {
                entity: "model",
                id: new.name.clone(),
            });
        }
        let mut entries = vec![AuditEntry::new(
            actor,
            "model.created",
            "model",
            &new.name,
            json!({"architecture": new.architecture}),
        )];
        let base = NewVersion {
            model_name: new.name.clone(),
            parent_id: None,
            job_id: None,
            location: new.base_checkpoint.clone(),
            files: new.base_files.clone(),
            config: new.default_config.clone(),
            seed: None,
            metrics: json!({}),
            certificate: None,
            fulfilled_request_ids: Vec::new(),
            status: VersionStatus::Published,
        };
        let (version, _) = insert_version(&mut tx, &base, actor, &mut entries).await?;
        move_alias(&mut tx, &version, PRODUCTION, actor, &[], &mut entries).await?;
        let model = fetch_model(&mut tx.tx, &new.name).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(model)
    }

    pub(crate) async fn get_model(&self, name: &str) -> Result<Model> {
        fetch_model(&mut *self.pool.acquire().await?, name).await
    }

    pub(crate) async fn list_models(&self) -> Result<Vec<Model>> {
        let sql = format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY name");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn register_version(&self, new: &NewVersion, actor: &str) -> Result<(ModelVersion, bool)> {
        if new.status == VersionStatus::Rejected {
            return Err(Error::invalid("status", "a new version cannot be rejected"));
        }
        let mut tx = self.begin_write().await?;
        lock_model(&mut tx, &new.model_name).await?;
        let mut entries = Vec::new();
        let registered = insert_version(&mut tx, new, actor, &mut entries).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(registered)
    }

    pub(crate) async fn get_version(&self, id: Uuid) -> Result<ModelVersion> {
        version_by_id(&mut *self.pool.acquire().await?, id).await
    }

    pub(crate) async fn get_version_by_number(&self, model: &str, number: i64) -> Result<ModelVersion> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 AND number = $2");
        let version: ModelVersion = sqlx::query_as(&sql)
            .bind(model)
            .bind(number)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::not_found("model version", format!("{model} v{number}")))?;
        with_files(&mut conn, version).await
    }

    pub(crate) async fn version_for_job(&self, job_id: Uuid) -> Result<Option<ModelVersion>> {
        version_of_job(&mut *self.pool.acquire().await?, job_id).await
    }

    pub(crate) async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE model_name = $1 ORDER BY number");
        let versions: Vec<ModelVersion> = sqlx::query_as(&sql).bind(model).fetch_all(&mut *conn).await?;
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            out.push(with_files(&mut conn, v).await?);
        }
        Ok(out)
    }

    pub(crate) async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version_id: Uuid,
        actor: &str,
        reapplied: &[Uuid],
    ) -> Result<Alias> {
        let mut tx = self.begin_write().await?;
        lock_model(&mut tx, model).await?;
        let version = version_by_id(&mut tx.tx, version_id).await?;
        if version.model_name != model {
            return Err(Error::not_found("model version", format!("{model}/{version_id}")));
        }
        let mut entries = Vec::new();
        let moved = move_alias(&mut tx, &version, alias, actor, reapplied, &mut entries).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(moved)
    }

    pub(crate) async fn rollback_check(&self, version_id: Uuid) -> Result<Vec<Uuid>> {
        let mut conn = self.pool.acquire().await?;
        let version = version_by_id(&mut conn, version_id).await?;
        rollback_missing(&mut conn, &version).await
    }

    pub(crate) async fn get_alias(&self, model: &str, alias: &str) -> Result<Alias> {
        let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE model_name = $1 AND alias = $2");
        sqlx::query_as(&sql)
            .bind(model)
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::not_found("alias", format!("{model}/{alias}")))
    }

    pub(crate) async fn list_aliases(&self, model: &str) -> Result<Vec<Alias>> {
        let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE model_name = $1 ORDER BY alias");
        Ok(sqlx::query_as(&sql).bind(model).fetch_all(&self.pool).await?)
    }

    pub(crate) async fn approve_version(&self, version_id: Uuid, actor: &str) -> Result<ModelVersion> {
        let mut tx = self.begin_write().await?;
        let version = self
            .decide(&mut tx, version_id, VersionStatus::Published, actor)
            .await?;
        let mut entries = vec![AuditEntry::new(
            actor,
            "version.approved",
            "model_version",
            version.id,
            json!({"model_name": version.model_name, "number": version.number}),
        )];
        let alias = target_alias_of(&mut tx, &version).await?;
        move_alias(&mut tx, &version, &alias, actor, &[], &mut entries).await?;
        let now = now();
        let waiting = awaiting_requests(&mut tx, version.id).await?;
        let mut finished = Vec::new();
        for request in &waiting {
            set_request_outcome(
                &mut tx,
                request.id,
                RequestStatus::Succeeded,
                Some(version.id),
                None,
                now,
            )
            .await?;
            entries.push(AuditEntry::new(
                actor,
                "request.succeeded",
                "deletion_request",
                request.id,
                json!({"version_id": version.id}),
            ));
            super::corpus::forget_rows_of(self, &mut tx, request, actor, now, &mut entries).await?;
            finished.push(request.id);
        }
        let purged = purge_payloads(&mut tx, &finished, actor, "job ended", now, &mut entries).await?;
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        if purged > 0 {
            self.after_purge().await;
        }
        Ok(version)
    }

    pub(crate) async fn reject_version(&self, version_id: Uuid, actor: &str, reason: &str) -> Result<ModelVersion> {
        let mut tx = self.begin_write().await?;
        let version = self.decide(&mut tx, version_id, VersionStatus::Rejected, actor).await?;
        let mut entries = vec![AuditEntry::new(
            actor,
            "version.rejected",
            "model_version",
            version.id,
            json!({"model_name": version.model_name, "number": version.number}),
        )];
        let now = now();
        let error = format!("version {} was rejected: {reason}", version.number);
        for request in awaiting_requests(&mut tx, version.id).await? {
            set_request_outcome(&mut tx, request.id, RequestStatus::Failed, None, Some(&error), now).await?;
            entries.push(AuditEntry::new(
                actor,
                "request.failed",
                "deletion_request",
                request.id,
                json!({"version_id": version.id, "cause": "version rejected"}),
            ));
        }
        audit::append(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// Records the approval decision on a version awaiting it.
    async fn decide(
        &self,
        tx: &mut WriteTx,
        version_id: Uuid,
        status: VersionStatus,
        actor: &str,
    ) -> Result<ModelVersion> {
        let model: String = sqlx::query_scalar("SELECT model_name FROM model_versions WHERE id = $1")
            .bind(version_id)
            .fetch_optional(&mut *tx.tx)
            .await?
            .ok_or_else(|| Error::not_found("model version", version_id))?;
        lock_model(tx, &model).await?;
        let version = version_by_id(&mut tx.tx, version_id).await?;
        if version.status != VersionStatus::AwaitingApproval {
            return Err(Error::InvalidState {
                entity: "model version",
                id: version_id.to_string(),
                state: version.status.to_string(),
                action: "decide on it",
            });
        }
        sqlx::query("UPDATE model_versions SET status = $2, decided_at = $3, decided_by = $4 WHERE id = $1")
            .bind(version_id)
            .bind(status)
            .bind(now())
            .bind(actor)
            .execute(&mut *tx.tx)
            .await?;
        version_by_id(&mut tx.tx, version_id).await
    }
}

async fn fetch_model(conn: &mut Conn, name: &str) -> Result<Model> {
    let sql = format!("SELECT {MODEL_COLUMNS} FROM models WHERE name = $1");
    sqlx::query_as(&sql)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found("model", name))
}

pub(super) async fn version_by_id(conn: &mut Conn, id: Uuid) -> Result<ModelVersion> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE id = $1");
    let version: ModelVersion = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| Error::not_found("model version", id))?;
    with_files(conn, version).await
}

async fn version_of_job(conn: &mut Conn, job_id: Uuid) -> Result<Option<ModelVersion>> {
    let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE job_id = $1");
    let version: Option<ModelVersion> = sqlx::query_as(&sql).bind(job_id).fetch_optional(&mut *conn).await?;
    match version {
        Some(v) => Ok(Some(with_files(conn, v).await?)),
        None => Ok(None),
    }
}

async fn with_files(conn: &mut Conn, mut version: ModelVersion) -> Result<ModelVersion> {
    version.files = sqlx::query_as("SELECT path, sha256, bytes FROM version_files WHERE version_id = $1 ORDER BY path")
        .bind(version.id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(version)
}

fn validate_version(new: &NewVersion) -> Result<()> {
    check_len("location", &new.location, 4096)?;
    let mut paths = HashSet::new();
    for FileEntry { path, sha256, bytes } in &new.files {
        check_len("files.path", path, 4096)?;
        if !paths.insert(path.as_str()) {
            return Err(Error::invalid("files.path", format!("{path:?} listed twice")));
        }
        if !is_hex_digest(sha256) {
            return Err(Error::invalid(
                "files.sha256",
                format!("{path:?}: not a lowercase hex SHA-256"),
            ));
        }
        if *bytes < 0 {
            return Err(Error::invalid("files.bytes", format!("{path:?}: negative size")));
        }
    }
    let unique: HashSet<_> = new.fulfilled_request_ids.iter().collect();
    if unique.len() != new.fulfilled_request_ids.len() {
        return Err(Error::invalid("fulfilled_request_ids", "a request is listed twice"));
    }
    Ok(())
}

/// Registers a version and its manifest inside `tx` (the model row must be
/// locked). A version already registered for the same job is returned
/// instead, with `false`.
pub(super) async fn insert_version(
    tx: &mut WriteTx,
    new: &NewVersion,
    actor: &str,
    entries: &mut Vec<AuditEntry>,
) -> Result<(ModelVersion, bool)> {
    if let Some(job_id) = new.job_id {
        if let Some(existing) = version_of_job(&mut tx.tx, job_id).await? {
            return Ok((existing, false));
        }
    }
    validate_version(new)?;
    if let Some(parent) = new.parent_id {
        let parent_model: Option<String> = sqlx::query_scalar("SELECT model_name FROM model_versions WHERE id = $1")
            .bind(parent)
            .fetch_optional(&mut *tx.tx)
            .await?;
        if parent_model.as_deref() != Some(new.model_name.as_str()) {
            return Err(Error::invalid(
                "parent_id",
                format!("{parent} is not a version of model {}", new.model_name),
            ));
        }
    }
    let number: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(number), 0) + 1 FROM model_versions WHERE model_name = $1")
            .bind(&new.model_name)
            .fetch_one(&mut *tx.tx)
            .await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO model_versions (id, model_name, number, parent_id, job_id, location, config, \
         seed, metrics, certificate, fulfilled_request_ids, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(id)
    .bind(&new.model_name)
    .bind(number)
    .bind(new.parent_id)
    .bind(new.job_id)
    .bind(&new.location)
    .bind(Json(&new.config))
    .bind(new.seed)
    .bind(Json(&new.metrics))
    .bind(new.certificate.as_ref().map(Json))
    .bind(Json(&new.fulfilled_request_ids))
    .bind(new.status)
    .bind(now())
    .execute(&mut *tx.tx)
    .await?;
    for file in &new.files {
        sqlx::query("INSERT INTO version_files (version_id, path, sha256, bytes) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(&file.path)
            .bind(&file.sha256)
            .bind(file.bytes)
            .execute(&mut *tx.tx)
            .await?;
    }
    entries.push(AuditEntry::new(
        actor,
        "version.registered",
        "model_version",
        id,
        json!({
            "model_name": new.model_name,
            "number": number,
            "parent_id": new.parent_id,
            "job_id": new.job_id,
            "status": new.status,
            "fulfilled_request_ids": new.fulfilled_request_ids,
            "manifest_sha256": crate::digest::sha256_hex(
                crate::digest::canonical_json(&json!(new.files)).as_bytes()
            ),
        }),
    ));
    Ok((version_by_id(&mut tx.tx, id).await?, true))
}

/// Points `alias` at `version` inside `tx` (the model row must be locked),
/// with its audit record. For `production` the rollback rule applies: see
/// [`rollback_missing`]; requests listed in `reapplied` are let through and
/// recorded in the audit record.
pub(super) async fn move_alias(
    tx: &mut WriteTx,
    version: &ModelVersion,
    alias: &str,
    actor: &str,
    reapplied: &[Uuid],
    entries: &mut Vec<AuditEntry>,
) -> Result<Alias> {
    check_len("alias", alias, 100)?;
    if version.status != VersionStatus::Published {
        return Err(Error::InvalidState {
            entity: "model version",
            id: version.id.to_string(),
            state: version.status.to_string(),
            action: "point an alias at it",
        });
    }
    let mut waived = Vec::new();
    if alias == PRODUCTION {
        let missing = rollback_missing(&mut tx.tx, version).await?;
        let refused: Vec<Uuid> = missing.iter().filter(|id| !reapplied.contains(id)).copied().collect();
        if !refused.is_empty() {
            return Err(Error::RollbackRefused {
                model: version.model_name.clone(),
                alias: alias.to_owned(),
                version: version.number,
                missing: refused,
            });
        }
        waived = missing;
    }
    let sql = format!("SELECT version_id FROM aliases WHERE model_name = $1 AND alias = $2{FOR_UPDATE}");
    let current: Option<Uuid> = sqlx::query_scalar(&sql)
        .bind(&version.model_name)
        .bind(alias)
        .fetch_optional(&mut *tx.tx)
        .await?;
    if current != Some(version.id) {
        sqlx::query(
            "INSERT INTO aliases (model_name, alias, version_id, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_name, alias) DO UPDATE SET \
             version_id = excluded.version_id, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
        )
        .bind(&version.model_name)
        .bind(alias)
        .bind(version.id)
        .bind(now())
        .bind(actor)
        .execute(&mut *tx.tx)
        .await?;
        entries.push(AuditEntry::new(
            actor,
            "alias.moved",
            "alias",
            format!("{}/{alias}", version.model_name),
            json!({
                "from_version_id": current,
                "to_version_id": version.id,
                "to_number": version.number,
                "reapplied_request_ids": waived,
            }),
        ));
    }
    let sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE model_name = $1 AND alias = $2");
    Ok(sqlx::query_as(&sql)
        .bind(&version.model_name)
        .bind(alias)
        .fetch_one(&mut *tx.tx)
        .await?)
}

/// The rollback rule. Moving `production` to `target` would undo every
/// request that is fulfilled by the version `production` points to now (or
/// an ancestor of it), or by any published version numbered after `target`,
/// unless `target` or one of its ancestors fulfilled it too. Returns those
/// requests, sorted; empty means the move is safe.
pub(super) async fn rollback_missing(conn: &mut Conn, target: &ModelVersion) -> Result<Vec<Uuid>> {
    type Lineage = (Uuid, i64, Option<Uuid>, Json<Vec<Uuid>>, VersionStatus);
    let versions: Vec<Lineage> = sqlx::query_as(
        "SELECT id, number, parent_id, fulfilled_request_ids, status FROM model_versions \
         WHERE model_name = $1",
    )
    .bind(&target.model_name)
    .fetch_all(&mut *conn)
    .await?;
    let by_id: HashMap<Uuid, &Lineage> = versions.iter().map(|v| (v.0, v)).collect();
    let lineage_of = |start: Uuid| -> HashSet<Uuid> {
        let mut fulfilled = HashSet::new();
        let mut seen = HashSet::new();
        let mut cursor = Some(start);
        while let Some(id) = cursor {
            let Some(v) = by_id.get(&id).filter(|_| seen.insert(id)) else {
                break;
            };
            fulfilled.extend(v.3.iter().copied());
            cursor = v.2;
        }
        fulfilled
    };
    let kept = lineage_of(target.id);
    let current: Option<Uuid> =
        sqlx::query_scalar("SELECT version_id FROM aliases WHERE model_name = $1 AND alias = $2")
            .bind(&target.model_name)
            .bind(PRODUCTION)
            .fetch_optional(&mut *conn)
            .await?;
    let mut at_risk: BTreeSet<Uuid> = current.map(lineage_of).unwrap_or_default().into_iter().collect();
    at_risk.extend(
        versions
            .iter()
            .filter(|v| v.4 == VersionStatus::Published && v.1 > target.number)
            .flat_map(|v| v.3.iter().copied()),
    );
    Ok(at_risk.into_iter().filter(|id| !kept.contains(id)).collect())
}

async fn target_alias_of(tx: &mut WriteTx, version: &ModelVersion) -> Result<String> {
    let alias: Option<String> = match version.job_id {
        Some(job_id) => {
            sqlx::query_scalar("SELECT target_alias FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx.tx)
                .await?
        }
        None => None,
    };
    Ok(alias.unwrap_or_else(|| PRODUCTION.to_owned()))
}

async fn awaiting_requests(tx: &mut WriteTx, version_id: Uuid) -> Result<Vec<DeletionRequest>> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM deletion_requests \
         WHERE result_version_id = $1 AND status = 'awaiting_approval' ORDER BY id"
    );
    Ok(sqlx::query_as(&sql).bind(version_id).fetch_all(&mut *tx.tx).await?)
}
