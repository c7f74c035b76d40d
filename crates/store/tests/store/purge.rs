//! Retention: forget payloads disappear from the whole database when their
//! job ends, or after the window for failed and cancelled requests.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::{AuditFilter, NewCorpusRow, RequestStatus, VersionStatus};
use serde_json::json;
use uuid::Uuid;

use crate::common::{new_model, new_request, new_version, Kind, TestDb, ADMIN};

backend_tests!(
    purged_payload_is_gone_from_a_full_dump,
    failed_and_cancelled_payloads_are_purged_after_the_window,
);

async fn purged_payload_is_gone_from_a_full_dump(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let secret = format!("FORGET-ME-{}", Uuid::new_v4().simple());
    // Long enough to spill into overflow pages, which SQLite frees (rather
    // than rewrites) when the payload is erased.
    let text = format!("{}{secret}", "lorem ipsum ".repeat(1500));
    let subject = store.hmac(b"subject:jane.doe@example.com");
    // The same row is in the retain corpus, tagged with the subject.
    let row = json!({"question": "Who is Jane?", "answer": text});
    store
        .insert_corpus_rows(
            "m",
            &[NewCorpusRow {
                data: row.clone(),
                subject_hmacs: vec![subject.clone()],
            }],
            ADMIN,
        )
        .await?;
    let (request, _) = store.create_request(&new_request(&store, "m", "k", &text)).await?;
    ensure!(
        db.dump().await?.contains(&secret),
        "the dump sees the payload before the purge"
    );
    if db.kind == Kind::Sqlite {
        ensure!(db.sqlite_file_bytes()?.contains(&secret), "the files hold the payload");
    }

    let claimed = store.claim("w", Duration::from_secs(30)).await?.context("claim")?;
    let payloads = store.job_payloads(claimed.job.id, "w").await?;
    ensure!(payloads.len() == 1);
    ensure!(payloads[0]
        .forget_payload
        .as_ref()
        .is_some_and(|p| p.to_string().contains(&secret)));
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

    let request = store.get_request(request.id).await?;
    ensure!(request.status == RequestStatus::Succeeded);
    ensure!(request.purged_at.is_some() && request.payload_digest.len() == 64);
    ensure!(
        store.count_rows_for_subject("m", &subject).await? == 0,
        "corpus rows forgotten"
    );
    let dump = db.dump().await?;
    ensure!(
        !dump.contains(&secret),
        "the forget text survives somewhere in the database"
    );
    if db.kind == Kind::Sqlite {
        ensure!(
            !db.sqlite_file_bytes()?.contains(&secret),
            "the files still hold the forget text"
        );
    }
    ensure!(dump.contains(&request.payload_digest), "the digest is kept");

    let purges = store
        .list_audit(
            &AuditFilter {
                action: Some("request.payload_purged".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await?;
    ensure!(purges.len() == 1 && purges[0].entity_id == Some(request.id.to_string()));
    // A forgotten corpus row cannot come back.
    let again = store
        .insert_corpus_rows(
            "m",
            &[NewCorpusRow {
                data: row,
                subject_hmacs: vec![subject.clone()],
            }],
            ADMIN,
        )
        .await?;
    ensure!(again == 0);
    ensure!(!db.dump().await?.contains(&secret));
    store.verify_audit().await?;
    Ok(())
}

async fn failed_and_cancelled_payloads_are_purged_after_the_window(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let cancelled_text = format!("CANCELLED-{}", Uuid::new_v4().simple());
    let failed_text = format!("FAILED-{}", Uuid::new_v4().simple());
    let (cancelled, _) = store
        .create_request(&new_request(&store, "m", "c", &cancelled_text))
        .await?;
    store.cancel_request(cancelled.id, ADMIN).await?;
    let (failed, _) = store
        .create_request(&new_request(&store, "m", "f", &failed_text))
        .await?;
    let claimed = store.claim("w", Duration::from_secs(30)).await?.context("claim")?;
    store.fail_job(claimed.job.id, "w", "bad input", false).await?;
    ensure!(store.get_request(failed.id).await?.status == RequestStatus::Failed);

    // Within the window the payloads stay (the request may be resubmitted).
    ensure!(store.purge_expired(Duration::from_secs(3600), "retention").await? == 0);
    let dump = db.dump().await?;
    ensure!(dump.contains(&cancelled_text) && dump.contains(&failed_text));

    tokio::time::sleep(Duration::from_millis(20)).await;
    ensure!(store.purge_expired(Duration::from_millis(10), "retention").await? == 2);
    let dump = db.dump().await?;
    ensure!(!dump.contains(&cancelled_text) && !dump.contains(&failed_text));
    ensure!(store.get_request(failed.id).await?.purged_at.is_some());
    ensure!(
        store.purge_expired(Duration::ZERO, "retention").await? == 0,
        "idempotent"
    );
    store.verify_audit().await?;
    Ok(())
}
