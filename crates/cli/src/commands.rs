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

#[derive(Debug, Subcommand)]
pub enum FixtureCommand {
    /// TOFU-shaped synthetic authors, a tokenizer, a model that memorised them
    /// and an oracle trained without the forget10 authors.
    TofuMini(TofuMiniArgs),
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
    let FixtureCommand::TofuMini(args) = cmd;
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
    /// Prompt template for QA rows; must contain `{question}`.
    #[arg(long, default_value = "Question: {question}\nAnswer: ")]
    template: String,
}

/// Merges `overrides` into `base` object by object (arrays and scalars are
/// replaced).
fn merge(base: &mut serde_json::Value, overrides: serde_json::Value) {
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

pub fn unlearn(args: UnlearnArgs) -> Result<()> {
    let cfg = unlearn_config(&args.method, args.config.as_deref(), args.seed)?;
    if args.out.exists() && std::fs::read_dir(&args.out)?.next().is_some() {
        bail!("--out {} exists and is not empty", args.out.display());
    }
    let device = Device::Cpu;
    let model = load_model(&args.model, &device, None)?;
    let tokenizer = load_tokenizer(&args.model)?;
    let mc = model.config();
    let eos = mc.eos_token_ids.first().copied();
    let encoder = Encoder::new(
        tokenizer,
        PromptTemplate::new(args.template.clone())?,
        mc.max_position_embeddings,
        eos,
    );
    let forget = load_dataset(&args.forget)?;
    let retain = load_dataset(&args.retain)?;
    let pad = mc.pad_token_id.or(eos).unwrap_or(0);
    let forget_ex = encoder.encode_dataset(&forget)?;
    let before = grin::eval::mean(&grin::eval::answer_probability(
        &model.inference(),
        &forget_ex,
        pad,
        32,
    )?);

    let mut bars = Bars::new();
    let t0 = Instant::now();
    let report = grin::unlearn::unlearn(&model, &encoder, &forget, &retain, &cfg, &mut bars)?;
    bars.finish();
    let after = grin::eval::mean(&grin::eval::answer_probability(
        &model.inference(),
        &forget_ex,
        pad,
        32,
    )?);
    if report.dropped_from_retain > 0 {
        eprintln!(
            "note: {} retain row(s) also in the forget set were dropped from retain",
            report.dropped_from_retain
        );
    }
    let record = serde_json::json!({
        "method": args.method,
        "base_model": args.model,
        "seed": cfg.seed,
        "forget_answer_probability": {"before": before, "after": after},
        "seconds": t0.elapsed().as_secs_f64(),
        "report": report,
    });
    save_model(
        &model,
        &args.out,
        &SaveOptions {
            aux_from: Some(args.model.clone()),
            extra_files: vec![("unlearn.json".into(), serde_json::to_vec_pretty(&record)?)],
            ..SaveOptions::default()
        },
    )?;
    println!(
        "{}: selected {} of {} scored weights ({:.2}%), {} steps{}; forget answer probability {before:.4} -> {after:.4}",
        args.method,
        report.mask.selected,
        report.mask.scored,
        report.mask.fraction * 100.0,
        report.steps.len(),
        if report.stopped_early { " (early stop)" } else { "" },
    );
    println!("wrote {}", args.out.display());
    Ok(())
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
}

/// A model with its tokenizer and an encoder for its context length.
pub struct Loaded {
    pub model: grin::model::Model,
    pub encoder: Encoder,
    pub tokenizer_json: String,
}

pub fn load_with_encoder(dir: &Path, template: &str) -> Result<Loaded> {
    let model = load_model(dir, &Device::Cpu, None)?;
    let tokenizer = load_tokenizer(dir)?;
    let tokenizer_json = std::fs::read_to_string(dir.join("tokenizer.json"))?;
    let mc = model.config();
    let encoder = Encoder::new(
        tokenizer,
        PromptTemplate::new(template.to_string())?,
        mc.max_position_embeddings,
        mc.eos_token_ids.first().copied(),
    );
    Ok(Loaded {
        model,
        encoder,
        tokenizer_json,
    })
}

/// The oracle's reference numbers; refuses an oracle whose tokenizer differs.
pub fn oracle_reference(
    dir: &Path,
    template: &str,
    model_tokenizer: &str,
    sets: grin::eval::EvalSets<'_>,
    cfg: &grin::eval::EvalConfig,
) -> Result<grin::eval::OracleReference> {
    let oracle = load_with_encoder(dir, template)?;
    if oracle.tokenizer_json != model_tokenizer {
        bail!(
            "--oracle {}: its tokenizer differs from the model's; forget quality compares token-level \
             probabilities, so both must share one tokenizer",
            dir.display()
        );
    }
    Ok(grin::eval::OracleReference::compute(
        &oracle.model.inference(),
        &oracle.encoder,
        sets,
        cfg,
    )?)
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
    let cfg = grin::eval::EvalConfig {
        include_generations: args.generations,
        max_items: args.max_items,
        ..Default::default()
    };
    let t0 = Instant::now();
    let oracle = args
        .oracle
        .as_deref()
        .map(|dir| oracle_reference(dir, &args.template, &loaded.tokenizer_json, sets, &cfg))
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

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Tokens/s of one forward + backward + AdamW step on random tokens.
    TrainStep(TrainStepArgs),
}

#[derive(Debug, Args)]
pub struct TrainStepArgs {
    /// Model directory (only config.json and the weights are read).
    #[arg(long)]
    model: PathBuf,
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
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn bench(cmd: BenchCommand) -> Result<()> {
    let BenchCommand::TrainStep(a) = cmd;
    if a.batch == 0 || a.seq_len < 2 || a.steps == 0 {
        bail!("--batch and --steps must be positive and --seq-len at least 2");
    }
    let device = Device::Cpu;
    let model = load_model(&a.model, &device, Some(DType::F32))?;
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
    let params = model.vars().into_iter().map(|(_, v)| (v, None)).collect();
    let mut opt = AdamW::new(params, AdamWConfig::default())?;
    let mut step = || -> Result<f32> {
        let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
        let grads = loss.backward()?;
        opt.step(&grads, 1e-5)?;
        Ok(loss.to_scalar::<f32>()?)
    };
    for _ in 0..a.warmup {
        step()?;
    }
    let t0 = Instant::now();
    let mut last = 0.0;
    for _ in 0..a.steps {
        last = step()?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let tokens = (a.batch * a.seq_len * a.steps) as f64;
    let threads = candle_core::utils::get_num_threads();
    let out = serde_json::json!({
        "model": a.model,
        "parameters": model.num_parameters(),
        "batch": a.batch,
        "seq_len": a.seq_len,
        "steps": a.steps,
        "threads": threads,
        "seconds": secs,
        "step_ms": secs * 1000.0 / a.steps as f64,
        "tokens_per_s": tokens / secs,
        "final_loss": last,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "train step: {:.1} tokens/s ({:.1} ms/step, batch {} x {} tokens, {} threads, {} parameters)",
            tokens / secs,
            secs * 1000.0 / a.steps as f64,
            a.batch,
            a.seq_len,
            threads,
            model.num_parameters()
        );
    }
    Ok(())
}
