//! Cancellation while running, and inputs that can never work (a missing
//! model directory, a corrupt safetensors file): failed once, clearly, with
//! no retry storm.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::{JobState, RequestStatus};
use grin_worker::{run_once, JobOutcome};

use crate::common::*;

async fn cancel_while_running(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "cancel";
    create_model(&store, model, None, quick_config(100_000), passing_gates()).await?;
    let forget = split("forget10.jsonl");
    let (r, _) = store.create_request(&payload_request(model, "k", &forget[..2])).await?;
    let job_id = store.jobs_for_request(r.id).await?[0].id;
    let cfg = worker_config(&db, "w1");
    let worker = {
        let (store, cfg) = (store.clone(), cfg.clone());
        tokio::spawn(async move { run_once(&store, &cfg).await })
    };
    eventually(Duration::from_secs(120), || async {
        let job = store.get_job(job_id).await?;
        anyhow::Ok((job.progress_stage.as_deref() == Some("unlearn")).then_some(()))
    })
    .await
    .context("the job never reached the unlearn stage")?;
    store.cancel_request(r.id, "client-1").await?;
    let report = tokio::time::timeout(Duration::from_secs(30), worker)
        .await
        .context("cancel was not honoured in time")???
        .context("a job")?;
    ensure!(report.outcome == JobOutcome::Cancelled, "{report:?}");
    ensure!(store.get_request(r.id).await?.status == RequestStatus::Cancelled);
    ensure!(store.get_job(job_id).await?.state == JobState::Cancelled);
    ensure!(store.version_for_job(job_id).await?.is_none());
    ensure!(store.list_versions(model).await?.len() == 1, "only the base version");
    let model_root = cfg.checkpoint_root.join(model);
    ensure!(entries(&model_root).is_empty(), "{:?}", entries(&model_root));
    store.verify_audit().await?;
    store.close().await;
    Ok(())
}

/// SIGTERM (the shutdown signal) while fine-tuning: the loop stops within
/// the grace, the job goes back to the queue, and no version appears.
async fn shutdown_releases_the_running_job(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "shutdown";
    create_model(&store, model, None, quick_config(100_000), passing_gates()).await?;
    let forget = split("forget10.jsonl");
    let (r, _) = store.create_request(&payload_request(model, "k", &forget[..2])).await?;
    let job_id = store.jobs_for_request(r.id).await?[0].id;
    let cfg = worker_config(&db, "w1");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(grin_worker::run(store.clone(), cfg.clone(), rx));
    eventually(Duration::from_secs(120), || async {
        let job = store.get_job(job_id).await?;
        anyhow::Ok((job.progress_stage.as_deref() == Some("unlearn")).then_some(()))
    })
    .await
    .context("the job never reached the unlearn stage")?;
    let t0 = std::time::Instant::now();
    tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .context("the worker did not stop in time")???;
    ensure!(t0.elapsed() < cfg.shutdown_grace, "stopped after {:?}", t0.elapsed());
    let job = store.get_job(job_id).await?;
    // Released, not failed: the attempt is not counted and no backoff.
    ensure!(job.state == JobState::Queued && job.attempts == 0, "{job:?}");
    ensure!(job.run_after <= job.updated_at, "{job:?}");
    ensure!(
        job.last_error.as_deref().is_some_and(|e| e.contains("shut down")),
        "{job:?}"
    );
    ensure!(store.get_request(r.id).await?.status == RequestStatus::Queued);
    ensure!(store.list_versions(model).await?.len() == 1);
    ensure!(entries(&cfg.checkpoint_root.join(model)).is_empty());
    store.close().await;
    Ok(())
}

/// Runs one job on a model whose base checkpoint is `base`; expects a final
/// failure on the first attempt naming `needle`, then nothing runnable.
async fn fails_permanently(db: &TestDb, model: &str, base: &std::path::Path, needle: &str) -> Result<()> {
    let store = db.store().await?;
    create_model(&store, model, Some(base), quick_config(2), passing_gates()).await?;
    let forget = split("forget10.jsonl");
    let (r, _) = store.create_request(&payload_request(model, "k", &forget[..1])).await?;
    let cfg = worker_config(db, "w1");
    let report = run_once(&store, &cfg).await?.context("a job")?;
    let JobOutcome::Failed { error, final_ } = &report.outcome else {
        anyhow::bail!("{report:?}");
    };
    ensure!(*final_ && error.contains(needle), "{error}");
    let job = store.get_job(report.job_id).await?;
    ensure!(job.state == JobState::Failed && job.attempts == 1, "{job:?}");
    ensure!(job.last_error.as_deref().is_some_and(|e| e.contains(needle)), "{job:?}");
    let req = store.get_request(r.id).await?;
    ensure!(req.status == RequestStatus::Failed && req.error.is_some(), "{req:?}");
    ensure!(req.purged_at.is_some(), "the payload of a finished request is purged");
    // No retry storm: nothing is runnable any more, even after the backoff.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(run_once(&store, &cfg).await?.is_none());
    ensure!(store.list_versions(model).await?.len() == 1);
    ensure!(entries(&cfg.checkpoint_root.join(model)).is_empty());
    store.verify_audit().await?;
    store.close().await;
    Ok(())
}

async fn missing_model_directory_fails_clearly(db: TestDb) -> Result<()> {
    let missing = db.dir.join("no-such-model");
    fails_permanently(&db, "missing", &missing, &missing.display().to_string()).await
}

async fn corrupt_safetensors_fails_clearly(db: TestDb) -> Result<()> {
    let broken = db.dir.join("broken-model");
    std::fs::create_dir_all(&broken)?;
    for entry in std::fs::read_dir(fixture().join("model"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), broken.join(entry.file_name()))?;
    }
    std::fs::write(broken.join("model.safetensors"), b"this is not a safetensors file")?;
    fails_permanently(&db, "corrupt", &broken, "model.safetensors").await
}

backend_tests!(
    cancel_while_running,
    shutdown_releases_the_running_job,
    missing_model_directory_fails_clearly,
    corrupt_safetensors_fails_clearly
);
