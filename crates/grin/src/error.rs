//! The crate's one error type.
//!
//! Tensor code returns `candle_core::Result` internally; this type is what the
//! public, file- and config-facing functions return, with variants that name
//! the offending file, field or value so a user can fix their input.

use std::path::PathBuf;

/// Errors of the `grin` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch, unsupported dtype, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `config.json` is not valid JSON or lacks a field.
    #[error("{path}: invalid model config: {message}")]
    InvalidConfig { path: PathBuf, message: String },

    /// A config value that is valid for Hugging Face but not supported here.
    #[error("{path}: unsupported {field} = {value}: {hint}")]
    Unsupported {
        path: PathBuf,
        field: &'static str,
        value: String,
        hint: &'static str,
    },

    /// A checkpoint lacks a tensor the architecture needs, has one it does not
    /// know, or has one of the wrong shape.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    /// A dataset file is malformed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),

    /// The tokenizer could not be trained, loaded or used.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),

    /// A configuration value is out of its allowed range.
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: &'static str, message: String },

    /// A loss became NaN or infinite; the run is stopped and nothing is written.
    #[error("non-finite {what} at step {step}: {value}")]
    NonFinite {
        what: &'static str,
        step: usize,
        value: f32,
    },

    /// The run was cancelled through its cancel flag.
    #[error("cancelled")]
    Cancelled,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
