//! The GRIN pipeline and its baselines: select → noise → masked fine-tune.
//!
//! [`unlearn`] changes the model's weights in place and returns a report; it
//! writes no file. The caller saves the model only when it returns `Ok`, so a
//! cancelled run or a NaN loss leaves nothing behind. Only masked entries
//! change: the optimiser updates through `where(mask, new, old)` and the noise
//! stage likewise, so every unmasked weight keeps its exact bits.
//!
//! Forget losses (β, δ, γ, α are configuration):
//! - GA: `γ·(−NLL_f)`; GradDiff: GA `+ α·L_retain`
//! - NPO: `γ·mean_i −(2/β)·log σ(−β·(log πθ(y_i|x_i) − log π_ref(y_i|x_i))) + α·L_retain`,
//!   with `log π(y|x)` the summed answer log-probability and `π_ref` the input
//!   model. Its per-item log-probabilities are computed once, up front, so no
//!   second model is kept.
//! - IDK: `γ·NLL(refusal | question) + α·L_retain`
//! - SimNPO: `γ·mean_i −(2/β)·log σ(β·(NLL_i/|y_i| − δ)) + α·L_retain` (reference-free)
//!
//! `L_retain` is the retain NLL, or `KL(π_ref ‖ πθ)` per retain answer token
//! (the reference then keeps a copy of only the masked tensors).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use candle_core::{DType, Tensor, D};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::{collate, Batch, Dataset, Encoded, Encoder, Row};
use crate::error::{Error, Result};
use crate::eval::{answer_probability, item_nll, mean};
use crate::model::{accumulation_dtype, Model, Transformer};
use crate::noise::{inject, NoiseConfig, NoiseReport};
use crate::progress::{Observer, Progress};
use crate::saliency::{select, MaskStats, Masks, Selection, SelectionKind, TensorFilter};
use crate::train::{batch_mean_nll, token_nll, AdamW, AdamWConfig, Schedule};

/// The forget objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForgetLoss {
    GradientAscent,
    GradDiff,
    #[default]
    Npo,
    Idk,
    SimNpo,
}

/// The retain objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetainLoss {
    #[default]
    Nll,
    Kl,
}

/// Loss configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub forget: ForgetLoss,
    pub retain: RetainLoss,
    /// Weight γ of the forget term.
    pub gamma: f64,
    /// Weight α of the retain term (unused by gradient ascent).
    pub alpha: f64,
    /// β of NPO.
    pub npo_beta: f64,
    /// β and δ of SimNPO.
    pub simnpo_beta: f64,
    pub simnpo_delta: f64,
    /// Refusal answers for IDK, drawn per item with the run's seed.
    pub idk_answers: Vec<String>,
    /// IDK targets for prompt-response rows (harmful responses to forget):
    /// refusals, drawn per item with the run's seed.
    pub refusal_answers: Vec<String>,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            forget: ForgetLoss::Npo,
            retain: RetainLoss::Nll,
            gamma: 1.0,
            alpha: 1.0,
            npo_beta: 0.1,
            simnpo_beta: 2.5,
            simnpo_delta: 0.0,
            idk_answers: [
                "I don't know.",
                "I'm not sure.",
                "I have no information about that.",
                "I can't answer that.",
                "That is not something I know.",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            refusal_answers: [
                "I can't help with that.",
                "I'm sorry, but I can't assist with that request.",
                "I won't help with this; it could cause harm.",
                "I cannot provide that information.",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// Stop before `max_steps` once the forget target is met while the retain
/// guard holds, checked every `check_every` steps.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStop {
    /// Mean forget answer probability at or below this.
    pub forget_probability_at_most: f64,
    /// Mean retain answer probability at least this fraction of the input
    /// model's.
    pub retain_ratio_at_least: f64,
    pub check_every: usize,
    /// Retain examples used for the guard.
    pub guard_examples: usize,
}

impl Default for EarlyStop {
    fn default() -> Self {
        EarlyStop {
            forget_probability_at_most: 0.05,
            retain_ratio_at_least: 0.9,
            check_every: 5,
            guard_examples: 64,
        }
    }
}

/// The masked fine-tune stage.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskedFinetuneConfig {
    pub loss: LossConfig,
    pub optimizer: AdamWConfig,
    pub max_steps: usize,
    /// Forget and retain examples per step (each).
    pub batch_size: usize,
    pub early_stop: Option<EarlyStop>,
}

impl Default for MaskedFinetuneConfig {
    fn default() -> Self {
        MaskedFinetuneConfig {
            loss: LossConfig::default(),
            optimizer: AdamWConfig {
                lr: 1e-3,
                weight_decay: 0.0,
                warmup_steps: 2,
                schedule: Schedule::Constant,
                max_grad_norm: Some(1.0),
                ..AdamWConfig::default()
            },
            max_steps: 60,
            batch_size: 8,
            early_stop: Some(EarlyStop::default()),
        }
    }
}

/// A whole unlearning run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnlearnConfig {
    pub selection: Selection,
    pub noise: NoiseConfig,
    pub finetune: MaskedFinetuneConfig,
    pub seed: u64,
}

impl Default for UnlearnConfig {
    fn default() -> Self {
        Method::Grin.preset()
    }
}

/// Named methods: GRIN and the classic dense baselines it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Gradient-ratio mask, noise, masked NPO + retain NLL.
    Grin,
    /// Dense, no noise.
    GradDiff,
    Npo,
    Idk,
    SimNpo,
    GradientAscent,
}

impl Method {
    /// All method names, for help texts.
    pub const NAMES: &'static [&'static str] = &["grin", "graddiff", "npo", "idk", "simnpo", "ga"];

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "grin" => Method::Grin,
            "graddiff" => Method::GradDiff,
            "npo" => Method::Npo,
            "idk" => Method::Idk,
            "simnpo" => Method::SimNpo,
            "ga" => Method::GradientAscent,
            _ => return None,
        })
    }

    /// The default configuration of the method. Dense baselines update every
    /// weight (embeddings and norms included) with no noise.
    pub fn preset(self) -> UnlearnConfig {
        let mut cfg = UnlearnConfig {
            selection: Selection::default(),
            noise: NoiseConfig::default(),
            finetune: MaskedFinetuneConfig::default(),
            seed: 0,
        };
        let forget = match self {
            Method::Grin => {
                // A 5 % mask needs a larger step than a dense update to move
                // as far; ρ, σ, lr and steps come from the sweep in
                // docs/benchmarks.md.
                cfg.finetune.optimizer.lr = 1e-2;
                return cfg;
            }
            Method::GradDiff => ForgetLoss::GradDiff,
            Method::Npo => ForgetLoss::Npo,
            Method::Idk => ForgetLoss::Idk,
            Method::SimNpo => ForgetLoss::SimNpo,
            Method::GradientAscent => ForgetLoss::GradientAscent,
        };
        cfg.selection.kind = SelectionKind::Dense;
        cfg.selection.ratio = 1.0;
        cfg.selection.tensors = TensorFilter::all();
        cfg.noise.sigma = 0.0;
        cfg.finetune.loss.forget = forget;
        cfg.finetune.optimizer.lr = 1e-3;
        cfg
    }
}

/// One optimisation step, as logged.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub loss: f32,
    pub forget_loss: f32,
    pub retain_loss: f32,
    pub lr: f64,
    pub grad_norm: f64,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UnlearnReport {
    pub config: UnlearnConfig,
    pub mask: MaskStats,
    pub noise: NoiseReport,
    pub steps: Vec<StepLog>,
    pub stopped_early: bool,
    /// Forget answer probability at each early-stop check (step, value).
    pub forget_probability_checks: Vec<(usize, f32)>,
    pub forget_examples: usize,
    pub retain_examples: usize,
    /// Retain rows dropped because they also appear in the forget set.
    pub dropped_from_retain: usize,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
}

fn same_item(a: &Row, b: &Row) -> bool {
    match (a, b) {
        (Row::Qa(x), Row::Qa(y)) => x.question == y.question && x.answer == y.answer,
        (Row::Text(x), Row::Text(y)) => x.text == y.text,
        (Row::Mcq(x), Row::Mcq(y)) => x.question == y.question && x.choices == y.choices && x.answer == y.answer,
        (Row::Pair(x), Row::Pair(y)) => x.prompt == y.prompt && x.response == y.response,
        _ => false,
    }
}

/// Validates a configuration without running anything.
pub fn validate(cfg: &UnlearnConfig) -> Result<()> {
    cfg.selection.validate()?;
    cfg.noise.validate()?;
    cfg.finetune.optimizer.validate()?;
    let ft = &cfg.finetune;
    let bad = |field: &'static str, message: String| Err(Error::InvalidArgument { field, message });
    if ft.max_steps == 0 || ft.batch_size == 0 {
        return bad("finetune", "max_steps and batch_size must be positive".into());
    }
    let l = &ft.loss;
    if !(l.gamma >= 0.0 && l.alpha >= 0.0) {
        return bad("finetune.loss", "gamma and alpha must be >= 0".into());
    }
    if !(l.npo_beta > 0.0 && l.simnpo_beta > 0.0) {
        return bad("finetune.loss", "npo_beta and simnpo_beta must be > 0".into());
    }
    if l.forget == ForgetLoss::Idk && l.idk_answers.iter().all(|a| a.trim().is_empty()) {
        return bad(
            "finetune.loss.idk_answers",
            "IDK needs at least one refusal answer".into(),
        );
    }
    if l.forget == ForgetLoss::Idk && l.refusal_answers.iter().all(|a| a.trim().is_empty()) {
        return bad(
            "finetune.loss.refusal_answers",
            "IDK needs at least one refusal for prompt-response rows".into(),
        );
    }
    if let Some(es) = &ft.early_stop {
        if es.check_every == 0 {
            return bad("finetune.early_stop.check_every", "must be positive".into());
        }
    }
    Ok(())
}

struct Stage<'a> {
    observer: &'a mut dyn Observer,
    timings: BTreeMap<String, f64>,
}

impl Stage<'_> {
    fn time<T>(&mut self, name: &str, f: impl FnOnce(&mut dyn Observer) -> Result<T>) -> Result<T> {
        let t0 = Instant::now();
        let out = f(self.observer)?;
        self.timings.insert(name.to_string(), t0.elapsed().as_secs_f64());
        Ok(out)
    }
}

/// `log σ(x)`, computed as `min(x, 0) − log(1 + e^{−|x|})` so it is stable
/// for large `|x|`.
pub fn log_sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    let neg_abs = x.abs()?.neg()?;
    x.minimum(0f64)? - (neg_abs.exp()? + 1.0)?.log()?
}

/// NPO: `mean_i −(2/β)·log σ(β·(NLL_θ,i − NLL_ref,i))`, where `NLL` is the
/// summed answer NLL of item `i` (so `β·(NLL_θ − NLL_ref) = −β·(log πθ − log
/// π_ref)`).
pub fn npo_loss(sum_nll: &Tensor, ref_sum_nll: &Tensor, beta: f64) -> candle_core::Result<Tensor> {
    let x = ((sum_nll - ref_sum_nll)? * beta)?;
    log_sigmoid(&x)?.mean_all()? * (-2.0 / beta)
}

/// SimNPO: `mean_i −(2/β)·log σ(β·(NLL_i/|y_i| − δ))`, `mean_nll` already
/// divided by the answer length.
pub fn simnpo_loss(mean_nll: &Tensor, beta: f64, delta: f64) -> candle_core::Result<Tensor> {
    let x = ((mean_nll - delta)? * beta)?;
    log_sigmoid(&x)?.mean_all()? * (-2.0 / beta)
}

/// Runs selection, noise and the masked fine-tune on `model` in place.
pub fn unlearn(
    model: &Model,
    encoder: &Encoder,
    forget: &Dataset,
    retain: &Dataset,
    cfg: &UnlearnConfig,
    observer: &mut dyn Observer,
) -> Result<UnlearnReport> {
    validate(cfg)?;
    if forget.is_empty() {
        return Err(Error::InvalidArgument {
            field: "forget",
            message: format!("{}: the forget set is empty", forget.source),
        });
    }
    let retain_rows: Vec<Row> = retain
        .rows
        .iter()
        .filter(|r| !forget.rows.iter().any(|f| same_item(f, r)))
        .cloned()
        .collect();
    let dropped = retain.len() - retain_rows.len();
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "retain rows that are also in the forget set were dropped from retain"
        );
    }
    let retain = Dataset::new(retain.source.clone(), retain_rows);
    let loss_cfg = &cfg.finetune.loss;
    let needs_retain = loss_cfg.forget != ForgetLoss::GradientAscent && loss_cfg.alpha > 0.0;
    if retain.is_empty() && (needs_retain || cfg.selection.kind == SelectionKind::GradientRatio) {
        return Err(Error::InvalidArgument {
            field: "retain",
            message: "the retain set is empty (after removing forget rows); this method needs one".into(),
        });
    }
    let pad = model.config().pad_token_id.or(encoder.eos_id()).unwrap_or(0);
    let forget_ex = encoder.encode_dataset(forget)?;
    let retain_ex = encoder.encode_dataset(&retain)?;
    let mut stage = Stage {
        observer,
        timings: BTreeMap::new(),
    };

    let masks = stage.time("selection", |obs| {
        select(model, &cfg.selection, &forget_ex, &retain_ex, pad, cfg.seed, obs)
    })?;
    let trainable = masks.tensor_names();

    // Reference quantities of the input model, before any change.
    let t0 = Instant::now();
    let input_net = model.inference();
    let ref_sum_nll: Vec<f32> = if loss_cfg.forget == ForgetLoss::Npo {
        crate::ops::in_pool(|| item_nll(&input_net, &forget_ex, pad, cfg.finetune.batch_size))?
            .iter()
            .zip(&forget_ex)
            .map(|(m, e)| m * e.n_targets() as f32)
            .collect()
    } else {
        vec![]
    };
    let reference = if loss_cfg.retain == RetainLoss::Kl && needs_retain {
        Some(model.frozen_reference(&trainable)?)
    } else {
        None
    };
    let guard_ex: Vec<Encoded> = retain_ex
        .iter()
        .take(cfg.finetune.early_stop.as_ref().map_or(0, |e| e.guard_examples))
        .cloned()
        .collect();
    let guard_base = if guard_ex.is_empty() {
        0.0
    } else {
        mean(&crate::ops::in_pool(|| {
            answer_probability(&input_net, &guard_ex, pad, 32)
        })?)
    };
    stage.timings.insert("reference".into(), t0.elapsed().as_secs_f64());

    let noise = stage.time("noise", |_| inject(model, &masks, &cfg.noise, cfg.seed))?;
    let Masks {
        masks: mask_tensors,
        stats: mask_stats,
    } = masks;

    let idk_ex = if loss_cfg.forget == ForgetLoss::Idk {
        idk_examples(encoder, forget, loss_cfg, cfg.seed)?
    } else {
        vec![]
    };
    let run = FinetuneRun {
        model,
        trainable: &trainable,
        cfg,
        pad,
        forget: if idk_ex.is_empty() { &forget_ex } else { &idk_ex },
        forget_eval: &forget_ex,
        retain: &retain_ex,
        ref_sum_nll: &ref_sum_nll,
        reference: reference.as_ref(),
        guard: (&guard_ex, guard_base),
        needs_retain,
    };
    let (steps, stopped_early, checks) = stage.time("finetune", |obs| run.run(mask_tensors, obs))?;

    Ok(UnlearnReport {
        config: cfg.clone(),
        mask: mask_stats,
        noise,
        steps,
        stopped_early,
        forget_probability_checks: checks,
        forget_examples: forget_ex.len(),
        retain_examples: retain_ex.len(),
        dropped_from_retain: dropped,
        timings: stage.timings,
    })
}

/// The IDK targets: each forget row's prompt with a refusal answer —
/// `idk_answers` for QA and multiple-choice rows, `refusal_answers` for
/// prompt-response rows (harmful responses are replaced by refusals).
fn idk_examples(encoder: &Encoder, forget: &Dataset, loss: &LossConfig, seed: u64) -> Result<Vec<Encoded>> {
    let idk: Vec<&String> = loss.idk_answers.iter().filter(|a| !a.trim().is_empty()).collect();
    let refusals: Vec<&String> = loss.refusal_answers.iter().filter(|a| !a.trim().is_empty()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x1d4);
    let mut out = Vec::new();
    for (i, row) in forget.rows.iter().enumerate() {
        let (question, answers) = match row {
            Row::Qa(qa) => (qa.question.as_str(), &idk),
            Row::Mcq(m) => (m.question.as_str(), &idk),
            Row::Pair(p) => (p.prompt.as_str(), &refusals),
            Row::Text(_) => {
                return Err(Error::InvalidArgument {
                    field: "forget",
                    message: format!(
                        "{}: row {}: IDK needs a prompt to answer with a refusal (question-answer, \
                         multiple-choice or prompt-response rows); this is a document row",
                        forget.source,
                        i + 1
                    ),
                })
            }
        };
        let answer = answers.choose(&mut rng).expect("validated non-empty");
        let prompt = encoder.encode_prompt(question).map_err(|e| Error::InvalidArgument {
            field: "forget",
            message: format!("{}: row {}: {e}", forget.source, i + 1),
        })?;
        let ex = encoder
            .encode_continuation(&prompt, answer, true)
            .map_err(|e| Error::InvalidArgument {
                field: "forget",
                message: format!("{}: row {}: {e}", forget.source, i + 1),
            })?;
        out.push(ex);
    }
    Ok(out)
}

struct FinetuneRun<'a> {
    model: &'a Model,
    trainable: &'a BTreeSet<String>,
    cfg: &'a UnlearnConfig,
    pad: u32,
    /// Examples of the forget term (the refusals for IDK).
    forget: &'a [Encoded],
    /// The real forget examples (for the early-stop check).
    forget_eval: &'a [Encoded],
    retain: &'a [Encoded],
    ref_sum_nll: &'a [f32],
    reference: Option<&'a Transformer>,
    guard: (&'a [Encoded], f32),
    needs_retain: bool,
}

impl FinetuneRun<'_> {
    /// The fine-tune, on the masks of the selection. They are handed to the
    /// optimiser, which on the CPU keeps the masked positions only, so the
    /// masks themselves are freed before the first step.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        masks: BTreeMap<String, Tensor>,
        observer: &mut dyn Observer,
    ) -> Result<(Vec<StepLog>, bool, Vec<(usize, f32)>)> {
        let ft = &self.cfg.finetune;
        let dense = self.cfg.selection.kind == SelectionKind::Dense;
        let vars: BTreeMap<String, candle_core::Var> = self.model.vars().into_iter().collect();
        let params = masks
            .into_iter()
            .map(|(name, mask)| (vars[&name].clone(), if dense { None } else { Some(mask) }))
            .collect();
        let mut opt = AdamW::new(params, ft.optimizer.clone())?;
        let net = self.model.net_training_only(self.trainable)?;
        let probe = self.model.inference();
        let device = self.model.device().clone();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0xf1e7);
        let mut forget_order: Vec<usize> = Vec::new();
        let mut logs = Vec::with_capacity(ft.max_steps);
        let mut checks = Vec::new();
        for step in 0..ft.max_steps {
            if observer.is_cancelled() {
                return Err(Error::Cancelled);
            }
            // Forget batch: walk a reshuffled order, epoch after epoch.
            let mut idx = Vec::with_capacity(ft.batch_size);
            while idx.len() < ft.batch_size.min(self.forget.len()) {
                if forget_order.is_empty() {
                    forget_order = (0..self.forget.len()).collect();
                    forget_order.shuffle(&mut rng);
                }
                idx.push(forget_order.pop().expect("refilled"));
            }
            let f_refs: Vec<&Encoded> = idx.iter().map(|&i| &self.forget[i]).collect();
            let f_batch = collate(&f_refs, self.pad, &device)?;
            let r_batch = if self.needs_retain {
                let picks: Vec<&Encoded> = self.retain.choose_multiple(&mut rng, ft.batch_size).collect();
                Some(collate(&picks, self.pad, &device)?)
            } else {
                None
            };
            let lr = ft.optimizer.lr_at(step, ft.max_steps);
            // The whole step on the tensor thread pool (see `ops::in_pool`);
            // gradients are freed tensor by tensor as the optimiser applies
            // them, and there is no update when the loss is not finite.
            let (value, forget_loss, retain_loss, grad_norm) = crate::ops::in_pool(|| -> Result<_> {
                let (loss, forget_loss, retain_loss) = self.loss(&net, &f_batch, &idx, r_batch.as_ref())?;
                let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
                if !value.is_finite() {
                    return Ok((value, forget_loss, retain_loss, f64::NAN));
                }
                let mut grads = loss.backward()?;
                drop(loss);
                let grad_norm = opt.step_consuming(&mut grads, lr)?;
                Ok((value, forget_loss, retain_loss, grad_norm))
            })?;
            if !value.is_finite() {
                return Err(Error::NonFinite {
                    what: "unlearning loss",
                    step,
                    value,
                });
            }
            logs.push(StepLog {
                step: step + 1,
                loss: value,
                forget_loss,
                retain_loss,
                lr,
                grad_norm,
            });
            observer.progress(&Progress {
                stage: "unlearn",
                step: step + 1,
                total: ft.max_steps,
                losses: vec![("loss", value), ("forget", forget_loss), ("retain", retain_loss)],
            });
            if let Some(es) = &ft.early_stop {
                if (step + 1) % es.check_every == 0 && step + 1 < ft.max_steps {
                    let probability = |examples: &[Encoded]| -> Result<f32> {
                        Ok(mean(&crate::ops::in_pool(|| {
                            answer_probability(&probe, examples, self.pad, 32)
                        })?))
                    };
                    let p_forget = probability(self.forget_eval)?;
                    checks.push((step + 1, p_forget));
                    let (guard, base) = self.guard;
                    let guard_ok =
                        guard.is_empty() || probability(guard)? as f64 >= es.retain_ratio_at_least * base as f64;
                    if p_forget as f64 <= es.forget_probability_at_most && guard_ok {
                        return Ok((logs, true, checks));
                    }
                }
            }
        }
        Ok((logs, false, checks))
    }

    /// Total loss and its forget and retain parts (as logged numbers).
    fn loss(
        &self,
        net: &Transformer,
        f_batch: &Batch,
        f_idx: &[usize],
        r_batch: Option<&Batch>,
    ) -> Result<(Tensor, f32, f32)> {
        let l = &self.cfg.finetune.loss;
        let f_logits = net.forward(&f_batch.input_ids)?;
        let forget_term = match l.forget {
            ForgetLoss::GradientAscent | ForgetLoss::GradDiff => batch_mean_nll(&f_logits, f_batch)?.neg()?,
            ForgetLoss::Idk => batch_mean_nll(&f_logits, f_batch)?,
            ForgetLoss::Npo => {
                let sum_nll = token_nll(&f_logits, f_batch)?.sum(1)?;
                let refs: Vec<f32> = f_idx.iter().map(|&i| self.ref_sum_nll[i]).collect();
                let refs = Tensor::new(refs, sum_nll.device())?.to_dtype(sum_nll.dtype())?;
                npo_loss(&sum_nll, &refs, l.npo_beta)?
            }
            ForgetLoss::SimNpo => {
                let nll = token_nll(&f_logits, f_batch)?.sum(1)?;
                let counts = f_batch
                    .target_mask
                    .sum(1)?
                    .clamp(1f32, f32::MAX)?
                    .to_dtype(nll.dtype())?;
                simnpo_loss(&(nll / counts)?, l.simnpo_beta, l.simnpo_delta)?
            }
        };
        let forget_value = forget_term.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let mut total = (forget_term * l.gamma)?;
        let mut retain_value = 0.0;
        if let Some(r) = r_batch {
            let r_logits = net.forward(&r.input_ids)?;
            let retain_term = match (l.retain, self.reference) {
                (RetainLoss::Kl, Some(reference)) => kl_to_reference(&r_logits, &reference.forward(&r.input_ids)?, r)?,
                _ => batch_mean_nll(&r_logits, r)?,
            };
            retain_value = retain_term.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            total = (total + (retain_term * l.alpha)?)?;
        }
        Ok((total, forget_value, retain_value))
    }
}

/// Mean over target tokens of `KL(p_ref ‖ pθ)`.
pub fn kl_to_reference(logits: &Tensor, ref_logits: &Tensor, batch: &Batch) -> candle_core::Result<Tensor> {
    let dt = accumulation_dtype(logits.dtype());
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(dt)?, D::Minus1)?;
    let logq = candle_nn::ops::log_softmax(&ref_logits.to_dtype(dt)?, D::Minus1)?;
    let kl = (logq.exp()? * (logq - logp)?)?.sum(D::Minus1)?;
    let mask = batch.target_mask.to_dtype(dt)?;
    (kl * &mask)?.sum_all()? / mask.sum_all()?.clamp(1f64, f64::MAX)?
}
