//! Processing one claimed job: heartbeat and progress tasks around a
//! blocking GRIN run, then the job's ending in the store (complete, fail,
//! acknowledge a cancel, or release on shutdown).

use std::time::Duration;

use grin::pipeline::{CertificateSubject, RunData, RunSpec};
use grin_store::{ClaimedJob, Error as StoreError, ModelVersion, NewVersion, Store, VersionStatus};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{gates, unlearn_config, WorkerConfig};
use crate::data::{forget_set, holdout_set, local_path, retain_set};
use crate::error::{Error, Result};
use crate::observer::{heartbeat, shutdown_signalled, write_progress, JobObserver, Stop, StopReason};
use crate::publish::{remove_all, JobPaths, PublishRecord, RECORD_FORMAT};
use crate::SharedCache;

/// How a job attempt ended, as seen by this worker.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// A version was registered (published, or awaiting approval).
    Published {
        version_id: Uuid,
        number: i64,
        status: VersionStatus,
        /// Registered from a directory an earlier attempt had published.
        reused: bool,
    },
    /// No request had anything to forget; no version.
    NothingToForget,
    /// Cancellation was requested and acknowledged; no version.
    Cancelled,
    /// The attempt failed; `final_` when the job is now `failed` (a
    /// permanent error or its attempts are spent), else it was re-queued.
    Failed { error: String, final_: bool },
    /// The worker shut down and handed the job back to the queue.
    Released,
    /// The lease was lost (expired, or the job was taken over); the job was
    /// left alone.
    LeaseLost,
}

/// What [`crate::run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    pub job_id: Uuid,
    pub model: String,
    /// The requests the job served when claimed.
    pub requests: Vec<Uuid>,
    /// The attempt number (1 for the first claim).
    pub attempt: i64,
    pub outcome: JobOutcome,
}

/// What the work phase produced.
enum Produced {
    /// A staged-and-renamed result; `reused` when an earlier attempt wrote it.
    Record {
        record: Box<PublishRecord>,
        reused: bool,
        /// The trained model, for the cache (absent when reused).
        model: Option<Box<grin::model::Model>>,
    },
    NothingToForget,
}

fn stopped(reason: StopReason) -> Error {
    Error::Retryable(
        match reason {
            StopReason::Cancel => "cancelled",
            StopReason::LeaseLost => "lease lost",
            StopReason::Shutdown => "worker shut down; job released",
        }
        .into(),
    )
}

/// Runs one claimed job to its end.
#[tracing::instrument(skip_all, fields(job_id = %claimed.job.id, model = %claimed.job.model_name))]
pub(crate) async fn process(
    store: &Store,
    cfg: &WorkerConfig,
    claimed: ClaimedJob,
    shutdown: watch::Receiver<bool>,
    cache: &SharedCache,
) -> Result<JobReport> {
    let job = &claimed.job;
    let requests: Vec<Uuid> = claimed.requests.iter().map(|r| r.id).collect();
    tracing::info!(attempt = job.attempts, requests = requests.len(), "processing job");
    let stop = Stop::default();
    let hb = tokio::spawn(heartbeat(
        store.clone(),
        job.id,
        cfg.worker_id.clone(),
        cfg.lease,
        cfg.heartbeat_every,
        stop.clone(),
        shutdown.clone(),
    ));
    let mut staging = None;
    let mut produced = work(store, cfg, &claimed, &stop, shutdown, &mut staging, cache).await;
    let trained = match &mut produced {
        Ok(Produced::Record { model, .. }) => model.take(),
        _ => None,
    };
    hb.abort();
    if let Some(dir) = &staging {
        if let Err(e) = remove_all(dir) {
            tracing::warn!(error = %e, "could not remove the staging directory; the next attempt will");
        }
    }
    let outcome = finish(store, cfg, &claimed, &stop, produced).await?;
    if let (JobOutcome::Published { version_id, .. }, Some(model)) = (&outcome, trained) {
        let (cache, version_id) = (cache.clone(), *version_id);
        // Copying the weights can take a while on a large model.
        let kept = tokio::task::spawn_blocking(move || {
            cache
                .lock()
                .map_err(|_| "poisoned".to_string())?
                .insert(version_id, &model)
                .map_err(|e| e.to_string())
        })
        .await;
        match kept {
            Ok(Ok(kept)) => tracing::debug!(kept, "model cache updated"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not cache the new version"),
            Err(e) => tracing::warn!(error = %e, "could not cache the new version"),
        }
    }
    tracing::info!(outcome = ?outcome, "job attempt ended");
    Ok(JobReport {
        job_id: job.id,
        model: job.model_name.clone(),
        requests,
        attempt: job.attempts,
        outcome,
    })
}

/// Builds the data, runs GRIN and stages the result. Never touches the
/// job's state.
async fn work(
    store: &Store,
    cfg: &WorkerConfig,
    claimed: &ClaimedJob,
    stop: &Stop,
    mut shutdown: watch::Receiver<bool>,
    staging_out: &mut Option<std::path::PathBuf>,
    cache: &SharedCache,
) -> Result<Produced> {
    let job = &claimed.job;
    let requests: Vec<Uuid> = claimed.requests.iter().map(|r| r.id).collect();
    let model = store.get_model(&job.model_name).await?;
    let paths = JobPaths::new(&cfg.checkpoint_root, &model.name, job.id)?;
    let cleaned = paths.clean_stale()?;
    if cleaned > 0 {
        tracing::info!(dirs = cleaned, "removed staging directories of an earlier attempt");
    }
    if let Some(record) = paths.reusable(&requests)? {
        tracing::info!("reusing the checkpoint an earlier attempt published");
        return Ok(Produced::Record {
            record: Box::new(record),
            reused: true,
            model: None,
        });
    }

    progress(
        store,
        cfg,
        job.id,
        "prepare",
        0.0,
        "building the forget and retain sets",
    )
    .await;
    let payloads = store.job_payloads(job.id, &cfg.worker_id).await?;
    let forget = forget_set(store, &model.name, &payloads).await?;
    drop(payloads);
    if forget.rows.is_empty() {
        return Ok(Produced::NothingToForget);
    }
    let retain = retain_set(store, &model, &forget).await?;
    let holdout = holdout_set(&model)?;
    let unlearn = unlearn_config(&model.default_config, &job.method_overrides)?;
    let gate_specs = gates(&model.gates)?;
    let base = match job.base_version_id {
        Some(id) => store.get_version(id).await?,
        None => return Err(Error::Permanent("the job has no base version".into())),
    };
    let model_dir = local_path(&base.location);
    if !model_dir.is_dir() {
        return Err(Error::Permanent(format!(
            "model directory {} (version {} of model {}) does not exist",
            model_dir.display(),
            base.number,
            model.name
        )));
    }
    tracing::info!(
        forget = forget.rows.len(),
        retain = retain.len(),
        holdout = holdout.as_ref().map(|h| h.len()),
        base_version = base.number,
        "datasets ready"
    );
    let template = if model.prompt_template.is_empty() {
        cfg.template.clone()
    } else {
        model.prompt_template.clone()
    };
    let staging = paths.new_staging()?;
    *staging_out = Some(staging.clone());
    let spec = RunSpec {
        model_dir,
        out_dir: staging.join("model"),
        template,
        config: unlearn,
        eval: cfg.eval.clone(),
        gates: gate_specs,
        oracle: None,
        metrics_before: None,
        device: cfg.device.device()?,
    };

    // The blocking run, with progress written at a bounded rate.
    let (tx, rx) = watch::channel(None);
    let writer = tokio::spawn(write_progress(
        store.clone(),
        job.id,
        cfg.worker_id.clone(),
        rx,
        cfg.progress_min_interval,
        stop.clone(),
    ));
    let mut observer = JobObserver::new(stop.clone(), tx);
    let run_spec = spec.clone();
    let forget_ds = grin::data::Dataset::new("forget set", forget.rows.clone());
    let cache = cache.clone();
    let base_id = base.id;
    let mut handle = tokio::task::spawn_blocking(move || {
        let data = RunData {
            forget: &forget_ds,
            retain: &retain,
            holdout: holdout.as_ref(),
        };
        let started_at = grin::certificate::now_rfc3339();
        let t0 = std::time::Instant::now();
        let model = load_base(&cache, base_id, &run_spec)?;
        let encoder = grin::pipeline::load_encoder(&run_spec.model_dir, &run_spec.template, model.config())?;
        grin::pipeline::run_loaded(&run_spec, &model, &encoder, data, &mut observer, started_at, t0)
            .map(|outcome| (outcome, model))
    });
    let joined = tokio::select! {
        r = &mut handle => Some(r),
        () = async {
            shutdown_signalled(&mut shutdown).await;
            stop.request(StopReason::Shutdown);
            tokio::time::sleep(cfg.shutdown_grace).await;
        } => None,
    };
    writer.abort();
    let outcome = match joined {
        None => {
            tracing::warn!("the running step did not finish within the shutdown grace; releasing the job");
            return Err(stopped(StopReason::Shutdown));
        }
        Some(Err(join)) => return Err(Error::Retryable(format!("the GRIN run panicked: {join}"))),
        Some(Ok(Err(grin::Error::Cancelled))) => {
            return Err(stopped(stop.reason().unwrap_or(StopReason::Cancel)));
        }
        Some(Ok(Err(e))) => return Err(Error::grin("unlearning run", e)),
        Some(Ok(Ok((outcome, model)))) => (outcome, model),
    };
    let (outcome, trained) = outcome;
    if let Some(reason) = stop.reason() {
        if reason != StopReason::Shutdown {
            return Err(stopped(reason));
        }
    }

    // Certificate and publish record, then the atomic rename.
    let number = next_number(store, &model.name).await?;
    let passed = outcome.passed;
    let status = if passed && cfg.promote_on_pass {
        VersionStatus::Published
    } else {
        VersionStatus::AwaitingApproval
    };
    let subject = CertificateSubject {
        id: job.id.to_string(),
        request_ids: forget.fulfilled.iter().map(Uuid::to_string).collect(),
        model: model.name.clone(),
        base_version: Some(base.number.to_string()),
        new_version: Some(number.to_string()),
        forget_digests: forget.digests.clone(),
    };
    let certificate =
        grin::pipeline::certificate_for(&subject, &spec, &outcome).map_err(|e| Error::grin("certificate", e))?;
    let signed = grin::certificate::sign(&certificate, &cfg.signing_key)
        .map_err(|e| Error::Permanent(format!("signing the certificate: {e}")))?;
    let record = PublishRecord {
        format: RECORD_FORMAT.into(),
        job_id: job.id,
        model: model.name.clone(),
        parent_id: Some(base.id),
        number,
        fulfilled_request_ids: forget.fulfilled.clone(),
        files: outcome
            .manifest
            .iter()
            .map(|m| grin_store::FileEntry {
                path: m.path.clone(),
                sha256: m.sha256.clone(),
                bytes: m.bytes as i64,
            })
            .collect(),
        config: json!({
            "unlearn": spec.config,
            "eval": spec.eval,
            "gates": spec.gates,
            "template": spec.template,
            "device": cfg.device.to_string(),
        }),
        seed: spec.config.seed as i64,
        metrics: json!({
            "before": outcome.before,
            "after": outcome.after.flat(),
            "gates": outcome.gates,
            "passed": passed,
            "seconds": outcome.seconds,
            "stage_seconds": outcome.report.timings,
            "forget_items": forget.rows.len(),
            "retain_items": outcome.report.retain_examples,
        }),
        passed,
        status,
        certificate: signed,
    };
    paths.finalize(&staging, &record)?;
    *staging_out = None;
    Ok(Produced::Record {
        record: Box::new(record),
        reused: false,
        model: Some(Box::new(trained)),
    })
}

/// The base version's weights, from the cache or from disk (then cached
/// before the run changes them).
fn load_base(cache: &SharedCache, version: Uuid, spec: &RunSpec) -> grin::Result<grin::model::Model> {
    let poisoned = |_| grin::Error::InvalidArgument {
        field: "model cache",
        message: "a job panicked while holding the model cache".into(),
    };
    if let Some(model) = cache.lock().map_err(poisoned)?.checkout(version, &spec.device)? {
        tracing::info!("base version from the model cache");
        return Ok(model);
    }
    let model = grin::checkpoint::load_model(&spec.model_dir, &spec.device, None)?;
    cache.lock().map_err(poisoned)?.insert(version, &model)?;
    Ok(model)
}

/// The number the next version of `model` will get (a model's jobs run one
/// at a time, so nothing else registers in between).
async fn next_number(store: &Store, model: &str) -> Result<i64> {
    Ok(store
        .list_versions(model)
        .await?
        .iter()
        .map(|v| v.number)
        .max()
        .unwrap_or(0)
        + 1)
}

async fn progress(store: &Store, cfg: &WorkerConfig, job_id: Uuid, stage: &str, percent: f64, message: &str) {
    let p = grin_store::Progress {
        stage: stage.into(),
        percent,
        message: Some(message.into()),
    };
    if let Err(e) = store.update_progress(job_id, &cfg.worker_id, &p).await {
        tracing::warn!(error = %e, "writing progress failed");
    }
}

/// Ends the attempt in the store.
async fn finish(
    store: &Store,
    cfg: &WorkerConfig,
    claimed: &ClaimedJob,
    stop: &Stop,
    produced: Result<Produced>,
) -> Result<JobOutcome> {
    let job = &claimed.job;
    let worker = cfg.worker_id.as_str();
    let paths = JobPaths::new(&cfg.checkpoint_root, &job.model_name, job.id).ok();
    let outcome = match (stop.reason(), produced) {
        (Some(StopReason::LeaseLost), _) => return Ok(JobOutcome::LeaseLost),
        (Some(StopReason::Cancel), _) => {
            // Cancel wins over a result that is not registered yet.
            if let Some(p) = &paths {
                p.discard()?;
            }
            match store.acknowledge_cancel(job.id, worker).await {
                Ok(_) => JobOutcome::Cancelled,
                Err(StoreError::LeaseLost { .. }) => return Ok(JobOutcome::LeaseLost),
                Err(e) => return Err(e.into()),
            }
        }
        (_, Ok(Produced::Record { record, reused, .. })) => match register(store, cfg, claimed, &record).await {
            Ok(version) => JobOutcome::Published {
                version_id: version.id,
                number: version.number,
                status: version.status,
                reused,
            },
            Err(Error::Store(StoreError::LeaseLost { .. })) => return Ok(JobOutcome::LeaseLost),
            Err(e) => fail(store, worker, job.id, &e).await?,
        },
        (_, Ok(Produced::NothingToForget)) => match store.complete_job(job.id, worker, None).await {
            Ok(_) => JobOutcome::NothingToForget,
            Err(StoreError::LeaseLost { .. }) => return Ok(JobOutcome::LeaseLost),
            Err(e) => return Err(e.into()),
        },
        (Some(StopReason::Shutdown), Err(_)) => {
            match store
                .release_job(job.id, worker, "worker shut down; job released")
                .await
            {
                Ok(_) => JobOutcome::Released,
                Err(StoreError::LeaseLost { .. }) => return Ok(JobOutcome::LeaseLost),
                Err(e) => return Err(e.into()),
            }
        }
        (None, Err(Error::Store(StoreError::LeaseLost { .. }))) => return Ok(JobOutcome::LeaseLost),
        (None, Err(e)) => fail(store, worker, job.id, &e).await?,
    };
    if matches!(
        outcome,
        JobOutcome::Published { .. } | JobOutcome::Cancelled | JobOutcome::Failed { final_: true, .. }
    ) {
        match store.purge_payloads_for_job(job.id, worker).await {
            Ok(n) if n > 0 => tracing::info!(purged = n, "purged forget payloads"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging payloads failed; purge_expired will erase them"),
        }
    }
    Ok(outcome)
}

async fn fail(store: &Store, worker: &str, job_id: Uuid, e: &Error) -> Result<JobOutcome> {
    let retryable = e.is_retryable();
    let message = e.to_string();
    tracing::warn!(error = %message, retryable, "job attempt failed");
    match store.fail_job(job_id, worker, &message, retryable).await {
        Ok(job) => Ok(JobOutcome::Failed {
            error: message,
            final_: job.state.is_terminal(),
        }),
        Err(StoreError::LeaseLost { .. }) => Ok(JobOutcome::LeaseLost),
        Err(e) => Err(e.into()),
    }
}

/// Registers the staged version (idempotent per job). If the number the
/// certificate names is no longer the next one, the certificate is signed
/// again with the right number.
async fn register(
    store: &Store,
    cfg: &WorkerConfig,
    claimed: &ClaimedJob,
    record: &PublishRecord,
) -> Result<ModelVersion> {
    let job = &claimed.job;
    let registered = store.version_for_job(job.id).await?.is_some();
    let mut signed = record.certificate.clone();
    let number = next_number(store, &record.model).await?;
    if !registered && number != record.number {
        tracing::warn!(
            expected = record.number,
            actual = number,
            "version number moved; re-signing"
        );
        let mut cert = signed.certificate.clone();
        cert.new_version = Some(number.to_string());
        signed = grin::certificate::sign(&cert, &cfg.signing_key)
            .map_err(|e| Error::Permanent(format!("signing the certificate: {e}")))?;
    }
    let new = NewVersion {
        model_name: record.model.clone(),
        parent_id: record.parent_id,
        job_id: Some(job.id),
        location: JobPaths::new(&cfg.checkpoint_root, &record.model, job.id)?
            .model_dir()
            .display()
            .to_string(),
        files: record.files.clone(),
        config: record.config.clone(),
        seed: Some(record.seed),
        metrics: record.metrics.clone(),
        certificate: Some(serde_json::to_value(&signed).map_err(|e| Error::Retryable(e.to_string()))?),
        fulfilled_request_ids: record.fulfilled_request_ids.clone(),
        status: record.status,
    };
    let version = store
        .complete_job(job.id, &cfg.worker_id, Some(new))
        .await?
        .ok_or_else(|| Error::Retryable("complete_job registered no version".into()))?;
    Ok(version)
}

/// Sleeps `d` or until shutdown; `true` when shut down.
pub(crate) async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown_signalled(shutdown) => true,
    }
}
