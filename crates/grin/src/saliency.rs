//! Stage 1 of GRIN: gradient-ratio saliency and the weight masks it selects.
//!
//! `g_f` and `g_r` are the gradients of the mean answer NLL over the forget
//! and the retain set (each the mean of per-batch gradients, summed tensor
//! by tensor; each batch's graph is dropped before the next). A weight's score is
//! `|g_f| / (|g_r| + ε)`: large where the weight matters for the forget data
//! and little for the retain data. The top fraction `ratio` of scored weights
//! is selected, globally across scored tensors or per tensor, with exact
//! counts (ties at the threshold are broken by position, so the selected
//! fraction is exactly `round(ratio · n)`).
//!
//! Other selections share the [`Selection`] type so that the same engine runs
//! the baselines: every weight (dense), a random mask of the same size, and
//! the largest-magnitude weights.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor};
use rand::seq::index::sample;
use rand::SeedableRng;

use crate::data::{collate, Encoded};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::progress::{Observer, Progress};
use crate::train::batch_mean_nll;

/// Which tensors take part in selection. Linear layers of attention and the
/// MLP by default; embeddings, the LM head and norms are opt-in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TensorFilter {
    pub attention: bool,
    pub mlp: bool,
    pub embeddings: bool,
    pub lm_head: bool,
    pub norms: bool,
    /// Also score attention biases (Qwen2) when `attention` is on.
    pub biases: bool,
}

impl Default for TensorFilter {
    fn default() -> Self {
        TensorFilter {
            attention: true,
            mlp: true,
            embeddings: false,
            lm_head: false,
            norms: false,
            biases: false,
        }
    }
}

impl TensorFilter {
    /// Every tensor.
    pub fn all() -> Self {
        TensorFilter {
            attention: true,
            mlp: true,
            embeddings: true,
            lm_head: true,
            norms: true,
            biases: true,
        }
    }

    /// Whether the tensor with this Hugging Face name is selected.
    pub fn includes(&self, name: &str) -> bool {
        let kind = module_kind(name);
        match kind {
            "q_proj" | "k_proj" | "v_proj" | "o_proj" => self.attention && (self.biases || name.ends_with(".weight")),
            "gate_proj" | "up_proj" | "down_proj" => self.mlp,
            "embed_tokens" => self.embeddings,
            "lm_head" => self.lm_head,
            _ => self.norms,
        }
    }
}

/// The module kind of a tensor name: `q_proj`, `down_proj`, `embed_tokens`,
/// `lm_head`, `input_layernorm`, `norm`, ...
pub fn module_kind(name: &str) -> &str {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [.., kind, "weight" | "bias"] => kind,
        _ => name,
    }
}

/// The layer index of a tensor name (`model.layers.3.…` → 3).
pub fn layer_index(name: &str) -> Option<usize> {
    let mut parts = name.split('.');
    while let Some(p) = parts.next() {
        if p == "layers" {
            return parts.next().and_then(|i| i.parse().ok());
        }
    }
    None
}

/// Whether the top fraction is taken over all scored tensors or per tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Global,
    PerTensor,
}

/// How the weights that an unlearning run may change are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionKind {
    /// GRIN's gradient ratio `|g_f| / (|g_r| + ε)`.
    #[default]
    GradientRatio,
    /// Every weight of the filtered tensors (classic dense unlearning).
    Dense,
    /// A uniformly random subset of the same size as the ratio asks.
    Random,
    /// The largest `|w|` (an ablation).
    Magnitude,
}

/// Selection configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Selection {
    pub kind: SelectionKind,
    /// Fraction ρ of scored weights to select, in (0, 1]. Default 0.05.
    pub ratio: f64,
    /// ε in the score's denominator. Default 1e-8.
    pub eps: f64,
    pub scope: Scope,
    pub tensors: TensorFilter,
    /// Batch size of the gradient passes.
    pub batch_size: usize,
    /// Use at most this many retain examples for `g_r` (a seeded sample);
    /// `None`: all of them.
    pub max_retain_examples: Option<usize>,
    /// Score the tensors in this many groups (of about equal size), one
    /// retain and one forget pass per group. The passes then hold the
    /// gradients of one group at a time, which divides the gradient memory
    /// of the selection by about this number, at the cost of one forward and
    /// a partial backward pass per group and batch. The scores, and so the
    /// masks, do not depend on it. Default 1.
    pub gradient_groups: usize,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            kind: SelectionKind::GradientRatio,
            ratio: 0.05,
            eps: 1e-8,
            scope: Scope::Global,
            tensors: TensorFilter::default(),
            batch_size: 16,
            max_retain_examples: Some(256),
            gradient_groups: 1,
        }
    }
}

impl Selection {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            return Err(Error::InvalidArgument {
                field: "selection.ratio",
                message: format!("must be in (0, 1], got {}", self.ratio),
            });
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::InvalidArgument {
                field: "selection.eps",
                message: format!("must be positive, got {}", self.eps),
            });
        }
        if self.batch_size == 0 {
            return Err(Error::InvalidArgument {
                field: "selection.batch_size",
                message: "must be positive".into(),
            });
        }
        if self.gradient_groups == 0 {
            return Err(Error::InvalidArgument {
                field: "selection.gradient_groups",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Selected fraction of one group of tensors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Density {
    pub selected: usize,
    pub total: usize,
    pub fraction: f64,
}

/// Summary of a mask set: what the service reports and the paper plots.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskStats {
    pub selected: usize,
    pub scored: usize,
    pub fraction: f64,
    /// By module kind (`q_proj`, `down_proj`, ...).
    pub by_kind: BTreeMap<String, Density>,
    /// By layer index; tensors outside layers are under `None` → omitted.
    pub by_layer: BTreeMap<usize, Density>,
    /// Lowest selected score (gradient-ratio selection only).
    pub threshold: Option<f32>,
}

/// One boolean mask (u8, 1 = may change) per selected tensor.
#[derive(Debug, Clone)]
pub struct Masks {
    pub masks: BTreeMap<String, Tensor>,
    pub stats: MaskStats,
}

impl Masks {
    /// Names of tensors with at least one selected entry.
    pub fn tensor_names(&self) -> BTreeSet<String> {
        self.masks.keys().cloned().collect()
    }
}

/// Where the batches of one gradient pass fall in the progress of their
/// stage (a stage has one pass per tensor group).
#[derive(Debug, Clone, Copy)]
struct PassProgress {
    stage: &'static str,
    first_step: usize,
    total: usize,
}

/// Mean over batches of the gradient of the mean answer NLL, for the named
/// tensors only (the rest are constants during the pass). Each batch's
/// gradients are added to the running sums and freed tensor by tensor, and
/// its graph is dropped before the next batch, so the pass holds the sums,
/// one batch's gradients and one batch's activations.
fn mean_gradients(
    model: &Model,
    names: &BTreeSet<String>,
    examples: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    observer: &mut dyn Observer,
    pass: PassProgress,
) -> Result<BTreeMap<String, Tensor>> {
    let net = model.net_training_only(names)?;
    let vars: BTreeMap<String, Tensor> = model
        .vars()
        .into_iter()
        .filter(|(n, _)| names.contains(n))
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let mut acc: BTreeMap<String, Tensor> = BTreeMap::new();
    let chunks: Vec<&[Encoded]> = examples.chunks(batch_size.max(1)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        if observer.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, model.device())?;
        // The pass on the tensor thread pool (see `ops::in_pool`).
        let value = crate::ops::in_pool(|| -> Result<f32> {
            let loss = batch_mean_nll(&net.forward(&batch.input_ids)?, &batch)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Ok(value);
            }
            let mut grads = loss.backward()?;
            drop(loss);
            for (name, var) in &vars {
                if let Some(g) = grads.remove(var) {
                    let g = g.to_dtype(DType::F32)?;
                    let sum = match acc.remove(name) {
                        Some(a) => (a + g)?,
                        None => g,
                    };
                    acc.insert(name.clone(), sum);
                }
            }
            Ok(value)
        })?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "saliency loss",
                step: i,
                value,
            });
        }
        observer.progress(&Progress {
            stage: pass.stage,
            step: pass.first_step + i + 1,
            total: pass.total,
            losses: vec![("nll", value)],
        });
    }
    let n = chunks.len().max(1) as f64;
    acc.into_iter()
        .map(|(k, v)| Ok((k, (v / n)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(Error::from)
}

/// GRIN's score `|g_f| / (|g_r| + ε)` per weight of the named tensors (f32,
/// on the model's device). A tensor the loss does not reach scores zero.
///
/// The retain pass runs first and its mean is turned into the denominator
/// `|g_r| + ε` tensor by tensor; the forget pass follows, and each score
/// replaces its two inputs as it is made. So no more than two
/// gradient-sized sets are alive at once when the forget set fits in one
/// batch (the usual deletion request), three otherwise: the denominators,
/// the forget sums and one batch's gradients.
#[allow(clippy::too_many_arguments)]
pub fn gradient_ratio_scores(
    model: &Model,
    names: &BTreeSet<String>,
    forget: &[Encoded],
    retain: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    eps: f64,
    observer: &mut dyn Observer,
) -> Result<BTreeMap<String, Tensor>> {
    group_ratio_scores(model, names, forget, retain, pad_id, batch_size, eps, observer, (0, 1))
}

/// [`gradient_ratio_scores`] for group `group.0` of `group.1` (progress).
#[allow(clippy::too_many_arguments)]
fn group_ratio_scores(
    model: &Model,
    names: &BTreeSet<String>,
    forget: &[Encoded],
    retain: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    eps: f64,
    observer: &mut dyn Observer,
    (group, groups): (usize, usize),
) -> Result<BTreeMap<String, Tensor>> {
    let pass = |stage, examples: &[Encoded]| {
        let batches = examples.len().div_ceil(batch_size.max(1));
        PassProgress {
            stage,
            first_step: group * batches,
            total: groups * batches,
        }
    };
    let g_r = mean_gradients(
        model,
        names,
        retain,
        pad_id,
        batch_size,
        observer,
        pass("saliency retain", retain),
    )?;
    let mut denominators = BTreeMap::new();
    for (name, g) in g_r {
        denominators.insert(name, (g.abs()? + eps)?);
    }
    let mut g_f = mean_gradients(
        model,
        names,
        forget,
        pad_id,
        batch_size,
        observer,
        pass("saliency forget", forget),
    )?;
    let shapes: BTreeMap<String, Tensor> = model.tensors();
    let mut out = BTreeMap::new();
    for name in names {
        let score = match (g_f.remove(name), denominators.remove(name)) {
            (Some(f), Some(d)) => (f.abs()? / d)?,
            _ => shapes[name].zeros_like()?.to_dtype(DType::F32)?,
        };
        out.insert(name.clone(), score);
    }
    Ok(out)
}

/// Per-weight scores of the chosen kind for the filtered tensors (f32, CPU).
#[allow(clippy::too_many_arguments)]
fn scores(
    model: &Model,
    sel: &Selection,
    names: &BTreeSet<String>,
    forget: &[Encoded],
    retain: &[Encoded],
    pad_id: u32,
    seed: u64,
    observer: &mut dyn Observer,
) -> Result<BTreeMap<String, Vec<f32>>> {
    let weights: BTreeMap<String, Tensor> = model.tensors().into_iter().filter(|(n, _)| names.contains(n)).collect();
    let flat = |t: Tensor| -> Result<Vec<f32>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    };
    match sel.kind {
        SelectionKind::GradientRatio => {
            let retain_sample: Vec<Encoded> = match sel.max_retain_examples {
                Some(n) if n < retain.len() => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5a11e9c3);
                    let mut idx = sample(&mut rng, retain.len(), n).into_vec();
                    idx.sort_unstable();
                    idx.into_iter().map(|i| retain[i].clone()).collect()
                }
                _ => retain.to_vec(),
            };
            let groups = tensor_groups(&weights, sel.gradient_groups);
            let mut out = BTreeMap::new();
            for (g, group) in groups.iter().enumerate() {
                let scores = group_ratio_scores(
                    model,
                    group,
                    forget,
                    &retain_sample,
                    pad_id,
                    sel.batch_size,
                    sel.eps,
                    observer,
                    (g, groups.len()),
                )?;
                // Tensor by tensor, so each score tensor is freed once copied.
                for (n, s) in scores {
                    out.insert(n, flat(s)?);
                }
            }
            Ok(out)
        }
        SelectionKind::Magnitude => weights.iter().map(|(n, w)| Ok((n.clone(), flat(w.abs()?)?))).collect(),
        SelectionKind::Random => {
            // Uniform scores from a seeded generator, one stream per tensor
            // name so the result does not depend on iteration order.
            use rand::Rng;
            weights
                .iter()
                .map(|(n, w)| {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_seed(n));
                    Ok((n.clone(), (0..w.elem_count()).map(|_| rng.gen::<f32>()).collect()))
                })
                .collect()
        }
        SelectionKind::Dense => weights
            .iter()
            .map(|(n, w)| Ok((n.clone(), vec![1.0; w.elem_count()])))
            .collect(),
    }
}

/// The tensors cut into at most `n` groups of about equal element counts
/// (none empty), each a run of consecutive layers: embeddings, then layer
/// 0, 1, ..., then the rest (final norm, LM head). A group high in the
/// network needs only the top of the backward pass.
fn tensor_groups(tensors: &BTreeMap<String, Tensor>, n: usize) -> Vec<BTreeSet<String>> {
    let depth = |name: &str| match (module_kind(name), layer_index(name)) {
        ("embed_tokens", _) => 0,
        (_, Some(layer)) => layer + 1,
        _ => usize::MAX,
    };
    let mut order: Vec<(&String, usize)> = tensors.iter().map(|(name, t)| (name, t.elem_count())).collect();
    order.sort_by_key(|(name, _)| depth(name));
    let total: usize = order.iter().map(|(_, size)| size).sum();
    let n = n.clamp(1, order.len().max(1));
    let mut groups: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
    let mut before = 0;
    for (name, size) in order {
        // A new group once the ones so far hold their share of the total.
        let filled = groups.last().is_some_and(|g| !g.is_empty());
        if filled && groups.len() < n && before >= total * groups.len() / n {
            groups.push(BTreeSet::new());
        }
        groups.last_mut().expect("at least one group").insert(name.clone());
        before += size;
    }
    groups
}

/// A stable 64-bit seed from a tensor name (FNV-1a).
pub fn name_seed(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// A key whose unsigned order is `f32::total_cmp`'s order.
fn order_key(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

fn from_order_key(key: u32) -> f32 {
    f32::from_bits(if key & 0x8000_0000 != 0 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// The cut that keeps the `k` largest of `scores` (the concatenation of the
/// slices, in order): the `k`-th largest score's key, and how many entries
/// equal to it are kept (the first ones in order). `None` when `k` is 0.
///
/// A two-pass radix selection on [`order_key`] (the high 16 bits, then the
/// low 16 bits within the bucket that holds the `k`-th score): linear time,
/// and no copy of the scores, which for a large model are gigabytes.
fn top_k_cut(scores: &[&[f32]], k: usize) -> Option<(u32, usize)> {
    let n: usize = scores.iter().map(|s| s.len()).sum();
    if k == 0 || n == 0 {
        return None;
    }
    let k = k.min(n);
    // Finds the bucket, from the top, where the running count reaches `need`;
    // returns it and how many entries lie in higher buckets.
    let descend = |hist: &[usize], need: usize| -> (usize, usize) {
        let mut above = 0;
        for b in (0..hist.len()).rev() {
            if above + hist[b] >= need {
                return (b, above);
            }
            above += hist[b];
        }
        unreachable!("the histogram holds at least `need` entries")
    };
    let mut hist = vec![0usize; 1 << 16];
    for &x in scores.iter().flat_map(|s| s.iter()) {
        hist[(order_key(x) >> 16) as usize] += 1;
    }
    let (high, above_high) = descend(&hist, k);
    hist.iter_mut().for_each(|h| *h = 0);
    for &x in scores.iter().flat_map(|s| s.iter()) {
        let key = order_key(x);
        if (key >> 16) as usize == high {
            hist[(key & 0xffff) as usize] += 1;
        }
    }
    let (low, above_low) = descend(&hist, k - above_high);
    let greater = above_high + above_low;
    Some((((high as u32) << 16) | low as u32, k - greater))
}

/// Masks (1 = selected) that keep the `k` largest scores, ties at the cut
/// going to the earlier entries in order; and the lowest kept score.
fn top_k_masks(scores: &[&[f32]], k: usize) -> (Vec<Vec<u8>>, Option<f32>) {
    let Some((cut, mut ties)) = top_k_cut(scores, k) else {
        return (scores.iter().map(|s| vec![0; s.len()]).collect(), None);
    };
    let masks = scores
        .iter()
        .map(|s| {
            s.iter()
                .map(|&x| {
                    let key = order_key(x);
                    let keep = key > cut || (key == cut && ties > 0);
                    if key == cut && keep {
                        ties -= 1;
                    }
                    keep as u8
                })
                .collect()
        })
        .collect();
    (masks, Some(from_order_key(cut)))
}

/// Computes the masks. For the gradient ratio this runs two gradient passes
/// (forget, then retain); the other kinds need no data.
#[allow(clippy::too_many_arguments)]
pub fn select(
    model: &Model,
    sel: &Selection,
    forget: &[Encoded],
    retain: &[Encoded],
    pad_id: u32,
    seed: u64,
    observer: &mut dyn Observer,
) -> Result<Masks> {
    sel.validate()?;
    let names: BTreeSet<String> = model
        .vars()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| sel.tensors.includes(n))
        .collect();
    if names.is_empty() {
        return Err(Error::InvalidArgument {
            field: "selection.tensors",
            message: "no tensor of this model matches the filter".into(),
        });
    }
    let scores = scores(model, sel, &names, forget, retain, pad_id, seed, observer)?;
    if let Some(n) = scores
        .iter()
        .find_map(|(n, s)| s.iter().any(|x| x.is_nan()).then_some(n))
    {
        tracing::warn!(tensor = %n, "NaN saliency score");
        return Err(Error::NonFinite {
            what: "saliency score",
            step: 0,
            value: f32::NAN,
        });
    }
    let (names, scores): (Vec<String>, Vec<Vec<f32>>) = scores.into_iter().unzip();
    let (chosen, threshold) = match sel.scope {
        Scope::Global => {
            let all: Vec<&[f32]> = scores.iter().map(|s| s.as_slice()).collect();
            let n: usize = all.iter().map(|s| s.len()).sum();
            top_k_masks(&all, (sel.ratio * n as f64).round() as usize)
        }
        Scope::PerTensor => {
            let mut chosen = Vec::with_capacity(scores.len());
            let mut threshold: Option<f32> = None;
            for s in &scores {
                let (mut mask, th) = top_k_masks(&[s], (sel.ratio * s.len() as f64).round() as usize);
                chosen.push(mask.pop().expect("one slice in, one mask out"));
                if let Some(th) = th {
                    threshold = Some(threshold.map_or(th, |x| x.min(th)));
                }
            }
            (chosen, threshold)
        }
    };
    drop(scores);
    let shapes: BTreeMap<String, Vec<usize>> = model.vars().into_iter().map(|(n, v)| (n, v.dims().to_vec())).collect();
    let mut masks = BTreeMap::new();
    let mut by_kind: BTreeMap<String, Density> = BTreeMap::new();
    let mut by_layer: BTreeMap<usize, Density> = BTreeMap::new();
    let mut selected = 0;
    let mut scored = 0;
    for (name, c) in names.iter().zip(chosen) {
        let n_sel = c.iter().filter(|&&x| x != 0).count();
        selected += n_sel;
        scored += c.len();
        let add = |d: &mut Density| {
            d.selected += n_sel;
            d.total += c.len();
        };
        add(by_kind.entry(module_kind(name).to_string()).or_insert(Density {
            selected: 0,
            total: 0,
            fraction: 0.0,
        }));
        if let Some(l) = layer_index(name) {
            add(by_layer.entry(l).or_insert(Density {
                selected: 0,
                total: 0,
                fraction: 0.0,
            }));
        }
        if n_sel > 0 {
            let mask = Tensor::from_vec(c, shapes[name].as_slice(), &Device::Cpu)?.to_device(model.device())?;
            masks.insert(name.clone(), mask);
        }
    }
    for d in by_kind.values_mut().chain(by_layer.values_mut()) {
        d.fraction = d.selected as f64 / d.total.max(1) as f64;
    }
    Ok(Masks {
        masks,
        stats: MaskStats {
            selected,
            scored,
            fraction: selected as f64 / scored.max(1) as f64,
            by_kind,
            by_layer,
            threshold: if sel.kind == SelectionKind::GradientRatio {
                threshold
            } else {
                None
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The selection by full sort: descending score (`total_cmp`), ties by
    /// ascending (slice, position).
    fn sorted_top_k(scores: &[&[f32]], k: usize) -> (Vec<Vec<u8>>, Option<f32>) {
        let mut all: Vec<(usize, usize, f32)> = scores
            .iter()
            .enumerate()
            .flat_map(|(t, s)| s.iter().enumerate().map(move |(i, &x)| (t, i, x)))
            .collect();
        all.sort_by(|a, b| b.2.total_cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        let mut masks: Vec<Vec<u8>> = scores.iter().map(|s| vec![0; s.len()]).collect();
        for &(t, i, _) in &all[..k] {
            masks[t][i] = 1;
        }
        (masks, k.checked_sub(1).map(|j| all[j].2))
    }

    #[test]
    fn order_key_orders_as_total_cmp_and_round_trips() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            1.0,
            2.5e30,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} < {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn radix_cut_selects_as_a_full_sort_does() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for case in 0..200 {
            // Few distinct values (many ties), or spread values of both
            // signs, over one to four slices, some empty.
            let distinct = [3, 50, 0][case % 3];
            let slices: Vec<Vec<f32>> = (0..rng.gen_range(1..5))
                .map(|_| {
                    (0..rng.gen_range(0..300))
                        .map(|_| match distinct {
                            0 => rng.gen_range(-1e3f32..1e3) * rng.gen_range(0f32..1.0).powi(8),
                            d => (rng.gen_range(0..d) as f32) * 0.25,
                        })
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = slices.iter().map(|s| s.as_slice()).collect();
            let n: usize = refs.iter().map(|s| s.len()).sum();
            for k in [0, 1, n / 20, n / 2, n.saturating_sub(1), n] {
                let (got, th) = top_k_masks(&refs, k);
                let (want, want_th) = sorted_top_k(&refs, k);
                assert_eq!(got, want, "case {case}, k {k}");
                assert_eq!(th.map(f32::to_bits), want_th.map(f32::to_bits), "case {case}, k {k}");
                let kept: usize = got.iter().flatten().map(|&m| m as usize).sum();
                assert_eq!(kept, k);
            }
        }
    }
}
