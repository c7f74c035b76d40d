//! One unlearning run end to end, as both `grin unlearn` and the worker run
//! it: evaluate the input model, unlearn, evaluate again, apply the gates,
//! save the new checkpoint atomically and build the certificate.
//!
//! The caller supplies data and configuration and decides where the
//! checkpoint goes; this module never touches a database or the network.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::certificate::{self, Certificate, FileDigest, ForgetDigest, GateResult, GateSpec, Software};
use crate::checkpoint::{load_model, load_tokenizer, save_model, ManifestEntry, SaveOptions};
use crate::data::{Dataset, Encoder, PromptTemplate};
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalConfig, EvalSets, Evaluation, OracleReference};
use crate::model::Model;
use crate::progress::{Observer, Progress};
use crate::unlearn::{unlearn, UnlearnConfig, UnlearnReport};

/// Everything a run needs besides the data.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The input checkpoint (Hugging Face layout with tokenizer.json).
    pub model_dir: PathBuf,
    /// Where the new checkpoint goes (must not exist or be empty).
    pub out_dir: PathBuf,
    pub template: String,
    pub config: UnlearnConfig,
    pub eval: EvalConfig,
    pub gates: Vec<GateSpec>,
    /// A model trained without the forget set (forget quality, privleak).
    pub oracle: Option<OracleSource>,
    /// Skip the evaluation of the input model (its metrics are known).
    pub metrics_before: Option<serde_json::Value>,
    /// Where the model runs (f32 on the CPU, bf16 on accelerators).
    pub device: Device,
}

/// Where the oracle's reference numbers come from.
#[derive(Debug, Clone)]
pub enum OracleSource {
    /// Evaluate this checkpoint (must share the model's tokenizer).
    Dir(PathBuf),
    /// Already computed (e.g. once for many benchmark runs).
    Computed(OracleReference),
}

/// The data of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunData<'a> {
    pub forget: &'a Dataset,
    pub retain: &'a Dataset,
    pub holdout: Option<&'a Dataset>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: UnlearnReport,
    pub before: serde_json::Value,
    pub after: Evaluation,
    pub gates: Vec<GateResult>,
    pub passed: bool,
    pub manifest: Vec<ManifestEntry>,
    pub started_at: String,
    pub finished_at: String,
    pub seconds: f64,
}

fn report_stage(observer: &mut dyn Observer, stage: &'static str, step: usize, total: usize) {
    observer.progress(&Progress {
        stage,
        step,
        total,
        losses: vec![],
    });
}

/// Loads a model directory onto `device` with an encoder for its tokenizer,
/// `template`, context length and first EOS id: how every command and the
/// worker read a model they evaluate or unlearn.
pub fn load_with_encoder(dir: &Path, template: &str, device: &Device) -> Result<(Model, Encoder)> {
    let model = load_model(dir, device, None)?;
    let encoder = load_encoder(dir, template, model.config())?;
    Ok((model, encoder))
}

/// The encoder for a model directory's tokenizer, prompt template and
/// configuration (context length, end-of-sequence token).
pub fn load_encoder(dir: &Path, template: &str, mc: &crate::config::ModelConfig) -> Result<Encoder> {
    Ok(Encoder::new(
        load_tokenizer(dir)?,
        PromptTemplate::new(template.to_string())?,
        mc.max_position_embeddings,
        mc.eos_token_ids.first().copied(),
    ))
}

/// Runs the whole job. On any error (including cancellation) nothing is
/// written under `out_dir`.
pub fn run(spec: &RunSpec, data: RunData<'_>, observer: &mut dyn Observer) -> Result<RunOutcome> {
    let started_at = certificate::now_rfc3339();
    let t0 = Instant::now();
    crate::unlearn::validate(&spec.config)?;
    let (model, encoder) = load_with_encoder(&spec.model_dir, &spec.template, &spec.device)?;
    run_loaded(spec, &model, &encoder, data, observer, started_at, t0)
}

/// [`run`] on a model the caller already loaded from `spec.model_dir` (a
/// worker's model cache). The model's weights are changed in place: on
/// success it holds the new version; on error it must be discarded.
/// `started_at`/`t0` are when the job started, for the certificate and the
/// reported duration.
pub fn run_loaded(
    spec: &RunSpec,
    model: &Model,
    encoder: &Encoder,
    data: RunData<'_>,
    observer: &mut dyn Observer,
    started_at: String,
    t0: Instant,
) -> Result<RunOutcome> {
    crate::unlearn::validate(&spec.config)?;
    certificate::validate_gates(&spec.gates).map_err(|e| Error::InvalidArgument {
        field: "gates",
        message: e.to_string(),
    })?;
    // Multiple-choice and harm files fail here, not after the unlearning.
    crate::eval::validate_suites(&spec.eval)?;
    let sets = EvalSets {
        forget: data.forget,
        retain: Some(data.retain),
        holdout: data.holdout,
    };
    let oracle = match &spec.oracle {
        Some(OracleSource::Dir(dir)) => Some(oracle_reference(
            dir,
            &spec.model_dir,
            &spec.template,
            sets,
            &spec.eval,
            &spec.device,
        )?),
        Some(OracleSource::Computed(r)) => Some(r.clone()),
        None => None,
    };
    let obs = observer;
    let before = match &spec.metrics_before {
        Some(m) => m.clone(),
        None => {
            report_stage(obs, "evaluate before", 0, 1);
            let e = evaluate(&model.inference(), encoder, sets, oracle.as_ref(), &spec.eval)?;
            report_stage(obs, "evaluate before", 1, 1);
            e.flat()
        }
    };
    if obs.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let report = unlearn(model, encoder, data.forget, data.retain, &spec.config, obs)?;
    if obs.is_cancelled() {
        return Err(Error::Cancelled);
    }
    report_stage(obs, "evaluate after", 0, 1);
    let after = evaluate(&model.inference(), encoder, sets, oracle.as_ref(), &spec.eval)?;
    report_stage(obs, "evaluate after", 1, 1);
    let gates = certificate::evaluate_gates(&spec.gates, &before, &after.flat());
    let passed = certificate::gates_passed(&gates);
    if obs.is_cancelled() {
        return Err(Error::Cancelled);
    }
    report_stage(obs, "publish", 0, 1);
    let record = serde_json::json!({
        "report": report,
        "metrics_before": before,
        "metrics_after": after.flat(),
        "gates": gates,
    });
    let manifest = save_model(
        model,
        &spec.out_dir,
        &SaveOptions {
            aux_from: Some(spec.model_dir.clone()),
            extra_files: vec![(
                "unlearn.json".into(),
                serde_json::to_vec_pretty(&record).map_err(|e| Error::InvalidArgument {
                    field: "report",
                    message: e.to_string(),
                })?,
            )],
            ..SaveOptions::default()
        },
    )?;
    report_stage(obs, "publish", 1, 1);
    Ok(RunOutcome {
        report,
        before,
        after,
        gates,
        passed,
        manifest,
        started_at,
        finished_at: certificate::now_rfc3339(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Loads the oracle and computes its reference numbers; refuses an oracle
/// whose tokenizer differs from the model's.
pub fn oracle_reference(
    oracle_dir: &Path,
    model_dir: &Path,
    template: &str,
    sets: EvalSets<'_>,
    cfg: &EvalConfig,
    device: &Device,
) -> Result<OracleReference> {
    // Compared as JSON values: formatting may differ, the vocabulary may not.
    let read = |d: &Path| -> Result<serde_json::Value> {
        let path = d.join("tokenizer.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument {
            field: "tokenizer",
            message: format!("{}: {e}", path.display()),
        })
    };
    if read(oracle_dir)? != read(model_dir)? {
        return Err(Error::InvalidArgument {
            field: "oracle",
            message: format!(
                "{}: the oracle's tokenizer differs from the model's; forget quality compares token \
                 probabilities, so both must share one tokenizer",
                oracle_dir.display()
            ),
        });
    }
    let (model, encoder) = load_with_encoder(oracle_dir, template, device)?;
    OracleReference::compute(&model.inference(), &encoder, sets, cfg)
}

/// Identity of what a certificate covers, supplied by the caller.
#[derive(Debug, Clone)]
pub struct CertificateSubject {
    pub id: String,
    pub request_ids: Vec<String>,
    pub model: String,
    pub base_version: Option<String>,
    pub new_version: Option<String>,
    /// HMAC-SHA256 digests (hex) of the forgotten items; never their text.
    pub forget_digests: Vec<String>,
}

/// Builds the (unsigned) certificate of a finished run.
pub fn certificate_for(subject: &CertificateSubject, spec: &RunSpec, outcome: &RunOutcome) -> Result<Certificate> {
    let bad = |e: certificate::CertificateError| Error::InvalidArgument {
        field: "certificate",
        message: e.to_string(),
    };
    let forget_digests = subject
        .forget_digests
        .iter()
        .map(|d| ForgetDigest::from_hex(d).map_err(bad))
        .collect::<Result<Vec<_>>>()?;
    Ok(Certificate {
        format: certificate::FORMAT.to_string(),
        id: subject.id.clone(),
        request_ids: subject.request_ids.clone(),
        model: subject.model.clone(),
        base_version: subject.base_version.clone(),
        new_version: subject.new_version.clone(),
        files: outcome.manifest.iter().map(FileDigest::from).collect(),
        config: serde_json::to_value(&spec.config).map_err(|e| Error::InvalidArgument {
            field: "config",
            message: e.to_string(),
        })?,
        seed: spec.config.seed,
        software: Software::grin(),
        metrics_before: outcome.before.clone(),
        metrics_after: outcome.after.flat(),
        gates: outcome.gates.clone(),
        passed: outcome.passed,
        forget_digests,
        started_at: outcome.started_at.clone(),
        finished_at: outcome.finished_at.clone(),
    })
}
