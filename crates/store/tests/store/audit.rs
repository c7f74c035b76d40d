//! The audit chain: append-only in the database, verification names the
//! first tampered row, no personal data in it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::audit::{record_hash, GENESIS_HASH};
use grin_store::{AuditEntry, AuditFilter, Error, VersionStatus};
use serde_json::json;

use crate::common::{new_model, new_request, new_version, Kind, TestDb, ADMIN};

backend_tests!(
    tampering_with_an_audit_row_is_detected_at_that_row,
    audit_chain_is_consistent_under_concurrent_writers,
);

/// Runs raw SQL with the append-only triggers bypassed, as an attacker with
/// database access could.
async fn tamper(db: &TestDb, sql: &str) -> Result<()> {
    match db.kind {
        Kind::Postgres => {
            db.execute(&format!(
                "SET session_replication_role = replica; {sql}; SET session_replication_role = origin"
            ))
            .await?
        }
        Kind::Sqlite => db.execute(&format!("DROP TRIGGER audit_log_no_update; {sql}")).await?,
    }
    Ok(())
}

async fn tampering_with_an_audit_row_is_detected_at_that_row(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let subject = "jane.doe@example.com";
    let mut request = new_request(&store, "m", "k", "the secret text");
    request.subject_hmac = Some(store.hmac(subject.as_bytes()));
    let (request, _) = store.create_request(&request).await?;
    let claimed = store.claim("w", Duration::from_secs(30)).await?.context("claim")?;
    store
        .complete_job(
            claimed.job.id,
            "w",
            Some(new_version(
                "m",
                claimed.job.id,
                &[request.id],
                VersionStatus::Published,
            )),
        )
        .await?;
    store
        .append_audit(AuditEntry::new(ADMIN, "note", "model", "m", json!({"n": 1})))
        .await?;

    let head = store.verify_audit().await?;
    let records = store.list_audit(&AuditFilter::default(), 0, 1000).await?;
    ensure!(
        head.rows == records.len() as i64 && head.rows >= 10,
        "{} rows",
        head.rows
    );
    ensure!(records[0].prev_hash == GENESIS_HASH && records[0].seq == 1);
    ensure!(head.head_hash == records.last().context("rows")?.hash);
    // The format is reproducible outside the store.
    for r in &records {
        ensure!(record_hash(r) == r.hash, "seq {}", r.seq);
    }
    // No personal data: neither the identity nor the text appears.
    let all = serde_json::to_string(&records)?;
    ensure!(!all.contains(subject) && !all.contains("the secret text"));
    ensure!(
        all.contains(&store.hmac(subject.as_bytes())),
        "identities appear as HMACs"
    );

    // Plain UPDATE and DELETE are refused by the database.
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3",
        "DELETE FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log",
    ] {
        ensure!(db.execute(sql).await.is_err(), "not refused: {sql}");
    }
    ensure!(store.verify_audit().await? == head);

    // Change one row's details behind the triggers: verification names it.
    let target = 5_i64;
    tamper(
        &db,
        &format!("UPDATE audit_log SET details = '{{\"forged\":true}}' WHERE seq = {target}"),
    )
    .await?;
    let broken = store.verify_audit().await;
    ensure!(
        matches!(&broken, Err(Error::AuditChainBroken { seq, .. }) if *seq == target),
        "{broken:?}"
    );

    // A forger who also recomputes that row's hash breaks the next link.
    let mut forged = records[(target - 1) as usize].clone();
    forged.details = "{\"forged\":true}".into();
    let forged_hash = record_hash(&forged);
    let sql = format!("UPDATE audit_log SET hash = '{forged_hash}' WHERE seq = {target}");
    match db.kind {
        Kind::Postgres => tamper(&db, &sql).await?,
        Kind::Sqlite => db.execute(&sql).await?, // the trigger is gone already
    }
    let broken = store.verify_audit().await;
    ensure!(
        matches!(&broken, Err(Error::AuditChainBroken { seq, reason }) if *seq == target + 1 && reason.contains("prev_hash")),
        "{broken:?}"
    );
    Ok(())
}

async fn audit_chain_is_consistent_under_concurrent_writers(db: TestDb) -> Result<()> {
    const WRITERS: usize = 6;
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = db.store().await?;
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                store
                    .append_audit(AuditEntry::new(
                        format!("writer-{w}"),
                        "test.append",
                        "test",
                        i,
                        json!({"i": i}),
                    ))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let head = db.store().await?.verify_audit().await?;
    ensure!(head.rows == (WRITERS * EACH) as i64, "{} rows", head.rows);
    Ok(())
}
