//! `tofu-mini`: a small, deterministic, self-contained TOFU-shaped benchmark.
//!
//! It writes into one directory: the dataset splits (`data/`), a byte-level
//! BPE tokenizer, a small Llama trained from scratch on every non-holdout
//! author until it has memorised them (`model/`), and an *oracle* trained the
//! same way without the forget10 authors (`oracle/`, the reference for forget
//! quality). `fixture.json` records the configuration and how well each
//! model learnt. The whole directory is built beside the target and renamed
//! into place, so an interrupted build leaves nothing that looks finished.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};

use crate::checkpoint::{save_model, SaveOptions};
use crate::config::ModelConfig;
use crate::data::{load_dataset, Encoder, PromptTemplate};
use crate::error::{Error, Result};
use crate::eval::{answer_probability, mean};
use crate::model::Model;
use crate::progress::{Observer, Progress};
use crate::tofu::{self, TofuConfig};
use crate::train::{finetune, AdamWConfig, FinetuneConfig, Schedule};

/// How to build tofu-mini. The defaults are the shipped benchmark; tests use
/// smaller ones.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TofuMiniConfig {
    pub text: TofuConfig,
    /// Upper bound on the BPE vocabulary.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub max_position_embeddings: usize,
    /// Standard deviation of the random initialisation.
    pub init_std: f64,
    /// Seed of the initial weights (model and oracle start identical).
    pub init_seed: u64,
    pub finetune: FinetuneConfig,
    /// Also train the oracle (retain90 only).
    pub oracle: bool,
}

impl Default for TofuMiniConfig {
    fn default() -> Self {
        TofuMiniConfig {
            text: TofuConfig::default(),
            vocab_size: 1024,
            hidden_size: 128,
            intermediate_size: 256,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            max_position_embeddings: 128,
            init_std: 0.02,
            init_seed: 0,
            finetune: FinetuneConfig {
                epochs: 30,
                batch_size: 16,
                warmup_ratio: 0.05,
                optimizer: AdamWConfig {
                    lr: 3e-3,
                    weight_decay: 0.0,
                    schedule: Schedule::Linear,
                    ..AdamWConfig::default()
                },
                seed: 0,
            },
            oracle: true,
        }
    }
}

/// How well a trained model knows each split (mean answer probability).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitScores {
    pub forget10: f32,
    pub retain90: f32,
    pub holdout: f32,
    /// Mean training loss of the last epoch.
    pub final_loss: f32,
    pub seconds: f32,
}

/// What was built.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TofuMiniReport {
    pub config: TofuMiniConfig,
    pub model: SplitScores,
    pub oracle: Option<SplitScores>,
    pub parameters: usize,
    pub seconds: f32,
}

struct Renamed<'a> {
    inner: &'a mut dyn Observer,
    stage: &'static str,
}

impl Observer for Renamed<'_> {
    fn progress(&mut self, p: &Progress) {
        self.inner.progress(&Progress {
            stage: self.stage,
            ..p.clone()
        })
    }
    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

/// Builds tofu-mini into `out`, which must not exist or be empty.
pub fn build_tofu_mini(cfg: &TofuMiniConfig, out: &Path, observer: &mut dyn Observer) -> Result<TofuMiniReport> {
    if out.exists() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_some() {
        return Err(Error::InvalidArgument {
            field: "out",
            message: format!("{} exists and is not empty", out.display()),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let result = build_into(cfg, &tmp, observer).and_then(|report| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn build_into(cfg: &TofuMiniConfig, dir: &Path, observer: &mut dyn Observer) -> Result<TofuMiniReport> {
    let started = Instant::now();
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir).map_err(|e| Error::io(&data_dir, e))?;
    let text = tofu::generate(&cfg.text);
    tofu::write_splits(&text, &data_dir).map_err(|e| Error::io(&data_dir, e))?;

    let tokenizer = crate::tokenizer::train_byte_level_bpe(&tofu::all_texts(&text), cfg.vocab_size)?;
    let special = crate::tokenizer::special_ids(&tokenizer)?;
    let tokenizer_json = tokenizer.to_string(false).map_err(|e| Error::InvalidArgument {
        field: "tokenizer",
        message: e.to_string(),
    })?;

    let mut model_cfg = ModelConfig::llama(
        tokenizer.get_vocab_size(true),
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.max_position_embeddings,
        false,
    );
    model_cfg.set_special_tokens(Some(special.bos), Some(special.eos), Some(special.pad));
    let encoder = Encoder::new(
        tokenizer,
        PromptTemplate::default(),
        cfg.max_position_embeddings,
        Some(special.eos),
    );
    let encode = |name: &str| -> Result<Vec<crate::data::Encoded>> {
        let ds = load_dataset(&data_dir.join(name))?;
        Ok(encoder.encode_dataset(&ds)?)
    };
    let full = encode("full.jsonl")?;
    let retain = encode("retain90.jsonl")?;
    let forget = encode("forget10.jsonl")?;
    let holdout = encode("holdout.jsonl")?;

    let train = |examples: &[crate::data::Encoded],
                 out: PathBuf,
                 stage: &'static str,
                 obs: &mut dyn Observer|
     -> Result<SplitScores> {
        let t0 = Instant::now();
        let model = Model::new_random(&model_cfg, DType::F32, &Device::Cpu, cfg.init_seed, cfg.init_std)?;
        let mut renamed = Renamed { inner: obs, stage };
        let report = finetune(&model, examples, special.pad, &cfg.finetune, &mut renamed)?;
        save_model(
            &model,
            &out,
            &SaveOptions {
                tokenizer_json: Some(tokenizer_json.clone()),
                ..SaveOptions::default()
            },
        )?;
        let net = model.inference();
        let score =
            |xs: &[crate::data::Encoded]| -> Result<f32> { Ok(mean(&answer_probability(&net, xs, special.pad, 32)?)) };
        Ok(SplitScores {
            forget10: score(&forget)?,
            retain90: score(&retain)?,
            holdout: score(&holdout)?,
            final_loss: report.epoch_losses.last().copied().unwrap_or(f32::NAN),
            seconds: t0.elapsed().as_secs_f32(),
        })
    };
    let model = train(&full, dir.join("model"), "train model", observer)?;
    let oracle = if cfg.oracle {
        Some(train(&retain, dir.join("oracle"), "train oracle", observer)?)
    } else {
        None
    };
    let report = TofuMiniReport {
        config: cfg.clone(),
        model,
        oracle,
        parameters: model_cfg.num_parameters(),
        seconds: started.elapsed().as_secs_f32(),
    };
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    std::fs::write(dir.join("fixture.json"), json).map_err(|e| Error::io(dir.join("fixture.json"), e))?;
    Ok(report)
}
