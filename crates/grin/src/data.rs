//! Dataset files, prompt rendering, encoding and batching.
//!
//! A dataset is JSON Lines (or one JSON array) of rows in the public
//! datasets' own field names. Four shapes are recognised:
//!
//! | shape | fields | example | from |
//! |---|---|---|---|
//! | question-answer | `question`, `answer`, `paraphrased_answer`?, `perturbed_answer`?, `keywords`?, `subject`? | `{"question": "Where was Ada born?", "answer": "In Paris."}` | TOFU |
//! | document | `text`, `subject`? | `{"text": "Velmorine is made from ..."}` | WMDP corpora, any text |
//! | multiple choice | `question`, `choices` (≥ 2 strings), `answer` (0-based index, or a letter `"A"`, `"B"`, ...), `subject`? | `{"question": "Which ...?", "choices": ["a", "b", "c", "d"], "answer": 2}` | WMDP, MMLU |
//! | prompt-response | `prompt`, `response`, `is_safe`? (bool), `keywords`?, `subject`? | `{"prompt": "How do I ...?", "response": "...", "is_safe": false}` | BeaverTails-style |
//!
//! A PKU-SafeRLHF row (`prompt`, `response_0`, `response_1`,
//! `is_response_0_safe`, `is_response_1_safe`, other fields ignored) holds
//! two responses to one prompt; [`load_dataset`] splits it into two
//! prompt-response rows (`response_0` first), so a dataset then has more rows
//! than its file has lines. The shape is decided by the keys present:
//! `choices` makes a multiple-choice row, then `question`/`answer` a QA row,
//! then `response` or `response_0` a prompt-response row, then `text` a
//! document. Loading validates every row and reports problems as
//! `file:line: what is wrong` so a user can fix the file; the row *contents*
//! never appear in errors or logs, because forget sets are personal data.
//!
//! Encoding turns a row into token ids plus the index of the first token the
//! loss should count (`target_start`): for QA rows only the answer (and EOS)
//! count, so the model is never trained or scored on the question it was
//! asked. A multiple-choice row trains and scores like a QA row whose answer
//! is its correct choice, a prompt-response row like a QA row with the prompt
//! as the question. [`collate`] pads a batch and builds next-token targets
//! and the matching loss mask. Nothing here runs the model.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

// ---------------------------------------------------------------------------
// Errors and locations

/// Where in a dataset a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a JSON Lines file (or of a JSON array file, for syntax errors).
    Line(usize),
    /// 0-based element index of a JSON array file, as `jq '.[i]'` counts.
    Element(usize),
    /// 1-based row of a [`Dataset`], counting rows only. It equals the line
    /// number for JSON Lines files without blank lines and without
    /// PKU-SafeRLHF rows (each of which is two rows); used once a dataset is
    /// in memory and line numbers are no longer known.
    Row(usize),
}

/// A source name (usually the file path) plus a [`Position`] in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    pub position: Position,
}

impl Location {
    fn new(source: &str, position: Position) -> Self {
        Self {
            source: source.to_string(),
            position,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Position::Line(n) => write!(f, "{}:{n}", self.source),
            Position::Element(i) => write!(f, "{}[{i}]", self.source),
            Position::Row(n) => write!(f, "{}: row {n}", self.source),
        }
    }
}

/// Errors from loading, validating and encoding datasets.
///
/// Messages name the location and the field, never the field's value.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line (or the array file) is not valid JSON.
    #[error("{at}: invalid JSON at column {column}: {message}")]
    InvalidJson {
        at: Location,
        column: usize,
        message: String,
    },
    /// A row is valid JSON but not an object.
    #[error("{at}: row must be a JSON object, found {found}")]
    NotAnObject { at: Location, found: &'static str },
    /// An object of none of the known shapes.
    #[error(
        "{at}: row has neither \"question\"/\"answer\" (QA row), \"question\"/\"choices\"/\"answer\" \
         (multiple-choice row), \"prompt\"/\"response\" (prompt-response row) nor \"text\" (document row)"
    )]
    UnknownShape { at: Location },
    #[error("{at}: missing field \"{field}\"")]
    MissingField { at: Location, field: &'static str },
    /// `field` names the element for lists, e.g. `perturbed_answer[2]`.
    #[error("{at}: field \"{field}\" must be {expected}, found {found}")]
    WrongType {
        at: Location,
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    /// A present string field is empty or only whitespace.
    #[error("{at}: field \"{field}\" is empty")]
    EmptyField { at: Location, field: String },
    /// A field of the right type whose value is not allowed (e.g. an answer
    /// index beyond the choices). `reason` never quotes row text.
    #[error("{at}: field \"{field}\" {reason}")]
    InvalidValue {
        at: Location,
        field: String,
        reason: String,
    },
    /// A file holds rows of another shape than the caller needs (e.g. a
    /// multiple-choice evaluation set with a document row).
    #[error("{at}: expected {expected}, found {found}")]
    WrongShape {
        at: Location,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{name}: dataset has no rows")]
    EmptyDataset { name: String },
    /// The tokens before the first target already fill `max_len`.
    #[error("{at}: the prompt is {prefix_tokens} tokens, leaving no answer token within max_len {max_len}")]
    RowTooLong {
        at: Location,
        prefix_tokens: usize,
        max_len: usize,
    },
    /// A row encodes to no token the loss could count.
    #[error("{at}: row encodes to no target token")]
    NoTargetTokens { at: Location },
    #[error("{at}: tokenizer failed: {message}")]
    Tokenizer { at: Location, message: String },
    #[error("invalid prompt template {template:?}: {reason}")]
    InvalidTemplate { template: String, reason: String },
}

/// Errors from encoding a single row or text, before a location is known.
/// [`Encoder::encode_dataset`] turns them into [`DataError`]s that name the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the prompt is {prefix_tokens} tokens, leaving no answer token within max_len {max_len}")]
    RowTooLong { prefix_tokens: usize, max_len: usize },
    #[error("encodes to no target token")]
    NoTargetTokens,
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
}

impl EncodeError {
    fn at(self, at: Location) -> DataError {
        match self {
            Self::RowTooLong { prefix_tokens, max_len } => DataError::RowTooLong {
                at,
                prefix_tokens,
                max_len,
            },
            Self::NoTargetTokens => DataError::NoTargetTokens { at },
            Self::Tokenizer(message) => DataError::Tokenizer { at, message },
        }
    }
}

/// A row problem before the row's location is attached.
#[derive(Debug)]
enum RowError {
    NotAnObject(&'static str),
    UnknownShape,
    Missing(&'static str),
    WrongType {
        field: String,
        expected: &'static str,
        found: &'static str,
    },
    Empty(String),
    Invalid {
        field: String,
        reason: String,
    },
    /// A PKU-SafeRLHF row deserialised as a single row.
    TwoResponses,
}

impl RowError {
    fn at(self, at: Location) -> DataError {
        match self {
            Self::NotAnObject(found) => DataError::NotAnObject { at, found },
            Self::UnknownShape => DataError::UnknownShape { at },
            Self::Missing(field) => DataError::MissingField { at, field },
            Self::WrongType { field, expected, found } => DataError::WrongType {
                at,
                field,
                expected,
                found,
            },
            Self::Empty(field) => DataError::EmptyField { at, field },
            Self::Invalid { field, reason } => DataError::InvalidValue { at, field, reason },
            Self::TwoResponses => DataError::InvalidValue {
                at,
                field: "response_0".into(),
                reason: TWO_RESPONSES.into(),
            },
        }
    }
}

const TWO_RESPONSES: &str = "and \"response_1\": a PKU-SafeRLHF row holds two responses, so it is two \
                             dataset rows; load the file with load_dataset, which splits it";

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Reuse DataError's wording without a location prefix.
        let msg = match self {
            Self::NotAnObject(found) => format!("row must be a JSON object, found {found}"),
            Self::UnknownShape => {
                "row has neither \"question\"/\"answer\", \"question\"/\"choices\", \"prompt\"/\"response\" nor \"text\""
                    .to_string()
            }
            Self::Missing(field) => format!("missing field \"{field}\""),
            Self::WrongType { field, expected, found } => {
                format!("field \"{field}\" must be {expected}, found {found}")
            }
            Self::Empty(field) => format!("field \"{field}\" is empty"),
            Self::Invalid { field, reason } => format!("field \"{field}\" {reason}"),
            Self::TwoResponses => format!("field \"response_0\" {TWO_RESPONSES}"),
        };
        f.write_str(&msg)
    }
}

// ---------------------------------------------------------------------------
// Rows

/// A question-answer row (TOFU layout).
///
/// `perturbed_answer` and `keywords` are empty when the file has none; a
/// single string in the file becomes a one-element list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QaRow {
    pub question: String,
    pub answer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paraphrased_answer: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub perturbed_answer: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl QaRow {
    /// A row with only the required fields.
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            question: question.into(),
            answer: answer.into(),
            paraphrased_answer: None,
            perturbed_answer: Vec::new(),
            keywords: Vec::new(),
            subject: None,
        }
    }
}

/// A raw document row; the loss counts every token after the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextRow {
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl TextRow {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            subject: None,
        }
    }
}

/// A multiple-choice question (WMDP / MMLU layout): `answer` is the 0-based
/// index of the correct entry of `choices`. In files it may also be a letter
/// (`"A"` = 0, `"B"` = 1, ...), as some MMLU exports write it; it is always
/// written back as the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McqRow {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl McqRow {
    /// A row with only the required fields; panics if `answer` is not an index of `choices`.
    pub fn new(question: impl Into<String>, choices: Vec<String>, answer: usize) -> Self {
        assert!(answer < choices.len(), "answer index out of range");
        Self {
            question: question.into(),
            choices,
            answer,
            subject: None,
        }
    }

    /// The text of the correct choice.
    pub fn correct(&self) -> &str {
        &self.choices[self.answer]
    }
}

/// A prompt with one response and, optionally, whether the response is safe
/// (BeaverTails' `is_safe`; PKU-SafeRLHF's `is_response_{i}_safe`).
/// `keywords` are words whose presence in a generation marks it as harmful,
/// for the keyword judge of [`crate::harm`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairRow {
    pub prompt: String,
    pub response: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_safe: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl PairRow {
    pub fn new(prompt: impl Into<String>, response: impl Into<String>, is_safe: Option<bool>) -> Self {
        Self {
            prompt: prompt.into(),
            response: response.into(),
            is_safe,
            keywords: Vec::new(),
            subject: None,
        }
    }
}

/// One dataset row. Serialises as the bare row object (no tag).
///
/// Deserialising applies the same validation as [`load_dataset`]: the shape
/// follows from the keys present (see the module documentation). A
/// PKU-SafeRLHF row with two responses cannot deserialise as one row; only
/// [`load_dataset`] / [`parse_dataset`] split it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Row {
    Qa(QaRow),
    Text(TextRow),
    Mcq(McqRow),
    Pair(PairRow),
}

impl Row {
    /// The data subject the row is about, if the file says.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Row::Qa(r) => r.subject.as_deref(),
            Row::Text(r) => r.subject.as_deref(),
            Row::Mcq(r) => r.subject.as_deref(),
            Row::Pair(r) => r.subject.as_deref(),
        }
    }

    /// What kind of row this is, for messages: `"a question-answer row"` etc.
    pub fn kind(&self) -> &'static str {
        match self {
            Row::Qa(_) => "a question-answer row",
            Row::Text(_) => "a document row",
            Row::Mcq(_) => "a multiple-choice row",
            Row::Pair(_) => "a prompt-response row",
        }
    }

    /// The row as a prompt and its target text: QA rows as they are,
    /// multiple-choice rows with the correct choice as the answer,
    /// prompt-response rows with the prompt as the question. `None` for
    /// documents.
    pub fn as_qa(&self) -> Option<QaRow> {
        match self {
            Row::Qa(q) => Some(q.clone()),
            Row::Text(_) => None,
            Row::Mcq(m) => Some(QaRow {
                subject: m.subject.clone(),
                ..QaRow::new(m.question.clone(), m.correct())
            }),
            Row::Pair(p) => Some(QaRow {
                keywords: p.keywords.clone(),
                subject: p.subject.clone(),
                ..QaRow::new(p.prompt.clone(), p.response.clone())
            }),
        }
    }

    /// The harm label of a prompt-response row (`None` for other rows and
    /// for unlabelled pairs).
    pub fn is_safe(&self) -> Option<bool> {
        match self {
            Row::Pair(p) => p.is_safe,
            _ => None,
        }
    }

    fn from_value(value: &Value) -> Result<Row, RowError> {
        let mut rows = Row::rows_from_value(value)?;
        if rows.len() != 1 {
            return Err(RowError::TwoResponses);
        }
        Ok(rows.remove(0))
    }

    /// The rows one JSON value stands for: one, or two for a PKU-SafeRLHF row.
    fn rows_from_value(value: &Value) -> Result<Vec<Row>, RowError> {
        let obj = value
            .as_object()
            .ok_or_else(|| RowError::NotAnObject(json_kind(value)))?;
        if obj.contains_key("choices") {
            Ok(vec![Row::Mcq(mcq_row(obj)?)])
        } else if obj.contains_key("question") || obj.contains_key("answer") {
            Ok(vec![Row::Qa(QaRow {
                question: required_str(obj, "question")?,
                answer: required_str(obj, "answer")?,
                paraphrased_answer: optional_str(obj, "paraphrased_answer")?,
                perturbed_answer: str_list(obj, "perturbed_answer")?,
                keywords: str_list(obj, "keywords")?,
                subject: optional_str(obj, "subject")?,
            })])
        } else if obj.contains_key("response") {
            Ok(vec![Row::Pair(PairRow {
                prompt: required_str(obj, "prompt")?,
                response: required_str(obj, "response")?,
                is_safe: optional_bool(obj, "is_safe")?,
                keywords: str_list(obj, "keywords")?,
                subject: optional_str(obj, "subject")?,
            })])
        } else if obj.contains_key("response_0") || obj.contains_key("response_1") {
            let prompt = required_str(obj, "prompt")?;
            let keywords = str_list(obj, "keywords")?;
            let subject = optional_str(obj, "subject")?;
            ["response_0", "response_1"]
                .iter()
                .zip(["is_response_0_safe", "is_response_1_safe"])
                .map(|(field, label)| {
                    Ok(Row::Pair(PairRow {
                        prompt: prompt.clone(),
                        response: required_str(obj, field)?,
                        is_safe: optional_bool(obj, label)?,
                        keywords: keywords.clone(),
                        subject: subject.clone(),
                    }))
                })
                .collect()
        } else if obj.contains_key("text") {
            Ok(vec![Row::Text(TextRow {
                text: required_str(obj, "text")?,
                subject: optional_str(obj, "subject")?,
            })])
        } else {
            Err(RowError::UnknownShape)
        }
    }
}

fn mcq_row(obj: &Map<String, Value>) -> Result<McqRow, RowError> {
    let question = required_str(obj, "question")?;
    let choices = match obj.get("choices") {
        None | Some(Value::Null) => return Err(RowError::Missing("choices")),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| check_string(format!("choices[{i}]"), item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(RowError::WrongType {
                field: "choices".into(),
                expected: "a list of strings",
                found: json_kind(other),
            })
        }
    };
    if choices.len() < 2 {
        return Err(RowError::Invalid {
            field: "choices".into(),
            reason: format!("must hold at least 2 choices, found {}", choices.len()),
        });
    }
    let n = choices.len();
    let out_of_range = |what: String| RowError::Invalid {
        field: "answer".into(),
        reason: format!("{what} is not one of the {n} choices (0-based index or letter A..)"),
    };
    let answer = match obj.get("answer") {
        None | Some(Value::Null) => return Err(RowError::Missing("answer")),
        Some(Value::Number(x)) => match x.as_u64() {
            Some(i) if (i as usize) < n => i as usize,
            _ => return Err(out_of_range(format!("index {x}"))),
        },
        Some(Value::String(s)) => {
            let t = s.trim();
            let mut chars = t.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_uppercase() && ((c as u8 - b'A') as usize) < n => {
                    (c as u8 - b'A') as usize
                }
                (Some(c), None) if c.is_ascii_uppercase() => return Err(out_of_range(format!("letter {c}"))),
                _ => return Err(out_of_range(format!("a string of {} characters", t.chars().count()))),
            }
        }
        Some(other) => {
            return Err(RowError::WrongType {
                field: "answer".into(),
                expected: "an index (number) or a letter",
                found: json_kind(other),
            })
        }
    };
    Ok(McqRow {
        question,
        choices,
        answer,
        subject: optional_str(obj, "subject")?,
    })
}

fn optional_bool(obj: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, RowError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(RowError::WrongType {
            field: field.to_string(),
            expected: "true or false",
            found: json_kind(other),
        }),
    }
}

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Row::from_value(&value).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for QaRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Row::deserialize(deserializer)? {
            Row::Qa(r) => Ok(r),
            Row::Text(_) => Err(serde::de::Error::custom(
                "expected a question-answer row, found a text row",
            )),
            other => Err(serde::de::Error::custom(format!(
                "expected a question-answer row, found {}",
                other.kind()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for TextRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Row::deserialize(deserializer)? {
            Row::Text(r) => Ok(r),
            Row::Qa(_) => Err(serde::de::Error::custom(
                "expected a text row, found a question-answer row",
            )),
            other => Err(serde::de::Error::custom(format!(
                "expected a text row, found {}",
                other.kind()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for McqRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Row::deserialize(deserializer)? {
            Row::Mcq(r) => Ok(r),
            other => Err(serde::de::Error::custom(format!(
                "expected a multiple-choice row, found {}",
                other.kind()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for PairRow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Row::deserialize(deserializer)? {
            Row::Pair(r) => Ok(r),
            other => Err(serde::de::Error::custom(format!(
                "expected a prompt-response row, found {}",
                other.kind()
            ))),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_string(field: String, value: &Value) -> Result<String, RowError> {
    match value {
        Value::String(s) if s.trim().is_empty() => Err(RowError::Empty(field)),
        Value::String(s) => Ok(s.clone()),
        other => Err(RowError::WrongType {
            field,
            expected: "a string",
            found: json_kind(other),
        }),
    }
}

fn required_str(obj: &Map<String, Value>, field: &'static str) -> Result<String, RowError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(RowError::Missing(field)),
        Some(v) => check_string(field.to_string(), v),
    }
}

/// Optional fields treat `null` like absence: exports from pandas write it.
fn optional_str(obj: &Map<String, Value>, field: &'static str) -> Result<Option<String>, RowError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => check_string(field.to_string(), v).map(Some),
    }
}

fn str_list(obj: &Map<String, Value>, field: &'static str) -> Result<Vec<String>, RowError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v @ Value::String(_)) => Ok(vec![check_string(field.to_string(), v)?]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| check_string(format!("{field}[{i}]"), item))
            .collect(),
        Some(other) => Err(RowError::WrongType {
            field: field.to_string(),
            expected: "a string or a list of strings",
            found: json_kind(other),
        }),
    }
}

// ---------------------------------------------------------------------------
// Datasets

/// Validated rows plus the name they came from (used in error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub rows: Vec<Row>,
    pub source: String,
}

impl Dataset {
    /// An in-memory dataset, e.g. built from a deletion request's payload.
    /// Rows are not re-validated.
    pub fn new(source: impl Into<String>, rows: Vec<Row>) -> Self {
        Self {
            rows,
            source: source.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The question-answer rows, skipping rows of other shapes.
    pub fn qa_rows(&self) -> impl Iterator<Item = &QaRow> + '_ {
        self.rows.iter().filter_map(|r| match r {
            Row::Qa(q) => Some(q),
            _ => None,
        })
    }

    /// The rows that are not prompt-response pairs labelled safe: what a
    /// forget set keeps when only harmful responses are to be forgotten.
    pub fn without_safe_pairs(&self) -> Dataset {
        self.filtered(|r| r.is_safe() != Some(true))
    }

    /// The rows that are not prompt-response pairs labelled unsafe: what a
    /// retain set keeps when harmful responses must not be reinforced.
    pub fn without_unsafe_pairs(&self) -> Dataset {
        self.filtered(|r| r.is_safe() != Some(false))
    }

    fn filtered(&self, keep: impl Fn(&Row) -> bool) -> Dataset {
        Dataset::new(
            self.source.clone(),
            self.rows.iter().filter(|r| keep(r)).cloned().collect(),
        )
    }

    /// The rows as JSON Lines (one object per line, trailing newline).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for row in &self.rows {
            // Rows are strings and lists of strings: serialising cannot fail.
            if let Ok(line) = serde_json::to_string(row) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// Writes the rows as JSON Lines; [`load_dataset`] reads them back equal.
    pub fn write_jsonl(&self, path: &Path) -> Result<(), DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::create(path).map_err(io_err)?;
        file.write_all(self.to_jsonl().as_bytes()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }
}

/// Reads a dataset file: JSON Lines, or a JSON array when the first
/// non-whitespace character is `[`.
///
/// Blank lines are skipped; a UTF-8 byte-order mark is ignored. Unknown
/// fields are ignored, so real TOFU files load as they are. The whole file is
/// read into memory.
pub fn load_dataset(path: &Path) -> Result<Dataset, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_dataset(&path.display().to_string(), &text)
}

/// Parses dataset text already in memory; `source_name` only labels errors.
pub fn parse_dataset(source_name: &str, text: &str) -> Result<Dataset, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rows = if text.trim_start().starts_with('[') {
        parse_array(source_name, text)?
    } else {
        parse_lines(source_name, text)?
    };
    if rows.is_empty() {
        return Err(DataError::EmptyDataset {
            name: source_name.to_string(),
        });
    }
    Ok(Dataset::new(source_name, rows))
}

fn invalid_json(source: &str, line: usize, e: &serde_json::Error) -> DataError {
    // serde_json appends " at line L column C"; the location is reported
    // separately, so drop the suffix rather than print two line numbers.
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
    DataError::InvalidJson {
        at: Location::new(source, Position::Line(line)),
        column: e.column(),
        message,
    }
}

fn parse_lines(source: &str, text: &str) -> Result<Vec<Row>, DataError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| invalid_json(source, i + 1, &e))?;
        let row = Row::rows_from_value(&value).map_err(|e| e.at(Location::new(source, Position::Line(i + 1))))?;
        rows.extend(row);
    }
    Ok(rows)
}

fn parse_array(source: &str, text: &str) -> Result<Vec<Row>, DataError> {
    let values: Vec<Value> = serde_json::from_str(text).map_err(|e| invalid_json(source, e.line(), &e))?;
    let mut rows = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        rows.extend(Row::rows_from_value(v).map_err(|e| e.at(Location::new(source, Position::Element(i))))?);
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Prompt sets (generation evaluation)

/// One prompt of a set the model generates from (harmful or benign prompts),
/// with what the file says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptItem {
    pub prompt: String,
    /// A reference response (helpfulness is measured against it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_safe: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
}

/// Reads a prompt set: rows `{"prompt", "keywords"?}` with no response, or
/// any prompt-response row (PKU-SafeRLHF rows give two items), or QA rows
/// (the question is the prompt, the answer the reference response). Document
/// and multiple-choice rows are errors naming their line.
pub fn load_prompts(path: &Path) -> Result<Vec<PromptItem>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_prompts(&path.display().to_string(), &text)
}

/// [`load_prompts`] on text already in memory.
pub fn parse_prompts(source_name: &str, text: &str) -> Result<Vec<PromptItem>, DataError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut values = Vec::new();
    if text.trim_start().starts_with('[') {
        let array: Vec<Value> = serde_json::from_str(text).map_err(|e| invalid_json(source_name, e.line(), &e))?;
        for (i, v) in array.into_iter().enumerate() {
            values.push((Location::new(source_name, Position::Element(i)), v));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).map_err(|e| invalid_json(source_name, i + 1, &e))?;
            values.push((Location::new(source_name, Position::Line(i + 1)), v));
        }
    }
    let mut out = Vec::new();
    for (at, value) in values {
        out.extend(
            prompt_items(&value)
                .map_err(|e| e.at(at.clone()))?
                .into_iter()
                .map(|r| {
                    r.map_err(|found| DataError::WrongShape {
                        at: at.clone(),
                        expected: "a prompt row {\"prompt\"}, a prompt-response row or a question-answer row",
                        found,
                    })
                }),
        )
    }
    let items = out.into_iter().collect::<Result<Vec<_>, _>>()?;
    if items.is_empty() {
        return Err(DataError::EmptyDataset {
            name: source_name.to_string(),
        });
    }
    Ok(items)
}

#[allow(clippy::type_complexity)]
fn prompt_items(value: &Value) -> Result<Vec<Result<PromptItem, &'static str>>, RowError> {
    let obj = value
        .as_object()
        .ok_or_else(|| RowError::NotAnObject(json_kind(value)))?;
    let response_keys = [
        "response",
        "response_0",
        "response_1",
        "question",
        "answer",
        "choices",
        "text",
    ];
    if obj.contains_key("prompt") && !response_keys.iter().any(|k| obj.contains_key(*k)) {
        return Ok(vec![Ok(PromptItem {
            prompt: required_str(obj, "prompt")?,
            response: None,
            is_safe: optional_bool(obj, "is_safe")?,
            keywords: str_list(obj, "keywords")?,
        })]);
    }
    Ok(Row::rows_from_value(value)?
        .into_iter()
        .map(|row| match row {
            Row::Pair(p) => Ok(PromptItem {
                prompt: p.prompt,
                response: Some(p.response),
                is_safe: p.is_safe,
                keywords: p.keywords,
            }),
            Row::Qa(q) => Ok(PromptItem {
                prompt: q.question,
                response: Some(q.answer),
                is_safe: None,
                keywords: q.keywords,
            }),
            other => Err(other.kind()),
        })
        .collect())
}

// ---------------------------------------------------------------------------
// Prompt template

/// How a question becomes a prompt. Contains `{question}` exactly once;
/// everything else is literal text (no other placeholders or escapes).
///
/// Serialises as the plain template string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PromptTemplate {
    template: String,
    /// Byte offset of the placeholder in `template`.
    at: usize,
}

impl PromptTemplate {
    pub const PLACEHOLDER: &'static str = "{question}";
    pub const DEFAULT: &'static str = "Question: {question}\nAnswer: ";

    /// Validates `template`; fails unless it has exactly one `{question}`.
    pub fn new(template: impl Into<String>) -> Result<Self, DataError> {
        let template = template.into();
        let count = template.matches(Self::PLACEHOLDER).count();
        if count != 1 {
            return Err(DataError::InvalidTemplate {
                template,
                reason: format!("must contain {} exactly once, found {count}", Self::PLACEHOLDER),
            });
        }
        let at = template.find(Self::PLACEHOLDER).unwrap_or_default();
        Ok(Self { template, at })
    }

    /// The prompt for `question`. The question is inserted verbatim, so a
    /// question containing `{question}` is not expanded again.
    pub fn render(&self, question: &str) -> String {
        let (prefix, rest) = self.template.split_at(self.at);
        let suffix = &rest[Self::PLACEHOLDER.len()..];
        let mut out = String::with_capacity(prefix.len() + question.len() + suffix.len());
        out.push_str(prefix);
        out.push_str(question);
        out.push_str(suffix);
        out
    }

    pub fn as_str(&self) -> &str {
        &self.template
    }
}

impl Default for PromptTemplate {
    fn default() -> Self {
        Self {
            template: Self::DEFAULT.to_string(),
            at: Self::DEFAULT.find(Self::PLACEHOLDER).unwrap_or_default(),
        }
    }
}

impl TryFrom<String> for PromptTemplate {
    type Error = DataError;
    fn try_from(s: String) -> Result<Self, DataError> {
        Self::new(s)
    }
}

impl From<PromptTemplate> for String {
    fn from(t: PromptTemplate) -> String {
        t.template
    }
}

impl std::str::FromStr for PromptTemplate {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        Self::new(s)
    }
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// Token ids of one example; the loss counts predictions of `ids[i]` for
/// every `i >= target_start` (so `target_start >= 1`: nothing predicts the
/// first token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub target_start: usize,
}

impl Encoded {
    /// How many tokens the loss counts.
    pub fn n_targets(&self) -> usize {
        self.ids.len().saturating_sub(self.target_start.max(1))
    }
}

/// Turns rows into [`Encoded`] examples with a fixed tokenizer, template,
/// length limit and EOS.
///
/// The prompt is encoded with the tokenizer's special tokens (BOS) and the
/// answer separately without them, so the prompt/answer boundary is a token
/// boundary even where a joint encoding would merge across it. Generation
/// must therefore start from [`Encoder::encode_prompt`], which produces the
/// same prompt ids. With SentencePiece-style tokenizers that prefix a space
/// marker to every encoded string, the answer starts with that marker.
#[derive(Debug, Clone)]
pub struct Encoder {
    tokenizer: Tokenizer,
    template: PromptTemplate,
    max_len: usize,
    eos_id: Option<u32>,
}

impl Encoder {
    /// `max_len` caps `ids.len()`; values below 2 leave no room for a target
    /// and make every row fail. The tokenizer's own truncation and padding
    /// settings are switched off: this type does both, and a `tokenizer.json`
    /// with padding enabled would otherwise put pad tokens inside answers.
    pub fn new(mut tokenizer: Tokenizer, template: PromptTemplate, max_len: usize, eos_id: Option<u32>) -> Self {
        // Clearing truncation only fails for invalid *new* parameters.
        let _ = tokenizer.with_truncation(None);
        tokenizer.with_padding(None);
        Self {
            tokenizer,
            template,
            max_len,
            eos_id,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    fn encode_ids(&self, text: &str, special: bool) -> Result<Vec<u32>, EncodeError> {
        self.tokenizer
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))
    }

    /// The prompt ids for `question` (template rendered, special tokens on),
    /// exactly as they start a QA example. Not truncated.
    pub fn encode_prompt(&self, question: &str) -> Result<Vec<u32>, EncodeError> {
        self.encode_ids(&self.template.render(question), true)
    }

    /// `prompt_ids` followed by `text` (encoded without special tokens) and,
    /// if `add_eos` and the encoder has an EOS id, EOS; targets start after
    /// the prompt. Use it to score a paraphrased or perturbed answer or a
    /// keyword after a prompt.
    ///
    /// Silently truncated to `max_len`; [`Encoder::encode_dataset`] is the
    /// path that reports truncation.
    pub fn encode_continuation(&self, prompt_ids: &[u32], text: &str, add_eos: bool) -> Result<Encoded, EncodeError> {
        self.continuation(prompt_ids, text, add_eos).map(|(e, _)| e)
    }

    /// Encodes one row (QA: prompt + answer + EOS; text: text + EOS).
    /// Silently truncated to `max_len`, like [`Encoder::encode_continuation`].
    pub fn encode_row(&self, row: &Row) -> Result<Encoded, EncodeError> {
        self.row(row).map(|(e, _)| e)
    }

    /// Encodes every row, attaching the row's location to errors, and logs
    /// one warning with the number of truncated rows (never their text).
    pub fn encode_dataset(&self, dataset: &Dataset) -> Result<Vec<Encoded>, DataError> {
        let mut out = Vec::with_capacity(dataset.len());
        let mut truncated = 0usize;
        for (i, row) in dataset.rows.iter().enumerate() {
            let (encoded, was_truncated) = self
                .row(row)
                .map_err(|e| e.at(Location::new(&dataset.source, Position::Row(i + 1))))?;
            truncated += usize::from(was_truncated);
            out.push(encoded);
        }
        if truncated > 0 {
            tracing::warn!(
                source = %dataset.source,
                truncated,
                rows = dataset.len(),
                max_len = self.max_len,
                "rows longer than max_len were truncated; their answers lose their ends"
            );
        }
        Ok(out)
    }

    fn row(&self, row: &Row) -> Result<(Encoded, bool), EncodeError> {
        match row {
            Row::Qa(qa) => {
                let prompt = self.encode_prompt(&qa.question)?;
                self.continuation(&prompt, &qa.answer, true)
            }
            Row::Mcq(m) => {
                let prompt = self.encode_prompt(&m.question)?;
                self.continuation(&prompt, m.correct(), true)
            }
            Row::Pair(p) => {
                let prompt = self.encode_prompt(&p.prompt)?;
                self.continuation(&prompt, &p.response, true)
            }
            Row::Text(t) => {
                let mut ids = self.encode_ids(&t.text, true)?;
                ids.extend(self.eos_id);
                self.finish(ids, 1)
            }
        }
    }

    fn continuation(&self, prompt_ids: &[u32], text: &str, add_eos: bool) -> Result<(Encoded, bool), EncodeError> {
        let mut ids = prompt_ids.to_vec();
        ids.extend(self.encode_ids(text, false)?);
        if add_eos {
            ids.extend(self.eos_id);
        }
        self.finish(ids, prompt_ids.len())
    }

    /// Applies the length limit; the flag says whether anything was cut.
    fn finish(&self, mut ids: Vec<u32>, target_start: usize) -> Result<(Encoded, bool), EncodeError> {
        let target_start = target_start.max(1);
        if ids.len() <= target_start {
            return Err(EncodeError::NoTargetTokens);
        }
        if target_start >= self.max_len {
            return Err(EncodeError::RowTooLong {
                prefix_tokens: target_start,
                max_len: self.max_len,
            });
        }
        let truncated = ids.len() > self.max_len;
        ids.truncate(self.max_len);
        Ok((Encoded { ids, target_start }, truncated))
    }
}

// ---------------------------------------------------------------------------
// Batching

/// A right-padded batch of examples, ready for a causal LM.
///
/// Position `t` of the input predicts `targets[b, t] = ids[b][t + 1]`;
/// `target_mask` is 1.0 exactly where that prediction is counted
/// (`target_start <= t + 1 < len`). Padded positions hold `pad_id` in both
/// tensors and 0.0 in the mask, so the model needs no attention mask for
/// right padding with causal attention.
#[derive(Debug, Clone)]
pub struct Batch {
    /// u32, `[B, T]`, `T` = longest example in the batch.
    pub input_ids: Tensor,
    /// u32, `[B, T]`.
    pub targets: Tensor,
    /// f32, `[B, T]`.
    pub target_mask: Tensor,
    /// Unpadded length of each example.
    pub lengths: Vec<usize>,
}

/// Pads `examples` on the right to the longest one and builds targets and
/// the loss mask. Fails on an empty slice or when every example is empty.
pub fn collate(examples: &[&Encoded], pad_id: u32, device: &Device) -> candle_core::Result<Batch> {
    let b = examples.len();
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    if b == 0 || t == 0 {
        candle_core::bail!("collate: no tokens to batch ({b} examples, longest {t})");
    }
    let mut input = vec![pad_id; b * t];
    let mut targets = vec![pad_id; b * t];
    let mut mask = vec![0f32; b * t];
    for (row, ex) in examples.iter().enumerate() {
        let base = row * t;
        let len = ex.ids.len();
        input[base..base + len].copy_from_slice(&ex.ids);
        for pos in 0..len.saturating_sub(1) {
            targets[base + pos] = ex.ids[pos + 1];
            if pos + 1 >= ex.target_start {
                mask[base + pos] = 1.0;
            }
        }
    }
    Ok(Batch {
        input_ids: Tensor::from_vec(input, (b, t), device)?,
        targets: Tensor::from_vec(targets, (b, t), device)?,
        target_mask: Tensor::from_vec(mask, (b, t), device)?,
        lengths: examples.iter().map(|e| e.ids.len()).collect(),
    })
}

/// Index chunks over `examples`: in order, or shuffled deterministically
/// (ChaCha8 seeded with `shuffle_seed`). The last chunk may be short; a
/// `batch_size` of 0 is treated as 1.
pub fn batches<T>(examples: &[T], batch_size: usize, shuffle_seed: Option<u64>) -> Batches {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    if let Some(seed) = shuffle_seed {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    Batches {
        order,
        batch_size: batch_size.max(1),
        next: 0,
    }
}

/// Iterator returned by [`batches`].
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Iterator for Batches {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let chunk = self.order[self.next..end].to_vec();
        self.next = end;
        Some(chunk)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches {}
