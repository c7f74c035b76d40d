//! GRIN: unlearning for Llama-family language models, in candle.
//!
//! This crate is the algorithm library: the trainable model, checkpoint I/O,
//! datasets, the GRIN stages and the metrics. It does no networking and no
//! database work, so it runs the same inside the CLI, a test or the worker.

pub mod certificate;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod fixture;
pub mod generate;
pub mod harm;
pub mod hazard;
pub mod mcq;
pub mod metrics;
pub mod model;
pub mod noise;
pub mod ops;
pub mod pipeline;
pub mod progress;
pub mod safety;
pub mod saliency;
pub mod tofu;
pub mod tokenizer;
pub mod train;
pub mod unlearn;

pub use error::{Error, Result};
