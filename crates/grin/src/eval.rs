//! Evaluation: every metric of grin.md on a forget, retain and holdout set.
//!
//! Teacher-forced quantities (answer probability `p(a|q) = exp(−mean NLL over
//! answer tokens)`, exact memorisation, extraction strength, the
//! membership-inference scores, truth ratios, keyword confidence) come from
//! batched forward passes; ROUGE-L recall and keyword accuracy from greedy
//! generation through the KV-cached path. The arithmetic of each metric lives
//! in [`crate::metrics`], checked there against rouge_score and scipy. A set
//! that lacks the fields a metric needs skips that metric with a stated reason.

use crate::data::{collate, Encoded};
use crate::error::Result;
use crate::model::Transformer;
use crate::train::item_mean_nll;

/// Mean NLL over each example's target tokens.
pub fn item_nll(
    net: &Transformer,
    examples: &[Encoded],
    pad_id: u32,
    batch_size: usize,
) -> candle_core::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad_id, net.device())?;
        let nll = item_mean_nll(&net.forward(&batch.input_ids)?, &batch)?;
        out.extend(nll.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Answer probability `exp(-mean NLL)` of each example.
pub fn answer_probability(
    net: &Transformer,
    examples: &[Encoded],
    pad_id: u32,
    batch_size: usize,
) -> candle_core::Result<Vec<f32>> {
    Ok(item_nll(net, examples, pad_id, batch_size)?
        .into_iter()
        .map(|n| (-n).exp())
        .collect())
}

/// Arithmetic mean (0 for an empty slice).
pub fn mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().map(|&x| x as f64).sum::<f64>() as f32 / xs.len() as f32
    }
}

// ---------------------------------------------------------------------------
// The full evaluation: every metric of grin.md on forget / retain / holdout.

use std::collections::BTreeMap;

use candle_core::{DType, D};

use crate::data::{Dataset, Encoder, QaRow, Row};
use crate::harm::{HarmConfig, HarmMetrics};
use crate::mcq::{McqConfig, McqSetMetrics, McqSetSpec};
use crate::metrics;

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub batch_size: usize,
    /// Greedy generation length for ROUGE-L and keyword accuracy.
    pub max_new_tokens: usize,
    /// k of Min-K% and Min-K%++.
    pub min_k: f64,
    /// Put generated texts into the per-item results. Off by default: they
    /// may repeat personal data.
    pub include_generations: bool,
    /// Evaluate at most this many rows per set (the first ones); `None`: all.
    pub max_items: Option<usize>,
    /// Multiple-choice sets scored by answer-choice log-likelihood
    /// (`mcq_{name}_accuracy`, ...); see [`crate::mcq`].
    pub mcq: Vec<McqSetSpec>,
    /// How the multiple-choice sets are scored.
    pub mcq_scoring: McqConfig,
    /// Harmful-behaviour evaluation (`harmful_rate`, ...); see [`crate::harm`].
    pub harm: Option<HarmConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            batch_size: 16,
            max_new_tokens: 48,
            min_k: 0.4,
            include_generations: false,
            max_items: None,
            mcq: Vec::new(),
            mcq_scoring: McqConfig::default(),
            harm: None,
        }
    }
}

/// Membership-inference scores of one item (higher = more member-like).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MiaScores {
    pub loss: f64,
    pub zlib: f64,
    pub min_k: f64,
    pub min_k_plus_plus: f64,
}

/// Metrics of one row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemMetrics {
    pub answer_probability: f64,
    pub exact_memorization: f64,
    pub extraction_strength: f64,
    pub rouge_l_recall: Option<f64>,
    /// R = mean p(perturbed) / p(paraphrased).
    pub truth_ratio: Option<f64>,
    pub keyword_hit: Option<bool>,
    /// Highest over the row's keywords of `exp(−mean NLL)` of the keyword's
    /// tokens, teacher-forced after the prompt and the gold answer's text
    /// up to the keyword.
    pub keyword_confidence: Option<f64>,
    pub mia: MiaScores,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
}

/// A metric that could not be computed for a set, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    pub metric: String,
    pub reason: String,
}

/// Aggregates of one set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetMetrics {
    pub items: usize,
    pub answer_probability: f64,
    pub exact_memorization: f64,
    pub extraction_strength: f64,
    pub rouge_l_recall: Option<f64>,
    /// Forget sets: mean min(R, 1/R); other sets: mean max(0, 1 − R).
    pub truth_ratio_score: Option<f64>,
    pub keyword_accuracy: Option<f64>,
    pub keyword_confidence: Option<f64>,
    pub skipped: Vec<Skipped>,
    pub per_item: Vec<ItemMetrics>,
}

/// ROC-AUC of each attack, forget (members) vs holdout (non-members), and
/// privleak of Min-K% against the oracle's AUC (or 0.5).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MiaResult {
    pub auc_loss: f64,
    pub auc_zlib: f64,
    pub auc_min_k: f64,
    pub auc_min_k_plus_plus: f64,
    pub reference_auc_min_k: Option<f64>,
    pub privleak: f64,
}

/// Everything `grin eval` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub forget: SetMetrics,
    pub retain: Option<SetMetrics>,
    pub holdout: Option<SetMetrics>,
    /// Harmonic mean of retain answer probability, ROUGE-L recall and
    /// truth-ratio score.
    pub model_utility: Option<f64>,
    /// KS p-value of forget truth ratios against the oracle's.
    pub forget_quality: Option<f64>,
    pub mia: Option<MiaResult>,
    pub skipped: Vec<Skipped>,
    /// Multiple-choice sets, in the order configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcq: Vec<McqSetMetrics>,
    /// Harmful-behaviour evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harm: Option<HarmMetrics>,
}

impl Evaluation {
    /// Flat `name → number` map (`forget_answer_probability`,
    /// `model_utility`, ...), the form gates and certificates use.
    pub fn flat(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        let mut put = |k: String, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(k, serde_json::json!(v));
            }
        };
        for (name, set) in [
            ("forget", Some(&self.forget)),
            ("retain", self.retain.as_ref()),
            ("holdout", self.holdout.as_ref()),
        ] {
            let Some(s) = set else { continue };
            put(format!("{name}_answer_probability"), Some(s.answer_probability));
            put(format!("{name}_exact_memorization"), Some(s.exact_memorization));
            put(format!("{name}_extraction_strength"), Some(s.extraction_strength));
            put(format!("{name}_rouge_l_recall"), s.rouge_l_recall);
            put(format!("{name}_truth_ratio_score"), s.truth_ratio_score);
            put(format!("{name}_keyword_accuracy"), s.keyword_accuracy);
            put(format!("{name}_keyword_confidence"), s.keyword_confidence);
        }
        put("model_utility".into(), self.model_utility);
        put("forget_quality".into(), self.forget_quality);
        if let Some(mia) = &self.mia {
            put("mia_auc_loss".into(), Some(mia.auc_loss));
            put("mia_auc_zlib".into(), Some(mia.auc_zlib));
            put("mia_auc_min_k".into(), Some(mia.auc_min_k));
            put("mia_auc_min_k_plus_plus".into(), Some(mia.auc_min_k_plus_plus));
            put("privleak".into(), Some(mia.privleak));
        }
        for set in &self.mcq {
            let n = &set.name;
            put(format!("mcq_{n}_accuracy"), Some(set.accuracy));
            put(format!("mcq_{n}_accuracy_norm"), Some(set.accuracy_norm));
            put(format!("mcq_{n}_chance"), Some(set.chance));
            put(format!("mcq_{n}_excess"), Some(set.excess));
        }
        if let Some(h) = &self.harm {
            for (k, v) in h.flat() {
                put(k, v);
            }
        }
        serde_json::Value::Object(m)
    }
}

/// Teacher-forced per-token statistics of one example's target tokens.
struct Scored {
    logprobs: Vec<f64>,
    argmax: Vec<u32>,
    labels: Vec<u32>,
    mu: Vec<f64>,
    sigma2: Vec<f64>,
}

fn score_examples(net: &Transformer, examples: &[Encoded], pad: u32, batch_size: usize) -> Result<Vec<Scored>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad, net.device())?;
        let logits = net.forward(&batch.input_ids)?.to_dtype(DType::F32)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked: Vec<Vec<f32>> = logp.gather(&batch.targets.unsqueeze(2)?, 2)?.squeeze(2)?.to_vec2()?;
        let argmax: Vec<Vec<u32>> = logits.argmax(D::Minus1)?.to_vec2()?;
        let p = logp.exp()?;
        let mu_t = (&p * &logp)?.sum(D::Minus1)?;
        let m2 = (&p * logp.sqr()?)?.sum(D::Minus1)?;
        let sigma2_t = (m2 - mu_t.sqr()?)?;
        let mu: Vec<Vec<f32>> = mu_t.to_vec2()?;
        let sigma2: Vec<Vec<f32>> = sigma2_t.to_vec2()?;
        let targets: Vec<Vec<u32>> = batch.targets.to_vec2()?;
        for (b, ex) in chunk.iter().enumerate() {
            // Position t predicts ids[t + 1]; targets start at target_start.
            let range = ex.target_start.max(1) - 1..ex.ids.len() - 1;
            out.push(Scored {
                logprobs: range.clone().map(|t| picked[b][t] as f64).collect(),
                argmax: range.clone().map(|t| argmax[b][t]).collect(),
                labels: range.clone().map(|t| targets[b][t]).collect(),
                mu: range.clone().map(|t| mu[b][t] as f64).collect(),
                sigma2: range.map(|t| sigma2[b][t] as f64).collect(),
            });
        }
    }
    Ok(out)
}

fn metric<T>(r: std::result::Result<T, metrics::MetricsError>) -> Result<T> {
    r.map_err(|e| crate::Error::InvalidArgument {
        field: "metrics",
        message: e.to_string(),
    })
}

fn encode_err(e: crate::data::EncodeError) -> crate::Error {
    crate::Error::InvalidArgument {
        field: "data",
        message: e.to_string(),
    }
}

fn mean_f64(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = xs.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Which form of the truth-ratio score a set reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetRole {
    Forget,
    Retain,
    Holdout,
}

/// Evaluates one set.
pub fn evaluate_set(
    net: &Transformer,
    encoder: &Encoder,
    data: &Dataset,
    role: SetRole,
    cfg: &EvalConfig,
) -> Result<SetMetrics> {
    let pad = net.config().pad_token_id.or(encoder.eos_id()).unwrap_or(0);
    let rows: Vec<&Row> = data.rows.iter().take(cfg.max_items.unwrap_or(usize::MAX)).collect();
    let subset = Dataset::new(data.source.clone(), rows.iter().map(|r| (*r).clone()).collect());
    let examples = encoder.encode_dataset(&subset)?;
    let scored = score_examples(net, &examples, pad, cfg.batch_size)?;
    // Multiple-choice and prompt-response rows are scored as QA rows.
    let qa_owned: Vec<Option<QaRow>> = rows.iter().map(|r| r.as_qa()).collect();
    let qa: Vec<Option<&QaRow>> = qa_owned.iter().map(|q| q.as_ref()).collect();
    let mut skipped = Vec::new();

    // Greedy generations for QA rows (ROUGE-L, keyword accuracy).
    let eos: Vec<u32> = net
        .config()
        .eos_token_ids
        .iter()
        .copied()
        .chain(encoder.eos_id())
        .collect();
    let mut prompts = Vec::new();
    let mut prompt_of = vec![None; rows.len()];
    for (i, q) in qa.iter().enumerate() {
        if let Some(q) = q {
            prompt_of[i] = Some(prompts.len());
            prompts.push(encoder.encode_prompt(&q.question).map_err(encode_err)?);
        }
    }
    let generated = crate::generate::greedy_batch(net, &prompts, cfg.max_new_tokens, &eos)?;
    let texts: Vec<String> = generated
        .iter()
        .map(|ids| encoder.tokenizer().decode(ids, true).unwrap_or_default())
        .collect();

    // Paraphrased / perturbed answers (truth ratio) and keywords (confidence).
    let mut tr_examples = Vec::new();
    let mut tr_index: Vec<Option<(usize, usize)>> = vec![None; rows.len()];
    let mut kw_examples = Vec::new();
    let mut kw_index: Vec<Option<(usize, usize)>> = vec![None; rows.len()];
    for (i, q) in qa.iter().enumerate() {
        let (Some(q), Some(p)) = (q, prompt_of[i]) else {
            continue;
        };
        let prompt = &prompts[p];
        if let (Some(para), false) = (&q.paraphrased_answer, q.perturbed_answer.is_empty()) {
            let start = tr_examples.len();
            tr_examples.push(encoder.encode_continuation(prompt, para, true).map_err(encode_err)?);
            for wrong in &q.perturbed_answer {
                tr_examples.push(encoder.encode_continuation(prompt, wrong, true).map_err(encode_err)?);
            }
            tr_index[i] = Some((start, tr_examples.len()));
        }
        if !q.keywords.is_empty() {
            let start = kw_examples.len();
            for kw in &q.keywords {
                // The keyword in the gold answer's context: prompt, then the
                // answer up to the keyword, then the keyword's tokens (scored).
                // A keyword absent from the answer follows the prompt directly.
                let context = match q.answer.to_lowercase().find(&kw.to_lowercase()) {
                    Some(at) if at > 0 && q.answer.is_char_boundary(at) => {
                        encoder
                            .encode_continuation(prompt, q.answer[..at].trim_end(), false)
                            .map_err(encode_err)?
                            .ids
                    }
                    _ => prompt.clone(),
                };
                let kw_text = if context.len() > prompt.len() {
                    format!(" {kw}")
                } else {
                    kw.clone()
                };
                kw_examples.push(
                    encoder
                        .encode_continuation(&context, &kw_text, false)
                        .map_err(encode_err)?,
                );
            }
            kw_index[i] = Some((start, kw_examples.len()));
        }
    }
    let tr_p = answer_probability(net, &tr_examples, pad, cfg.batch_size)?;
    let kw_p = answer_probability(net, &kw_examples, pad, cfg.batch_size)?;

    let mut per_item = Vec::with_capacity(rows.len());
    for (i, s) in scored.iter().enumerate() {
        let text = match (rows[i], qa[i]) {
            (Row::Text(t), _) => t.text.as_str(),
            (_, Some(q)) => q.answer.as_str(),
            (_, None) => "",
        };
        let nll: Vec<f64> = s.logprobs.iter().map(|l| -l).collect();
        let gen = prompt_of[i].map(|p| &texts[p]);
        let truth_ratio = match tr_index[i] {
            Some((a, b)) => {
                let p = tr_p[a] as f64;
                let wrong: Vec<f64> = tr_p[a + 1..b].iter().map(|&x| x as f64).collect();
                metrics::truth_ratio(&wrong, p).ok()
            }
            None => None,
        };
        per_item.push(ItemMetrics {
            answer_probability: metric(metrics::answer_probability(&nll))?,
            exact_memorization: metric(metrics::exact_memorization(&s.argmax, &s.labels))?,
            extraction_strength: metric(metrics::extraction_strength(&s.argmax, &s.labels))?,
            rouge_l_recall: match (gen, qa[i]) {
                (Some(g), Some(q)) => Some(metrics::rouge_l(g, &q.answer).recall),
                _ => None,
            },
            truth_ratio,
            keyword_hit: match (gen, qa[i]) {
                (Some(g), Some(q)) if !q.keywords.is_empty() => {
                    let g = g.to_lowercase();
                    Some(q.keywords.iter().any(|k| g.contains(&k.to_lowercase())))
                }
                _ => None,
            },
            keyword_confidence: kw_index[i].map(|(a, b)| kw_p[a..b].iter().fold(0f64, |m, &x| m.max(x as f64))),
            mia: MiaScores {
                loss: metric(metrics::loss_score(&s.logprobs))?,
                zlib: metric(metrics::zlib_score(&s.logprobs, text))?,
                min_k: metric(metrics::min_k(&s.logprobs, cfg.min_k))?,
                min_k_plus_plus: metric(metrics::min_k_plus_plus(&s.logprobs, &s.mu, &s.sigma2, cfg.min_k))?,
            },
            generation: if cfg.include_generations { gen.cloned() } else { None },
        });
    }

    let some = |f: &dyn Fn(&ItemMetrics) -> Option<f64>| mean_f64(per_item.iter().filter_map(f));
    let rouge = some(&|m| m.rouge_l_recall);
    if rouge.is_none() {
        skipped.push(Skipped {
            metric: "rouge_l_recall".into(),
            reason: "no question-answer rows".into(),
        });
    }
    let truth_ratio_score = some(&|m| {
        m.truth_ratio.map(|r| match role {
            SetRole::Forget => metrics::forget_truth_score(r),
            _ => metrics::retain_truth_score(r),
        })
    });
    if truth_ratio_score.is_none() {
        skipped.push(Skipped {
            metric: "truth_ratio".into(),
            reason: "no row has both `paraphrased_answer` and `perturbed_answer`".into(),
        });
    }
    let keyword_accuracy = some(&|m| m.keyword_hit.map(|h| if h { 1.0 } else { 0.0 }));
    if keyword_accuracy.is_none() {
        skipped.push(Skipped {
            metric: "keyword_accuracy".into(),
            reason: "no row has `keywords`".into(),
        });
    }
    Ok(SetMetrics {
        items: per_item.len(),
        answer_probability: some(&|m| Some(m.answer_probability)).unwrap_or(f64::NAN),
        exact_memorization: some(&|m| Some(m.exact_memorization)).unwrap_or(f64::NAN),
        extraction_strength: some(&|m| Some(m.extraction_strength)).unwrap_or(f64::NAN),
        rouge_l_recall: rouge,
        truth_ratio_score,
        keyword_accuracy,
        keyword_confidence: some(&|m| m.keyword_confidence),
        skipped,
        per_item,
    })
}

/// The sets to evaluate on.
#[derive(Debug, Clone, Copy)]
pub struct EvalSets<'a> {
    pub forget: &'a Dataset,
    pub retain: Option<&'a Dataset>,
    pub holdout: Option<&'a Dataset>,
}

/// What the oracle contributes: its forget truth ratios and its Min-K% AUC.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OracleReference {
    pub forget_truth_ratios: Vec<f64>,
    pub auc_min_k: Option<f64>,
}

impl OracleReference {
    /// Evaluates the oracle model on the forget (and holdout) set.
    pub fn compute(net: &Transformer, encoder: &Encoder, sets: EvalSets<'_>, cfg: &EvalConfig) -> Result<Self> {
        let quick = EvalConfig {
            max_new_tokens: 1,
            ..cfg.clone()
        };
        let forget = evaluate_set(net, encoder, sets.forget, SetRole::Forget, &quick)?;
        let auc_min_k = match sets.holdout {
            Some(h) => {
                let holdout = evaluate_set(net, encoder, h, SetRole::Holdout, &quick)?;
                Some(auc(&forget, &holdout, |m| m.min_k)?)
            }
            None => None,
        };
        Ok(OracleReference {
            forget_truth_ratios: forget.per_item.iter().filter_map(|m| m.truth_ratio).collect(),
            auc_min_k,
        })
    }
}

fn auc(members: &SetMetrics, others: &SetMetrics, f: impl Fn(&MiaScores) -> f64) -> Result<f64> {
    let a: Vec<f64> = members.per_item.iter().map(|m| f(&m.mia)).collect();
    let b: Vec<f64> = others.per_item.iter().map(|m| f(&m.mia)).collect();
    metric(metrics::mia_auc(&a, &b))
}

/// Evaluates a model on all given sets; `oracle` enables forget quality and
/// an oracle-relative privleak.
pub fn evaluate(
    net: &Transformer,
    encoder: &Encoder,
    sets: EvalSets<'_>,
    oracle: Option<&OracleReference>,
    cfg: &EvalConfig,
) -> Result<Evaluation> {
    let forget = evaluate_set(net, encoder, sets.forget, SetRole::Forget, cfg)?;
    let retain = sets
        .retain
        .map(|d| evaluate_set(net, encoder, d, SetRole::Retain, cfg))
        .transpose()?;
    let holdout = sets
        .holdout
        .map(|d| evaluate_set(net, encoder, d, SetRole::Holdout, cfg))
        .transpose()?;
    let mut skipped = Vec::new();
    let model_utility = match &retain {
        Some(r) => match (r.rouge_l_recall, r.truth_ratio_score) {
            (Some(rouge), Some(tr)) => Some(metric(metrics::harmonic_mean(&[r.answer_probability, rouge, tr]))?),
            _ => {
                skipped.push(Skipped {
                    metric: "model_utility".into(),
                    reason: "the retain set lacks ROUGE or truth-ratio fields".into(),
                });
                None
            }
        },
        None => {
            skipped.push(Skipped {
                metric: "model_utility".into(),
                reason: "no retain set given".into(),
            });
            None
        }
    };
    let forget_quality = match oracle {
        Some(o) => {
            let ours: Vec<f64> = forget.per_item.iter().filter_map(|m| m.truth_ratio).collect();
            if ours.is_empty() || o.forget_truth_ratios.is_empty() {
                skipped.push(Skipped {
                    metric: "forget_quality".into(),
                    reason: "no truth ratios on the forget set".into(),
                });
                None
            } else {
                Some(metric(metrics::forget_quality(&ours, &o.forget_truth_ratios))?)
            }
        }
        None => {
            skipped.push(Skipped {
                metric: "forget_quality".into(),
                reason: "no oracle model given".into(),
            });
            None
        }
    };
    let mia = match &holdout {
        Some(h) => {
            let auc_min_k = auc(&forget, h, |m| m.min_k)?;
            let reference = oracle.and_then(|o| o.auc_min_k);
            Some(MiaResult {
                auc_loss: auc(&forget, h, |m| m.loss)?,
                auc_zlib: auc(&forget, h, |m| m.zlib)?,
                auc_min_k,
                auc_min_k_plus_plus: auc(&forget, h, |m| m.min_k_plus_plus)?,
                reference_auc_min_k: reference,
                privleak: metric(metrics::privleak(auc_min_k, reference))?,
            })
        }
        None => {
            skipped.push(Skipped {
                metric: "membership_inference".into(),
                reason: "no holdout set given".into(),
            });
            None
        }
    };
    let mcq = evaluate_mcq_sets(net, encoder, cfg)?;
    let harm = cfg
        .harm
        .as_ref()
        .map(|h| {
            crate::harm::evaluate_harm(
                net,
                encoder,
                h,
                cfg.batch_size,
                cfg.max_items,
                cfg.include_generations,
                None,
            )
        })
        .transpose()?;
    Ok(Evaluation {
        forget,
        retain,
        holdout,
        model_utility,
        forget_quality,
        mia,
        skipped,
        mcq,
        harm,
    })
}

/// Checks the multiple-choice and harm parts of `cfg` and that their files
/// load, without running a model: call it before a long run so a bad file
/// fails fast.
pub fn validate_suites(cfg: &EvalConfig) -> Result<()> {
    crate::mcq::validate_specs(&cfg.mcq)?;
    cfg.mcq_scoring.validate()?;
    for spec in &cfg.mcq {
        crate::mcq::mcq_rows(&crate::data::load_dataset(&spec.path)?)?;
    }
    if let Some(h) = &cfg.harm {
        h.validate()?;
        crate::data::load_prompts(&h.harmful)?;
        if let Some(b) = &h.benign {
            crate::data::load_prompts(b)?;
        }
        if let Some(lm) = h
            .judge
            .lm
            .as_ref()
            .filter(|_| h.judge.kind == crate::harm::JudgeKind::Lm)
        {
            for file in ["config.json", "tokenizer.json"] {
                let path = lm.model.join(file);
                if !path.is_file() {
                    return Err(crate::Error::InvalidArgument {
                        field: "harm.judge.lm.model",
                        message: format!("{}: not found", path.display()),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Scores every configured multiple-choice set.
pub fn evaluate_mcq_sets(net: &Transformer, encoder: &Encoder, cfg: &EvalConfig) -> Result<Vec<McqSetMetrics>> {
    crate::mcq::validate_specs(&cfg.mcq)?;
    cfg.mcq
        .iter()
        .map(|spec| {
            let data = crate::data::load_dataset(&spec.path)?;
            crate::mcq::evaluate_mcq(
                net,
                encoder,
                &spec.name,
                &data,
                &cfg.mcq_scoring,
                cfg.batch_size,
                cfg.max_items,
            )
        })
        .collect()
}

/// Rows of a printable table: (metric, value) in a fixed order.
pub fn summary_rows(e: &Evaluation) -> Vec<(String, Option<f64>)> {
    let flat = e.flat();
    let order = [
        "forget_answer_probability",
        "forget_rouge_l_recall",
        "forget_truth_ratio_score",
        "forget_keyword_accuracy",
        "forget_keyword_confidence",
        "forget_exact_memorization",
        "forget_extraction_strength",
        "retain_answer_probability",
        "retain_rouge_l_recall",
        "retain_truth_ratio_score",
        "holdout_answer_probability",
        "model_utility",
        "forget_quality",
        "mia_auc_loss",
        "mia_auc_zlib",
        "mia_auc_min_k",
        "mia_auc_min_k_plus_plus",
        "privleak",
        "harmful_rate",
        "harmful_refusal_rate",
        "benign_refusal_rate",
        "benign_rouge_l_recall",
        "benign_answer_probability",
    ];
    let map: BTreeMap<String, f64> = flat
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        })
        .unwrap_or_default();
    let mut rows: Vec<(String, Option<f64>)> = order.iter().map(|k| (k.to_string(), map.get(*k).copied())).collect();
    // Multiple-choice sets in their configured order.
    for set in &e.mcq {
        for suffix in ["accuracy", "accuracy_norm", "chance", "excess"] {
            let k = format!("mcq_{}_{suffix}", set.name);
            let v = map.get(&k).copied();
            rows.push((k, v));
        }
    }
    rows
}
