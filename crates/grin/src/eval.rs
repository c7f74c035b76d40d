//! Teacher-forced scoring of examples.
//!
//! `p(a|q) = exp(-mean NLL over answer tokens)`, the TOFU / open-unlearning
//! answer probability. Batched, on the detached inference network.

use candle_core::Result;

use crate::data::{collate, Encoded};
use crate::model::Transformer;
use crate::train::item_mean_nll;

/// Mean NLL over each example's target tokens.
pub fn item_nll(net: &Transformer, examples: &[Encoded], pad_id: u32, batch_size: usize) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, net.device())?;
        let nll = item_mean_nll(&net.forward(&batch.input_ids)?, &batch)?;
        out.extend(nll.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Answer probability `exp(-mean NLL)` of each example.
pub fn answer_probability(net: &Transformer, examples: &[Encoded], pad_id: u32, batch_size: usize) -> Result<Vec<f32>> {
    Ok(item_nll(net, examples, pad_id, batch_size)?
        .into_iter()
        .map(|n| (-n).exp())
        .collect())
}

/// Arithmetic mean (0 for an empty slice).
pub fn mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().map(|&x| x as f64).sum::<f64>() as f32 / xs.len() as f32
    }
}
