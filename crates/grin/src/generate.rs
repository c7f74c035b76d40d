//! Greedy decoding with a KV cache, for evaluation.
//!
//! Prompts are grouped by length so each group decodes as one batch without
//! padding (rows of a batch share positions). Decoding stops at an EOS token
//! or after `max_new_tokens`; the EOS itself is not returned.

use std::collections::BTreeMap;

use candle_core::{Result, Tensor, D};

use crate::model::{KvCache, Transformer};

/// Greedy continuation of one prompt.
pub fn greedy(net: &Transformer, prompt: &[u32], max_new_tokens: usize, eos: &[u32]) -> Result<Vec<u32>> {
    Ok(greedy_batch(net, &[prompt.to_vec()], max_new_tokens, eos)?.remove(0))
}

/// Greedy continuations of many prompts, in input order.
pub fn greedy_batch(
    net: &Transformer,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos: &[u32],
) -> Result<Vec<Vec<u32>>> {
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            candle_core::bail!("prompt {i} is empty");
        }
        groups.entry(p.len()).or_default().push(i);
    }
    let max_pos = net.config().max_position_embeddings;
    let mut out = vec![Vec::new(); prompts.len()];
    for (len, rows) in groups {
        let budget = max_new_tokens.min(max_pos.saturating_sub(len));
        let flat: Vec<u32> = rows.iter().flat_map(|&i| prompts[i].iter().copied()).collect();
        let mut input = Tensor::from_vec(flat, (rows.len(), len), net.device())?;
        let mut cache = KvCache::default();
        let mut done = vec![false; rows.len()];
        for _ in 0..budget {
            let logits = net.forward_cached(&input, &mut cache)?;
            let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?;
            let next: Vec<u32> = last.argmax(D::Minus1)?.to_vec1()?;
            for (r, &tok) in next.iter().enumerate() {
                if done[r] {
                    continue;
                }
                if eos.contains(&tok) {
                    done[r] = true;
                } else {
                    out[rows[r]].push(tok);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            input = Tensor::from_vec(next, (rows.len(), 1), net.device())?;
        }
    }
    Ok(out)
}
