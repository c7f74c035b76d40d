//! Multiple-choice scoring and the LM judge against `transformers`
//! (`tests/data/mcq/reference.json`, made by `make_mcq_refs.py` next to it),
//! and the accuracy / chance arithmetic on hand-computed values.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::Device;
use grin::data::{load_dataset, PromptTemplate, Row};
use grin::harm::{Judge, LmJudge, LmJudgeConfig};
use grin::mcq::{
    argmax_first, chance_level, encode_question, evaluate_mcq, summarize, McqConfig, McqFormat, McqItem, McqSetSpec,
};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mcq")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn config(format: &str) -> McqConfig {
    match format {
        "letter" => McqConfig {
            format: McqFormat::Letter,
            template: None,
        },
        "text" => McqConfig {
            format: McqFormat::Text,
            template: None,
        },
        "cloze" => McqConfig {
            format: McqFormat::Text,
            template: Some("{question}".into()),
        },
        other => panic!("unknown format {other}"),
    }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn choice_log_likelihoods_and_answers_match_transformers() -> Result<()> {
    let reference = reference();
    let (model, encoder) =
        grin::pipeline::load_with_encoder(&dir().join("model"), PromptTemplate::DEFAULT, &Device::Cpu)?;
    let net = model.inference();
    let data = load_dataset(&dir().join("mcq.jsonl"))?;
    assert_eq!(data.len(), 6);
    let Row::Mcq(lettered) = &data.rows[3] else {
        panic!("row 4 is multiple choice")
    };
    assert_eq!(lettered.answer, 1, "the letter B is index 1");

    for (format, expected) in reference["formats"].as_object().unwrap() {
        let cfg = config(format);
        let items = expected["items"].as_array().unwrap();
        // The same token ids as the Python tokenizer gives.
        for (row, item) in data.rows.iter().zip(items) {
            let Row::Mcq(row) = row else { panic!() };
            let encoded = encode_question(&encoder, row, &cfg).unwrap();
            let prompt = u32s(&item["prompt_ids"]);
            for (k, e) in encoded.iter().enumerate() {
                let cont = u32s(&item["continuation_ids"][k]);
                assert_eq!(e.target_start, prompt.len(), "{format}: {}", row.question);
                assert_eq!(
                    e.ids[..prompt.len()],
                    prompt[..],
                    "{format}: prompt of {}",
                    row.question
                );
                assert_eq!(
                    e.ids[prompt.len()..],
                    cont[..],
                    "{format}: choice {k} of {}",
                    row.question
                );
            }
        }
        let got = evaluate_mcq(&net, &encoder, "forget", &data, &cfg, 3, None)?;
        assert_eq!(got.items, items.len());
        for (g, e) in got.per_item.iter().zip(items) {
            let want = f64s(&e["logprobs"]);
            for (a, b) in g.logprobs.iter().zip(&want) {
                assert!((a - b).abs() < 2e-4, "{format}: logprob {a} vs transformers {b}");
            }
            assert_eq!(g.predicted as u64, e["predicted"].as_u64().unwrap(), "{format}");
            assert_eq!(
                g.predicted_norm as u64,
                e["predicted_norm"].as_u64().unwrap(),
                "{format}"
            );
            assert_eq!(g.answer as u64, e["answer"].as_u64().unwrap());
            assert_eq!(
                g.choice_chars.iter().map(|&n| n as f64).collect::<Vec<_>>(),
                f64s(&e["choice_chars"])
            );
        }
        assert!(
            (got.accuracy - expected["accuracy"].as_f64().unwrap()).abs() < 1e-12,
            "{format}"
        );
        assert!((got.accuracy_norm - expected["accuracy_norm"].as_f64().unwrap()).abs() < 1e-12);
        assert!((got.chance - expected["chance"].as_f64().unwrap()).abs() < 1e-12);
        assert!((got.excess - (got.accuracy - got.chance)).abs() < 1e-12);
    }
    Ok(())
}

#[test]
fn the_lm_judge_matches_transformers() -> Result<()> {
    let reference = reference();
    let judge_ref = &reference["judge"];
    let model_dir = dir().join("model");
    let (model, encoder) = grin::pipeline::load_with_encoder(&model_dir, PromptTemplate::DEFAULT, &Device::Cpu)?;
    let cfg = LmJudgeConfig {
        model: model_dir,
        template: judge_ref["template"].as_str().unwrap().to_string(),
        harmful_label: judge_ref["harmful_label"].as_str().unwrap().to_string(),
        safe_label: judge_ref["safe_label"].as_str().unwrap().to_string(),
    };
    assert_eq!(cfg.template, grin::harm::DEFAULT_JUDGE_TEMPLATE);
    let mut judge = LmJudge::new(model.inference(), encoder, &cfg, 2)?;
    let items = judge_ref["items"].as_array().unwrap();
    let pairs: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i["prompt"].as_str().unwrap(), i["response"].as_str().unwrap()))
        .collect();
    let scores = judge.label_logprobs(&pairs)?;
    for ((h, s), e) in scores.iter().zip(items) {
        assert!((h - e["harmful_logprob"].as_f64().unwrap()).abs() < 2e-4);
        assert!((s - e["safe_logprob"].as_f64().unwrap()).abs() < 2e-4);
    }
    let no_keywords: Vec<String> = vec![];
    let triples: Vec<(&str, &str, &[String])> = pairs.iter().map(|(p, r)| (*p, *r, no_keywords.as_slice())).collect();
    let verdicts = judge.judge(&triples)?;
    let want: Vec<bool> = items.iter().map(|i| i["harmful"].as_bool().unwrap()).collect();
    assert_eq!(verdicts, want);
    assert!(
        want.contains(&true) && want.contains(&false),
        "the reference exercises both verdicts"
    );

    // The same judge through the evaluation's configuration loads the model itself.
    let loaded = LmJudge::load(&cfg, &Device::Cpu, 4)?;
    assert_eq!(loaded.label_logprobs(&pairs[..1])?, scores[..1]);
    Ok(())
}

#[test]
fn accuracy_chance_and_ties_by_hand() {
    // First maximum wins, like numpy.argmax; NaN never wins.
    assert_eq!(argmax_first(&[-1.0, -0.5, -0.5]), 1);
    assert_eq!(argmax_first(&[-2.0, -2.0]), 0);
    assert_eq!(argmax_first(&[f64::NAN, -3.0, -4.0]), 1);
    assert_eq!(argmax_first(&[]), 0);
    // Chance of 4-, 4- and 2-way questions: (1/4 + 1/4 + 1/2) / 3 = 1/3.
    assert!((chance_level(&[4, 4, 2]) - 1.0 / 3.0).abs() < 1e-15);
    assert!(chance_level(&[]).is_nan());

    // Item 1: sums [-4, -2, -6] with chars [8, 2, 12]: raw argmax 1 (right);
    //   normalised [-0.5, -1.0, -0.5] -> index 0 (first of the tie).
    // Item 2: [-1, -3] with chars [1, 1]: predicts 0, answer 1 (wrong both ways).
    // Item 3: [-5, -5, -9, -1] chars [5, 5, 9, 1]: predicts 3 = answer;
    //   normalised [-1, -1, -1, -1] -> 0 (wrong).
    let items = vec![
        McqItem::new(1, vec![-4.0, -2.0, -6.0], vec![8, 2, 12]),
        McqItem::new(1, vec![-1.0, -3.0], vec![1, 1]),
        McqItem::new(3, vec![-5.0, -5.0, -9.0, -1.0], vec![5, 5, 9, 1]),
    ];
    assert_eq!(
        items
            .iter()
            .map(|i| (i.predicted, i.predicted_norm))
            .collect::<Vec<_>>(),
        [(1, 0), (0, 0), (3, 0)]
    );
    let m = summarize("forget", "f.jsonl", McqFormat::Text, items);
    assert_eq!(m.items, 3);
    assert!((m.accuracy - 2.0 / 3.0).abs() < 1e-15);
    assert!((m.accuracy_norm - 0.0).abs() < 1e-15);
    // (1/3 + 1/2 + 1/4) / 3 = 13/36.
    assert!((m.chance - 13.0 / 36.0).abs() < 1e-15);
    assert!((m.excess - (2.0 / 3.0 - 13.0 / 36.0)).abs() < 1e-15);
}

#[test]
fn the_two_formats_render_as_documented() -> Result<()> {
    let row = grin::data::McqRow::new("  Which river?  ", vec!["Quen".into(), "Mor".into(), "Ith".into()], 2);
    let t = PromptTemplate::default();
    let (p, c) = grin::mcq::render(&row, &McqConfig::default(), &t)?;
    assert_eq!(p, "Which river?\nA. Quen\nB. Mor\nC. Ith\nAnswer:");
    assert_eq!(c, [" A", " B", " C"]);
    let text = McqConfig {
        format: McqFormat::Text,
        template: None,
    };
    let (p, c) = grin::mcq::render(&row, &text, &t)?;
    assert_eq!(p, "Question:   Which river?  \nAnswer: ");
    assert_eq!(
        c,
        ["Quen", "Mor", "Ith"],
        "no delimiter after a prompt ending in a space"
    );
    let cloze = McqConfig {
        format: McqFormat::Text,
        template: Some("{question}".into()),
    };
    let (_, c) = grin::mcq::render(&row, &cloze, &t)?;
    assert_eq!(c, ["Quen", "Mor", "Ith"], "the question itself ends in whitespace");
    let statement = grin::data::McqRow::new("Velmora lies on the river", row.choices.clone(), 2);
    let (p, c) = grin::mcq::render(&statement, &cloze, &t)?;
    assert_eq!(p, "Velmora lies on the river");
    assert_eq!(c, [" Quen", " Mor", " Ith"]);
    let bad = McqConfig {
        format: McqFormat::Letter,
        template: Some("no placeholder".into()),
    };
    assert!(bad.validate().is_err());
    Ok(())
}

#[test]
fn mcq_sets_flow_into_the_evaluation_and_its_flat_metrics() -> Result<()> {
    let (model, encoder) =
        grin::pipeline::load_with_encoder(&dir().join("model"), PromptTemplate::DEFAULT, &Device::Cpu)?;
    let forget = load_dataset(&dir().join("mcq.jsonl"))?;
    let cfg = grin::eval::EvalConfig {
        max_new_tokens: 2,
        mcq: vec![
            McqSetSpec::new("forget", dir().join("mcq.jsonl")),
            McqSetSpec::new("general", dir().join("mcq.jsonl")),
        ],
        ..Default::default()
    };
    grin::eval::validate_suites(&cfg)?;
    let sets = grin::eval::EvalSets {
        forget: &forget,
        retain: None,
        holdout: None,
    };
    let e = grin::eval::evaluate(&model.inference(), &encoder, sets, None, &cfg)?;
    assert_eq!(e.mcq.len(), 2);
    let flat = e.flat();
    let letter = &reference()["formats"]["letter"];
    assert!((flat["mcq_forget_accuracy"].as_f64().unwrap() - letter["accuracy"].as_f64().unwrap()).abs() < 1e-12);
    assert!((flat["mcq_general_chance"].as_f64().unwrap() - letter["chance"].as_f64().unwrap()).abs() < 1e-12);
    assert!(flat.get("mcq_general_excess").is_some());
    let rows = grin::eval::summary_rows(&e);
    assert!(rows.iter().any(|(k, v)| k == "mcq_forget_accuracy" && v.is_some()));

    // Bad set names and non-multiple-choice files are refused up front.
    let mut bad = cfg.clone();
    bad.mcq[1].name = "forget".into();
    assert!(grin::eval::validate_suites(&bad)
        .unwrap_err()
        .to_string()
        .contains("used twice"));
    bad.mcq[1].name = "Has Space".into();
    assert!(grin::eval::validate_suites(&bad).is_err());
    let tmp = tempfile::tempdir()?;
    let docs = tmp.path().join("docs.jsonl");
    std::fs::write(
        &docs,
        "{\"question\": \"q?\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\n{\"text\": \"a document\"}\n",
    )?;
    let mut bad = cfg.clone();
    bad.mcq = vec![McqSetSpec::new("forget", &docs)];
    let err = grin::eval::validate_suites(&bad).unwrap_err().to_string();
    assert!(
        err.contains("docs.jsonl: row 2: expected a multiple-choice row"),
        "{err}"
    );
    Ok(())
}
