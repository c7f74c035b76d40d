//! Losses, the optimiser and the supervised fine-tuning loop.
//!
//! [`token_nll`] is the one cross-entropy every stage uses (answer tokens
//! only, through the batch's target mask). [`AdamW`] is PyTorch's decoupled
//! AdamW with warm-up, linear decay and global gradient-norm clipping, written
//! here rather than taken from candle-nn because GRIN needs *masked* updates:
//! an update is applied through `where(mask, new, old)`, so every unmasked
//! entry keeps its exact bits.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var, D};

use crate::data::{collate, Batch, Encoded};
use crate::error::Error;
use crate::model::{accumulation_dtype, Model};
use crate::progress::{Observer, Progress};

/// Per-position negative log-likelihood `[batch, seq]` (f32) of
/// `batch.targets` under `logits`, zero where the target mask is zero.
pub fn token_nll(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let dtype = accumulation_dtype(logits.dtype());
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(dtype)?, D::Minus1)?;
    let picked = logp.gather(&batch.targets.unsqueeze(2)?, 2)?.squeeze(2)?;
    picked.neg()? * batch.target_mask.to_dtype(dtype)?
}

/// Mean NLL over each row's target tokens: `[batch]`.
pub fn item_mean_nll(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let nll = token_nll(logits, batch)?;
    let counts = batch.target_mask.sum(1)?.clamp(1f32, f32::MAX)?.to_dtype(nll.dtype())?;
    nll.sum(1)? / counts
}

/// Mean NLL over all target tokens of the batch (the usual language-model
/// loss; rows with more answer tokens weigh more).
pub fn batch_mean_nll(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let nll = token_nll(logits, batch)?;
    let count = batch
        .target_mask
        .sum_all()?
        .clamp(1f32, f32::MAX)?
        .to_dtype(nll.dtype())?;
    nll.sum_all()? / count
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// Constant after warm-up.
    Constant,
    /// Linear decay to zero at the last step (transformers' default).
    #[default]
    Linear,
}

/// AdamW hyper-parameters (PyTorch defaults where they exist).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay; not applied to 1-D tensors (norms, biases).
    pub weight_decay: f64,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: usize,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 0,
            schedule: Schedule::Linear,
            max_grad_norm: Some(1.0),
        }
    }
}

impl AdamWConfig {
    /// The learning rate at (0-based) `step` of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Linear => {
                let left = total.saturating_sub(step) as f64;
                let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
                self.lr * (left / span).clamp(0.0, 1.0)
            }
        }
    }

    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), Error> {
        let bad = |message: String| Error::InvalidArgument {
            field: "optimizer",
            message,
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(bad(format!("lr must be positive, got {}", self.lr)));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err(bad("betas must be in [0, 1)".into()));
        }
        if self.weight_decay < 0.0 || self.eps <= 0.0 {
            return Err(bad("weight_decay must be >= 0 and eps > 0".into()));
        }
        if self
            .max_grad_norm
            .is_some_and(|n| n.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
        {
            return Err(bad("max_grad_norm must be positive".into()));
        }
        Ok(())
    }
}

struct Slot {
    var: Var,
    /// 1.0 where the entry may change (same shape and dtype as the var);
    /// `None`: every entry may change.
    mask: Option<Tensor>,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// AdamW over a chosen set of variables, optionally masked per entry.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    step: usize,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("cfg", &self.cfg)
            .field("params", &self.slots.len())
            .field("step", &self.step)
            .finish()
    }
}

impl AdamW {
    /// An optimiser over `params`: each a variable and an optional boolean
    /// mask tensor (u8 or float; non-zero = trainable entry). Moments are
    /// allocated (in f32, or f64 for f64 weights) only for the variables given.
    pub fn new(params: Vec<(Var, Option<Tensor>)>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::with_capacity(params.len());
        for (var, mask) in params {
            let zeros = Tensor::zeros(var.shape(), accumulation_dtype(var.dtype()), var.device())?;
            let mask = match mask {
                Some(m) => Some(m.ne(0f64)?.to_device(var.device())?),
                None => None,
            };
            slots.push(Slot {
                decay: var.rank() > 1,
                var,
                mask,
                m: zeros.clone(),
                v: zeros,
            });
        }
        Ok(AdamW { cfg, slots, step: 0 })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Global L2 norm of the (masked) gradients of the optimised variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                let g = self.masked(s, g)?;
                sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    fn masked(&self, s: &Slot, g: &Tensor) -> Result<Tensor> {
        let g = g.to_dtype(accumulation_dtype(s.var.dtype()))?;
        match &s.mask {
            Some(m) => m.where_cond(&g, &g.zeros_like()?),
            None => Ok(g),
        }
    }

    /// One update at learning rate `lr`. Returns the gradient norm before
    /// clipping. Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let clip = match self.cfg.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = (self.masked(s, g)? * clip)?;
            let m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let w = s.var.as_tensor().to_dtype(accumulation_dtype(s.var.dtype()))?;
            let w_decayed = if s.decay && c.weight_decay > 0.0 {
                (&w * (1.0 - lr * c.weight_decay))?
            } else {
                w.clone()
            };
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let new = (w_decayed - (update * lr)?)?;
            let dtype = s.var.dtype();
            let new = match &s.mask {
                // Select rather than add a zero update: unmasked entries keep
                // their exact bits, whatever the rounding of `w - 0`.
                Some(mask) => mask.where_cond(&new.to_dtype(dtype)?, s.var.as_tensor())?,
                None => new.to_dtype(dtype)?,
            };
            let slot = &mut self.slots[i];
            slot.var.set(&new)?;
            slot.m = m;
            slot.v = v;
        }
        Ok(norm)
    }
}

/// Supervised fine-tuning settings (the first step of the TOFU protocol).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Warm-up as a fraction of all steps.
    pub warmup_ratio: f64,
    pub optimizer: AdamWConfig,
    /// Shuffle seed (the order of examples in each epoch).
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            epochs: 5,
            batch_size: 16,
            warmup_ratio: 0.05,
            optimizer: AdamWConfig {
                lr: 1e-5,
                ..AdamWConfig::default()
            },
            seed: 0,
        }
    }
}

/// What a fine-tune did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FinetuneReport {
    /// Mean training loss of each epoch.
    pub epoch_losses: Vec<f32>,
    pub steps: usize,
}

/// Fine-tunes every weight of `model` on `examples` (answer-only loss).
/// Stops with [`Error::NonFinite`] on a NaN/Inf loss and
/// [`Error::Cancelled`] when the observer asks; the caller then writes
/// nothing.
pub fn finetune(
    model: &Model,
    examples: &[Encoded],
    pad_id: u32,
    cfg: &FinetuneConfig,
    observer: &mut dyn Observer,
) -> std::result::Result<FinetuneReport, Error> {
    cfg.optimizer.validate()?;
    if examples.is_empty() {
        return Err(Error::InvalidArgument {
            field: "data",
            message: "no training examples".into(),
        });
    }
    if cfg.batch_size == 0 || cfg.epochs == 0 {
        return Err(Error::InvalidArgument {
            field: "finetune",
            message: "epochs and batch_size must be positive".into(),
        });
    }
    let per_epoch = examples.len().div_ceil(cfg.batch_size);
    let total = per_epoch * cfg.epochs;
    let mut opt_cfg = cfg.optimizer.clone();
    opt_cfg.warmup_steps = (cfg.warmup_ratio * total as f64).round() as usize;
    let params = model.vars().into_iter().map(|(_, v)| (v, None)).collect();
    let mut opt = AdamW::new(params, opt_cfg.clone())?;
    let mut report = FinetuneReport {
        epoch_losses: vec![],
        steps: 0,
    };
    let device = model.device().clone();
    for epoch in 0..cfg.epochs {
        let order = crate::data::batches(examples, cfg.batch_size, Some(cfg.seed.wrapping_add(epoch as u64)));
        let mut sum = 0f64;
        for chunk in order {
            if observer.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let refs: Vec<&Encoded> = chunk.iter().map(|&i| &examples[i]).collect();
            let batch = collate(&refs, pad_id, &device)?;
            let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: "loss",
                    step: report.steps,
                    value,
                });
            }
            let grads = loss.backward()?;
            opt.step(&grads, opt_cfg.lr_at(report.steps, total))?;
            report.steps += 1;
            sum += value as f64;
            observer.progress(&Progress {
                stage: "finetune",
                step: report.steps,
                total,
                losses: vec![("loss", value)],
            });
        }
        report.epoch_losses.push((sum / per_epoch as f64) as f32);
    }
    Ok(report)
}
