//! The worker's error type, and which errors a retry can fix.
//!
//! A job attempt that fails with a *permanent* error (a missing model
//! directory, a corrupt safetensors file, invalid data or configuration) is
//! failed at once (`fail_job(retryable = false)`); anything else is handed
//! back to the queue with the store's backoff until the job's attempts are
//! spent. Messages name files and fields, never payload text.

use std::path::PathBuf;

/// Result alias for the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker itself is misconfigured (reported at start-up).
    #[error("worker configuration: {0}")]
    Config(String),

    /// The job cannot succeed as submitted: retrying would not help.
    #[error("{0}")]
    Permanent(String),

    /// A transient failure (I/O hiccup, database unavailable): retry later.
    #[error("{0}")]
    Retryable(String),

    /// The GRIN library failed in a stage.
    #[error("{stage}: {source}")]
    Grin {
        stage: &'static str,
        #[source]
        source: grin::Error,
    },

    /// A checkpoint-store file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] grin_store::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn grin(stage: &'static str, source: grin::Error) -> Self {
        Error::Grin { stage, source }
    }

    /// Whether another attempt might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) | Error::Permanent(_) => false,
            Error::Retryable(_) | Error::Store(_) => true,
            Error::Io { source, .. } => retryable_io(source),
            Error::Grin { source, .. } => match source {
                grin::Error::Io { source, .. } => retryable_io(source),
                // Tensor failures include device out-of-memory: worth another try.
                grin::Error::Candle(_) => true,
                grin::Error::InvalidConfig { .. }
                | grin::Error::Unsupported { .. }
                | grin::Error::Checkpoint { .. }
                | grin::Error::Data(_)
                | grin::Error::Tokenizer(_)
                | grin::Error::InvalidArgument { .. }
                | grin::Error::NonFinite { .. }
                | grin::Error::Cancelled => false,
            },
        }
    }
}

fn retryable_io(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData
    )
}
