//! The registry: versions and manifests, aliases, the rollback rule,
//! approval.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::{AuditFilter, Error, FileEntry, JobState, NewVersion, RequestStatus, Store, VersionStatus};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{new_model, new_request, new_version, TestDb, ADMIN};

backend_tests!(
    model_starts_with_base_version_in_production,
    rollback_past_a_fulfilled_request_is_refused,
    awaiting_approval_blocks_the_model_until_decided,
    versions_are_validated_and_immutable,
);

const LEASE: Duration = Duration::from_secs(30);

/// Runs one request through a job to a published version.
async fn fulfil(store: &Store, model: &str, key: &str) -> Result<(Uuid, grin_store::ModelVersion)> {
    let (request, _) = store.create_request(&new_request(store, model, key, key)).await?;
    let claimed = store.claim("w", LEASE).await?.context("claimable")?;
    let version = store
        .complete_job(
            claimed.job.id,
            "w",
            Some(new_version(
                model,
                claimed.job.id,
                &[request.id],
                VersionStatus::Published,
            )),
        )
        .await?
        .context("version")?;
    Ok((request.id, version))
}

async fn model_starts_with_base_version_in_production(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = store.create_model(&new_model("m"), ADMIN).await?;
    ensure!(model.default_config == json!({"method": "graddiff", "lr": 1e-5}));
    ensure!(store.get_model("m").await? == model);
    ensure!(matches!(
        store.create_model(&new_model("m"), ADMIN).await,
        Err(Error::AlreadyExists { .. })
    ));
    let versions = store.list_versions("m").await?;
    ensure!(versions.len() == 1);
    let base = &versions[0];
    ensure!(base.number == 1 && base.job_id.is_none() && base.location == model.base_checkpoint);
    ensure!(base.files == new_model("m").base_files);
    ensure!(store.get_alias("m", "production").await?.version_id == base.id);
    ensure!(store.get_version_by_number("m", 1).await? == *base);

    // The first job starts from it and its result parents on it.
    let (request, v2) = fulfil(&store, "m", "k").await?;
    ensure!(v2.parent_id == Some(base.id) && v2.number == 2);
    let job = &store.jobs_for_request(request).await?[0];
    ensure!(job.base_version_id == Some(base.id) && job.state == JobState::Succeeded);
    ensure!(store.get_alias("m", "production").await?.version_id == v2.id);
    ensure!(store.list_models().await?.len() == 1);
    Ok(())
}

async fn rollback_past_a_fulfilled_request_is_refused(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let v1 = store.get_version_by_number("m", 1).await?;
    let (r2, v2) = fulfil(&store, "m", "r2").await?;
    let (r3, v3) = fulfil(&store, "m", "r3").await?;
    ensure!(v3.parent_id == Some(v2.id));
    ensure!(store.get_alias("m", "production").await?.version_id == v3.id);

    // Back to v2 would bring r3's data back; back to v1, r2's and r3's.
    let refused = store.set_alias("m", "production", v2.id, ADMIN, &[]).await;
    ensure!(
        matches!(&refused, Err(Error::RollbackRefused { missing, version: 2, .. }) if *missing == vec![r3]),
        "{refused:?}"
    );
    ensure!(refused.err().map(|e| e.http_status()) == Some(409));
    let mut both = vec![r2, r3];
    both.sort();
    ensure!(store.rollback_check(v1.id).await? == both);
    ensure!(store.rollback_check(v3.id).await?.is_empty());
    // Naming only some of them is not enough.
    let partial = store.set_alias("m", "production", v1.id, ADMIN, &[r2]).await;
    ensure!(
        matches!(&partial, Err(Error::RollbackRefused { missing, .. }) if *missing == vec![r3]),
        "{partial:?}"
    );
    ensure!(
        store.get_alias("m", "production").await?.version_id == v3.id,
        "unchanged"
    );

    // Other aliases are not guarded.
    store.set_alias("m", "staging", v1.id, ADMIN, &[]).await?;
    // With every request declared re-applied, the move happens and is audited.
    let moved = store.set_alias("m", "production", v1.id, ADMIN, &both).await?;
    ensure!(moved.version_id == v1.id && moved.updated_by == ADMIN);
    let records = store
        .list_audit(
            &AuditFilter {
                action: Some("alias.moved".into()),
                entity_id: Some("m/production".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await?;
    let last = records.last().context("alias audit")?;
    let details: Value = serde_json::from_str(&last.details)?;
    ensure!(details["to_version_id"] == json!(v1.id));
    ensure!(details["reapplied_request_ids"] == json!(both));

    // A sibling of the current production that lacks its requests is
    // refused too, even though it is the newest version.
    let (r4, v4) = fulfil(&store, "m", "r4").await?;
    ensure!(v4.parent_id == Some(v1.id));
    let mut sibling = new_version("m", Uuid::nil(), &[], VersionStatus::Published);
    sibling.job_id = None;
    sibling.parent_id = Some(v1.id);
    let (v5, _) = store.register_version(&sibling, ADMIN).await?;
    let refused = store.set_alias("m", "production", v5.id, ADMIN, &[]).await;
    ensure!(
        matches!(&refused, Err(Error::RollbackRefused { missing, .. }) if *missing == vec![r4]),
        "{refused:?}"
    );
    // Forward along the lineage is always fine.
    store.set_alias("m", "production", v4.id, ADMIN, &[]).await?;
    store.verify_audit().await?;
    Ok(())
}

async fn awaiting_approval_blocks_the_model_until_decided(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let base = store.get_alias("m", "production").await?.version_id;
    let (a, _) = store.create_request(&new_request(&store, "m", "a", "forget a")).await?;
    let claimed = store.claim("w", LEASE).await?.context("claimable")?;
    let pending = store
        .complete_job(
            claimed.job.id,
            "w",
            Some(new_version(
                "m",
                claimed.job.id,
                &[a.id],
                VersionStatus::AwaitingApproval,
            )),
        )
        .await?
        .context("version")?;
    ensure!(pending.status == VersionStatus::AwaitingApproval);
    ensure!(
        store.get_alias("m", "production").await?.version_id == base,
        "not served yet"
    );
    let a_now = store.get_request(a.id).await?;
    ensure!(a_now.status == RequestStatus::AwaitingApproval && a_now.purged_at.is_none());
    ensure!(matches!(
        store.set_alias("m", "production", pending.id, ADMIN, &[]).await,
        Err(Error::InvalidState { .. })
    ));

    // While a version awaits approval, the model's next job waits too.
    let (b, _) = store.create_request(&new_request(&store, "m", "b", "forget b")).await?;
    ensure!(store.claim("w", LEASE).await?.is_none());

    let approved = store.approve_version(pending.id, "reviewer").await?;
    ensure!(approved.status == VersionStatus::Published);
    ensure!(approved.decided_by.as_deref() == Some("reviewer"));
    ensure!(store.get_alias("m", "production").await?.version_id == pending.id);
    let a_now = store.get_request(a.id).await?;
    ensure!(a_now.status == RequestStatus::Succeeded && a_now.purged_at.is_some());
    ensure!(matches!(
        store.approve_version(pending.id, "reviewer").await,
        Err(Error::InvalidState { .. })
    ));

    // Next one is rejected: its request fails, production stays.
    let claimed = store.claim("w", LEASE).await?.context("b is claimable now")?;
    ensure!(claimed.requests[0].id == b.id);
    ensure!(claimed.job.base_version_id == Some(pending.id));
    let second = store
        .complete_job(
            claimed.job.id,
            "w",
            Some(new_version(
                "m",
                claimed.job.id,
                &[b.id],
                VersionStatus::AwaitingApproval,
            )),
        )
        .await?
        .context("version")?;
    let rejected = store
        .reject_version(second.id, "reviewer", "retain score too low")
        .await?;
    ensure!(rejected.status == VersionStatus::Rejected);
    let b_now = store.get_request(b.id).await?;
    ensure!(b_now.status == RequestStatus::Failed);
    ensure!(b_now
        .error
        .as_deref()
        .is_some_and(|e| e.contains("retain score too low")));
    ensure!(store.get_alias("m", "production").await?.version_id == pending.id);
    store.verify_audit().await?;
    Ok(())
}

async fn versions_are_validated_and_immutable(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let base = store.get_version_by_number("m", 1).await?;
    let valid = NewVersion {
        job_id: None,
        parent_id: Some(base.id),
        ..new_version("m", Uuid::nil(), &[], VersionStatus::Published)
    };
    let mut bad_sha = valid.clone();
    bad_sha.files.push(FileEntry {
        path: "x".into(),
        sha256: "XYZ".into(),
        bytes: 1,
    });
    ensure!(matches!(
        store.register_version(&bad_sha, ADMIN).await,
        Err(Error::Invalid {
            field: "files.sha256",
            ..
        })
    ));
    let mut twice = valid.clone();
    twice.files.push(twice.files[0].clone());
    ensure!(matches!(
        store.register_version(&twice, ADMIN).await,
        Err(Error::Invalid { .. })
    ));
    store.create_model(&new_model("other"), ADMIN).await?;
    let mut foreign_parent = valid.clone();
    foreign_parent.model_name = "other".into();
    ensure!(matches!(
        store.register_version(&foreign_parent, ADMIN).await,
        Err(Error::Invalid { field: "parent_id", .. })
    ));
    let mut no_model = valid.clone();
    no_model.model_name = "nope".into();
    ensure!(matches!(
        store.register_version(&no_model, ADMIN).await,
        Err(Error::NotFound { .. })
    ));
    let (v, created) = store.register_version(&valid, ADMIN).await?;
    ensure!(created && v.number == 2 && v.files.len() == 2);

    // The database itself refuses to rewrite a version or its manifest.
    let id = match db.kind {
        crate::common::Kind::Postgres => format!("'{}'", v.id),
        crate::common::Kind::Sqlite => format!("X'{}'", v.id.simple()),
    };
    for sql in [
        format!("UPDATE model_versions SET location = 'file:///evil' WHERE id = {id}"),
        format!("DELETE FROM model_versions WHERE id = {id}"),
        format!(
            "UPDATE version_files SET sha256 = '{}' WHERE version_id = {id}",
            "d".repeat(64)
        ),
        format!("DELETE FROM version_files WHERE version_id = {id}"),
    ] {
        ensure!(db.execute(&sql).await.is_err(), "not refused: {sql}");
    }
    ensure!(store.get_version(v.id).await? == v);
    Ok(())
}
