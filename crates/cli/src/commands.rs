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
        None => grin::certificate::default_gates(),
    };
    let forget = load_dataset(&args.forget)?;
    let retain = load_dataset(&args.retain)?;
    let holdout = args.holdout.as_deref().map(load_dataset).transpose()?;
    let spec = grin::pipeline::RunSpec {
        model_dir: args.model.clone(),
        out_dir: args.out.clone(),
        template: args.template.clone(),
        config: cfg,
        eval: grin::eval::EvalConfig {
            max_items: args.max_eval_items,
            ..Default::default()
        },
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
    let cfg = grin::eval::EvalConfig {
        include_generations: args.generations,
        max_items: args.max_items,
        ..Default::default()
    };
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
    let a = match cmd {
        BenchCommand::TrainStep(a) => a,
        BenchCommand::Unlearn(a) => return crate::bench_unlearn::run(a),
    };
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
