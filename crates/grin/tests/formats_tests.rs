//! The WMDP / MMLU, BeaverTails and PKU-SafeRLHF row shapes in `grin::data`:
//! loading, validation messages, encoding, round trips.

use std::path::Path;

use grin::data::{
    load_dataset, parse_dataset, DataError, Dataset, Encoder, McqRow, PairRow, PromptTemplate, QaRow, Row,
};
use grin::tokenizer::load_tokenizer;

fn err(text: &str) -> String {
    parse_dataset("f.jsonl", text)
        .expect_err("should be rejected")
        .to_string()
}

#[test]
fn multiple_choice_rows_load_as_wmdp_and_mmlu_ship_them() {
    // WMDP (cais/wmdp) and MMLU (cais/mmlu): answer is a 0-based index; some
    // MMLU exports write a letter. Extra fields are ignored.
    let ds = parse_dataset(
        "wmdp.jsonl",
        r#"{"question": "Which?", "choices": ["a", "b", "c", "d"], "answer": 3}
{"question": "Pick one", "subject": "virology", "choices": ["x", "y"], "answer": "B", "id": 7}"#,
    )
    .unwrap();
    assert_eq!(
        ds.rows[0],
        Row::Mcq(McqRow::new(
            "Which?",
            vec!["a".into(), "b".into(), "c".into(), "d".into()],
            3
        ))
    );
    let Row::Mcq(second) = &ds.rows[1] else { panic!() };
    assert_eq!((second.answer, second.subject.as_deref()), (1, Some("virology")));
    assert_eq!(second.correct(), "y");
    // Written back with the index, and read back equal.
    let back = parse_dataset("copy.jsonl", &ds.to_jsonl()).unwrap();
    assert_eq!(back.rows, ds.rows);
    assert!(ds.to_jsonl().contains(r#""answer":1"#));
}

#[test]
fn bad_multiple_choice_rows_name_the_field() {
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", "b"], "answer": 2}"#),
        r#"f.jsonl:1: field "answer" index 2 is not one of the 2 choices (0-based index or letter A..)"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", "b"], "answer": -1}"#),
        r#"f.jsonl:1: field "answer" index -1 is not one of the 2 choices (0-based index or letter A..)"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", "b"], "answer": "C"}"#),
        r#"f.jsonl:1: field "answer" letter C is not one of the 2 choices (0-based index or letter A..)"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", "b"], "answer": true}"#),
        r#"f.jsonl:1: field "answer" must be an index (number) or a letter, found a boolean"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["only"], "answer": 0}"#),
        r#"f.jsonl:1: field "choices" must hold at least 2 choices, found 1"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", 5], "answer": 0}"#),
        r#"f.jsonl:1: field "choices[1]" must be a string, found a number"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": "a, b", "answer": 0}"#),
        r#"f.jsonl:1: field "choices" must be a list of strings, found a string"#
    );
    assert_eq!(
        err(r#"{"question": "q", "choices": ["a", "b"]}"#),
        r#"f.jsonl:1: missing field "answer""#
    );
    assert_eq!(
        err(r#"{"choices": ["a", "b"], "answer": 0}"#),
        r#"f.jsonl:1: missing field "question""#
    );
    // Messages never quote the row's text.
    let e = err(r#"{"question": "SECRET", "choices": ["SECRET2", ""], "answer": 0}"#);
    assert!(!e.contains("SECRET"), "{e}");
    assert!(e.contains(r#""choices[1]" is empty"#), "{e}");
}

#[test]
fn prompt_response_rows_and_pku_rows() {
    let ds = parse_dataset(
        "pku.jsonl",
        r#"{"prompt": "p1", "response": "r1", "is_safe": false, "category": "violence"}
{"prompt": "p2", "response_0": "bad", "response_1": "good", "is_response_0_safe": false, "is_response_1_safe": true, "better_response_id": 1, "safer_response_id": 1}
{"prompt": "p3", "response": "r3"}"#,
    )
    .unwrap();
    assert_eq!(ds.len(), 4, "the PKU row is two rows");
    assert_eq!(ds.rows[0], Row::Pair(PairRow::new("p1", "r1", Some(false))));
    assert_eq!(ds.rows[1], Row::Pair(PairRow::new("p2", "bad", Some(false))));
    assert_eq!(ds.rows[2], Row::Pair(PairRow::new("p2", "good", Some(true))));
    assert_eq!(ds.rows[3], Row::Pair(PairRow::new("p3", "r3", None)));
    // Harm-label filters.
    let forget = ds.without_safe_pairs();
    assert_eq!(forget.len(), 3);
    assert!(forget.rows.iter().all(|r| r.is_safe() != Some(true)));
    let retain = ds.without_unsafe_pairs();
    assert_eq!(retain.len(), 2);
    // A PKU row alone cannot be one serde row.
    let e = serde_json::from_str::<Row>(r#"{"prompt": "p", "response_0": "a", "response_1": "b"}"#).unwrap_err();
    assert!(e.to_string().contains("PKU-SafeRLHF row holds two responses"), "{e}");
    // Labels must be booleans; a missing response is named.
    assert_eq!(
        err(r#"{"prompt": "p", "response": "r", "is_safe": "yes"}"#),
        r#"f.jsonl:1: field "is_safe" must be true or false, found a string"#
    );
    assert_eq!(
        err(r#"{"prompt": "p", "response_0": "a"}"#),
        r#"f.jsonl:1: missing field "response_1""#
    );
    assert_eq!(err(r#"{"response": "r"}"#), r#"f.jsonl:1: missing field "prompt""#);
    // Round trip of pair rows; typed deserialisation names the shape found.
    let back = parse_dataset("copy.jsonl", &ds.to_jsonl()).unwrap();
    assert_eq!(back.rows, ds.rows);
    let e = serde_json::from_str::<QaRow>(r#"{"prompt": "p", "response": "r"}"#).unwrap_err();
    assert!(e.to_string().contains("found a prompt-response row"), "{e}");
    let e = serde_json::from_str::<McqRow>(r#"{"text": "t"}"#).unwrap_err();
    assert!(
        e.to_string()
            .contains("expected a multiple-choice row, found a document row"),
        "{e}"
    );
    assert!(serde_json::from_str::<PairRow>(r#"{"prompt": "p", "response": "r"}"#).is_ok());
}

#[test]
fn unknown_shapes_list_every_known_one() {
    let e = err(r#"{"prompt": "x", "completion": "y"}"#);
    assert_eq!(
        e,
        "f.jsonl:1: row has neither \"question\"/\"answer\" (QA row), \"question\"/\"choices\"/\"answer\" \
         (multiple-choice row), \"prompt\"/\"response\" (prompt-response row) nor \"text\" (document row)"
    );
    // Array files name the element.
    let e = parse_dataset("f.json", r#"[{"question": "q", "choices": ["a", "b"], "answer": 9}]"#).unwrap_err();
    assert!(matches!(e, DataError::InvalidValue { .. }));
    assert!(e.to_string().starts_with("f.json[0]: field \"answer\""), "{e}");
}

#[test]
fn new_shapes_encode_like_question_answer_rows() {
    let tokenizer =
        load_tokenizer(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mcq/model/tokenizer.json")).unwrap();
    let enc = Encoder::new(tokenizer, PromptTemplate::default(), 128, Some(1));
    let mcq = Row::Mcq(McqRow::new("Which?", vec!["Quen".into(), "Mor".into()], 1));
    let pair = Row::Pair(PairRow::new("How?", "Like this.", Some(true)));
    assert_eq!(
        enc.encode_row(&mcq).unwrap(),
        enc.encode_row(&Row::Qa(QaRow::new("Which?", "Mor"))).unwrap()
    );
    assert_eq!(
        enc.encode_row(&pair).unwrap(),
        enc.encode_row(&Row::Qa(QaRow::new("How?", "Like this."))).unwrap()
    );
    assert_eq!(mcq.as_qa().unwrap().answer, "Mor");
    let ds = Dataset::new("d", vec![mcq, pair]);
    assert_eq!(enc.encode_dataset(&ds).unwrap().len(), 2);
}

#[test]
fn the_shipped_fixture_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let hazard = grin::hazard::generate(&grin::hazard::HazardConfig::default());
    grin::hazard::write_files(&hazard, dir.path()).unwrap();
    for f in [
        grin::hazard::FORGET_CORPUS,
        grin::hazard::RETAIN_CORPUS,
        grin::hazard::MCQ_HAZARD,
        grin::hazard::MCQ_GENERAL,
    ] {
        let ds = load_dataset(&dir.path().join(f)).unwrap();
        assert_eq!(ds.len(), 120, "{f}");
    }
    let safety = grin::safety::generate(&grin::safety::SafetyConfig::default());
    grin::safety::write_files(&safety, dir.path()).unwrap();
    let pku = load_dataset(&dir.path().join(grin::safety::PKU)).unwrap();
    assert_eq!(pku.len(), 120, "60 PKU rows, two responses each");
    assert_eq!(pku.without_safe_pairs().len(), 60);
    let harmful = load_dataset(&dir.path().join(grin::safety::HARMFUL)).unwrap();
    assert_eq!(harmful.rows, pku.without_safe_pairs().rows);
    let test = grin::data::load_prompts(&dir.path().join(grin::safety::HARMFUL_TEST)).unwrap();
    assert_eq!(test.len(), 20);
    assert!(test.iter().all(|p| p.response.is_none() && !p.keywords.is_empty()));
}
