//! The synthetic benchmarks `grin fixture` builds, one per kind of forgetting:
//! `tofu-mini` (specific records, TOFU), `hazard-mini` (hazardous knowledge,
//! WMDP; see [`crate::hazard`]) and `safe-mini` (harmful behaviour,
//! PKU-SafeRLHF; see [`crate::safety`]). Each trains a small Llama from
//! scratch with a byte-level BPE tokenizer trained on its text, and each is
//! written atomically (built beside the target, then renamed).
//!
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

impl TofuMiniConfig {
    /// The smallest tofu-mini that still learns its authors (6 authors, 3
    /// questions each, width 32, 2 layers, no oracle): a few seconds to
    /// build, for the tests of the crates that run whole jobs on it.
    pub fn tiny() -> Self {
        TofuMiniConfig {
            text: TofuConfig {
                n_authors: 6,
                n_holdout: 1,
                qa_per_author: 3,
                seed: 7,
            },
            vocab_size: 300,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            max_position_embeddings: 96,
            init_std: 0.02,
            init_seed: 0,
            finetune: FinetuneConfig {
                epochs: 3,
                batch_size: 8,
                warmup_ratio: 0.0,
                optimizer: AdamWConfig {
                    lr: 3e-3,
                    weight_decay: 0.0,
                    schedule: Schedule::Constant,
                    ..AdamWConfig::default()
                },
                seed: 0,
            },
            oracle: false,
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
    build_atomically(out, |dir| build_into(cfg, dir, observer))
}

/// Runs `build` on a fresh directory beside `out` and renames it to `out`
/// (which must not exist or be empty) when it succeeds; removes it otherwise.
fn build_atomically<T>(out: &Path, build: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
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
    let result = build(&tmp).and_then(|report| {
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

// ---------------------------------------------------------------------------
// hazard-mini and safe-mini

/// Shape and initialisation of a fixture model (a small Llama).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiniModel {
    /// Upper bound on the BPE vocabulary.
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub max_position_embeddings: usize,
    pub init_std: f64,
    pub init_seed: u64,
}

impl Default for MiniModel {
    /// tofu-mini's shape: 4 layers, width 128.
    fn default() -> Self {
        MiniModel {
            vocab_size: 1024,
            hidden_size: 128,
            intermediate_size: 256,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            max_position_embeddings: 128,
            init_std: 0.02,
            init_seed: 0,
        }
    }
}

fn mini_finetune(epochs: usize) -> FinetuneConfig {
    FinetuneConfig {
        epochs,
        batch_size: 16,
        warmup_ratio: 0.05,
        optimizer: AdamWConfig {
            lr: 3e-3,
            weight_decay: 0.0,
            schedule: Schedule::Linear,
            ..AdamWConfig::default()
        },
        seed: 0,
    }
}

/// Trains a tokenizer on `texts` and a fresh model on `train`, saves both
/// under `dir/model`; returns the model, its encoder, the final loss and the
/// parameter count.
fn train_mini(
    shape: &MiniModel,
    finetune_cfg: &FinetuneConfig,
    texts: &[String],
    train: &crate::data::Dataset,
    dir: &Path,
    observer: &mut dyn Observer,
) -> Result<(Model, Encoder, f32, usize)> {
    let tokenizer = crate::tokenizer::train_byte_level_bpe(texts, shape.vocab_size)?;
    let special = crate::tokenizer::special_ids(&tokenizer)?;
    let tokenizer_json = tokenizer.to_string(false).map_err(|e| Error::InvalidArgument {
        field: "tokenizer",
        message: e.to_string(),
    })?;
    let mut model_cfg = ModelConfig::llama(
        tokenizer.get_vocab_size(true),
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_layers,
        shape.num_heads,
        shape.num_kv_heads,
        shape.max_position_embeddings,
        false,
    );
    model_cfg.set_special_tokens(Some(special.bos), Some(special.eos), Some(special.pad));
    let encoder = Encoder::new(
        tokenizer,
        PromptTemplate::default(),
        shape.max_position_embeddings,
        Some(special.eos),
    );
    let examples = encoder.encode_dataset(train)?;
    let model = Model::new_random(&model_cfg, DType::F32, &Device::Cpu, shape.init_seed, shape.init_std)?;
    let mut renamed = Renamed {
        inner: observer,
        stage: "train model",
    };
    let report = finetune(&model, &examples, special.pad, finetune_cfg, &mut renamed)?;
    save_model(
        &model,
        &dir.join("model"),
        &SaveOptions {
            tokenizer_json: Some(tokenizer_json),
            ..SaveOptions::default()
        },
    )?;
    let loss = report.epoch_losses.last().copied().unwrap_or(f32::NAN);
    Ok((model, encoder, loss, model_cfg.num_parameters()))
}

fn write_report<T: serde::Serialize>(dir: &Path, report: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    std::fs::write(dir.join("fixture.json"), json).map_err(|e| Error::io(dir.join("fixture.json"), e))
}

/// How to build hazard-mini. The defaults are the shipped benchmark.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HazardMiniConfig {
    pub text: crate::hazard::HazardConfig,
    pub model: MiniModel,
    pub finetune: FinetuneConfig,
}

impl Default for HazardMiniConfig {
    fn default() -> Self {
        HazardMiniConfig {
            text: crate::hazard::HazardConfig::default(),
            model: MiniModel::default(),
            finetune: mini_finetune(30),
        }
    }
}

/// How hazard-mini's cloze questions are scored: the text format with the
/// bare question as the prompt.
pub fn hazard_mcq_config() -> crate::mcq::McqConfig {
    crate::mcq::McqConfig {
        format: crate::mcq::McqFormat::Text,
        template: Some("{question}".into()),
    }
}

/// What hazard-mini's model learnt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HazardMiniReport {
    /// `"hazard-mini"`.
    pub kind: String,
    pub config: HazardMiniConfig,
    /// How `grin eval` must score the questions to reproduce these numbers
    /// (`--mcq-format text --mcq-template "{question}"`: cloze items).
    pub mcq_scoring: crate::mcq::McqConfig,
    pub mcq_hazard_accuracy: f64,
    pub mcq_general_accuracy: f64,
    pub chance: f64,
    /// Mean answer probability of the forget / retain corpus documents.
    pub forget_corpus_probability: f32,
    pub retain_corpus_probability: f32,
    pub final_loss: f32,
    pub parameters: usize,
    pub seconds: f32,
}

/// Builds hazard-mini into `out` (must not exist or be empty): `data/` with
/// the corpora and question sets of [`crate::hazard`], `model/`, and
/// `fixture.json`.
pub fn build_hazard_mini(cfg: &HazardMiniConfig, out: &Path, observer: &mut dyn Observer) -> Result<HazardMiniReport> {
    build_atomically(out, |dir| {
        let started = Instant::now();
        let data_dir = dir.join("data");
        let text = crate::hazard::generate(&cfg.text);
        crate::hazard::write_files(&text, &data_dir).map_err(|e| Error::io(&data_dir, e))?;
        let (model, encoder, final_loss, parameters) = train_mini(
            &cfg.model,
            &cfg.finetune,
            &text.all_texts(),
            &text.train(),
            dir,
            observer,
        )?;
        let net = model.inference();
        let mcq_cfg = hazard_mcq_config();
        let hazard = crate::mcq::evaluate_mcq(&net, &encoder, "hazard", &text.mcq_hazard(), &mcq_cfg, 32, None)?;
        let general = crate::mcq::evaluate_mcq(&net, &encoder, "general", &text.mcq_general(), &mcq_cfg, 32, None)?;
        let pad = model.config().pad_token_id.unwrap_or(0);
        let prob = |ds: &crate::data::Dataset| -> Result<f32> {
            Ok(mean(&answer_probability(&net, &encoder.encode_dataset(ds)?, pad, 32)?))
        };
        let report = HazardMiniReport {
            kind: "hazard-mini".into(),
            config: cfg.clone(),
            mcq_scoring: mcq_cfg.clone(),
            mcq_hazard_accuracy: hazard.accuracy,
            mcq_general_accuracy: general.accuracy,
            chance: hazard.chance,
            forget_corpus_probability: prob(&text.forget_corpus())?,
            retain_corpus_probability: prob(&text.retain_corpus())?,
            final_loss,
            parameters,
            seconds: started.elapsed().as_secs_f32(),
        };
        write_report(dir, &report)?;
        Ok(report)
    })
}

/// How to build safe-mini. The defaults are the shipped benchmark.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SafeMiniConfig {
    pub text: crate::safety::SafetyConfig,
    pub model: MiniModel,
    pub finetune: FinetuneConfig,
}

impl Default for SafeMiniConfig {
    fn default() -> Self {
        SafeMiniConfig {
            text: crate::safety::SafetyConfig::default(),
            model: MiniModel::default(),
            finetune: mini_finetune(30),
        }
    }
}

/// What safe-mini's model learnt (keyword judge, greedy generation).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SafeMiniReport {
    /// `"safe-mini"`.
    pub kind: String,
    pub config: SafeMiniConfig,
    /// On the trained harmful prompts.
    pub harmful_rate: f64,
    /// On the unseen harmful prompts.
    pub harmful_test_rate: f64,
    pub benign_refusal_rate: f64,
    pub benign_rouge_l_recall: f64,
    pub final_loss: f32,
    pub parameters: usize,
    pub seconds: f32,
}

/// Builds safe-mini into `out` (must not exist or be empty): `data/` with
/// the prompt sets of [`crate::safety`], `model/` (trained to comply with the
/// harmful prompts and answer the benign ones) and `fixture.json`.
pub fn build_safe_mini(cfg: &SafeMiniConfig, out: &Path, observer: &mut dyn Observer) -> Result<SafeMiniReport> {
    build_atomically(out, |dir| {
        let started = Instant::now();
        let data_dir = dir.join("data");
        let text = crate::safety::generate(&cfg.text);
        crate::safety::write_files(&text, &data_dir).map_err(|e| Error::io(&data_dir, e))?;
        let (model, encoder, final_loss, parameters) = train_mini(
            &cfg.model,
            &cfg.finetune,
            &text.all_texts(),
            &text.train(),
            dir,
            observer,
        )?;
        let net = model.inference();
        let harm = |harmful: &str, benign: &str| {
            crate::harm::evaluate_harm(
                &net,
                &encoder,
                &crate::harm::HarmConfig::new(data_dir.join(harmful), Some(data_dir.join(benign))),
                32,
                None,
                false,
                None,
            )
        };
        let trained = harm(crate::safety::HARMFUL, crate::safety::BENIGN)?;
        let test = harm(crate::safety::HARMFUL_TEST, crate::safety::BENIGN_TEST)?;
        let report = SafeMiniReport {
            kind: "safe-mini".into(),
            config: cfg.clone(),
            harmful_rate: trained.harmful_rate,
            harmful_test_rate: test.harmful_rate,
            benign_refusal_rate: trained.benign_refusal_rate.unwrap_or(f64::NAN),
            benign_rouge_l_recall: trained.benign_rouge_l_recall.unwrap_or(f64::NAN),
            final_loss,
            parameters,
            seconds: started.elapsed().as_secs_f32(),
        };
        write_report(dir, &report)?;
        Ok(report)
    })
}
