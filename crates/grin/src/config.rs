//! Model configuration read from (and written back to) Hugging Face's
//! `config.json`.
//!
//! Only what the decoder needs is parsed; the original JSON object is kept
//! verbatim so a checkpoint we write carries every field the user's config
//! had (tokens ids, generation settings, `transformers_version`, ...).
//! Anything that would change the maths and that we do not implement
//! (another activation, another rope scaling, Qwen2 sliding windows, ...)
//! is refused with an error naming the field, never silently ignored.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Architectures the trainable model implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Architecture {
    /// `LlamaForCausalLM` (Llama 2 and 3).
    Llama,
    /// `MistralForCausalLM` (Llama block plus an optional sliding window).
    Mistral,
    /// `Qwen2ForCausalLM` (Llama block with q/k/v biases).
    Qwen2,
}

impl Architecture {
    /// The Hugging Face class name, as written in `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// The Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }

    fn from_hf_class(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Architecture::Llama),
            "MistralForCausalLM" => Some(Architecture::Mistral),
            "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
            _ => None,
        }
    }

    fn from_model_type(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Architecture::Llama),
            "mistral" => Some(Architecture::Mistral),
            "qwen2" => Some(Architecture::Qwen2),
            _ => None,
        }
    }
}

/// Llama 3 style frequency-dependent rope scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// The decoder's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (always on for Qwen2, `attention_bias`
    /// for Llama, which then also has an o_proj bias).
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Tokens further back than this are masked (Mistral).
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The dtype the weights are stored in (`torch_dtype`), used when saving.
    pub torch_dtype: Option<String>,
    /// The original `config.json` object, written back with our changes.
    raw: Map<String, Value>,
}

fn field<'a>(raw: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    raw.get(name).filter(|v| !v.is_null())
}

struct Reader<'a> {
    raw: &'a Map<String, Value>,
    path: &'a Path,
}

impl Reader<'_> {
    fn invalid(&self, message: String) -> Error {
        Error::InvalidConfig {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn usize(&self, name: &str) -> Result<usize> {
        match field(self.raw, name) {
            Some(v) => v
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| self.invalid(format!("field `{name}` must be a non-negative integer, got {v}"))),
            None => Err(self.invalid(format!("missing field `{name}`"))),
        }
    }

    fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        match field(self.raw, name) {
            Some(_) => self.usize(name).map(Some),
            None => Ok(None),
        }
    }

    fn f64_or(&self, name: &str, default: f64) -> Result<f64> {
        match field(self.raw, name) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.invalid(format!("field `{name}` must be a number, got {v}"))),
            None => Ok(default),
        }
    }

    fn bool_or(&self, name: &str, default: bool) -> Result<bool> {
        match field(self.raw, name) {
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(format!("field `{name}` must be a boolean, got {v}"))),
            None => Ok(default),
        }
    }

    fn token_ids(&self, name: &str) -> Result<Vec<u32>> {
        let bad = || self.invalid(format!("field `{name}` must be a token id or a list of ids"));
        match field(self.raw, name) {
            None => Ok(vec![]),
            Some(Value::Array(xs)) => xs
                .iter()
                .map(|x| x.as_u64().map(|x| x as u32).ok_or_else(bad))
                .collect(),
            Some(v) => v.as_u64().map(|x| vec![x as u32]).ok_or_else(bad),
        }
    }
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses `config.json` text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::InvalidConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Value::Object(raw) = value else {
            return Err(Error::InvalidConfig {
                path: path.to_path_buf(),
                message: "expected a JSON object".into(),
            });
        };
        Self::from_raw(raw, path)
    }

    fn from_raw(raw: Map<String, Value>, path: &Path) -> Result<Self> {
        let r = Reader { raw: &raw, path };
        let unsupported = |field: &'static str, value: String, hint: &'static str| Error::Unsupported {
            path: path.to_path_buf(),
            field,
            value,
            hint,
        };

        let architecture = match field(&raw, "architectures") {
            Some(Value::Array(names)) if !names.is_empty() => {
                let name = names[0].as_str().unwrap_or_default();
                Architecture::from_hf_class(name).ok_or_else(|| {
                    unsupported(
                        "architectures",
                        names[0].to_string(),
                        "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
                    )
                })?
            }
            Some(v) => return Err(r.invalid(format!("field `architectures` must be a non-empty list, got {v}"))),
            None => {
                let model_type = field(&raw, "model_type").and_then(Value::as_str).unwrap_or_default();
                Architecture::from_model_type(model_type).ok_or_else(|| {
                    unsupported(
                        "model_type",
                        format!("{model_type:?}"),
                        "no `architectures` field and the model_type is not llama, mistral or qwen2",
                    )
                })?
            }
        };

        if let Some(act) = field(&raw, "hidden_act") {
            if act.as_str() != Some("silu") {
                return Err(unsupported(
                    "hidden_act",
                    act.to_string(),
                    "only \"silu\" (SwiGLU MLP) is implemented",
                ));
            }
        }
        if r.bool_or("mlp_bias", false)? {
            return Err(unsupported("mlp_bias", "true".into(), "MLP biases are not implemented"));
        }
        if let Some(v) = field(&raw, "pretraining_tp") {
            if v.as_u64().unwrap_or(1) != 1 {
                return Err(unsupported("pretraining_tp", v.to_string(), "only 1 is implemented"));
            }
        }

        let hidden_size = r.usize("hidden_size")?;
        let num_attention_heads = r.usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err(r.invalid("`num_attention_heads` must be positive".into()));
        }
        let num_key_value_heads = r.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(r.invalid(format!(
                "`num_attention_heads` ({num_attention_heads}) must be a multiple of `num_key_value_heads` ({num_key_value_heads})"
            )));
        }
        let head_dim = match r.opt_usize("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(r.invalid(format!(
                        "`hidden_size` ({hidden_size}) is not divisible by `num_attention_heads` ({num_attention_heads})"
                    )));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(r.invalid(format!("head dimension {head_dim} must be even for rotary embeddings")));
        }

        let rope_scaling = match field(&raw, "rope_scaling") {
            None => None,
            Some(Value::Object(s)) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                match kind {
                    "default" => None,
                    "llama3" => {
                        let sr = Reader { raw: s, path };
                        Some(Llama3RopeScaling {
                            factor: sr.f64_or("factor", f64::NAN)?,
                            low_freq_factor: sr.f64_or("low_freq_factor", f64::NAN)?,
                            high_freq_factor: sr.f64_or("high_freq_factor", f64::NAN)?,
                            original_max_position_embeddings: sr.usize("original_max_position_embeddings")?,
                        })
                        .filter(|s| {
                            s.factor.is_finite() && s.low_freq_factor.is_finite() && s.high_freq_factor.is_finite()
                        })
                        .ok_or_else(|| {
                            r.invalid(
                                "`rope_scaling` of type llama3 needs factor, low_freq_factor and high_freq_factor"
                                    .into(),
                            )
                        })
                        .map(Some)?
                    }
                    other => {
                        return Err(unsupported(
                            "rope_scaling.rope_type",
                            format!("{other:?}"),
                            "supported: \"default\" and \"llama3\"",
                        ))
                    }
                }
            }
            Some(v) => return Err(r.invalid(format!("field `rope_scaling` must be an object, got {v}"))),
        };

        let (qkv_bias, o_bias, sliding_window) = match architecture {
            Architecture::Llama => {
                let b = r.bool_or("attention_bias", false)?;
                (b, b, None)
            }
            Architecture::Mistral => (false, false, r.opt_usize("sliding_window")?),
            Architecture::Qwen2 => {
                if r.bool_or("use_sliding_window", false)? {
                    return Err(unsupported(
                        "use_sliding_window",
                        "true".into(),
                        "Qwen2's per-layer sliding window is not implemented",
                    ));
                }
                (true, false, None)
            }
        };

        Ok(ModelConfig {
            architecture,
            vocab_size: r.usize("vocab_size")?,
            hidden_size,
            intermediate_size: r.usize("intermediate_size")?,
            num_hidden_layers: r.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: r.f64_or("rms_norm_eps", 1e-6)?,
            rope_theta: r.f64_or("rope_theta", 10_000.0)?,
            rope_scaling,
            max_position_embeddings: r.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            sliding_window,
            bos_token_id: r.token_ids("bos_token_id")?.first().copied(),
            eos_token_ids: r.token_ids("eos_token_id")?,
            pad_token_id: r.token_ids("pad_token_id")?.first().copied(),
            torch_dtype: field(&raw, "torch_dtype")
                .or_else(|| field(&raw, "dtype"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            raw,
        })
    }

    /// A fresh Llama configuration (used for fixtures and benchmarks).
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        vocab_size: usize,
        hidden_size: usize,
        intermediate_size: usize,
        num_hidden_layers: usize,
        num_attention_heads: usize,
        num_key_value_heads: usize,
        max_position_embeddings: usize,
        tie_word_embeddings: bool,
    ) -> Self {
        let raw = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": hidden_size,
            "intermediate_size": intermediate_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": num_attention_heads,
            "num_key_value_heads": num_key_value_heads,
            "max_position_embeddings": max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "tie_word_embeddings": tie_word_embeddings,
            "initializer_range": 0.02,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        let Value::Object(raw) = raw else {
            unreachable!("json! object literal")
        };
        Self::from_raw(raw, Path::new("<generated config>")).expect("generated config is valid")
    }

    /// Sets the special token ids (written to `config.json` too).
    pub fn set_special_tokens(&mut self, bos: Option<u32>, eos: Option<u32>, pad: Option<u32>) {
        self.bos_token_id = bos;
        self.eos_token_ids = eos.into_iter().collect();
        self.pad_token_id = pad;
        for (key, v) in [("bos_token_id", bos), ("eos_token_id", eos), ("pad_token_id", pad)] {
            self.raw.insert(key.into(), v.map_or(Value::Null, |x| json!(x)));
        }
    }

    /// The JSON to write as `config.json`: the original object with the
    /// storage dtype brought up to date.
    pub fn to_json(&self, torch_dtype: &str) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("torch_dtype".into(), json!(torch_dtype));
        Value::Object(raw)
    }

    /// The architecture's tensor names and shapes, in Hugging Face naming.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, kv, q) = (
            self.hidden_size,
            self.num_key_value_heads * self.head_dim,
            self.num_attention_heads * self.head_dim,
        );
        let i = self.intermediate_size;
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![self.vocab_size, h])];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            if self.qkv_bias {
                out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
                out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            if self.o_bias {
                out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
            }
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// Path helper: `dir/config.json`.
pub fn config_path(dir: &Path) -> PathBuf {
    dir.join("config.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<ModelConfig> {
        ModelConfig::parse(&v.to_string(), Path::new("x/config.json"))
    }

    fn base() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2})
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("architectures") && e.contains("GPT2LMHeadModel"), "{e}");
    }

    #[test]
    fn unsupported_values_are_named() {
        for (k, val, needle) in [
            ("hidden_act", json!("gelu"), "hidden_act"),
            ("rope_scaling", json!({"rope_type": "yarn", "factor": 2.0}), "yarn"),
            ("mlp_bias", json!(true), "mlp_bias"),
        ] {
            let mut v = base();
            v[k] = val;
            let e = parse(v).unwrap_err().to_string();
            assert!(e.contains(needle), "{k}: {e}");
        }
        let mut v = base();
        v.as_object_mut().unwrap().remove("hidden_size");
        let e = parse(v).unwrap_err().to_string();
        assert!(e.contains("hidden_size") && e.contains("x/config.json"), "{e}");
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(parse(v).unwrap_err().to_string().contains("num_key_value_heads"));
    }

    #[test]
    fn defaults_and_qwen_bias() {
        let c = parse(base()).unwrap();
        assert_eq!((c.num_key_value_heads, c.head_dim, c.qkv_bias), (2, 4, false));
        let mut v = base();
        v["architectures"] = json!(["Qwen2ForCausalLM"]);
        assert!(parse(v).unwrap().qkv_bias);
    }
}
