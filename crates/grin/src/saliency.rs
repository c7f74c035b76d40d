//! Stage 1 of GRIN: gradient-ratio saliency and the weight masks it selects.
//!
//! `g_f` and `g_r` are the gradients of the mean answer NLL over the forget
//! and the retain set (each the mean of per-batch gradients, accumulated in
//! place; each batch's graph is dropped before the next). A weight's score is
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

/// Mean over batches of the gradient of the mean answer NLL, for the named
/// tensors only (the rest are constants during the pass). Each batch's graph
/// and gradients are freed before the next batch.
pub fn mean_gradients(
    model: &Model,
    names: &BTreeSet<String>,
    examples: &[Encoded],
    pad_id: u32,
    batch_size: usize,
    observer: &mut dyn Observer,
    stage: &'static str,
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
    let total = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        if observer.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, model.device())?;
        let loss = batch_mean_nll(&net.forward(&batch.input_ids)?, &batch)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                what: "saliency loss",
                step: i,
                value,
            });
        }
        let grads = loss.backward()?;
        for (name, var) in &vars {
            if let Some(g) = grads.get(var) {
                let g = g.to_dtype(DType::F32)?;
                let sum = match acc.remove(name) {
                    Some(a) => (a + g)?,
                    None => g,
                };
                acc.insert(name.clone(), sum);
            }
        }
        drop(grads);
        observer.progress(&Progress {
            stage,
            step: i + 1,
            total,
            losses: vec![("nll", value)],
        });
    }
    let n = total.max(1) as f64;
    acc.into_iter()
        .map(|(k, v)| Ok((k, (v / n)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(Error::from)
}

/// GRIN's score `|g_f| / (|g_r| + ε)` per weight of the named tensors (f32,
/// on the model's device). A tensor the loss does not reach scores zero.
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
    let g_f = mean_gradients(model, names, forget, pad_id, batch_size, observer, "saliency forget")?;
    let g_r = mean_gradients(model, names, retain, pad_id, batch_size, observer, "saliency retain")?;
    let shapes: BTreeMap<String, Tensor> = model.tensors();
    let mut out = BTreeMap::new();
    for name in names {
        let score = match (g_f.get(name), g_r.get(name)) {
            (Some(f), Some(r)) => (f.abs()? / (r.abs()? + eps)?)?,
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
    let flat = |t: &Tensor| -> Result<Vec<f32>> {
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
            let scores = gradient_ratio_scores(
                model,
                names,
                forget,
                &retain_sample,
                pad_id,
                sel.batch_size,
                sel.eps,
                observer,
            )?;
            scores.iter().map(|(n, s)| Ok((n.clone(), flat(s)?))).collect()
        }
        SelectionKind::Magnitude => weights.iter().map(|(n, w)| Ok((n.clone(), flat(&w.abs()?)?))).collect(),
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

/// A stable 64-bit seed from a tensor name (FNV-1a).
pub fn name_seed(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Indices of the `k` largest scores; ties at the threshold go to the lower
/// index. Returns the indices and the threshold score.
fn top_k(scores: &[(usize, usize, f32)], k: usize) -> (Vec<(usize, usize)>, Option<f32>) {
    if k == 0 {
        return (vec![], None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Descending score, then ascending (tensor, position): deterministic.
    let cmp = |a: &usize, b: &usize| {
        let (ta, ia, sa) = scores[*a];
        let (tb, ib, sb) = scores[*b];
        sb.total_cmp(&sa).then((ta, ia).cmp(&(tb, ib)))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    let threshold = order.iter().map(|&i| scores[i].2).min_by(|a, b| a.total_cmp(b));
    (
        order.into_iter().map(|i| (scores[i].0, scores[i].1)).collect(),
        threshold,
    )
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
    let names: Vec<String> = scores.keys().cloned().collect();
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
    let sizes: Vec<usize> = names.iter().map(|n| scores[n].len()).collect();
    let mut chosen: Vec<Vec<bool>> = sizes.iter().map(|&n| vec![false; n]).collect();
    let mut threshold = None;
    match sel.scope {
        Scope::Global => {
            let all: Vec<(usize, usize, f32)> = names
                .iter()
                .enumerate()
                .flat_map(|(t, n)| scores[n].iter().enumerate().map(move |(i, &s)| (t, i, s)))
                .collect();
            let k = (sel.ratio * all.len() as f64).round() as usize;
            let (picked, th) = top_k(&all, k);
            threshold = th;
            for (t, i) in picked {
                chosen[t][i] = true;
            }
        }
        Scope::PerTensor => {
            for (t, n) in names.iter().enumerate() {
                let s: Vec<(usize, usize, f32)> = scores[n].iter().enumerate().map(|(i, &x)| (t, i, x)).collect();
                let k = (sel.ratio * s.len() as f64).round() as usize;
                let (picked, th) = top_k(&s, k);
                if let Some(th) = th {
                    threshold = Some(threshold.map_or(th, |x: f32| x.min(th)));
                }
                for (_, i) in picked {
                    chosen[t][i] = true;
                }
            }
        }
    }
    let shapes: BTreeMap<String, Vec<usize>> = model.vars().into_iter().map(|(n, v)| (n, v.dims().to_vec())).collect();
    let mut masks = BTreeMap::new();
    let mut by_kind: BTreeMap<String, Density> = BTreeMap::new();
    let mut by_layer: BTreeMap<usize, Density> = BTreeMap::new();
    let mut selected = 0;
    let mut scored = 0;
    for (t, name) in names.iter().enumerate() {
        let c = &chosen[t];
        let n_sel = c.iter().filter(|&&x| x).count();
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
            let bytes: Vec<u8> = c.iter().map(|&x| x as u8).collect();
            let mask = Tensor::from_vec(bytes, shapes[name].as_slice(), &Device::Cpu)?.to_device(model.device())?;
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
