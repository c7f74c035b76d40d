//! The trainable decoder: Llama 2/3, Mistral and Qwen2 in one implementation.
//!
//! Every weight is a candle [`Var`] held in a [`VarMap`] under its Hugging Face
//! name, so gradients reach all of them and checkpoints round-trip with
//! `transformers`. Unlike candle-transformers' inference models, the forward
//! pass returns logits for *every* position and uses only operations that
//! have a backward: on CPU in f32/f64 the fused kernels of [`crate::ops`]
//! (RMSNorm, rotary embedding, masked softmax, SwiGLU gate, linear layers),
//! elsewhere in training mode their compositions from candle primitives
//! (candle-nn's fused versions have no backward). The detached inference
//! copy ([`Model::inference`]) adds a KV cache and, where `ops` has no
//! kernel, candle-nn's fused ones.
//!
//! Not here: loading and saving files (see [`crate::checkpoint`]), losses and
//! optimisation (see [`crate::train`]).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::ModelConfig;
use crate::ops;

/// A linear layer on `[.., in]` inputs, reshaping to 2-D so the matmul is one
/// GEMM (and its backward two).
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (in_dim, lead) = (dims[dims.len() - 1], &dims[..dims.len() - 1]);
        let rows: usize = lead.iter().product();
        let y = ops::linear(&x.reshape((rows, in_dim))?, &self.weight)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out = lead.to_vec();
        out.push(self.weight.dim(0)?);
        y.reshape(out)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// The dtype reductions run in: f32 for half-precision weights, else the
/// weights' own (f64 stays f64, which the finite-difference tests rely on).
pub fn accumulation_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F64 => DType::F64,
        _ => DType::F32,
    }
}

/// Rotary tables, HF `rotate_half` convention: `cos`/`sin` are
/// `[max_positions, head_dim / 2]`.
#[derive(Debug, Clone)]
struct Rope {
    cos_half: Tensor,
    sin_half: Tensor,
}

/// Inverse rotary frequencies, including Llama 3 frequency scaling. Computed
/// in f32 as `transformers` does, so positions line up to the last bit.
pub fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    let inv: Vec<f32> = (0..d)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / d as f32))
        .collect();
    let Some(s) = &cfg.rope_scaling else { return inv };
    let old = s.original_max_position_embeddings as f32;
    let (factor, low, high) = (s.factor as f32, s.low_freq_factor as f32, s.high_freq_factor as f32);
    let low_wavelen = old / low;
    let high_wavelen = old / high;
    inv.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f32::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

impl Rope {
    fn new(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let inv = rope_inv_freq(cfg);
        let n = cfg.max_position_embeddings;
        let half = inv.len();
        let mut angles = Vec::with_capacity(n * half);
        for p in 0..n {
            angles.extend(inv.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (n, half), device)?;
        let cos_half = angles.cos()?.to_dtype(dtype)?;
        let sin_half = angles.sin()?.to_dtype(dtype)?;
        Ok(Rope { cos_half, sin_half })
    }
}

/// Per-layer key/value cache for incremental decoding.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The network: weights plus the forward pass. Cheap to clone (tensors are
/// reference counted).
#[derive(Debug, Clone)]
pub struct Transformer {
    cfg: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    rope: Rope,
    /// Training mode: only ops with a backward (the fused kernels of
    /// [`crate::ops`] where they apply, else their compositions).
    differentiable: bool,
}

impl Transformer {
    fn new(cfg: &ModelConfig, get: &dyn Fn(&str) -> Result<Tensor>, differentiable: bool) -> Result<Self> {
        let lin = |p: &str, bias: bool| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"))?,
                bias: if bias { Some(get(&format!("{p}.bias"))?) } else { None },
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                input_norm: get(&format!("{p}.input_layernorm.weight"))?,
                q: lin(&format!("{p}.self_attn.q_proj"), cfg.qkv_bias)?,
                k: lin(&format!("{p}.self_attn.k_proj"), cfg.qkv_bias)?,
                v: lin(&format!("{p}.self_attn.v_proj"), cfg.qkv_bias)?,
                o: lin(&format!("{p}.self_attn.o_proj"), cfg.o_bias)?,
                post_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
                gate: lin(&format!("{p}.mlp.gate_proj"), false)?,
                up: lin(&format!("{p}.mlp.up_proj"), false)?,
                down: lin(&format!("{p}.mlp.down_proj"), false)?,
            });
        }
        let embed = get("model.embed_tokens.weight")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed.clone()
        } else {
            get("lm_head.weight")?
        };
        Ok(Transformer {
            cfg: cfg.clone(),
            rope: Rope::new(cfg, embed.dtype(), embed.device())?,
            embed,
            layers,
            norm: get("model.norm.weight")?,
            lm_head,
            differentiable,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Logits `[batch, seq, vocab]` for every position of `ids` (`u32
    /// [batch, seq]`), without a cache. Right padding needs no attention mask:
    /// causal attention never lets a real token see a later pad.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_from(ids, 0, None)
    }

    /// Logits for `ids` placed after the positions already in `cache`, which
    /// is extended. Batch rows share positions, so prompts must have equal
    /// lengths (the evaluator groups them so).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        if cache.layers.is_empty() {
            cache.layers = vec![None; self.layers.len()];
        }
        let offset = cache.len();
        self.forward_from(ids, offset, Some(cache))
    }

    fn forward_from(&self, ids: &Tensor, offset: usize, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let total = offset + t;
        if total > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence of {total} tokens exceeds max_position_embeddings = {}",
                self.cfg.max_position_embeddings
            );
        }
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?;
        let mask = self.mask(t, offset)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let h = self.rms_norm(&x, &layer.input_norm)?;
            let a = self.attention(layer, &h, offset, mask.as_ref(), kv)?;
            x = (x + a)?;
            let h = self.rms_norm(&x, &layer.post_norm)?;
            let gated = self.silu_mul(&layer.gate.forward(&h)?, &layer.up.forward(&h)?)?;
            let m = layer.down.forward(&gated)?;
            x = (x + m)?;
        }
        let x = self.rms_norm(&x, &self.norm)?;
        Linear {
            weight: self.lm_head.clone(),
            bias: None,
        }
        .forward(&x)
    }

    /// Additive mask `[t, offset + t]`: `-inf` above the diagonal and, with a
    /// sliding window `w`, for keys `w` or more positions back (`transformers`
    /// keeps `q - k < w`). `None` when nothing is masked.
    fn mask(&self, t: usize, offset: usize) -> Result<Option<Tensor>> {
        let window = self.cfg.sliding_window;
        let total = offset + t;
        let needs = t > 1 || window.is_some_and(|w| total > w);
        if !needs {
            return Ok(None);
        }
        let mut m = vec![0f32; t * total];
        for qi in 0..t {
            let q = offset + qi;
            for k in 0..total {
                let hidden = k > q || window.is_some_and(|w| q - k >= w);
                if hidden {
                    m[qi * total + k] = f32::NEG_INFINITY;
                }
            }
        }
        Tensor::from_vec(m, (t, total), self.device())?
            .to_dtype(self.embed.dtype())
            .map(Some)
    }

    /// Whether the fused kernels of [`crate::ops`] cover this tensor.
    fn fused(&self, x: &Tensor) -> bool {
        ops::fused_supported(x.dtype(), x.device())
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        if self.fused(x) || self.differentiable {
            // Fused where supported, else composed as transformers does it.
            return ops::rms_norm(x, w, eps);
        }
        candle_nn::ops::rms_norm(x, w, eps as f32)
    }

    fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        if self.fused(gate) {
            return ops::silu_mul(gate, up);
        }
        gate.silu()? * up
    }

    /// Rotary embedding of `x` `[b, t, heads, head_dim]` at positions
    /// `offset..offset + t`, returned as `[b, heads, t, head_dim]`.
    fn rotate_heads(&self, x: &Tensor, offset: usize) -> Result<Tensor> {
        let t = x.dim(1)?;
        let cos = self.rope.cos_half.narrow(0, offset, t)?;
        let sin = self.rope.sin_half.narrow(0, offset, t)?;
        if self.fused(x) || self.differentiable {
            return ops::rope_to_heads(x, &cos, &sin);
        }
        candle_nn::rotary_emb::rope(&x.transpose(1, 2)?.contiguous()?, &cos, &sin)
    }

    /// `softmax(scale · scores + mask)` over the keys, reduced in f32 (or
    /// f64).
    fn softmax(&self, scores: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
        if self.fused(scores) || self.differentiable {
            return ops::attn_softmax(scores, scale, mask);
        }
        let dtype = scores.dtype();
        let mut s = (scores.to_dtype(accumulation_dtype(dtype))? * scale)?;
        if let Some(m) = mask {
            s = s.broadcast_add(&m.to_dtype(s.dtype())?)?;
        }
        candle_nn::ops::softmax_last_dim(&s)?.to_dtype(dtype)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let q = self.rotate_heads(&layer.q.forward(x)?.reshape((b, t, nh, hd))?, offset)?;
        let mut k = self.rotate_heads(&layer.k.forward(x)?.reshape((b, t, nkv, hd))?, offset)?;
        let mut v = layer
            .v
            .forward(x)?
            .reshape((b, t, nkv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let tk = k.dim(2)?;
        // Grouped-query attention without copying k/v: fold the query heads
        // that share a kv head into the row dimension.
        let rep = nh / nkv;
        let q = q.contiguous()?.reshape((b, nkv, rep * t, hd))?;
        let att = q.matmul(&k.t()?)?.reshape((b, nh, t, tk))?;
        let p = self
            .softmax(&att, 1.0 / (hd as f64).sqrt(), mask)?
            .reshape((b, nkv, rep * t, tk))?;
        let y = p.matmul(&v.contiguous()?)?.reshape((b, nh, t, hd))?;
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        layer.o.forward(&y)
    }
}

impl Module for Transformer {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Transformer::forward(self, ids)
    }
}

/// A model whose weights are trainable variables.
pub struct Model {
    varmap: VarMap,
    net: Transformer,
    dtype: DType,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("architecture", &self.net.cfg.architecture)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Builds a model from named tensors (Hugging Face names). Each tensor is
    /// converted to `dtype` on `device` and becomes a variable. The caller has
    /// checked names and shapes (see [`crate::checkpoint`]).
    pub fn from_tensors(
        cfg: &ModelConfig,
        tensors: BTreeMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().expect("fresh VarMap lock");
            for (name, t) in tensors {
                let t = t.to_device(device)?.to_dtype(dtype)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        Self::from_varmap(cfg, varmap, dtype)
    }

    fn from_varmap(cfg: &ModelConfig, varmap: VarMap, dtype: DType) -> Result<Self> {
        let net = {
            let data = varmap.data().lock().expect("VarMap lock");
            let get = |name: &str| -> Result<Tensor> {
                data.get(name)
                    .map(|v| v.as_tensor().clone())
                    .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))
            };
            Transformer::new(cfg, &get, true)?
        };
        Ok(Model { varmap, net, dtype })
    }

    /// A randomly initialised model: linear and embedding weights drawn from
    /// N(0, `std`²) with a seeded generator (same seed, same weights, on any
    /// device), norm weights 1, biases 0.
    pub fn new_random(cfg: &ModelConfig, dtype: DType, device: &Device, seed: u64, std: f64) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0f32, std as f32).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let mut tensors = BTreeMap::new();
        for (name, shape) in cfg.tensor_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("norm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| normal.sample(&mut rng)).collect()
            };
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        }
        Self::from_tensors(cfg, tensors, dtype, device)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.net.cfg
    }

    /// The dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        self.net.device()
    }

    /// The differentiable network (shares the variables' storage).
    pub fn net(&self) -> &Transformer {
        &self.net
    }

    /// Logits for every position; differentiable with respect to every weight.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.net.forward(ids)
    }

    /// A detached copy for evaluation and generation: fused kernels, no
    /// gradient tracking. It shares storage with the variables, so it sees
    /// later updates to them.
    pub fn inference(&self) -> Transformer {
        let mut net = self.net.clone();
        let d = |t: &Tensor| t.detach();
        net.embed = d(&net.embed);
        net.lm_head = d(&net.lm_head);
        net.norm = d(&net.norm);
        for l in &mut net.layers {
            l.input_norm = d(&l.input_norm);
            l.post_norm = d(&l.post_norm);
            for lin in [
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                lin.weight = d(&lin.weight);
                lin.bias = lin.bias.as_ref().map(d);
            }
        }
        net.differentiable = false;
        net
    }

    /// A differentiable network in which only the `trainable` tensors are
    /// variables; the rest are detached constants, so a backward pass neither
    /// computes nor stores their gradients.
    pub fn net_training_only(&self, trainable: &std::collections::BTreeSet<String>) -> Result<Transformer> {
        let data = self.varmap.data().lock().expect("VarMap lock");
        let get = |name: &str| -> Result<Tensor> {
            let var = data
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?;
            Ok(if trainable.contains(name) {
                var.as_tensor().clone()
            } else {
                var.as_tensor().detach()
            })
        };
        Transformer::new(&self.net.cfg, &get, true)
    }

    /// A frozen inference network holding *copies* of the `copied` tensors
    /// and sharing storage for the rest. Used as the reference model of NPO
    /// and KL losses: only the tensors an unlearning run may change need a
    /// second copy in memory.
    pub fn frozen_reference(&self, copied: &std::collections::BTreeSet<String>) -> Result<Transformer> {
        let data = self.varmap.data().lock().expect("VarMap lock");
        let get = |name: &str| -> Result<Tensor> {
            let var = data
                .get(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {name}")))?;
            if copied.contains(name) {
                var.as_tensor().detach().copy()
            } else {
                Ok(var.as_tensor().detach())
            }
        };
        Transformer::new(&self.net.cfg, &get, false)
    }

    /// All variables by Hugging Face name, sorted by name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("VarMap lock");
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The current weights by name: each variable's own tensor (storage is
    /// shared, so a later optimiser step changes what they hold; `copy()`
    /// one to keep a snapshot).
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect()
    }

    /// Total parameter count.
    pub fn num_parameters(&self) -> usize {
        self.vars().iter().map(|(_, v)| v.elem_count()).sum()
    }
}
