//! `kill -9` of a worker process in the middle of fine-tuning: another
//! worker completes the job after the lease expires, exactly one new
//! version exists, and nothing partial is visible in the published area.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin_store::{RequestStatus, Store};
use grin_worker::{run_once, JobOutcome};

use crate::common::*;

const CHILD_URL: &str = "GRIN_WORKER_CHILD_URL";
const CHILD_ROOT: &str = "GRIN_WORKER_CHILD_ROOT";

/// The child worker process: a no-op unless the parent test set its
/// environment. It runs one job with a 2-second lease until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_worker() {
    let (Ok(url), Ok(root)) = (std::env::var(CHILD_URL), std::env::var(CHILD_ROOT)) else {
        return;
    };
    let store = Store::connect(&url, store_options()).await.expect("child store");
    let mut cfg = worker_config_at(root.into(), "child-worker");
    cfg.lease = Duration::from_secs(2);
    cfg.heartbeat_every = Duration::from_millis(500);
    let report = run_once(&store, &cfg).await.expect("child run");
    panic!("the child worker should have been killed, but finished: {report:?}");
}

async fn kill_9_mid_finetune_then_another_worker_completes(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "crash";
    create_model(&store, model, None, quick_config(400), passing_gates()).await?;
    let forget = split("forget10.jsonl");
    let (r, _) = store.create_request(&payload_request(model, "k", &forget[..2])).await?;
    let job_id = store.jobs_for_request(r.id).await?[0].id;

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "worker::crash::child_worker",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_URL, &db.url)
        .env(CHILD_ROOT, db.checkpoint_root())
        .env("GRIN_WORKER_TEST_FIXTURE", fixture())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the child worker")?;
    let reached = eventually(Duration::from_secs(120), || async {
        let job = store.get_job(job_id).await?;
        anyhow::Ok((job.progress_stage.as_deref() == Some("unlearn")).then_some(job))
    })
    .await;
    child.kill()?; // SIGKILL
    child.wait()?;
    let job = reached.context("the child never reached the unlearn stage")?;
    ensure!(
        job.worker_id.as_deref() == Some("child-worker") && job.attempts == 1,
        "{job:?}"
    );

    // What a crash in the middle of saving leaves: a hidden staging dir.
    let model_root = db.checkpoint_root().join(model);
    let partial = model_root.join(format!(".{job_id}.tmp-999-1"));
    std::fs::create_dir_all(partial.join("model"))?;
    std::fs::write(partial.join("model").join("model.safetensors"), b"half")?;

    // Another worker takes over once the lease has expired.
    let cfg = worker_config(&db, "w2");
    let report = eventually(Duration::from_secs(60), || async {
        anyhow::Ok(run_once(&store, &cfg).await?)
    })
    .await?;
    ensure!(report.job_id == job_id && report.attempt == 2, "{report:?}");
    let JobOutcome::Published { version_id, number, .. } = report.outcome else {
        anyhow::bail!("{report:?}");
    };
    ensure!(number == 2);
    let versions = store.list_versions(model).await?;
    ensure!(versions.len() == 2, "exactly one new version: {versions:?}");
    ensure!(store.version_for_job(job_id).await?.map(|v| v.id) == Some(version_id));
    ensure!(store.get_request(r.id).await?.status == RequestStatus::Succeeded);
    ensure!(
        entries(&model_root) == vec![job_id.to_string()],
        "no partial or hidden directories remain: {:?}",
        entries(&model_root)
    );
    let version = store.get_version(version_id).await?;
    let text = serde_json::to_string(version.certificate.as_ref().context("certificate")?)?;
    let cert = grin::certificate::verify_document(&text, &signing_key().verifying_key())?;
    grin::certificate::verify_files(&cert, &grin_worker::data::local_path(&version.location))?;
    store.verify_audit().await?;
    store.close().await;
    Ok(())
}

backend_tests!(kill_9_mid_finetune_then_another_worker_completes);
