//! Losses, the optimiser and the supervised fine-tuning loop.
//!
//! [`token_nll`] is the one cross-entropy every stage uses (answer tokens
//! only, through the batch's target mask). [`AdamW`] is PyTorch's decoupled
//! AdamW with warm-up, linear decay and global gradient-norm clipping, written
//! here rather than taken from candle-nn because GRIN needs *masked* updates:
//! an update is applied through `where(mask, new, old)`, so every unmasked
//! entry keeps its exact bits.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

use crate::data::{collate, Batch, Encoded};
use crate::error::Error;
use crate::model::{accumulation_dtype, Model};
use crate::progress::{Observer, Progress};

/// Per-position negative log-likelihood `[batch, seq]` (f32) of
/// `batch.targets` under `logits`, zero where the target mask is zero.
pub fn token_nll(logits: &Tensor, batch: &Batch) -> Result<Tensor> {
    let dtype = accumulation_dtype(logits.dtype());
    let nll = crate::ops::cross_entropy(&logits.to_dtype(dtype)?, &batch.targets)?;
    nll * batch.target_mask.to_dtype(dtype)?
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

/// The AdamW moments of one variable, in the accumulation dtype (f32, or
/// f64 for f64 weights), one entry per trainable element.
enum Moments {
    F32 {
        m: Vec<f32>,
        v: Vec<f32>,
    },
    F64 {
        m: Vec<f64>,
        v: Vec<f64>,
    },
    /// Non-CPU devices: whole-tensor moments, updated with tensor ops.
    Device {
        m: Tensor,
        v: Tensor,
    },
}

struct Slot {
    var: Var,
    /// Flat indices (ascending) of the entries that may change; `None`:
    /// every entry may change.
    index: Option<Vec<u32>>,
    /// Non-CPU devices only: the mask as a boolean tensor.
    device_mask: Option<Tensor>,
    decay: bool,
    moments: Moments,
}

/// AdamW over a chosen set of variables, optionally masked per entry.
///
/// On CPU the update runs in place in one pass over the trainable entries,
/// and the optimiser holds state only for them: their flat indices (4
/// bytes) and the two moments (4 bytes each in f32), so a 5 % mask costs
/// 0.6 bytes per weight rather than the 8 of dense moments. Other devices
/// keep dense moment tensors.
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

/// The scalars of one update, shared by every entry.
#[derive(Clone, Copy)]
struct Coeffs {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    bc1: f64,
    bc2: f64,
    clip: f64,
    decay: f64,
}

/// Element types of weights and their accumulation type.
trait Param: Copy + Send + Sync {
    type Acc: Copy + Send + Sync + Default;
    fn load(self) -> Self::Acc;
    fn store(a: Self::Acc) -> Self;
    fn square(a: Self::Acc) -> f64;
}

macro_rules! param_f32 {
    ($t:ty, $load:expr, $store:expr) => {
        impl Param for $t {
            type Acc = f32;
            #[inline(always)]
            fn load(self) -> f32 {
                $load(self)
            }
            #[inline(always)]
            fn store(a: f32) -> Self {
                $store(a)
            }
            #[inline(always)]
            fn square(a: f32) -> f64 {
                (a * a) as f64
            }
        }
    };
}
param_f32!(f32, |x: f32| x, |a: f32| a);
param_f32!(half::bf16, |x: half::bf16| x.to_f32(), half::bf16::from_f32);
param_f32!(half::f16, |x: half::f16| x.to_f32(), half::f16::from_f32);

impl Param for f64 {
    type Acc = f64;
    #[inline(always)]
    fn load(self) -> f64 {
        self
    }
    #[inline(always)]
    fn store(a: f64) -> Self {
        a
    }
    #[inline(always)]
    fn square(a: f64) -> f64 {
        a * a
    }
}

/// Arithmetic of the accumulation types.
trait Acc: Copy + Send + Sync {
    fn update(w: Self, g: Self, m: &mut Self, v: &mut Self, c: &Coeffs) -> Self;
}

macro_rules! acc_impl {
    ($t:ty) => {
        impl Acc for $t {
            /// PyTorch's AdamW, in this precision: decoupled decay, then the
            /// bias-corrected step.
            #[inline(always)]
            fn update(w: Self, g: Self, m: &mut Self, v: &mut Self, c: &Coeffs) -> Self {
                let g = g * c.clip as $t;
                *m = *m * c.beta1 as $t + g * (1.0 - c.beta1) as $t;
                *v = *v * c.beta2 as $t + g * g * (1.0 - c.beta2) as $t;
                let w = w * c.decay as $t;
                let update = (*m / c.bc1 as $t) / ((*v / c.bc2 as $t).sqrt() + c.eps as $t);
                w - update * c.lr as $t
            }
        }
    };
}
acc_impl!(f32);
acc_impl!(f64);

/// Below this many trainable entries an update stays on one thread.
const PAR_MIN_UPDATE: usize = 64 * 1024;

/// Updates `w` in place at `index` (every entry when `None`) from the
/// gradient `g`; `m`, `v` have one entry per updated element.
fn update_entries<P: Param>(w: &mut [P], g: &[P], index: Option<&[u32]>, m: &mut [P::Acc], v: &mut [P::Acc], c: &Coeffs)
where
    P::Acc: Acc,
{
    let n = m.len();
    let threads = candle_core::utils::get_num_threads();
    let parts = if n < PAR_MIN_UPDATE || threads <= 1 {
        1
    } else {
        (threads * 4).min(n / 4096).max(1)
    };
    // Cut the moments into `parts` runs and the weights at the matching
    // flat positions, so every block owns disjoint slices.
    let mut blocks = Vec::with_capacity(parts);
    let (mut w_rest, mut m_rest, mut v_rest) = (w, m, v);
    let (mut w_base, mut k_base) = (0usize, 0usize);
    for p in 0..parts {
        let k_end = if p + 1 == parts { n } else { n * (p + 1) / parts };
        let w_end = match index {
            Some(ix) if k_end < n => ix[k_end] as usize,
            Some(_) => w_base + w_rest.len(),
            None => k_end,
        };
        let (wa, wb) = std::mem::take(&mut w_rest).split_at_mut(w_end - w_base);
        let (ma, mb) = std::mem::take(&mut m_rest).split_at_mut(k_end - k_base);
        let (va, vb) = std::mem::take(&mut v_rest).split_at_mut(k_end - k_base);
        blocks.push((wa, w_base, ma, va, k_base));
        (w_rest, m_rest, v_rest) = (wb, mb, vb);
        (w_base, k_base) = (w_end, k_end);
    }
    crate::ops::par_each(blocks, |(w, w0, m, v, k0)| match index {
        Some(ix) => {
            for (j, (m, v)) in m.iter_mut().zip(v.iter_mut()).enumerate() {
                let i = ix[k0 + j] as usize;
                let new = P::Acc::update(w[i - w0].load(), g[i].load(), m, v, c);
                w[i - w0] = P::store(new);
            }
        }
        None => {
            for (j, ((w, m), v)) in w.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).enumerate() {
                *w = P::store(P::Acc::update(w.load(), g[w0 + j].load(), m, v, c));
            }
        }
    });
}

/// The in-place update of one variable, applied with
/// [`Tensor::inplace_op2`] (weight ← update(weight, gradient)).
struct InplaceAdamW<'a> {
    index: Option<&'a [u32]>,
    moments: std::sync::Mutex<&'a mut Moments>,
    coeffs: Coeffs,
}

impl candle_core::InplaceOp2 for InplaceAdamW<'_> {
    fn name(&self) -> &'static str {
        "grin-adamw"
    }

    fn cpu_fwd(
        &self,
        w: &mut candle_core::CpuStorage,
        wl: &candle_core::Layout,
        g: &candle_core::CpuStorage,
        gl: &candle_core::Layout,
    ) -> Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::CpuStorage as S;
        let (Some((w0, w1)), Some((g0, g1))) = (wl.contiguous_offsets(), gl.contiguous_offsets()) else {
            candle_core::bail!("adamw: weight and gradient must be contiguous");
        };
        let mut guard = self.moments.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = &self.coeffs;
        match (w, g, &mut **guard) {
            (S::F32(w), S::F32(g), Moments::F32 { m, v }) => {
                update_entries(&mut w[w0..w1], &g[g0..g1], self.index, m, v, c)
            }
            (S::BF16(w), S::BF16(g), Moments::F32 { m, v }) => {
                update_entries(&mut w[w0..w1], &g[g0..g1], self.index, m, v, c)
            }
            (S::F16(w), S::F16(g), Moments::F32 { m, v }) => {
                update_entries(&mut w[w0..w1], &g[g0..g1], self.index, m, v, c)
            }
            (S::F64(w), S::F64(g), Moments::F64 { m, v }) => {
                update_entries(&mut w[w0..w1], &g[g0..g1], self.index, m, v, c)
            }
            (w, g, _) => candle_core::bail!(
                "adamw: unsupported weight/gradient dtypes {:?}/{:?}",
                w.dtype(),
                g.dtype()
            ),
        }
        Ok(())
    }
}

/// Sum of squares of `g` at `index` (or everywhere), in f64.
fn masked_square_sum(g: &Tensor, index: Option<&[u32]>) -> Result<f64> {
    fn go<P: Param>(g: &[P], index: Option<&[u32]>) -> f64 {
        match index {
            Some(ix) => ix.iter().map(|&i| P::square(g[i as usize].load())).sum(),
            None => {
                let mut acc = [0f64; 4];
                let chunks = g.chunks_exact(4);
                let rest = chunks.remainder();
                for c in chunks {
                    for k in 0..4 {
                        acc[k] += P::square(c[k].load());
                    }
                }
                acc.iter().sum::<f64>() + rest.iter().map(|x| P::square(x.load())).sum::<f64>()
            }
        }
    }
    use candle_core::{CpuStorage as S, Storage};
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    let Some((a, b)) = layout.contiguous_offsets() else {
        candle_core::bail!("adamw: non-contiguous gradient");
    };
    Ok(match &*storage {
        Storage::Cpu(S::F32(v)) => go(&v[a..b], index),
        Storage::Cpu(S::F64(v)) => go(&v[a..b], index),
        Storage::Cpu(S::BF16(v)) => go(&v[a..b], index),
        Storage::Cpu(S::F16(v)) => go(&v[a..b], index),
        _ => candle_core::bail!("adamw: unsupported gradient storage"),
    })
}

impl AdamW {
    /// An optimiser over `params`: each a variable and an optional boolean
    /// mask tensor (u8 or float; non-zero = trainable entry). State is
    /// allocated (in f32, or f64 for f64 weights) only for the variables
    /// given and, on CPU, only for their trainable entries.
    pub fn new(params: Vec<(Var, Option<Tensor>)>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::with_capacity(params.len());
        for (var, mask) in params {
            let acc = accumulation_dtype(var.dtype());
            let cpu = var.device().is_cpu();
            let index = match (&mask, cpu) {
                (Some(m), true) => {
                    let flags: Vec<u8> = m.ne(0f64)?.flatten_all()?.to_vec1()?;
                    if flags.len() != var.elem_count() {
                        candle_core::bail!(
                            "adamw: mask of {} entries for a tensor of {}",
                            flags.len(),
                            var.elem_count()
                        );
                    }
                    Some(
                        flags
                            .iter()
                            .enumerate()
                            .filter(|(_, &f)| f != 0)
                            .map(|(i, _)| i as u32)
                            .collect::<Vec<u32>>(),
                    )
                }
                _ => None,
            };
            let n = index.as_ref().map_or(var.elem_count(), |ix| ix.len());
            let moments = match (cpu, acc) {
                (true, DType::F64) => Moments::F64 {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                },
                (true, _) => Moments::F32 {
                    m: vec![0.0; n],
                    v: vec![0.0; n],
                },
                (false, _) => {
                    let zeros = Tensor::zeros(var.shape(), acc, var.device())?;
                    Moments::Device {
                        m: zeros.clone(),
                        v: zeros,
                    }
                }
            };
            let device_mask = match (mask, cpu) {
                (Some(m), false) => Some(m.ne(0f64)?.to_device(var.device())?),
                _ => None,
            };
            slots.push(Slot {
                decay: var.rank() > 1,
                var,
                index,
                device_mask,
                moments,
            });
        }
        Ok(AdamW { cfg, slots, step: 0 })
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Bytes of optimiser state (moments, indices and device masks).
    pub fn state_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                let moments = match &s.moments {
                    Moments::F32 { m, v } => 4 * (m.len() + v.len()),
                    Moments::F64 { m, v } => 8 * (m.len() + v.len()),
                    Moments::Device { m, v } => (m.elem_count() + v.elem_count()) * m.dtype().size_in_bytes(),
                };
                moments
                    + s.index.as_ref().map_or(0, |ix| 4 * ix.len())
                    + s.device_mask.as_ref().map_or(0, |m| m.elem_count())
            })
            .sum()
    }

    /// Global L2 norm of the (masked) gradients of the optimised variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                sq += match &s.moments {
                    Moments::Device { .. } => {
                        let g = self.masked(s, g)?;
                        g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?
                    }
                    _ => masked_square_sum(g, s.index.as_deref())?,
                };
            }
        }
        Ok(sq.sqrt())
    }

    fn masked(&self, s: &Slot, g: &Tensor) -> Result<Tensor> {
        let g = g.to_dtype(accumulation_dtype(s.var.dtype()))?;
        match &s.device_mask {
            Some(m) => m.where_cond(&g, &g.zeros_like()?),
            None => Ok(g),
        }
    }

    /// One update at learning rate `lr`. Returns the gradient norm before
    /// clipping. Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let coeffs = self.begin_step(norm, lr);
        for i in 0..self.slots.len() {
            if let Some(g) = grads.get(self.slots[i].var.as_tensor()) {
                let g = g.clone();
                self.apply(i, &g, &coeffs)?;
            }
        }
        Ok(norm)
    }

    /// [`AdamW::step`] that removes each variable's gradient from `grads`
    /// as soon as it is applied, so gradients are freed tensor by tensor.
    pub fn step_consuming(&mut self, grads: &mut GradStore, lr: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let coeffs = self.begin_step(norm, lr);
        for i in 0..self.slots.len() {
            if let Some(g) = grads.remove(self.slots[i].var.as_tensor()) {
                self.apply(i, &g, &coeffs)?;
            }
        }
        Ok(norm)
    }

    fn begin_step(&mut self, norm: f64, lr: f64) -> Coeffs {
        let clip = match self.cfg.max_grad_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let c = &self.cfg;
        Coeffs {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            bc1: 1.0 - c.beta1.powi(self.step as i32),
            bc2: 1.0 - c.beta2.powi(self.step as i32),
            clip,
            decay: 1.0 - lr * c.weight_decay,
        }
    }

    fn apply(&mut self, i: usize, g: &Tensor, coeffs: &Coeffs) -> Result<()> {
        let mut c = *coeffs;
        if !(self.slots[i].decay && self.cfg.weight_decay > 0.0) {
            c.decay = 1.0;
        }
        if let Moments::Device { .. } = self.slots[i].moments {
            return self.apply_tensors(i, g, &c);
        }
        let slot = &mut self.slots[i];
        let g = g.contiguous()?;
        let op = InplaceAdamW {
            index: slot.index.as_deref(),
            moments: std::sync::Mutex::new(&mut slot.moments),
            coeffs: c,
        };
        slot.var.as_tensor().inplace_op2(&g, &op)
    }

    /// The update with tensor ops, for devices without the in-place kernel.
    fn apply_tensors(&mut self, i: usize, g: &Tensor, c: &Coeffs) -> Result<()> {
        let s = &self.slots[i];
        let Moments::Device { m, v } = &s.moments else {
            candle_core::bail!("adamw: not a device slot");
        };
        let g = (self.masked(s, g)? * c.clip)?;
        let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
        let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
        let w = s.var.as_tensor().to_dtype(accumulation_dtype(s.var.dtype()))?;
        let w_decayed = (&w * c.decay)?;
        let update = ((&m / c.bc1)? / ((&v / c.bc2)?.sqrt()? + c.eps)?)?;
        let new = (w_decayed - (update * c.lr)?)?;
        let dtype = s.var.dtype();
        let new = match &s.device_mask {
            // Select rather than add a zero update: unmasked entries keep
            // their exact bits, whatever the rounding of `w - 0`.
            Some(mask) => mask.where_cond(&new.to_dtype(dtype)?, s.var.as_tensor())?,
            None => new.to_dtype(dtype)?,
        };
        let slot = &mut self.slots[i];
        slot.var.set(&new)?;
        slot.moments = Moments::Device { m, v };
        Ok(())
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
            let lr = opt_cfg.lr_at(report.steps, total);
            // The whole step on the tensor thread pool (see `ops::in_pool`);
            // no update when the loss is not finite.
            let value = crate::ops::in_pool(|| -> Result<f32> {
                let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                if value.is_finite() {
                    let mut grads = loss.backward()?;
                    drop(loss);
                    opt.step_consuming(&mut grads, lr)?;
                }
                Ok(value)
            })?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: "loss",
                    step: report.steps,
                    value,
                });
            }
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
