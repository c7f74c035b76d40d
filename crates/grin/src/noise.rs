//! Stage 2 of GRIN: Gaussian noise on the selected weights.
//!
//! For each masked weight `w` of tensor `W`: `w ← w + N(0, σ²)`, with
//! `σ = sigma · std(W)` (relative, the default) or `σ = sigma` (absolute).
//! The noise is drawn on the CPU from ChaCha8 seeded by the run seed and the
//! tensor's name, so the same seed gives the same bytes on any device and in
//! any tensor order. Unmasked entries are selected through `where`, never
//! added to, so they keep their exact bits.

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::saliency::{name_seed, Masks};

/// Whether σ is relative to each tensor's standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseScale {
    #[default]
    Relative,
    Absolute,
}

/// Noise configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NoiseConfig {
    /// σ (relative: a multiple of std(W)). Must be ≥ 0; 0 disables noise.
    pub sigma: f64,
    pub scale: NoiseScale,
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            sigma: 0.1,
            scale: NoiseScale::Relative,
        }
    }
}

impl NoiseConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            return Err(Error::InvalidArgument {
                field: "noise.sigma",
                message: format!("must be >= 0, got {}", self.sigma),
            });
        }
        Ok(())
    }
}

/// What the noise stage did, per tensor: the σ used.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NoiseReport {
    pub tensors: usize,
    pub perturbed: usize,
    pub mean_sigma: f64,
}

/// Adds noise to the masked entries of `model`'s weights, in place.
pub fn inject(model: &Model, masks: &Masks, cfg: &NoiseConfig, seed: u64) -> Result<NoiseReport> {
    cfg.validate()?;
    let mut report = NoiseReport {
        tensors: 0,
        perturbed: 0,
        mean_sigma: 0.0,
    };
    if cfg.sigma == 0.0 {
        return Ok(report);
    }
    let vars: std::collections::BTreeMap<_, _> = model.vars().into_iter().collect();
    let mut sigma_sum = 0.0;
    for (name, mask) in &masks.masks {
        let var = vars.get(name).ok_or_else(|| Error::InvalidArgument {
            field: "masks",
            message: format!("mask for unknown tensor {name}"),
        })?;
        let w = var.as_tensor();
        let sigma = match cfg.scale {
            NoiseScale::Absolute => cfg.sigma,
            NoiseScale::Relative => {
                let wf = w.to_dtype(DType::F64)?;
                let mean = wf.mean_all()?.to_scalar::<f64>()?;
                let var_ = wf.broadcast_sub(&Tensor::new(mean, w.device())?)?.sqr()?.mean_all()?;
                cfg.sigma * var_.to_scalar::<f64>()?.sqrt()
            }
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ name_seed(name) ^ 0x6e6f697365);
        let noise: Vec<f32> = (0..w.elem_count())
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * sigma) as f32
            })
            .collect();
        let noise = Tensor::from_vec(noise, w.shape(), &Device::Cpu)?
            .to_device(w.device())?
            .to_dtype(w.dtype())?;
        let noisy = (w + noise)?;
        let new = mask.where_cond(&noisy, w)?;
        var.set(&new)?;
        report.tensors += 1;
        report.perturbed += mask.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? as usize;
        sigma_sum += sigma;
    }
    report.mean_sigma = sigma_sum / report.tensors.max(1) as f64;
    Ok(report)
}
