//! Multiple-choice accuracy by answer-choice log-likelihood (WMDP, MMLU).
//!
//! The lm-evaluation-harness convention: for each question, every choice's
//! continuation is scored teacher-forced after the same prompt, as the sum of
//! its tokens' log-probabilities; the prediction is the highest-scoring choice
//! (ties go to the first, as `numpy.argmax` does). Two formats:
//!
//! - [`McqFormat::Letter`] (the harness's MMLU and WMDP tasks): the prompt
//!   lists the choices, `"{question}\nA. {c0}\nB. {c1}\n...\nAnswer:"`, and the
//!   continuations are `" A"`, `" B"`, ... The template around the listed
//!   question is [`McqConfig::template`] (default `"{question}\nAnswer:"`).
//! - [`McqFormat::Text`] (cloze; the harness's ARC-style tasks): the prompt is
//!   the question through the run's prompt template (the same one QA rows
//!   train with) and the continuations are the choice texts, preceded by one
//!   space unless the prompt already ends in whitespace.
//!
//! Prompts are encoded with the tokenizer's special tokens (BOS) and each
//! continuation separately without them, as [`crate::data::Encoder`] encodes
//! every answer; `crates/grin/tests/data/mcq/make_mcq_refs.py` computes the
//! same numbers with `transformers` and the tests compare. Accuracy is the
//! share of questions answered right; `accuracy_norm` divides each choice's
//! log-likelihood by the length in characters of the scored string first (the
//! harness's `acc_norm`: the choice text, or 1 for a letter); chance is the mean of `1 / number of choices`.

use candle_core::{DType, D};
use serde::{Deserialize, Serialize};

use crate::data::{collate, DataError, Dataset, Encoded, Encoder, Location, McqRow, Position, PromptTemplate, Row};
use crate::error::{Error, Result};
use crate::model::Transformer;

/// How choices are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McqFormat {
    /// Choices listed with letters in the prompt; continuations `" A"`, `" B"`, ...
    #[default]
    Letter,
    /// The question alone; continuations are the choice texts.
    Text,
}

impl McqFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "letter" => Some(McqFormat::Letter),
            "text" => Some(McqFormat::Text),
            _ => None,
        }
    }
}

/// Scoring settings shared by every multiple-choice set of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McqConfig {
    pub format: McqFormat,
    /// Letter format: the template around the question with its lettered
    /// choices (must contain `{question}` once); `None`: `"{question}\nAnswer:"`.
    /// Text format: overrides the run's prompt template when set.
    pub template: Option<String>,
}

impl Default for McqConfig {
    fn default() -> Self {
        McqConfig {
            format: McqFormat::Letter,
            template: None,
        }
    }
}

/// A named multiple-choice file to evaluate: metric keys are
/// `mcq_{name}_accuracy`, `mcq_{name}_accuracy_norm`, `mcq_{name}_chance`
/// and `mcq_{name}_excess`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McqSetSpec {
    /// Lower-case letters, digits and `_` (e.g. `forget`, `general`).
    pub name: String,
    pub path: std::path::PathBuf,
}

impl McqSetSpec {
    pub fn new(name: impl Into<String>, path: impl Into<std::path::PathBuf>) -> Self {
        McqSetSpec {
            name: name.into(),
            path: path.into(),
        }
    }
}

/// Checks set names: non-empty, `[a-z0-9_]`, unique.
pub fn validate_specs(specs: &[McqSetSpec]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for s in specs {
        let ok = !s.name.is_empty()
            && s.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            return Err(Error::InvalidArgument {
                field: "mcq",
                message: format!(
                    "set name {:?} must be non-empty lower-case letters, digits or _",
                    s.name
                ),
            });
        }
        if !seen.insert(&s.name) {
            return Err(Error::InvalidArgument {
                field: "mcq",
                message: format!("set name {:?} is used twice", s.name),
            });
        }
    }
    Ok(())
}

/// The letter template of the harness's MMLU / WMDP tasks.
pub const LETTER_TEMPLATE: &str = "{question}\nAnswer:";

impl McqConfig {
    /// Checks the template.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.template {
            PromptTemplate::new(t.clone())?;
        }
        Ok(())
    }
}

/// One evaluated question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McqItem {
    /// Index of the correct choice.
    pub answer: usize,
    /// Summed log-probability of each choice's continuation tokens.
    pub logprobs: Vec<f64>,
    /// Length in characters of each choice's scored string without its
    /// leading delimiter (the `acc_norm` divisor; 1 for letters).
    pub choice_chars: Vec<usize>,
    /// Highest `logprobs` (first on ties).
    pub predicted: usize,
    /// Highest `logprobs / choice_chars` (first on ties).
    pub predicted_norm: usize,
}

impl McqItem {
    /// Builds an item from scores, choosing the predictions.
    pub fn new(answer: usize, logprobs: Vec<f64>, choice_chars: Vec<usize>) -> Self {
        let norm: Vec<f64> = logprobs
            .iter()
            .zip(&choice_chars)
            .map(|(l, &n)| l / n.max(1) as f64)
            .collect();
        McqItem {
            answer,
            predicted: argmax_first(&logprobs),
            predicted_norm: argmax_first(&norm),
            logprobs,
            choice_chars,
        }
    }

    pub fn correct(&self) -> bool {
        self.predicted == self.answer
    }
}

/// Index of the largest value, the first one on ties (like `numpy.argmax`);
/// NaN never wins. 0 for an empty slice.
pub fn argmax_first(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] || xs[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}

/// Expected accuracy of uniform guessing: mean over questions of `1 / choices`.
pub fn chance_level(n_choices: &[usize]) -> f64 {
    if n_choices.is_empty() {
        return f64::NAN;
    }
    n_choices.iter().map(|&n| 1.0 / n.max(1) as f64).sum::<f64>() / n_choices.len() as f64
}

/// Aggregates of one multiple-choice set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McqSetMetrics {
    /// The set's name (`forget`, `general`, ...): metric keys are `mcq_{name}_*`.
    pub name: String,
    pub source: String,
    pub format: McqFormat,
    pub items: usize,
    pub accuracy: f64,
    pub accuracy_norm: f64,
    pub chance: f64,
    /// `accuracy − chance`: 0 at chance, the quantity a "forgotten" gate bounds.
    pub excess: f64,
    pub per_item: Vec<McqItem>,
}

/// Accuracy, normalised accuracy and chance of scored items.
pub fn summarize(name: &str, source: &str, format: McqFormat, per_item: Vec<McqItem>) -> McqSetMetrics {
    let n = per_item.len().max(1) as f64;
    let accuracy = per_item.iter().filter(|i| i.correct()).count() as f64 / n;
    let accuracy_norm = per_item.iter().filter(|i| i.predicted_norm == i.answer).count() as f64 / n;
    let chance = chance_level(&per_item.iter().map(|i| i.logprobs.len()).collect::<Vec<_>>());
    McqSetMetrics {
        name: name.to_string(),
        source: source.to_string(),
        format,
        items: per_item.len(),
        accuracy,
        accuracy_norm,
        chance,
        excess: accuracy - chance,
        per_item,
    }
}

/// The multiple-choice rows of `data`; any other row is an error naming it.
pub fn mcq_rows(data: &Dataset) -> Result<Vec<&McqRow>> {
    data.rows
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Row::Mcq(m) => Ok(m),
            other => Err(Error::Data(DataError::WrongShape {
                at: Location {
                    source: data.source.clone(),
                    position: Position::Row(i + 1),
                },
                expected: "a multiple-choice row {\"question\", \"choices\", \"answer\"}",
                found: other.kind(),
            })),
        })
        .collect()
}

/// The letter of choice `i` (`A` for 0); fails beyond `Z`.
fn letter(i: usize) -> Option<char> {
    (i < 26).then(|| (b'A' + i as u8) as char)
}

/// The prompt text and the continuation texts of one question.
pub fn render(row: &McqRow, cfg: &McqConfig, run_template: &PromptTemplate) -> Result<(String, Vec<String>)> {
    match cfg.format {
        McqFormat::Letter => {
            let mut body = row.question.trim().to_string();
            let mut conts = Vec::with_capacity(row.choices.len());
            for (i, c) in row.choices.iter().enumerate() {
                let l = letter(i).ok_or_else(|| Error::InvalidArgument {
                    field: "mcq.format",
                    message: format!(
                        "the letter format supports at most 26 choices, a row has {}",
                        row.choices.len()
                    ),
                })?;
                body.push_str(&format!("\n{l}. {c}"));
                conts.push(format!(" {l}"));
            }
            let template = PromptTemplate::new(cfg.template.clone().unwrap_or_else(|| LETTER_TEMPLATE.to_string()))?;
            Ok((template.render(&body), conts))
        }
        McqFormat::Text => {
            let template = match &cfg.template {
                Some(t) => PromptTemplate::new(t.clone())?,
                None => run_template.clone(),
            };
            let prompt = template.render(&row.question);
            let sep = if prompt.ends_with(char::is_whitespace) { "" } else { " " };
            Ok((prompt, row.choices.iter().map(|c| format!("{sep}{c}")).collect()))
        }
    }
}

/// Token ids of one question's prompt and its choices' continuations.
pub fn encode_question(encoder: &Encoder, row: &McqRow, cfg: &McqConfig) -> std::result::Result<Vec<Encoded>, String> {
    let (prompt, conts) = render(row, cfg, encoder.template()).map_err(|e| e.to_string())?;
    let prompt_ids = encoder
        .tokenizer()
        .encode(prompt.as_str(), true)
        .map_err(|e| format!("tokenizer failed: {e}"))?
        .get_ids()
        .to_vec();
    conts
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let cont = encoder
                .tokenizer()
                .encode(c.as_str(), false)
                .map_err(|e| format!("tokenizer failed: {e}"))?
                .get_ids()
                .to_vec();
            if cont.is_empty() {
                return Err(format!("choice {k} encodes to no token"));
            }
            let len = prompt_ids.len() + cont.len();
            if len > encoder.max_len() {
                return Err(format!(
                    "the prompt with choice {k} is {len} tokens, over the context of {} tokens",
                    encoder.max_len()
                ));
            }
            let mut ids = prompt_ids.clone();
            ids.extend(cont);
            Ok(Encoded {
                ids,
                target_start: prompt_ids.len().max(1),
            })
        })
        .collect()
}

/// The `acc_norm` divisor of each choice: the length in characters of the
/// scored string without its leading delimiter (1 for a letter).
pub fn choice_chars(row: &McqRow, format: McqFormat) -> Vec<usize> {
    match format {
        McqFormat::Letter => vec![1; row.choices.len()],
        McqFormat::Text => row.choices.iter().map(|c| c.chars().count()).collect(),
    }
}

/// Summed target log-probability of each example (teacher-forced, f32
/// log-softmax accumulated in f64).
pub fn sum_logprobs(net: &Transformer, examples: &[Encoded], pad: u32, batch_size: usize) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Encoded> = chunk.iter().collect();
        let batch = collate(&refs, pad, net.device())?;
        let logits = net.forward(&batch.input_ids)?.to_dtype(DType::F32)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked: Vec<Vec<f32>> = logp.gather(&batch.targets.unsqueeze(2)?, 2)?.squeeze(2)?.to_vec2()?;
        for (b, ex) in chunk.iter().enumerate() {
            let range = ex.target_start.max(1) - 1..ex.ids.len() - 1;
            out.push(range.map(|t| picked[b][t] as f64).sum());
        }
    }
    Ok(out)
}

/// Scores every question of `data` (which must hold only multiple-choice
/// rows; at most `max_items`, the first ones).
pub fn evaluate_mcq(
    net: &Transformer,
    encoder: &Encoder,
    name: &str,
    data: &Dataset,
    cfg: &McqConfig,
    batch_size: usize,
    max_items: Option<usize>,
) -> Result<McqSetMetrics> {
    cfg.validate()?;
    let rows = mcq_rows(data)?;
    let rows = &rows[..rows.len().min(max_items.unwrap_or(usize::MAX))];
    let pad = net.config().pad_token_id.or(encoder.eos_id()).unwrap_or(0);
    let mut examples = Vec::new();
    let mut spans = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let encoded = encode_question(encoder, row, cfg).map_err(|message| Error::InvalidArgument {
            field: "mcq",
            message: format!("{}: row {}: {message}", data.source, i + 1),
        })?;
        spans.push(examples.len()..examples.len() + encoded.len());
        examples.extend(encoded);
    }
    // Longest first keeps padding low within each batch.
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].ids.len()));
    let sorted: Vec<Encoded> = order.iter().map(|&i| examples[i].clone()).collect();
    let scores_sorted = sum_logprobs(net, &sorted, pad, batch_size)?;
    let mut scores = vec![0f64; examples.len()];
    for (k, &i) in order.iter().enumerate() {
        scores[i] = scores_sorted[k];
    }
    let per_item = rows
        .iter()
        .zip(spans)
        .map(|(row, span)| McqItem::new(row.answer, scores[span].to_vec(), choice_chars(row, cfg.format)))
        .collect();
    Ok(summarize(name, &data.source, cfg.format, per_item))
}
