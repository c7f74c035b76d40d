//! Request -> job -> version published -> certificate verifies -> audit
//! chain verifies; coalescing of requests; the alias policy.

use anyhow::{ensure, Context, Result};
use grin_store::{NewCorpusRow, NewRequest, RequestStatus, VersionStatus, PRODUCTION};
use grin_worker::{run_once, JobOutcome};
use serde_json::{json, Value};

use crate::common::*;

/// Two requests (explicit rows, and a data subject resolved through the
/// corpus) coalesce into one job that publishes version 2 with a verifiable
/// certificate; payloads are purged; the audit chain holds.
async fn publishes_a_verified_version(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "tofu";
    create_model(&store, model, None, quick_config(3), passing_gates()).await?;
    // The retain corpus, indexed by subject.
    let corpus: Vec<NewCorpusRow> = split("full.jsonl")
        .into_iter()
        .map(|row| NewCorpusRow {
            subject_hmacs: vec![store.hmac(row["subject"].as_str().unwrap_or_default().as_bytes())],
            data: row,
        })
        .collect();
    store.insert_corpus_rows(model, &corpus, ADMIN).await?;
    let forget = split("forget10.jsonl");
    let (r1, _) = store
        .create_request(&payload_request(model, "k1", &forget[..2]))
        .await?;
    // A subject whose rows are in the corpus (an author of the retain split).
    let author = split("retain90.jsonl")[0]["subject"]
        .as_str()
        .context("subject")?
        .to_owned();
    let (r2, _) = store
        .create_request(&NewRequest {
            subject_hmac: Some(store.hmac(author.as_bytes())),
            forget_payload: None,
            ..payload_request(model, "k2", &[])
        })
        .await?;
    let jobs = store.jobs_for_request(r1.id).await?;
    ensure!(
        jobs.len() == 1 && store.jobs_for_request(r2.id).await?[0].id == jobs[0].id,
        "coalesced"
    );

    let cfg = worker_config(&db, "w1");
    let report = run_once(&store, &cfg).await?.context("a job")?;
    let JobOutcome::Published {
        version_id,
        number,
        status,
        reused,
    } = report.outcome.clone()
    else {
        anyhow::bail!("expected a published version, got {report:?}");
    };
    ensure!(
        number == 2 && status == VersionStatus::Published && !reused,
        "{report:?}"
    );
    ensure!(run_once(&store, &cfg).await?.is_none(), "nothing left to do");

    // Each request has its own status and result.
    for r in [r1.id, r2.id] {
        let req = store.get_request(r).await?;
        ensure!(req.status == RequestStatus::Succeeded, "{req:?}");
        ensure!(req.result_version_id == Some(version_id), "{req:?}");
    }
    ensure!(store.get_request(r1.id).await?.purged_at.is_some(), "payload purged");
    let alias = store.get_alias(model, PRODUCTION).await?;
    ensure!(alias.version_id == version_id, "production moved");

    // The certificate verifies, names the version and matches the files.
    let version = store.get_version(version_id).await?;
    let text = serde_json::to_string(version.certificate.as_ref().context("certificate")?)?;
    let cert = grin::certificate::verify_document(&text, &signing_key().verifying_key())?;
    ensure!(cert.new_version.as_deref() == Some("2") && cert.base_version.as_deref() == Some("1"));
    let mut ids = vec![r1.id.to_string(), r2.id.to_string()];
    ids.sort();
    ensure!(cert.request_ids == ids, "{:?}", cert.request_ids);
    let subject_rows = corpus_rows_of(&split("full.jsonl"), &author);
    ensure!(
        cert.forget_digests.len() == 2 + subject_rows,
        "{}",
        cert.forget_digests.len()
    );
    let digest = store.row_digest(&forget[0]);
    ensure!(cert.forget_digests.iter().any(|d| d.as_str() == digest));
    let dir = grin_worker::data::local_path(&version.location);
    grin::certificate::verify_files(&cert, &dir)?;
    ensure!(version.files.len() == cert.files.len());
    // The certificate carries digests, never the forgotten text.
    ensure!(!text.contains(forget[0]["answer"].as_str().unwrap_or("?")));

    // The published area holds the version and nothing half-written.
    let model_root = cfg.checkpoint_root.join(model);
    ensure!(
        entries(&model_root) == vec![report.job_id.to_string()],
        "{:?}",
        entries(&model_root)
    );
    ensure!(entries(&model_root.join(report.job_id.to_string())) == vec!["model", "publish.json"]);

    // The subject's corpus rows are forgotten; the audit chain verifies.
    ensure!(
        store
            .count_rows_for_subject(model, &store.hmac(author.as_bytes()))
            .await?
            == 0
    );
    let head = store.verify_audit().await?;
    ensure!(head.rows > 5, "{head:?}");
    let job = store.get_job(report.job_id).await?;
    ensure!(job.progress_stage.is_some(), "progress was written");
    store.close().await;
    Ok(())
}

fn corpus_rows_of(rows: &[Value], subject: &str) -> usize {
    rows.iter().filter(|r| r["subject"] == json!(subject)).count()
}

/// A version whose gates fail waits for approval; production stays; the
/// retain file fallback is used (no corpus rows registered).
async fn failed_gates_await_approval(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "held";
    create_model(&store, model, None, quick_config(2), failing_gates()).await?;
    let forget = split("forget10.jsonl");
    let (r, _) = store.create_request(&payload_request(model, "k", &forget[..1])).await?;
    let cfg = worker_config(&db, "w1");
    let report = run_once(&store, &cfg).await?.context("a job")?;
    let JobOutcome::Published { version_id, status, .. } = report.outcome else {
        anyhow::bail!("{report:?}");
    };
    ensure!(status == VersionStatus::AwaitingApproval);
    ensure!(store.get_request(r.id).await?.status == RequestStatus::AwaitingApproval);
    let base = store.get_version_by_number(model, 1).await?;
    ensure!(store.get_alias(model, PRODUCTION).await?.version_id == base.id);
    // Approval (as the API does it) publishes it.
    store.approve_version(version_id, ADMIN).await?;
    ensure!(store.get_request(r.id).await?.status == RequestStatus::Succeeded);
    ensure!(store.get_alias(model, PRODUCTION).await?.version_id == version_id);

    // promote_on_pass = false holds even a passing version.
    let model2 = "manual";
    create_model(&store, model2, None, quick_config(2), passing_gates()).await?;
    store
        .create_request(&payload_request(model2, "k2", &forget[..1]))
        .await?;
    let mut manual = worker_config(&db, "w2");
    manual.promote_on_pass = false;
    let report = run_once(&store, &manual).await?.context("a job")?;
    ensure!(
        matches!(
            report.outcome,
            JobOutcome::Published {
                status: VersionStatus::AwaitingApproval,
                ..
            }
        ),
        "{report:?}"
    );
    store.verify_audit().await?;
    store.close().await;
    Ok(())
}

/// The worker's model cache: the base version is cached as it was loaded
/// (before training changed the weights), the published version is cached
/// as published, and the next job on it starts from the cache.
async fn next_job_starts_from_the_cached_version(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let model = "cached";
    create_model(&store, model, None, quick_config(2), passing_gates()).await?;
    let forget = split("forget10.jsonl");
    let cfg = worker_config(&db, "w1");
    let cache = grin_worker::shared_cache(1 << 30);
    let device = candle_core::Device::Cpu;
    let weights = |m: &grin::model::Model| -> Result<Vec<Vec<f32>>> {
        m.tensors()
            .values()
            .map(|t| Ok(t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?))
            .collect()
    };
    let on_disk = |location: &str| -> Result<Vec<Vec<f32>>> {
        let dir = grin_worker::data::local_path(location);
        weights(&grin::checkpoint::load_model(&dir, &device, None)?)
    };

    store
        .create_request(&payload_request(model, "k1", &forget[..1]))
        .await?;
    let first = grin_worker::run_once_cached(&store, &cfg, &cache)
        .await?
        .context("job 1")?;
    let JobOutcome::Published { version_id: v2, .. } = first.outcome else {
        anyhow::bail!("{first:?}");
    };
    let v1 = store.get_version_by_number(model, 1).await?;
    ensure!(cache.lock().unwrap().stats() == (0, 1), "job 1 loads from disk");
    for (version, location) in [
        (v1.id, v1.location.clone()),
        (v2, store.get_version(v2).await?.location),
    ] {
        let cached = cache.lock().unwrap().checkout(version, &device)?.context("cached")?;
        ensure!(
            weights(&cached)? == on_disk(&location)?,
            "cached {version} differs from its files"
        );
    }
    ensure!(on_disk(&v1.location)? != on_disk(&store.get_version(v2).await?.location)?);

    store
        .create_request(&payload_request(model, "k2", &forget[1..2]))
        .await?;
    let (hits, misses) = cache.lock().unwrap().stats();
    let second = grin_worker::run_once_cached(&store, &cfg, &cache)
        .await?
        .context("job 2")?;
    let JobOutcome::Published {
        number: 3,
        version_id: v3,
        ..
    } = second.outcome
    else {
        anyhow::bail!("{second:?}");
    };
    ensure!(
        cache.lock().unwrap().stats() == (hits + 1, misses),
        "job 2 starts from the cached version 2"
    );
    let version = store.get_version(v3).await?;
    let text = serde_json::to_string(version.certificate.as_ref().context("certificate")?)?;
    let cert = grin::certificate::verify_document(&text, &signing_key().verifying_key())?;
    ensure!(cert.base_version.as_deref() == Some("2"));
    grin::certificate::verify_files(&cert, &grin_worker::data::local_path(&version.location))?;
    store.close().await;
    Ok(())
}

backend_tests!(
    publishes_a_verified_version,
    failed_gates_await_approval,
    next_job_starts_from_the_cached_version
);
