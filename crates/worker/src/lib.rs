//! The GRIN worker: claims unlearning jobs from the store's queue, builds
//! their forget and retain sets, runs [`grin::pipeline::run`] on a blocking
//! thread with live progress, heartbeats and cancellation, and publishes the
//! result as a new model version — checkpoint files first (staged, fsynced,
//! renamed into place), then the registry entry with its signed certificate
//! (idempotent per job), so a crash never leaves a visible partial version.
//!
//! Entry points: [`run`] (the long-running loop used by `grin worker` and
//! `grin serve --with-worker`) and [`run_once`] (claim and process at most
//! one job; tests and demos). docs/worker.md describes the states, retries,
//! shutdown, coalescing, alias policy and publish protocol.
//!
//! What this crate does not do: speak HTTP, or decide who may approve a
//! version (the API does). It never logs payload text or subject
//! identities: log fields carry job, request and version ids and counts.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use grin_store::Store;
use tokio::sync::watch;

pub mod cache;
pub mod config;
pub mod data;
mod error;
mod job;
mod observer;
pub mod publish;

pub use cache::ModelCache;
pub use config::{DeviceChoice, WorkerConfig};
pub use error::{Error, Result};
pub use job::{JobOutcome, JobReport};

use job::sleep_or_shutdown;

/// Claims at most one runnable job (after returning expired leases to the
/// queue) and processes it to its end. `Ok(None)` when nothing was
/// runnable.
/// Nothing is cached between calls; see [`run_once_cached`].
pub async fn run_once(store: &Store, cfg: &WorkerConfig) -> Result<Option<JobReport>> {
    run_once_cached(store, cfg, &shared_cache(0)).await
}

/// A model cache shared by the jobs of one worker.
pub type SharedCache = Arc<Mutex<ModelCache>>;

/// An empty shared cache of `budget` bytes.
pub fn shared_cache(budget: u64) -> SharedCache {
    Arc::new(Mutex::new(ModelCache::new(budget)))
}

/// [`run_once`] with a model cache that outlives the call: a job whose base
/// version is in `cache` starts from the cached weights, and the version it
/// publishes is cached for the next job.
#[tracing::instrument(skip_all, fields(worker_id = %cfg.worker_id))]
pub async fn run_once_cached(store: &Store, cfg: &WorkerConfig, cache: &SharedCache) -> Result<Option<JobReport>> {
    cfg.validate()?;
    store.reap_expired().await?;
    let Some(claimed) = store.claim(&cfg.worker_id, cfg.lease).await? else {
        return Ok(None);
    };
    // Nobody can signal this one: run_once is not interrupted by shutdown.
    let (_keep, never) = watch::channel(false);
    job::process(store, cfg, claimed, never, cache).await.map(Some)
}

/// The worker loop: reap expired leases every `reap_every`, claim, process,
/// and sleep on the store's wake-up (NOTIFY on Postgres, polling otherwise)
/// when idle. After a wake-up it waits `coalesce_window` before claiming so
/// that requests arriving together share one job.
///
/// When `shutdown` becomes `true` it stops claiming, asks the running job to
/// stop at its next step, releases it to the queue (or completes it, if it
/// had already finished) and returns — within `shutdown_grace` plus one
/// store round trip. A run that did not stop in time is left on its
/// blocking thread; exit the process (e.g. `Runtime::shutdown_timeout`)
/// rather than wait for it. See [`shutdown_on_signals`].
#[tracing::instrument(skip_all, fields(worker_id = %cfg.worker_id))]
pub async fn run(store: Store, cfg: WorkerConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    cfg.validate()?;
    cfg.device.device()?;
    std::fs::create_dir_all(&cfg.checkpoint_root).map_err(|e| Error::io(&cfg.checkpoint_root, e))?;
    let mut waiter = store.work_waiter().await?;
    let cache = shared_cache(cfg.model_cache_bytes);
    let mut last_reap: Option<Instant> = None;
    tracing::info!(root = %cfg.checkpoint_root.display(), "worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        if last_reap.is_none_or(|t| t.elapsed() >= cfg.reap_every) {
            if let Err(e) = store.reap_expired().await {
                tracing::warn!(error = %e, "reaping expired leases failed");
            }
            if let Err(e) = store.purge_expired(cfg.payload_retention, "retention").await {
                tracing::warn!(error = %e, "purging expired payloads failed");
            }
            last_reap = Some(Instant::now());
        }
        match store.claim(&cfg.worker_id, cfg.lease).await {
            Ok(Some(claimed)) => {
                if let Err(e) = job::process(&store, &cfg, claimed, shutdown.clone(), &cache).await {
                    tracing::error!(error = %e, "ending the job in the store failed; its lease will expire");
                    if sleep_or_shutdown(cfg.poll_interval, &mut shutdown).await {
                        break;
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "claim failed");
                if sleep_or_shutdown(cfg.poll_interval, &mut shutdown).await {
                    break;
                }
                continue;
            }
        }
        let woken = tokio::select! {
            w = waiter.wait(cfg.poll_interval) => w,
            () = observer::shutdown_signalled(&mut shutdown) => break,
        };
        if woken && !cfg.coalesce_window.is_zero() && sleep_or_shutdown(cfg.coalesce_window, &mut shutdown).await {
            break;
        }
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// A shutdown signal that turns `true` on SIGTERM or Ctrl-C (SIGINT).
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
        // Keep the sender alive so receivers see `true`, not a closed channel.
        std::future::pending::<()>().await;
    });
    rx
}
