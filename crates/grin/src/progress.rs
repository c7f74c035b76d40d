//! Progress reporting and cancellation for long-running stages.
//!
//! The library never prints: it tells an [`Observer`] where it is, and asks it
//! whether to stop. The CLI draws a progress bar from these calls; the worker
//! writes them to the job row and sets the cancel flag from the database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Where a run is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    /// Stage name, e.g. `finetune`, `saliency`, `noise`, `unlearn`, `evaluate`.
    pub stage: &'static str,
    /// Steps done in this stage.
    pub step: usize,
    /// Steps this stage will take at most.
    pub total: usize,
    /// Current loss values by name (empty where a stage has none).
    pub losses: Vec<(&'static str, f32)>,
}

/// Receives progress and says whether to cancel. Both methods are called on
/// the thread doing the work, once per step, so they must be cheap.
pub trait Observer {
    /// Called after each step.
    fn progress(&mut self, _p: &Progress) {}
    /// Polled before each step; `true` stops the run with
    /// [`crate::Error::Cancelled`] before anything is written.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// An observer that ignores progress and never cancels.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Observer for Silent {}

/// A shareable cancel flag: set it from any thread.
#[derive(Debug, Default, Clone)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Forwards progress to a closure and cancellation to a flag.
pub struct FnObserver<F: FnMut(&Progress)> {
    pub on_progress: F,
    pub cancel: CancelFlag,
}

impl<F: FnMut(&Progress)> std::fmt::Debug for FnObserver<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnObserver").field("cancel", &self.cancel).finish()
    }
}

impl<F: FnMut(&Progress)> Observer for FnObserver<F> {
    fn progress(&mut self, p: &Progress) {
        (self.on_progress)(p)
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}
