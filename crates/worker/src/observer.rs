//! The bridge between the blocking GRIN run and the async job: progress
//! goes out through a `watch` channel (latest value wins) that an async
//! task writes to the job row at a bounded rate, and a stop flag comes in
//! (set by the heartbeat task on cancel or lease loss, or on shutdown) that
//! the run polls before every step.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grin::progress::{Observer, Progress};
use grin_store::{Error as StoreError, Store};
use tokio::sync::watch;
use uuid::Uuid;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A client or operator cancelled the job.
    Cancel,
    /// The lease is no longer ours: stop without touching the job.
    LeaseLost,
    /// The worker is shutting down: release the job.
    Shutdown,
}

/// A shared stop flag; the first reason set wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stop(Arc<AtomicU8>);

impl Stop {
    pub(crate) fn request(&self, reason: StopReason) {
        let code = match reason {
            StopReason::Cancel => 1,
            StopReason::LeaseLost => 2,
            StopReason::Shutdown => 3,
        };
        let _ = self.0.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            1 => Some(StopReason::Cancel),
            2 => Some(StopReason::LeaseLost),
            3 => Some(StopReason::Shutdown),
            _ => None,
        }
    }
}

/// Where each pipeline stage sits on the job's 0–100 scale.
fn stage_range(stage: &str) -> Option<(f64, f64)> {
    Some(match stage {
        "evaluate before" => (0.0, 10.0),
        // The retain pass runs first (its gradients become the score's
        // denominator); with several gradient groups the two alternate and
        // the percent waits while a later group's retain pass runs.
        "saliency retain" => (10.0, 15.0),
        "saliency forget" => (15.0, 20.0),
        "unlearn" => (20.0, 85.0),
        "evaluate after" => (85.0, 95.0),
        "publish" => (95.0, 100.0),
        _ => return None,
    })
}

/// The observer handed to `grin::pipeline::run`.
pub(crate) struct JobObserver {
    pub(crate) stop: Stop,
    pub(crate) tx: watch::Sender<Option<grin_store::Progress>>,
    percent: f64,
}

impl JobObserver {
    pub(crate) fn new(stop: Stop, tx: watch::Sender<Option<grin_store::Progress>>) -> Self {
        JobObserver { stop, tx, percent: 0.0 }
    }
}

impl Observer for JobObserver {
    fn progress(&mut self, p: &Progress) {
        if let Some((lo, hi)) = stage_range(p.stage) {
            let frac = if p.total == 0 {
                1.0
            } else {
                (p.step as f64 / p.total as f64).min(1.0)
            };
            self.percent = self.percent.max(lo + (hi - lo) * frac);
        }
        let mut message = format!("{} {}/{}", p.stage, p.step, p.total);
        for (name, value) in &p.losses {
            message.push_str(&format!(" {name}={value:.4}"));
        }
        self.tx.send_replace(Some(grin_store::Progress {
            stage: p.stage.to_string(),
            percent: self.percent,
            message: Some(message),
        }));
    }

    fn is_cancelled(&self) -> bool {
        self.stop.reason().is_some()
    }
}

/// Writes the newest progress to the job, at most once per `min_interval`,
/// until the channel closes or the lease is lost.
pub(crate) async fn write_progress(
    store: Store,
    job_id: Uuid,
    worker_id: String,
    mut rx: watch::Receiver<Option<grin_store::Progress>>,
    min_interval: Duration,
    stop: Stop,
) {
    while rx.changed().await.is_ok() {
        let progress = rx.borrow_and_update().clone();
        if let Some(p) = progress {
            match store.update_progress(job_id, &worker_id, &p).await {
                Ok(()) => {}
                Err(StoreError::LeaseLost { .. }) => {
                    stop.request(StopReason::LeaseLost);
                    return;
                }
                Err(e) => tracing::warn!(%job_id, error = %e, "writing progress failed"),
            }
        }
        tokio::time::sleep(min_interval).await;
    }
}

/// Resolves once `shutdown` is true; never when its sender is gone.
pub(crate) async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Renews the lease every `every`; sets `stop` on cancel, lease loss or
/// shutdown.
pub(crate) async fn heartbeat(
    store: Store,
    job_id: Uuid,
    worker_id: String,
    lease: Duration,
    every: Duration,
    stop: Stop,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut shutdown_seen = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown_signalled(&mut shutdown), if !shutdown_seen => {
                shutdown_seen = true;
                stop.request(StopReason::Shutdown);
                continue;
            }
        }
        match store.heartbeat(job_id, &worker_id, lease).await {
            Ok(hb) if hb.cancel_requested => stop.request(StopReason::Cancel),
            Ok(_) => {}
            Err(StoreError::LeaseLost { .. }) => {
                tracing::warn!(%job_id, "lease lost; stopping the job");
                stop.request(StopReason::LeaseLost);
                return;
            }
            Err(e) => tracing::warn!(%job_id, error = %e, "heartbeat failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_stop_reason_wins() {
        let stop = Stop::default();
        assert_eq!(stop.reason(), None);
        stop.request(StopReason::Cancel);
        stop.request(StopReason::Shutdown);
        assert_eq!(stop.reason(), Some(StopReason::Cancel));
    }

    #[test]
    fn percent_is_monotone_across_stages() {
        let (tx, rx) = watch::channel(None);
        let mut obs = JobObserver::new(Stop::default(), tx);
        let p = |stage, step, total| Progress {
            stage,
            step,
            total,
            losses: vec![("loss", 1.5)],
        };
        obs.progress(&p("evaluate before", 1, 1));
        assert_eq!(rx.borrow().as_ref().unwrap().percent, 10.0);
        // Saliency in the order it runs: retain, then forget.
        obs.progress(&p("saliency retain", 2, 2));
        assert_eq!(rx.borrow().as_ref().unwrap().percent, 15.0);
        obs.progress(&p("saliency forget", 1, 2));
        assert_eq!(rx.borrow().as_ref().unwrap().percent, 17.5);
        obs.progress(&p("unlearn", 1, 2));
        let got = rx.borrow().clone().unwrap();
        assert_eq!(got.percent, 52.5);
        assert_eq!(got.stage, "unlearn");
        assert_eq!(got.message.as_deref(), Some("unlearn 1/2 loss=1.5000"));
        obs.progress(&p("noise", 0, 1));
        assert_eq!(rx.borrow().as_ref().unwrap().percent, 52.5);
    }
}
