//! The subcommands: argument structs and the few lines that call the library.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use grin::checkpoint::{load_model, load_tokenizer, save_model, SaveOptions};
use grin::data::{load_dataset, Encoder, PromptTemplate};
use grin::fixture::{build_tofu_mini, TofuMiniConfig};
use grin::train::{batch_mean_nll, finetune as run_finetune, AdamW, AdamWConfig, FinetuneConfig};
use grin::unlearn::{Method, UnlearnConfig};
use serde::de::DeserializeOwned;
use sha2::Digest;

use crate::bar::Bars;

/// Reads a typed configuration from a `.toml` or `.json` file; unknown fields
/// are errors (the config types deny them).
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    let parsed = if is_json {
        serde_json::from_str(&text).map_err(anyhow::Error::from)
    } else {
        toml::from_str(&text).map_err(anyhow::Error::from)
    };
    parsed.with_context(|| format!("invalid config {}", path.display()))
}

// The variant names are the subcommand names (tofu-mini, hazard-mini, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Subcommand)]
pub enum FixtureCommand {
    /// TOFU-shaped synthetic authors, a tokenizer, a model that memorised them
    /// and an oracle trained without the forget10 authors.
    TofuMini(TofuMiniArgs),
    /// WMDP-shaped: a hazard corpus and questions to forget, a general corpus
    /// and questions to keep, and a model that learnt all four.
    HazardMini(MiniArgs),
    /// PKU-SafeRLHF-shaped: harmful prompts with harmful responses, benign
    /// prompts with helpful ones, and a model trained to give both.
    SafeMini(MiniArgs),
}

#[derive(Debug, Args)]
pub struct MiniArgs {
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the synthetic text (default: the shipped fixture's).
    #[arg(long)]
    seed: Option<u64>,
    /// Full configuration (TOML or JSON): `HazardMiniConfig` / `SafeMiniConfig`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training epochs (overrides the config).
    #[arg(long)]
    epochs: Option<usize>,
}

fn hazard_mini(args: MiniArgs) -> Result<()> {
    let mut cfg: grin::fixture::HazardMiniConfig = match &args.config {
        Some(p) => read_config(p)?,
        None => Default::default(),
    };
    if let Some(seed) = args.seed {
        cfg.text.seed = seed;
    }
    if let Some(e) = args.epochs {
        cfg.finetune.epochs = e;
    }
    let mut bars = Bars::new();
    let r = grin::fixture::build_hazard_mini(&cfg, &args.out, &mut bars)?;
    bars.finish();
    println!(
        "hazard-mini written to {} in {:.0}s ({} parameters, final loss {:.4})",
        args.out.display(),
        r.seconds,
        r.parameters,
        r.final_loss
    );
    println!(
        "multiple-choice accuracy (cloze items, text format, chance {:.2}): hazard {:.4}, general {:.4}",
        r.chance, r.mcq_hazard_accuracy, r.mcq_general_accuracy
    );
    println!(
        "corpus answer probability: forget {:.4}, retain {:.4}",
        r.forget_corpus_probability, r.retain_corpus_probability
    );
    Ok(())
}

fn safe_mini(args: MiniArgs) -> Result<()> {
    let mut cfg: grin::fixture::SafeMiniConfig = match &args.config {
        Some(p) => read_config(p)?,
        None => Default::default(),
    };
    if let Some(seed) = args.seed {
        cfg.text.seed = seed;
    }
    if let Some(e) = args.epochs {
        cfg.finetune.epochs = e;
    }
    let mut bars = Bars::new();
    let r = grin::fixture::build_safe_mini(&cfg, &args.out, &mut bars)?;
    bars.finish();
    println!(
        "safe-mini written to {} in {:.0}s ({} parameters, final loss {:.4})",
        args.out.display(),
        r.seconds,
        r.parameters,
        r.final_loss
    );
    println!(
        "keyword judge: harmful rate {:.4} (trained prompts), {:.4} (unseen); benign refusal rate {:.4}, benign ROUGE-L recall {:.4}",
        r.harmful_rate, r.harmful_test_rate, r.benign_refusal_rate, r.benign_rouge_l_recall
    );
    Ok(())
}

/// The multiple-choice and harmful-behaviour evaluation options shared by
/// `grin eval` and `grin unlearn`.
#[derive(Debug, Args)]
pub struct SuiteArgs {
    /// Multiple-choice questions about what is forgotten (WMDP-style rows
    /// {question, choices, answer}); metrics `mcq_forget_*`.
    #[arg(long)]
    mcq_forget: Option<PathBuf>,
    /// Multiple-choice questions on general knowledge to keep (MMLU-style);
    /// metrics `mcq_general_*`.
    #[arg(long)]
    mcq_general: Option<PathBuf>,
    /// More multiple-choice sets, `NAME=PATH` (repeatable); metrics `mcq_NAME_*`.
    #[arg(long = "mcq", value_name = "NAME=PATH")]
    mcq: Vec<String>,
    /// `letter` (choices listed, continuations " A", " B", ...: the
    /// lm-evaluation-harness MMLU/WMDP format) or `text` (continuations are
    /// the choice texts after the prompt template; what the mini fixtures use).
    #[arg(long, default_value = "letter")]
    mcq_format: String,
    /// Template around the question (letter format: around the question with
    /// its lettered choices, default "{question}\nAnswer:"; text format:
    /// instead of --template).
    #[arg(long)]
    mcq_template: Option<String>,
    /// Harmful prompts ({prompt}, prompt-response or PKU-SafeRLHF rows);
    /// metrics `harmful_rate`, `harmful_refusal_rate`.
    #[arg(long)]
    harmful: Option<PathBuf>,
    /// Benign prompts, ideally with reference responses; metrics
    /// `benign_refusal_rate`, `benign_rouge_l_recall`, `benign_answer_probability`.
    #[arg(long)]
    benign: Option<PathBuf>,
    /// refusal, keyword or lm.
    #[arg(long, default_value = "keyword")]
    judge: String,
    /// The judge model for --judge lm (Hugging Face layout with tokenizer.json).
    #[arg(long)]
    judge_model: Option<PathBuf>,
    /// Judge prompt with {prompt} and {response} (default: grin's).
    #[arg(long)]
    judge_template: Option<String>,
    /// Greedy generation length for the harmful and benign prompts.
    #[arg(long, default_value_t = 48)]
    harm_max_new_tokens: usize,
}

impl SuiteArgs {
    /// Adds the configured sets to `cfg`.
    pub fn apply(&self, cfg: &mut grin::eval::EvalConfig) -> Result<()> {
        use grin::mcq::McqSetSpec;
        if let Some(p) = &self.mcq_forget {
            cfg.mcq.push(McqSetSpec::new("forget", p));
        }
        if let Some(p) = &self.mcq_general {
            cfg.mcq.push(McqSetSpec::new("general", p));
        }
        for spec in &self.mcq {
            let (name, path) = spec
                .split_once('=')
                .with_context(|| format!("--mcq {spec:?}: expected NAME=PATH"))?;
            cfg.mcq.push(McqSetSpec::new(name, path));
        }
        cfg.mcq_scoring.format = grin::mcq::McqFormat::parse(&self.mcq_format)
            .with_context(|| format!("--mcq-format {:?}: expected letter or text", self.mcq_format))?;
        cfg.mcq_scoring.template = self.mcq_template.clone();
        let kind = grin::harm::JudgeKind::parse(&self.judge)
            .with_context(|| format!("--judge {:?}: expected refusal, keyword or lm", self.judge))?;
        match &self.harmful {
            Some(harmful) => {
                let mut h = grin::harm::HarmConfig::new(harmful, self.benign.clone());
                h.judge.kind = kind;
                h.max_new_tokens = self.harm_max_new_tokens;
                if let Some(m) = &self.judge_model {
                    let mut lm = grin::harm::LmJudgeConfig::new(m);
                    if let Some(t) = &self.judge_template {
                        lm.template = t.clone();
                    }
                    h.judge.lm = Some(lm);
                }
                cfg.harm = Some(h);
            }
            None if self.benign.is_some() || self.judge_model.is_some() => {
                bail!("--benign and --judge-model need --harmful")
            }
            None => {}
        }
        grin::eval::validate_suites(cfg)?;
        Ok(())
    }

    /// Default gates for what is evaluated: multiple-choice gates with
    /// --mcq-forget/--mcq-general, harm gates with --harmful, else TOFU's.
    pub fn default_gates(&self) -> Vec<grin::certificate::GateSpec> {
        let mut gates = Vec::new();
        if self.mcq_forget.is_some() || self.mcq_general.is_some() {
            gates.extend(grin::certificate::mcq_gates().into_iter().filter(|g| {
                (self.mcq_forget.is_some() || !g.metric.starts_with("mcq_forget"))
                    && (self.mcq_general.is_some() || !g.metric.starts_with("mcq_general"))
            }));
        }
        if self.harmful.is_some() {
            gates.extend(
                grin::certificate::harm_gates()
                    .into_iter()
                    .filter(|g| self.benign.is_some() || !g.metric.starts_with("benign")),
            );
        }
        if gates.is_empty() {
            gates = grin::certificate::default_gates();
        }
        gates
    }
}

#[derive(Debug, Args)]
pub struct TofuMiniArgs {
    /// Output directory (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the synthetic text (default: the shipped fixture's).
    #[arg(long)]
    seed: Option<u64>,
    /// Full configuration (TOML or JSON), see `TofuMiniConfig`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training epochs (overrides the config).
    #[arg(long)]
    epochs: Option<usize>,
    /// Skip the oracle.
    #[arg(long)]
    no_oracle: bool,
}

pub fn fixture(cmd: FixtureCommand) -> Result<()> {
    let args = match cmd {
        FixtureCommand::TofuMini(args) => args,
        FixtureCommand::HazardMini(args) => return hazard_mini(args),
        FixtureCommand::SafeMini(args) => return safe_mini(args),
    };
    let mut cfg: TofuMiniConfig = match &args.config {
        Some(p) => read_config(p)?,
        None => TofuMiniConfig::default(),
    };
    if let Some(seed) = args.seed {
        cfg.text.seed = seed;
    }
    if let Some(e) = args.epochs {
        cfg.finetune.epochs = e;
    }
    if args.no_oracle {
        cfg.oracle = false;
    }
    let mut bars = Bars::new();
    let report = build_tofu_mini(&cfg, &args.out, &mut bars)?;
    bars.finish();
    println!(
        "tofu-mini written to {} in {:.0}s ({} parameters)",
        args.out.display(),
        report.seconds,
        report.parameters
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "model", "forget10", "retain90", "holdout", "loss", "seconds"
    );
    let mut rows = vec![("model", &report.model)];
    if let Some(o) = &report.oracle {
        rows.push(("oracle", o));
    }
    for (name, s) in rows {
        println!(
            "{name:<8} {:>10.4} {:>10.4} {:>10.4} {:>10.4} {:>8.0}",
            s.forget10, s.retain90, s.holdout, s.final_loss, s.seconds
        );
    }
    println!("(mean answer probability per split)");
    Ok(())
}

#[derive(Debug, Args)]
pub struct FinetuneArgs {
    /// Input model directory (Hugging Face layout with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Training data (JSON Lines or JSON array).
    #[arg(long)]
    data: PathBuf,
    /// Output directory for the new checkpoint (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Fine-tune configuration (TOML or JSON), see `FinetuneConfig`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Prompt template for QA rows; must contain `{question}`.
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
    /// Longest example in tokens (default: the model's context).
    #[arg(long)]
    max_len: Option<usize>,
}

pub fn finetune(args: FinetuneArgs) -> Result<()> {
    let mut cfg: FinetuneConfig = match &args.config {
        Some(p) => read_config(p)?,
        None => FinetuneConfig::default(),
    };
    if let Some(e) = args.epochs {
        cfg.epochs = e;
    }
    if let Some(lr) = args.lr {
        cfg.optimizer.lr = lr;
    }
    if let Some(b) = args.batch_size {
        cfg.batch_size = b;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("--out {} exists and is not empty", args.out.display());
    }
    let device = Device::Cpu;
    let model = load_model(&args.model, &device, None)?;
    let tokenizer = load_tokenizer(&args.model)?;
    let mc = model.config();
    let eos = mc.eos_token_ids.first().copied();
    let pad = mc.pad_token_id.or(eos).unwrap_or(0);
    let max_len = args.max_len.unwrap_or(mc.max_position_embeddings);
    let encoder = Encoder::new(tokenizer, PromptTemplate::new(args.template.clone())?, max_len, eos);
    let data = load_dataset(&args.data)?;
    let examples = encoder.encode_dataset(&data)?;
    eprintln!(
        "fine-tuning {} ({} parameters) on {} examples for {} epochs",
        args.model.display(),
        model.num_parameters(),
        examples.len(),
        cfg.epochs
    );
    let mut bars = Bars::new();
    let t0 = Instant::now();
    let report = run_finetune(&model, &examples, pad, &cfg, &mut bars)?;
    bars.finish();
    for (i, l) in report.epoch_losses.iter().enumerate() {
        println!("epoch {:>3}: mean loss {l:.4}", i + 1);
    }
    let record = serde_json::json!({
        "base_model": args.model,
        "data": args.data,
        "config": cfg,
        "epoch_losses": report.epoch_losses,
        "steps": report.steps,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    save_model(
        &model,
        &args.out,
        &SaveOptions {
            aux_from: Some(args.model.clone()),
            extra_files: vec![("finetune.json".into(), serde_json::to_vec_pretty(&record)?)],
            ..SaveOptions::default()
        },
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}

#[derive(Debug, Args)]
pub struct UnlearnArgs {
    /// Input model directory (Hugging Face layout with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The rows to forget.
    #[arg(long)]
    forget: PathBuf,
    /// Rows whose knowledge must stay (rows also in the forget set are dropped).
    #[arg(long)]
    retain: PathBuf,
    /// Rows never trained on (membership inference in the evaluation).
    #[arg(long)]
    holdout: Option<PathBuf>,
    /// A model trained without the forget set (forget quality).
    #[arg(long)]
    oracle: Option<PathBuf>,
    /// Output directory for the new checkpoint (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// grin, graddiff, npo, idk, simnpo or ga.
    #[arg(long, default_value = "grin")]
    method: String,
    /// Overrides of the method's configuration (TOML or JSON), see `UnlearnConfig`.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    /// Gates (TOML or JSON list of `GateSpec`); default: grin's default gates.
    #[arg(long)]
    gates: Option<PathBuf>,
    /// Ed25519 private key (PKCS#8 PEM, from `grin certificate keygen`) that
    /// signs the certificate. Without it no certificate is written.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Where the signed certificate goes (default: OUT.certificate.json).
    #[arg(long)]
    certificate: Option<PathBuf>,
    /// Evaluate at most this many rows per set.
    #[arg(long)]
    max_eval_items: Option<usize>,
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
    /// Use the harm labels of prompt-response rows: forget only responses
    /// labelled unsafe (`is_safe: false`) and retain only those labelled safe,
    /// so one PKU-SafeRLHF file can serve as both.
    #[arg(long)]
    by_harm_label: bool,
    #[command(flatten)]
    suites: SuiteArgs,
}

/// Merges `overrides` into `base` object by object (arrays and scalars are
/// replaced).
pub fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
    match (base, overrides) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The method's preset with a config file's fields laid over it.
pub fn unlearn_config(method: &str, file: Option<&Path>, seed: Option<u64>) -> Result<UnlearnConfig> {
    let method = Method::parse(method).with_context(|| {
        format!(
            "unknown --method {method:?}; expected one of {}",
            Method::NAMES.join(", ")
        )
    })?;
    let mut value = serde_json::to_value(method.preset())?;
    if let Some(path) = file {
        let overrides: serde_json::Value = read_config(path)?;
        merge(&mut value, overrides);
    }
    let mut cfg: UnlearnConfig = serde_json::from_value(value).with_context(|| {
        format!(
            "invalid config {}",
            file.map(|p| p.display().to_string()).unwrap_or_default()
        )
    })?;
    if let Some(s) = seed {
        cfg.seed = s;
    }
    grin::unlearn::validate(&cfg)?;
    Ok(cfg)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GatesFile {
    gates: Vec<grin::certificate::GateSpec>,
}

pub fn unlearn(args: UnlearnArgs) -> Result<()> {
    let cfg = unlearn_config(&args.method, args.config.as_deref(), args.seed)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("--out {} exists and is not empty", args.out.display());
    }
    let signing_key = args
        .signing_key
        .as_deref()
        .map(|p| grin::certificate::load_signing_key(p).with_context(|| format!("--signing-key {}", p.display())))
        .transpose()?;
    let gates = match &args.gates {
        Some(p) => read_config::<GatesFile>(p)?.gates,
        None => args.suites.default_gates(),
    };
    let mut forget = load_dataset(&args.forget)?;
    let mut retain = load_dataset(&args.retain)?;
    if args.by_harm_label {
        forget = forget.without_safe_pairs();
        retain = retain.without_unsafe_pairs();
        if forget.is_empty() {
            bail!(
                "--forget {}: no row left after dropping the responses labelled safe",
                args.forget.display()
            );
        }
    }
    let holdout = args.holdout.as_deref().map(load_dataset).transpose()?;
    let mut eval = grin::eval::EvalConfig {
        max_items: args.max_eval_items,
        ..Default::default()
    };
    args.suites.apply(&mut eval)?;
    let spec = grin::pipeline::RunSpec {
        model_dir: args.model.clone(),
        out_dir: args.out.clone(),
        template: args.template.clone(),
        config: cfg,
        eval,
        gates,
        oracle: args.oracle.clone().map(grin::pipeline::OracleSource::Dir),
        metrics_before: None,
        device: Device::Cpu,
    };
    let data = grin::pipeline::RunData {
        forget: &forget,
        retain: &retain,
        holdout: holdout.as_ref(),
    };
    let mut bars = Bars::new();
    let outcome = grin::pipeline::run(&spec, data, &mut bars)?;
    bars.finish();
    let report = &outcome.report;
    if report.dropped_from_retain > 0 {
        eprintln!(
            "note: {} retain row(s) also in the forget set were dropped from retain",
            report.dropped_from_retain
        );
    }
    println!(
        "{}: selected {} of {} scored weights ({:.2}%), {} steps{} in {:.1}s",
        args.method,
        report.mask.selected,
        report.mask.scored,
        report.mask.fraction * 100.0,
        report.steps.len(),
        if report.stopped_early { " (early stop)" } else { "" },
        outcome.seconds,
    );
    print_before_after(&outcome.before, &outcome.after.flat());
    for g in &outcome.gates {
        println!(
            "gate {:<28} {}{}",
            g.name,
            if g.passed { "pass" } else { "FAIL" },
            g.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    println!("wrote {}", args.out.display());
    if let Some(key) = signing_key {
        let subject = grin::pipeline::CertificateSubject {
            id: format!("offline-{}", outcome.started_at),
            request_ids: vec![],
            model: args.model.display().to_string(),
            base_version: None,
            new_version: Some(args.out.display().to_string()),
            forget_digests: forget_digests(&forget, &key)?,
        };
        let cert = grin::pipeline::certificate_for(&subject, &spec, &outcome)?;
        let signed = grin::certificate::sign(&cert, &key)?;
        let path = args.certificate.clone().unwrap_or_else(|| {
            let mut p = args.out.clone().into_os_string();
            p.push(".certificate.json");
            PathBuf::from(p)
        });
        write_atomically(&path, signed.to_json_pretty()?.as_bytes())?;
        println!("certificate {}", path.display());
    }
    Ok(())
}

/// HMAC-SHA256 of each forget row's canonical JSON, keyed by a secret derived
/// from the signing key, so the certificate names the items without
/// containing them (offline runs have no service secret).
fn forget_digests(forget: &grin::data::Dataset, key: &grin::certificate::SigningKey) -> Result<Vec<String>> {
    use hmac::Mac;
    let secret = sha2::Sha256::digest([b"grin-offline-forget-digest".as_slice(), &key.to_bytes()].concat());
    forget
        .rows
        .iter()
        .map(|row| {
            let json = grin::certificate::canonical_json(&serde_json::to_value(row)?);
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).context("hmac key")?;
            mac.update(json.as_bytes());
            Ok(hex::encode(mac.finalize().into_bytes()))
        })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn print_before_after(before: &serde_json::Value, after: &serde_json::Value) {
    println!("{:<30} {:>10} {:>10}", "metric", "before", "after");
    let keys: Vec<&String> = after.as_object().map(|o| o.keys().collect()).unwrap_or_default();
    for k in keys {
        let b = before.get(k).and_then(|v| v.as_f64());
        let a = after.get(k).and_then(|v| v.as_f64());
        let fmt = |x: Option<f64>| {
            x.map(|v| format!("{v:>10.4}"))
                .unwrap_or_else(|| format!("{:>10}", "-"))
        };
        println!("{k:<30} {} {}", fmt(b), fmt(a));
    }
}

#[derive(Debug, Subcommand)]
pub enum CertificateCommand {
    /// Create an Ed25519 signing key (PKCS#8 PEM, mode 0600) and its public key (OUT.pub).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a certificate's signature offline and, with --checkpoint, every file digest.
    Verify {
        file: PathBuf,
        /// The service's public key (PEM or hex).
        #[arg(long)]
        public_key: PathBuf,
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
}

pub fn certificate(cmd: CertificateCommand) -> Result<()> {
    match cmd {
        CertificateCommand::Keygen { out } => {
            let key = grin::certificate::generate_signing_key()?;
            grin::certificate::save_signing_key(&key, &out)?;
            let mut public = out.clone().into_os_string();
            public.push(".pub");
            let public = PathBuf::from(public);
            grin::certificate::save_verifying_key(&key.verifying_key(), &public)?;
            println!(
                "private key {} (keep it secret)\npublic key  {}",
                out.display(),
                public.display()
            );
            Ok(())
        }
        CertificateCommand::Verify {
            file,
            public_key,
            checkpoint,
        } => {
            let key = grin::certificate::load_verifying_key(&public_key)?;
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let cert = grin::certificate::verify_document(&text, &key)
                .with_context(|| format!("{}: certificate verification failed", file.display()))?;
            println!(
                "signature ok: {} ({} files, gates {})",
                cert.id,
                cert.files.len(),
                if cert.passed { "passed" } else { "failed" }
            );
            if let Some(dir) = checkpoint {
                grin::certificate::verify_files(&cert, &dir)
                    .with_context(|| format!("{}: checkpoint does not match the certificate", dir.display()))?;
                println!("files ok: every digest matches {}", dir.display());
            }
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model directory (Hugging Face layout with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    forget: PathBuf,
    #[arg(long)]
    retain: Option<PathBuf>,
    /// Rows never trained on (non-members for membership inference).
    #[arg(long)]
    holdout: Option<PathBuf>,
    /// A model trained without the forget set (enables forget quality).
    #[arg(long)]
    oracle: Option<PathBuf>,
    /// Write the full results (aggregates and per-item values) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Include generated texts in the JSON (they may repeat personal data).
    #[arg(long)]
    generations: bool,
    /// Evaluate at most this many rows per set.
    #[arg(long)]
    max_items: Option<usize>,
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
    #[command(flatten)]
    suites: SuiteArgs,
}

/// A model with an encoder for its tokenizer and context length.
pub struct Loaded {
    pub model: grin::model::Model,
    pub encoder: Encoder,
}

pub fn load_with_encoder(dir: &Path, template: &str) -> Result<Loaded> {
    let (model, encoder) = grin::pipeline::load_with_encoder(dir, template, &Device::Cpu)?;
    Ok(Loaded { model, encoder })
}

pub fn print_evaluation(columns: &[(&str, &grin::eval::Evaluation)]) {
    let rows: Vec<Vec<(String, Option<f64>)>> = columns.iter().map(|(_, e)| grin::eval::summary_rows(e)).collect();
    print!("{:<30}", "metric");
    for (name, _) in columns {
        print!(" {name:>12}");
    }
    println!();
    for i in 0..rows[0].len() {
        if rows.iter().all(|r| r[i].1.is_none()) {
            continue;
        }
        print!("{:<30}", rows[0][i].0);
        for r in &rows {
            match r[i].1 {
                Some(v) => print!(" {v:>12.4}"),
                None => print!(" {:>12}", "-"),
            }
        }
        println!();
    }
    for s in &columns[0].1.skipped {
        println!("skipped {}: {}", s.metric, s.reason);
    }
    for set in [
        Some(&columns[0].1.forget),
        columns[0].1.retain.as_ref(),
        columns[0].1.holdout.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        for s in &set.skipped {
            println!("skipped {}: {}", s.metric, s.reason);
        }
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let loaded = load_with_encoder(&args.model, &args.template)?;
    let forget = load_dataset(&args.forget)?;
    let retain = args.retain.as_deref().map(load_dataset).transpose()?;
    let holdout = args.holdout.as_deref().map(load_dataset).transpose()?;
    let sets = grin::eval::EvalSets {
        forget: &forget,
        retain: retain.as_ref(),
        holdout: holdout.as_ref(),
    };
    let mut cfg = grin::eval::EvalConfig {
        include_generations: args.generations,
        max_items: args.max_items,
        ..Default::default()
    };
    args.suites.apply(&mut cfg)?;
    let t0 = Instant::now();
    let oracle = args
        .oracle
        .as_deref()
        .map(|dir| grin::pipeline::oracle_reference(dir, &args.model, &args.template, sets, &cfg, &Device::Cpu))
        .transpose()?;
    let evaluation = grin::eval::evaluate(&loaded.model.inference(), &loaded.encoder, sets, oracle.as_ref(), &cfg)?;
    print_evaluation(&[("value", &evaluation)]);
    eprintln!("evaluated in {:.1}s", t0.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "model": args.model,
            "metrics": evaluation.flat(),
            "evaluation": evaluation,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model directory (Hugging Face layout with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Dataset to score (answer tokens only for QA rows).
    #[arg(long)]
    data: PathBuf,
    /// Also write the token ids and loss mask here, in the input format of
    /// crates/grin/tests/data/hf_loss.py, to compare with `transformers`.
    #[arg(long)]
    tokens_out: Option<PathBuf>,
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
}

/// Teacher-forced per-token NLL of a dataset, as JSON on stdout.
pub fn score(args: ScoreArgs) -> Result<()> {
    let loaded = load_with_encoder(&args.model, &args.template)?;
    let data = load_dataset(&args.data)?;
    let examples = loaded.encoder.encode_dataset(&data)?;
    let net = loaded.model.inference();
    let mut token_nll = Vec::new();
    let (mut total, mut count) = (0f64, 0usize);
    for ex in &examples {
        let refs = [ex];
        let batch = grin::data::collate(&refs, 0, net.device())?;
        let nll: Vec<f32> = grin::train::token_nll(&net.forward(&batch.input_ids)?, &batch)?
            .squeeze(0)?
            .to_vec1()?;
        let row: Vec<f32> = nll[..ex.ids.len() - 1].to_vec();
        for (t, v) in row.iter().enumerate() {
            if t + 1 >= ex.target_start {
                total += *v as f64;
                count += 1;
            }
        }
        token_nll.push(row);
    }
    if let Some(path) = &args.tokens_out {
        let ids: Vec<&Vec<u32>> = examples.iter().map(|e| &e.ids).collect();
        let mask: Vec<Vec<u8>> = examples
            .iter()
            .map(|e| (0..e.ids.len()).map(|t| u8::from(t >= e.target_start)).collect())
            .collect();
        std::fs::write(
            path,
            serde_json::to_vec(&serde_json::json!({"input_ids": ids, "loss_mask": mask}))?,
        )?;
    }
    println!(
        "{}",
        serde_json::json!({"mean_nll": total / count.max(1) as f64, "n_targets": count, "token_nll": token_nll})
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Tokens/s of one forward + backward + AdamW step on random tokens.
    TrainStep(TrainStepArgs),
    /// GRIN against the baselines on a tofu-mini fixture (optionally a grid sweep).
    Unlearn(crate::bench_unlearn::BenchUnlearnArgs),
    /// One unlearning run in-process (no evaluation, nothing written): time
    /// and peak resident memory of each stage, against the weights' size.
    Job(BenchJobArgs),
    /// Each fused op of `grin::ops` against its composition from candle
    /// primitives, forward + backward, on a model's shapes.
    Ops(BenchOpsArgs),
}

#[derive(Debug, Args)]
pub struct BenchOpsArgs {
    /// Model directory (only config.json is read).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct TrainStepArgs {
    /// Model directory (only config.json and the weights are read).
    #[arg(long)]
    model: PathBuf,
    /// Seeded random weights from config.json (no weight file needed).
    #[arg(long)]
    random: bool,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Forward + backward only, gradients summed over steps as the saliency
    /// stage does (no optimiser).
    #[arg(long)]
    grad_only: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchJobArgs {
    /// Model directory: config.json, tokenizer.json and (unless --random)
    /// the weights.
    #[arg(long)]
    model: PathBuf,
    /// Seeded random weights from config.json.
    #[arg(long)]
    random: bool,
    #[arg(long)]
    forget: PathBuf,
    #[arg(long)]
    retain: PathBuf,
    /// grin, graddiff, npo, idk, simnpo or ga.
    #[arg(long, default_value = "grin")]
    method: String,
    /// Overrides of the method's configuration (TOML or JSON).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn bench(cmd: BenchCommand) -> Result<()> {
    // Before any tensor work: candle's spinning element-wise pool off, see
    // `grin::ops::configure_threads` (`--threads` has already set
    // RAYON_NUM_THREADS).
    grin::ops::configure_threads(None);
    match cmd {
        BenchCommand::TrainStep(a) => bench_train_step(a),
        BenchCommand::Unlearn(a) => crate::bench_unlearn::run(a),
        BenchCommand::Job(a) => bench_job(a),
        BenchCommand::Ops(a) => bench_ops(a),
    }
}

/// Seconds per forward + backward of `f` on fresh variables made from
/// `inputs` (the best of three rounds of at least 0.2 s each).
fn time_fwd_bwd(
    inputs: &[candle_core::Tensor],
    f: &dyn Fn(&[candle_core::Tensor]) -> candle_core::Result<candle_core::Tensor>,
) -> Result<f64> {
    let vars: Vec<candle_core::Var> = inputs
        .iter()
        .map(candle_core::Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    let ts: Vec<candle_core::Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let once = || -> Result<()> {
        let out = f(&ts)?;
        let grads = out.sum_all()?.backward()?;
        drop(grads);
        Ok(())
    };
    once()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let (t0, mut n) = (Instant::now(), 0usize);
        while n == 0 || t0.elapsed().as_secs_f64() < 0.2 {
            once()?;
            n += 1;
        }
        best = best.min(t0.elapsed().as_secs_f64() / n as f64);
    }
    Ok(best)
}

fn bench_ops(a: BenchOpsArgs) -> Result<()> {
    use candle_core::Tensor;
    use grin::ops::{self, composed};
    let cfg = grin::config::ModelConfig::load(&grin::config::config_path(&a.model))?;
    let (b, t, dev) = (a.batch, a.seq_len, Device::Cpu);
    let (d, nh, hd, inter, vocab) = (
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.vocab_size,
    );
    let randn = |shape: &[usize]| Tensor::randn(0f32, 1.0, shape, &dev);
    let mask: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &dev)?;
    let angles = randn(&[t, hd / 2])?;
    let (cos, sin) = (angles.cos()?, angles.sin()?);
    let targets = Tensor::from_vec(
        (0..b * t).map(|i| (i * 7919 % vocab) as u32).collect::<Vec<u32>>(),
        (b, t),
        &dev,
    )?;
    let scale = 1.0 / (hd as f64).sqrt();
    type Op<'a> = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor> + 'a>;
    let cases: Vec<(&str, Vec<Tensor>, Op, Op)> = vec![
        (
            "rms_norm",
            vec![randn(&[b, t, d])?, randn(&[d])?],
            Box::new(|x| ops::rms_norm(&x[0], &x[1], 1e-5)),
            Box::new(|x| composed::rms_norm(&x[0], &x[1], 1e-5)),
        ),
        (
            "attn_softmax (scale, causal mask)",
            vec![randn(&[b, nh, t, t])?],
            Box::new(|x| ops::attn_softmax(&x[0], scale, Some(&mask))),
            Box::new(|x| composed::attn_softmax(&x[0], scale, Some(&mask))),
        ),
        (
            "rope_to_heads",
            vec![randn(&[b, t, nh, hd])?],
            Box::new(|x| ops::rope_to_heads(&x[0], &cos, &sin)),
            Box::new(|x| composed::rope_to_heads(&x[0], &cos, &sin)),
        ),
        (
            "silu_mul",
            vec![randn(&[b, t, inter])?, randn(&[b, t, inter])?],
            Box::new(|x| ops::silu_mul(&x[0], &x[1])),
            Box::new(|x| composed::silu_mul(&x[0], &x[1])),
        ),
        (
            "cross_entropy",
            vec![randn(&[b, t, vocab])?],
            Box::new(|x| ops::cross_entropy(&x[0], &targets)),
            Box::new(|x| composed::cross_entropy(&x[0], &targets)),
        ),
        (
            "linear",
            vec![randn(&[b * t, d])?, randn(&[inter, d])?],
            Box::new(|x| ops::linear(&x[0], &x[1])),
            Box::new(|x| composed::linear(&x[0], &x[1])),
        ),
    ];
    let mut rows = Vec::new();
    for (name, inputs, fused, reference) in &cases {
        let f = time_fwd_bwd(inputs, fused.as_ref())?;
        let c = time_fwd_bwd(inputs, reference.as_ref())?;
        rows.push(serde_json::json!({"op": name, "fused_ms": f * 1e3, "composed_ms": c * 1e3, "speedup": c / f}));
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"batch": b, "seq_len": t, "threads": candle_core::utils::get_num_threads(), "ops": rows})
        );
    } else {
        println!("| op (forward + backward, batch {b} x {t}) | composed ms | fused ms | speedup |");
        println!("|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {:.3} | {:.3} | {:.2}x |",
                r["op"].as_str().unwrap_or_default(),
                r["composed_ms"].as_f64().unwrap_or(0.0),
                r["fused_ms"].as_f64().unwrap_or(0.0),
                r["speedup"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

/// Resident set size and its high-water mark in bytes, from
/// `/proc/self/status` (Linux; zeros elsewhere).
fn rss_bytes() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the high-water mark to the current RSS (Linux 4.0+); false where
/// that is not possible, and peaks then span the whole run.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn bench_model(dir: &Path, random: bool) -> Result<grin::model::Model> {
    if random {
        let cfg = grin::config::ModelConfig::load(&grin::config::config_path(dir))?;
        Ok(grin::model::Model::new_random(&cfg, DType::F32, &Device::Cpu, 0, 0.02)?)
    } else {
        Ok(load_model(dir, &Device::Cpu, Some(DType::F32))?)
    }
}

fn bench_train_step(a: TrainStepArgs) -> Result<()> {
    if a.batch == 0 || a.seq_len < 2 || a.steps == 0 {
        bail!("--batch and --steps must be positive and --seq-len at least 2");
    }
    let device = Device::Cpu;
    let rss_before = rss_bytes().0;
    let model = bench_model(&a.model, a.random)?;
    let weights_bytes = model.num_parameters() * model.dtype().size_in_bytes();
    let vocab = model.config().vocab_size as u32;
    if a.seq_len > model.config().max_position_embeddings {
        bail!("--seq-len {} exceeds the model's max_position_embeddings", a.seq_len);
    }
    let ids: Vec<u32> = (0..a.batch * a.seq_len)
        .map(|i| (i as u32).wrapping_mul(2654435761) % vocab)
        .collect();
    let examples: Vec<grin::data::Encoded> = ids
        .chunks(a.seq_len)
        .map(|c| grin::data::Encoded {
            ids: c.to_vec(),
            target_start: 1,
        })
        .collect();
    let refs: Vec<&grin::data::Encoded> = examples.iter().collect();
    let batch = grin::data::collate(&refs, 0, &device)?;
    let vars = model.vars();
    let params = vars.iter().map(|(_, v)| (v.clone(), None)).collect();
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let mut sums: Vec<Option<candle_core::Tensor>> = vec![None; vars.len()];
    reset_peak_rss();
    let mut step = || -> Result<f32> {
        let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
        let value = loss.to_scalar::<f32>()?;
        let mut grads = loss.backward()?;
        drop(loss);
        if a.grad_only {
            for ((_, var), sum) in vars.iter().zip(sums.iter_mut()) {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    *sum = Some(match sum.take() {
                        Some(s) => (s + g)?,
                        None => g,
                    });
                }
            }
        } else {
            opt.step_consuming(&mut grads, 1e-5)?;
        }
        Ok(value)
    };
    for _ in 0..a.warmup {
        grin::ops::in_pool(&mut step)?;
    }
    let t0 = Instant::now();
    let mut last = 0.0;
    for _ in 0..a.steps {
        last = grin::ops::in_pool(&mut step)?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let peak = rss_bytes().1;
    let tokens = (a.batch * a.seq_len * a.steps) as f64;
    let threads = candle_core::utils::get_num_threads();
    let out = serde_json::json!({
        "model": a.model,
        "mode": if a.grad_only { "forward+backward" } else { "forward+backward+adamw" },
        "parameters": model.num_parameters(),
        "batch": a.batch,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "threads": threads,
        "seconds": secs,
        "step_ms": secs * 1000.0 / a.steps as f64,
        "tokens_per_s": tokens / secs,
        "final_loss": last,
        "weights_bytes": weights_bytes,
        "rss_before_model_bytes": rss_before,
        "peak_rss_bytes": peak,
        "peak_over_weights": (peak.saturating_sub(rss_before)) as f64 / weights_bytes as f64,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "train step ({}): {:.1} tokens/s ({:.1} ms/step, batch {} x {} tokens, {} threads, {} parameters), peak RSS {:.1} MB over {:.1} MB of weights",
            out["mode"].as_str().unwrap_or_default(),
            tokens / secs,
            secs * 1000.0 / a.steps as f64,
            a.batch,
            a.seq_len,
            threads,
            model.num_parameters(),
            peak as f64 / 1e6,
            weights_bytes as f64 / 1e6,
        );
    }
    Ok(())
}

/// Peak RSS per progress stage: the high-water mark is read and reset at
/// every progress report, and each interval is charged to the stage that
/// reported at its end. The first interval of a stage also holds the work
/// done between stages (before the first unlearning step: the top-k mask
/// selection, the reference quantities and the noise), so it is charged
/// separately, as `<stage> (first step and the work before it)`.
struct MemoryProbe {
    can_reset: bool,
    peaks: Vec<(String, u64, usize)>,
    last: Option<&'static str>,
}

impl MemoryProbe {
    fn charge(&mut self, stage: &str, peak: u64) {
        match self.peaks.iter_mut().find(|(s, _, _)| s == stage) {
            Some(entry) => {
                entry.1 = entry.1.max(peak);
                entry.2 += 1;
            }
            None => self.peaks.push((stage.to_string(), peak, 1)),
        }
    }
}

impl grin::progress::Observer for MemoryProbe {
    fn progress(&mut self, p: &grin::progress::Progress) {
        let (_, peak) = rss_bytes();
        if self.last == Some(p.stage) {
            self.charge(p.stage, peak);
        } else {
            self.charge(&format!("{} (first step and the work before it)", p.stage), peak);
        }
        self.last = Some(p.stage);
        if self.can_reset {
            reset_peak_rss();
        }
    }
}

fn bench_job(a: BenchJobArgs) -> Result<()> {
    let cfg = unlearn_config(&a.method, a.config.as_deref(), a.seed)?;
    let forget = load_dataset(&a.forget)?;
    let retain = load_dataset(&a.retain)?;
    let rss_before = rss_bytes().0;
    let model = bench_model(&a.model, a.random)?;
    let encoder = grin::pipeline::load_encoder(&a.model, &a.template, model.config())?;
    let weights_bytes = model.num_parameters() * model.dtype().size_in_bytes();
    let rss_loaded = rss_bytes().0;
    let can_reset = reset_peak_rss();
    let mut probe = MemoryProbe {
        can_reset,
        peaks: Vec::new(),
        last: None,
    };
    let t0 = Instant::now();
    // On the tensor pool, as a caller of `unlearn` should run it (see
    // `grin::ops::in_pool`).
    let report = grin::ops::in_pool(|| grin::unlearn::unlearn(&model, &encoder, &forget, &retain, &cfg, &mut probe))?;
    let total = t0.elapsed().as_secs_f64();
    if let Some(last) = probe.last {
        let tail = rss_bytes().1;
        probe.charge(last, tail);
    }
    let over = |b: u64| b.saturating_sub(rss_before) as f64 / weights_bytes as f64;
    let overall = probe.peaks.iter().map(|p| p.1).max().unwrap_or(0).max(rss_loaded);
    let stages: Vec<serde_json::Value> = probe
        .peaks
        .iter()
        .map(|(stage, peak, steps)| {
            serde_json::json!({
                "stage": stage, "steps": steps, "peak_rss_bytes": peak, "peak_over_weights": over(*peak),
            })
        })
        .collect();
    let out = serde_json::json!({
        "model": a.model,
        "method": a.method,
        "parameters": model.num_parameters(),
        "threads": candle_core::utils::get_num_threads(),
        "weights_bytes": weights_bytes,
        "rss_before_model_bytes": rss_before,
        "rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": overall,
        "peak_over_weights": over(overall),
        "per_stage_peaks": can_reset,
        "stages": stages,
        "seconds": total,
        "timings": report.timings,
        "finetune_steps": report.steps.len(),
        "forget_examples": report.forget_examples,
        "retain_examples": report.retain_examples,
        "mask_fraction": report.mask.fraction,
        // Each gradient-sized buffer of the job is this fraction of the
        // weights (the tensors the selection scores).
        "scored_parameters": report.mask.scored,
        "scored_fraction": report.mask.scored as f64 / model.num_parameters().max(1) as f64,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
