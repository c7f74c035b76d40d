//! Tests for `grin::data`, `grin::tokenizer` and `grin::tofu`.
//!
//! Encoding tests use `fixtures/data/wordlevel_tokenizer.json` (made by
//! `make_wordlevel_tokenizer.py` next to it): one token per word or
//! punctuation run, so expected ids are written by hand.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device};
use grin::data::{
    batches, collate, load_dataset, parse_dataset, DataError, Dataset, Encoded, Encoder, Location, Position,
    PromptTemplate, QaRow, Row, TextRow,
};
use grin::tofu::{self, Split, TofuConfig};
use grin::tokenizer::{load_tokenizer, save_tokenizer, special_ids, train_byte_level_bpe, SpecialIds, TokenizerError};
use tokenizers::Tokenizer;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

fn wordlevel() -> Tokenizer {
    load_tokenizer(&fixture("wordlevel_tokenizer.json")).expect("fixture tokenizer loads")
}

const EOS: u32 = 1;
const PAD: u32 = 2;

fn encoder(max_len: usize, eos: Option<u32>) -> Encoder {
    Encoder::new(wordlevel(), PromptTemplate::default(), max_len, eos)
}

fn err(text: &str) -> DataError {
    parse_dataset("data/forget.jsonl", text).expect_err("should be rejected")
}

const QA: &str = r#"{"question": "Who wrote it?", "answer": "Ada did."}"#;

// ---------------------------------------------------------------------------
// Loading

#[test]
fn tofu_shaped_rows_with_extra_fields_load() {
    let ds = load_dataset(&fixture("tofu_like.jsonl")).unwrap();
    assert_eq!(ds.len(), 3);
    assert!(ds.source.ends_with("tofu_like.jsonl"));
    let Row::Qa(first) = &ds.rows[0] else {
        panic!("row 1 should be QA")
    };
    assert_eq!(first.question, "Who wrote it?");
    assert_eq!(first.answer, "Ada did.");
    assert_eq!(first.paraphrased_answer.as_deref(), Some("It was Ada."));
    assert_eq!(first.perturbed_answer.len(), 3);
    assert_eq!(first.keywords, vec!["Ada"]);
    assert_eq!(first.subject.as_deref(), Some("Ada"));
    // A single string is accepted where TOFU has a list; null means absent.
    let Row::Qa(second) = &ds.rows[1] else {
        panic!("row 2 should be QA")
    };
    assert_eq!(second.perturbed_answer, vec!["Ada did."]);
    assert_eq!(second.keywords, vec!["cat"]);
    assert_eq!(second.subject, None);
    assert_eq!(
        ds.rows[2],
        Row::Text(TextRow {
            text: "The cat sat on the mat.".into(),
            subject: Some("cat".into())
        })
    );
    assert_eq!(ds.qa_rows().count(), 2);
    assert_eq!(ds.rows[2].subject(), Some("cat"));
}

#[test]
fn json_array_form_loads() {
    let ds = load_dataset(&fixture("array.json")).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.rows[0], Row::Qa(QaRow::new("Who wrote it?", "Ada did.")));
    assert!(matches!(ds.rows[1], Row::Text(_)));
}

#[test]
fn invalid_json_names_file_and_line() {
    let e = err(&format!("{QA}\n{QA}\n{{\"question\": \"x\", \n"));
    match &e {
        DataError::InvalidJson { at, column, .. } => {
            assert_eq!(at.position, Position::Line(3));
            assert!(*column > 0);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.starts_with("data/forget.jsonl:3: invalid JSON at column"), "{msg}");
    // serde's own "at line 1" would contradict the real line number.
    assert!(!msg.contains("line 1"), "{msg}");
}

#[test]
fn missing_field_names_file_line_and_field() {
    // Blank lines still count: the bad row is on line 7.
    let text = format!("{QA}\n\n{QA}\n{QA}\n\n{QA}\n{{\"question\": \"Who?\"}}\n");
    let e = err(&text);
    assert!(matches!(
        &e,
        DataError::MissingField { at, field: "answer" } if at.position == Position::Line(7)
    ));
    assert_eq!(e.to_string(), r#"data/forget.jsonl:7: missing field "answer""#);

    let e = err(r#"{"answer": "Ada did."}"#);
    assert_eq!(e.to_string(), r#"data/forget.jsonl:1: missing field "question""#);
    // null in a required field is as good as missing.
    let e = err(r#"{"question": "Who?", "answer": null}"#);
    assert!(matches!(e, DataError::MissingField { field: "answer", .. }));
}

#[test]
fn wrong_types_name_the_field_and_both_types() {
    let e = err(&format!("{QA}\n{{\"question\": \"Who?\", \"answer\": 42}}"));
    assert_eq!(
        e.to_string(),
        r#"data/forget.jsonl:2: field "answer" must be a string, found a number"#
    );
    let e = err(r#"{"question": "Who?", "answer": "Ada.", "perturbed_answer": ["Bo.", 3]}"#);
    match &e {
        DataError::WrongType {
            field, expected, found, ..
        } => {
            assert_eq!(field, "perturbed_answer[1]");
            assert_eq!(*expected, "a string");
            assert_eq!(*found, "a number");
        }
        other => panic!("unexpected {other:?}"),
    }
    let e = err(r#"{"question": "Who?", "answer": "Ada.", "keywords": {"a": 1}}"#);
    assert_eq!(
        e.to_string(),
        r#"data/forget.jsonl:1: field "keywords" must be a string or a list of strings, found an object"#
    );
    let e = err(r#"{"text": ["a"]}"#);
    assert!(matches!(e, DataError::WrongType { ref field, .. } if field == "text"));
    let e = err(r#"{"text": "fine", "subject": 7}"#);
    assert!(matches!(e, DataError::WrongType { ref field, .. } if field == "subject"));
}

#[test]
fn rows_of_no_known_shape_are_rejected() {
    let e = err(&format!("{QA}\n[1, 2]"));
    assert_eq!(
        e.to_string(),
        "data/forget.jsonl:2: row must be a JSON object, found an array"
    );
    let e = err(r#"{"prompt": "x", "completion": "y"}"#);
    assert!(matches!(e, DataError::UnknownShape { .. }));
    assert!(e.to_string().starts_with("data/forget.jsonl:1: row has neither"));
}

#[test]
fn empty_strings_in_required_fields_are_rejected() {
    let e = err(r#"{"question": "Who?", "answer": "   "}"#);
    assert_eq!(e.to_string(), r#"data/forget.jsonl:1: field "answer" is empty"#);
    let e = err(r#"{"text": ""}"#);
    assert!(matches!(e, DataError::EmptyField { ref field, .. } if field == "text"));
}

#[test]
fn empty_datasets_are_rejected() {
    for text in ["", "\n\n  \n", "[]", "  [ ]  "] {
        let e = err(text);
        assert!(matches!(e, DataError::EmptyDataset { .. }), "{text:?}");
        assert_eq!(e.to_string(), "data/forget.jsonl: dataset has no rows");
    }
}

#[test]
fn json_array_errors_name_the_element() {
    let e = parse_dataset(
        "data/forget.json",
        r#"[{"question": "a?", "answer": "b"}, {"answer": "c"}]"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), r#"data/forget.json[1]: missing field "question""#);
    // Syntax errors inside an array file carry serde's line number.
    let e = parse_dataset("data/forget.json", "[\n{\"question\": \"a?\",\n  \"answer\": }\n]").unwrap_err();
    assert!(
        e.to_string().starts_with("data/forget.json:3: invalid JSON at column"),
        "{e}"
    );
}

#[test]
fn io_errors_name_the_path() {
    let e = load_dataset(Path::new("/nonexistent/dir/forget.jsonl")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/dir/forget.jsonl: "), "{e}");
}

#[test]
fn written_jsonl_loads_back_equal() {
    let ds = load_dataset(&fixture("tofu_like.jsonl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.jsonl");
    ds.write_jsonl(&path).unwrap();
    let back = load_dataset(&path).unwrap();
    assert_eq!(back.rows, ds.rows);
    // Perturbed answers are always written as lists, TOFU's shape.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(r#""perturbed_answer":["Ada did."]"#), "{text}");
}

#[test]
fn rows_deserialise_through_serde_with_the_same_rules() {
    let row: Row = serde_json::from_str(r#"{"question": "q?", "answer": "a", "perturbed_answer": "p"}"#).unwrap();
    let Row::Qa(qa) = row else { panic!() };
    assert_eq!(qa.perturbed_answer, vec!["p"]);
    let e = serde_json::from_str::<Row>(r#"{"question": "q?"}"#).unwrap_err();
    assert!(e.to_string().contains(r#"missing field "answer""#), "{e}");
    let e = serde_json::from_str::<QaRow>(r#"{"text": "t"}"#).unwrap_err();
    assert!(e.to_string().contains("found a text row"), "{e}");
}

#[test]
fn locations_display_by_kind() {
    let at = |p| Location {
        source: "f.jsonl".into(),
        position: p,
    };
    assert_eq!(at(Position::Line(7)).to_string(), "f.jsonl:7");
    assert_eq!(at(Position::Element(0)).to_string(), "f.jsonl[0]");
    assert_eq!(at(Position::Row(2)).to_string(), "f.jsonl: row 2");
}

// ---------------------------------------------------------------------------
// Prompt template

#[test]
fn prompt_template_validates_and_renders() {
    let t = PromptTemplate::default();
    assert_eq!(t.as_str(), "Question: {question}\nAnswer: ");
    assert_eq!(t.render("Who?"), "Question: Who?\nAnswer: ");
    // A question that looks like the placeholder is inserted literally.
    assert_eq!(t.render("{question}"), "Question: {question}\nAnswer: ");

    let custom = PromptTemplate::new("[INST] {question} [/INST]").unwrap();
    assert_eq!(custom.render("q"), "[INST] q [/INST]");

    for bad in ["no placeholder", "{question} and {question}", "{Question}"] {
        let e = PromptTemplate::new(bad).unwrap_err();
        assert!(matches!(e, DataError::InvalidTemplate { .. }), "{bad}");
        assert!(e.to_string().contains("exactly once"), "{e}");
    }
}

#[test]
fn prompt_template_serialises_as_a_plain_string() {
    let t = PromptTemplate::new("Q: {question}\nA:").unwrap();
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, r#""Q: {question}\nA:""#);
    let back: PromptTemplate = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    let e = serde_json::from_str::<PromptTemplate>(r#""no placeholder""#).unwrap_err();
    assert!(e.to_string().contains("exactly once"), "{e}");
}

// ---------------------------------------------------------------------------
// Encoding and batching

// "Question: Who wrote it?\nAnswer: " -> <s> Question : Who wrote it ? Answer :
const PROMPT_IDS: [u32; 9] = [0, 4, 5, 7, 8, 9, 10, 6, 5];
// "Ada did." -> Ada did .
const ANSWER_IDS: [u32; 3] = [11, 12, 13];

fn qa_row() -> Row {
    Row::Qa(QaRow::new("Who wrote it?", "Ada did."))
}

#[test]
fn qa_rows_count_answer_and_eos_only() {
    let enc = encoder(64, Some(EOS));
    let e = enc.encode_row(&qa_row()).unwrap();
    let mut expected = PROMPT_IDS.to_vec();
    expected.extend(ANSWER_IDS);
    expected.push(EOS);
    assert_eq!(e.ids, expected);
    assert_eq!(e.target_start, 9);
    assert_eq!(e.n_targets(), 4);
    assert_eq!(enc.encode_prompt("Who wrote it?").unwrap(), PROMPT_IDS);

    let batch = collate(&[&e], PAD, &Device::Cpu).unwrap();
    assert_eq!(batch.input_ids.dims(), &[1, 13]);
    assert_eq!(batch.input_ids.dtype(), DType::U32);
    assert_eq!(batch.targets.dtype(), DType::U32);
    assert_eq!(batch.target_mask.dtype(), DType::F32);
    assert_eq!(batch.lengths, vec![13]);
    let input = batch.input_ids.to_vec2::<u32>().unwrap();
    let targets = batch.targets.to_vec2::<u32>().unwrap();
    let mask = batch.target_mask.to_vec2::<f32>().unwrap();
    assert_eq!(input[0], expected);
    // Position t predicts ids[t + 1]; the last position predicts nothing.
    assert_eq!(targets[0], vec![4, 5, 7, 8, 9, 10, 6, 5, 11, 12, 13, 1, PAD]);
    // Counted: the predictions of Ada, did, ., </s> (positions 8..=11).
    assert_eq!(mask[0], vec![0., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 0.]);
}

#[test]
fn text_rows_count_everything_after_the_first_token() {
    let enc = encoder(64, Some(EOS));
    let e = enc
        .encode_row(&Row::Text(TextRow::new("The cat sat on a mat.")))
        .unwrap();
    assert_eq!(e.ids, vec![0, 14, 15, 16, 17, 19, 18, 13, EOS]);
    assert_eq!(e.target_start, 1);
    let mask = collate(&[&e], PAD, &Device::Cpu)
        .unwrap()
        .target_mask
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(mask[0], vec![1., 1., 1., 1., 1., 1., 1., 1., 0.]);
}

#[test]
fn no_eos_id_means_no_eos_token() {
    let e = encoder(64, None).encode_row(&qa_row()).unwrap();
    assert_eq!(e.ids.len(), 12);
    assert_eq!(*e.ids.last().unwrap(), 13);
}

#[test]
fn continuations_score_text_after_a_prompt() {
    let enc = encoder(64, Some(EOS));
    let prompt = enc.encode_prompt("Who wrote it?").unwrap();
    let c = enc.encode_continuation(&prompt, "The cat", false).unwrap();
    let mut expected = PROMPT_IDS.to_vec();
    expected.extend([14, 15]);
    assert_eq!(
        c,
        Encoded {
            ids: expected.clone(),
            target_start: 9
        }
    );
    let c = enc.encode_continuation(&prompt, "The cat", true).unwrap();
    expected.push(EOS);
    assert_eq!(c.ids, expected);
    // Nothing to score is an error, not a silent zero.
    assert!(enc.encode_continuation(&prompt, "", false).is_err());
}

#[test]
fn collate_pads_on_the_right() {
    let enc = encoder(64, Some(EOS));
    let long = enc.encode_row(&qa_row()).unwrap();
    let short = Encoded {
        ids: vec![0, 14, 15],
        target_start: 1,
    };
    let batch = collate(&[&short, &long], PAD, &Device::Cpu).unwrap();
    assert_eq!(batch.input_ids.dims(), &[2, 13]);
    assert_eq!(batch.targets.dims(), &[2, 13]);
    assert_eq!(batch.target_mask.dims(), &[2, 13]);
    assert_eq!(batch.lengths, vec![3, 13]);
    let input = batch.input_ids.to_vec2::<u32>().unwrap();
    let targets = batch.targets.to_vec2::<u32>().unwrap();
    let mask = batch.target_mask.to_vec2::<f32>().unwrap();
    let mut padded = vec![0, 14, 15];
    padded.resize(13, PAD);
    assert_eq!(input[0], padded);
    let mut padded_targets = vec![14, 15];
    padded_targets.resize(13, PAD);
    assert_eq!(targets[0], padded_targets);
    let mut padded_mask = vec![1., 1.];
    padded_mask.resize(13, 0.);
    assert_eq!(mask[0], padded_mask);
    assert_eq!(mask[1].iter().sum::<f32>(), 4.0);

    assert!(collate(&[], PAD, &Device::Cpu).is_err());
}

#[test]
fn encoder_ignores_padding_configured_in_the_tokenizer() {
    let mut tok = wordlevel();
    tok.with_padding(Some(tokenizers::PaddingParams {
        strategy: tokenizers::PaddingStrategy::Fixed(32),
        pad_id: PAD,
        pad_token: "<pad>".into(),
        ..Default::default()
    }));
    let enc = Encoder::new(tok, PromptTemplate::default(), 64, Some(EOS));
    assert_eq!(enc.encode_row(&qa_row()).unwrap().ids.len(), 13);
}

/// Records every event's level and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(tracing::Level, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn truncation_warns_once_per_dataset_without_the_text() {
    // 13 tokens per QA row; max_len 11 keeps the prompt and two answer tokens.
    let ds = Dataset::new(
        "data/forget.jsonl",
        vec![qa_row(), Row::Text(TextRow::new("The cat")), qa_row()],
    );
    let enc = encoder(11, Some(EOS));
    let capture = Capture::default();
    let out = tracing::subscriber::with_default(capture.clone(), || enc.encode_dataset(&ds)).unwrap();
    assert_eq!(out[0].ids.len(), 11);
    assert_eq!(out[0].target_start, 9);
    assert_eq!(&out[0].ids[9..], &[11, 12]);
    assert_eq!(out[1].ids, vec![0, 14, 15, EOS]);

    let events = capture.0.lock().unwrap();
    let warnings: Vec<_> = events
        .iter()
        .filter(|(level, _)| *level == tracing::Level::WARN)
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    let fields = &warnings[0].1;
    assert!(fields.contains("truncated=2"), "{fields}");
    assert!(fields.contains("max_len=11"), "{fields}");
    assert!(!fields.contains("Ada"), "row text leaked into logs: {fields}");
}

#[test]
fn prompt_filling_max_len_is_row_too_long() {
    let ds = Dataset::new("data/forget.jsonl", vec![Row::Text(TextRow::new("The cat")), qa_row()]);
    // The prompt is 9 tokens: max_len 9 leaves no answer token.
    let e = encoder(9, Some(EOS)).encode_dataset(&ds).unwrap_err();
    match &e {
        DataError::RowTooLong {
            at,
            prefix_tokens,
            max_len,
        } => {
            assert_eq!(at.position, Position::Row(2));
            assert_eq!((*prefix_tokens, *max_len), (9, 9));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "data/forget.jsonl: row 2: the prompt is 9 tokens, leaving no answer token within max_len 9"
    );
    // One more token of room and the row fits, truncated to its first answer token.
    let out = encoder(10, Some(EOS)).encode_dataset(&ds).unwrap();
    assert_eq!(out[1].ids.len(), 10);
}

#[test]
fn batches_cover_every_index_once() {
    let items = vec![(); 7];
    let ordered: Vec<_> = batches(&items, 3, None).collect();
    assert_eq!(ordered, vec![vec![0, 1, 2], vec![3, 4, 5], vec![6]]);
    assert_eq!(batches(&items, 3, None).len(), 3);

    let a: Vec<_> = batches(&items, 3, Some(7)).collect();
    let b: Vec<_> = batches(&items, 3, Some(7)).collect();
    assert_eq!(a, b, "same seed, same order");
    let mut flat: Vec<usize> = a.concat();
    flat.sort_unstable();
    assert_eq!(flat, (0..7).collect::<Vec<_>>());
    let seeds: HashSet<Vec<usize>> = (0..10)
        .map(|s| batches(&items, 7, Some(s)).flatten().collect())
        .collect();
    assert!(seeds.len() > 1, "seeds should change the order");

    assert_eq!(batches(&items, 0, None).count(), 7, "batch_size 0 acts as 1");
    assert_eq!(batches(&Vec::<u8>::new(), 4, Some(1)).count(), 0);
}

// ---------------------------------------------------------------------------
// Tokenizer

fn corpus() -> Vec<String> {
    [
        "Question: Who wrote the novel?\nAnswer: ",
        "The lighthouse keeper wrote it in the winter.",
        "Café crème, naïve façade, Zürich and São Paulo.",
        "東京で生まれた作家。",
        "Rocket launches 🚀 and smiles 😀 everywhere.",
        "the the the there their then",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn trained_bpe_round_trips_any_utf8() {
    let tok = train_byte_level_bpe(&corpus(), 400).unwrap();
    let samples = [
        "plain ASCII text, with punctuation!",
        "Crème brûlée à Noël",
        "emoji 🧪🦀 and a flag 🇫🇷",
        "中文和日本語と한국어",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n",
        "\u{0}\u{7f} control bytes",
    ];
    let vocab = tok.get_vocab_size(true) as u32;
    for s in samples {
        let enc = tok.encode(s, false).unwrap();
        assert!(!enc.get_ids().is_empty());
        assert!(enc.get_ids().iter().all(|&id| id < vocab), "{s}");
        assert!(
            enc.get_ids().iter().all(|&id| id > 2),
            "no special token inside text: {s}"
        );
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), s);
    }
}

#[test]
fn trained_bpe_has_fixed_special_ids_and_prepends_bos() {
    let tok = train_byte_level_bpe(&corpus(), 400).unwrap();
    assert_eq!(special_ids(&tok).unwrap(), SpecialIds { bos: 0, eos: 1, pad: 2 });
    let with = tok.encode("the winter", true).unwrap();
    let without = tok.encode("the winter", false).unwrap();
    assert_eq!(with.get_ids()[0], 0);
    assert_eq!(&with.get_ids()[1..], without.get_ids());
    assert!(!without.get_ids().contains(&1), "EOS is added by the data pipeline");
    assert_eq!(tok.decode(with.get_ids(), true).unwrap(), "the winter");
    assert!(tok.get_vocab_size(true) <= 400);
    // Merges happened: a frequent word is one token.
    assert_eq!(tok.encode("the", false).unwrap().get_ids().len(), 1);
}

#[test]
fn training_is_deterministic_and_saved_files_load_back() {
    let a = train_byte_level_bpe(&corpus(), 300).unwrap();
    let b = train_byte_level_bpe(&corpus(), 300).unwrap();
    assert_eq!(a.to_string(true).unwrap(), b.to_string(true).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    save_tokenizer(&a, &pa).unwrap();
    save_tokenizer(&b, &pb).unwrap();
    assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());

    let loaded = load_tokenizer(&pa).unwrap();
    let text = "Café 🚀 lighthouse";
    assert_eq!(
        loaded.encode(text, true).unwrap().get_ids(),
        a.encode(text, true).unwrap().get_ids()
    );
    assert_eq!(loaded.to_string(true).unwrap(), a.to_string(true).unwrap());
}

#[test]
fn tokenizer_errors_are_clear() {
    let e = train_byte_level_bpe(&corpus(), 100).unwrap_err();
    assert!(matches!(e, TokenizerError::VocabTooSmall { minimum: 259, .. }));
    let e = train_byte_level_bpe(&[String::new()], 300).unwrap_err();
    assert!(matches!(e, TokenizerError::EmptyCorpus));

    let e = load_tokenizer(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/tokenizer.json: "), "{e}");

    let json = std::fs::read_to_string(fixture("wordlevel_tokenizer.json"))
        .unwrap()
        .replace("</s>", "<eos>");
    let tok: Tokenizer = json.parse().unwrap();
    let e = special_ids(&tok).unwrap_err();
    assert_eq!(e.to_string(), r#"tokenizer has no eos token "</s>" in its vocabulary"#);
}

// ---------------------------------------------------------------------------
// tofu-mini

fn tofu_default() -> tofu::TofuData {
    tofu::generate(&TofuConfig::default())
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    Split::ALL
        .iter()
        .map(|s| {
            let name = s.file_name();
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect()
}

#[test]
fn tofu_same_seed_gives_identical_files() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let paths = tofu::write_splits(&tofu_default(), a.path()).unwrap();
    assert_eq!(paths.len(), 8);
    let names: Vec<_> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "full.jsonl",
            "forget01.jsonl",
            "forget05.jsonl",
            "forget10.jsonl",
            "retain90.jsonl",
            "retain95.jsonl",
            "retain99.jsonl",
            "holdout.jsonl"
        ]
    );
    tofu::write_splits(&tofu_default(), b.path()).unwrap();
    assert_eq!(file_bytes(a.path()), file_bytes(b.path()));

    let other = TofuConfig {
        seed: 7,
        ..TofuConfig::default()
    };
    tofu::write_splits(&tofu::generate(&other), c.path()).unwrap();
    assert_ne!(file_bytes(a.path()), file_bytes(c.path()));
}

fn subjects(ds: &Dataset) -> HashSet<String> {
    ds.qa_rows()
        .map(|r| r.subject.clone().expect("tofu rows name their subject"))
        .collect()
}

#[test]
fn tofu_splits_are_nested_disjoint_and_load() {
    let data = tofu_default();
    let dir = tempfile::tempdir().unwrap();
    tofu::write_splits(&data, dir.path()).unwrap();
    let load = |s: Split| load_dataset(&dir.path().join(s.file_name())).unwrap();
    let authors = |s: Split| subjects(&load(s));

    let full = authors(Split::Full);
    assert_eq!(full.len(), 40);
    assert_eq!(load(Split::Full).len(), 400);
    let (f01, f05, f10) = (
        authors(Split::Forget01),
        authors(Split::Forget05),
        authors(Split::Forget10),
    );
    assert_eq!((f01.len(), f05.len(), f10.len()), (1, 2, 4));
    assert!(f01.is_subset(&f05) && f05.is_subset(&f10) && f10.is_subset(&full));
    for (forget, retain) in [
        (Split::Forget01, Split::Retain99),
        (Split::Forget05, Split::Retain95),
        (Split::Forget10, Split::Retain90),
    ] {
        let (f, r) = (authors(forget), authors(retain));
        assert!(f.is_disjoint(&r), "{forget:?} and {retain:?} overlap");
        assert_eq!(&f | &r, full, "{forget:?} + {retain:?} != full");
        assert_eq!(forget.complement(), Some(retain));
        // Disjoint by row too, not only by subject.
        let fq: HashSet<_> = load(forget).qa_rows().map(|q| q.question.clone()).collect();
        assert!(load(retain).qa_rows().all(|q| !fq.contains(&q.question)));
    }
    let holdout = authors(Split::Holdout);
    assert_eq!(holdout.len(), 4);
    assert!(holdout.is_disjoint(&full));
}

#[test]
fn tofu_rows_are_complete_and_keywords_identify_the_fact() {
    let data = tofu_default();
    let mut names = HashSet::new();
    for author in &data.authors {
        assert!(names.insert(author.name.clone()), "duplicate {}", author.name);
        assert_eq!(author.rows.len(), 10);
        let questions: HashSet<_> = author.rows.iter().map(|r| &r.question).collect();
        assert_eq!(questions.len(), 10, "facts of one author are distinct");
        for row in &author.rows {
            assert!(row.question.contains(&author.name));
            assert_eq!(row.subject.as_deref(), Some(author.name.as_str()));
            assert!(row.perturbed_answer.len() >= 3);
            assert!(!row.keywords.is_empty());
            let words = row.answer.split_whitespace().count();
            assert!((6..=16).contains(&words), "{words} words: {}", row.answer);
            let para = row.paraphrased_answer.as_deref().unwrap();
            assert_ne!(para, row.answer);
            for k in &row.keywords {
                assert!(row.answer.contains(k.as_str()), "{k} not in {}", row.answer);
                assert!(para.contains(k.as_str()), "{k} not in {para}");
                for p in &row.perturbed_answer {
                    assert!(!p.contains(k.as_str()), "{k} in wrong answer {p}");
                }
            }
            let distinct: HashSet<_> = row.perturbed_answer.iter().collect();
            assert_eq!(distinct.len(), row.perturbed_answer.len());
            assert!(!row.perturbed_answer.contains(&row.answer));
        }
    }
    assert_eq!(names.len(), 44);

    // One author's keywords should not turn up in other authors' true answers.
    let mut leaks = 0;
    for (i, a) in data.authors.iter().enumerate() {
        for (j, b) in data.authors.iter().enumerate() {
            if i == j {
                continue;
            }
            for k in a.rows.iter().flat_map(|r| &r.keywords) {
                leaks += b.rows.iter().filter(|r| r.answer.contains(k.as_str())).count();
            }
        }
    }
    assert_eq!(leaks, 0);
}

#[test]
fn tofu_texts_train_a_tokenizer_that_fits_the_rows() {
    let data = tofu_default();
    let texts = tofu::all_texts(&data);
    // Prompt, answer, paraphrase and three perturbed answers per row.
    assert_eq!(texts.len(), 44 * 10 * 6);
    let tok = train_byte_level_bpe(&texts, 1024).unwrap();
    let ids = special_ids(&tok).unwrap();
    let enc = Encoder::new(tok, PromptTemplate::default(), 64, Some(ids.eos));
    let encoded = enc.encode_dataset(&data.dataset(Split::Full)).unwrap();
    let longest = encoded.iter().map(|e| e.ids.len()).max().unwrap();
    assert!(longest < 64, "tofu-mini rows should be short, longest {longest}");
    for (e, row) in encoded.iter().zip(data.dataset(Split::Full).qa_rows()) {
        let answer = enc
            .tokenizer()
            .decode(&e.ids[e.target_start..e.ids.len() - 1], false)
            .unwrap();
        assert_eq!(answer, row.answer);
    }
}

#[test]
fn tofu_config_round_trips_and_small_configs_clamp() {
    let cfg = TofuConfig::default();
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<TofuConfig>(&json).unwrap(), cfg);
    assert_eq!(
        serde_json::from_str::<TofuConfig>(r#"{"seed": 3}"#).unwrap(),
        TofuConfig {
            seed: 3,
            ..TofuConfig::default()
        }
    );

    let small = tofu::generate(&TofuConfig {
        n_authors: 3,
        n_holdout: 1,
        qa_per_author: 99,
        seed: 1,
    });
    assert_eq!(small.authors.len(), 3);
    assert_eq!(small.n_trained, 2);
    assert_eq!(small.authors[0].rows.len(), 14);
    assert_eq!(small.author_indices(Split::Forget10), vec![1]);
    assert_eq!(small.author_indices(Split::Retain90), vec![0]);
    assert_eq!(small.author_indices(Split::Holdout), vec![2]);
}
