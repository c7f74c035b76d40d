//! `grin bench unlearn`: GRIN against the baselines on a mini fixture
//! (tofu-mini, hazard-mini or safe-mini, told apart by its `fixture.json`),
//! over several seeds, with an optional grid over configuration values (the
//! sweep that chose the defaults). Prints a Markdown table and writes JSON.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use grin::data::load_dataset;
use grin::pipeline::{OracleSource, RunData, RunSpec};
use grin::progress::Silent;

use crate::commands::{merge, unlearn_config};

#[derive(Debug, Args)]
pub struct BenchUnlearnArgs {
    /// A directory made by `grin fixture tofu-mini`, `hazard-mini` or `safe-mini`.
    #[arg(long)]
    fixture: PathBuf,
    /// tofu-mini: forget split (forget01, forget05 or forget10); retain is
    /// its complement.
    #[arg(long, default_value = "forget10")]
    split: String,
    /// Comma-separated variants: grin, grin-no-noise, grin-idk, random-mask,
    /// magnitude-mask, graddiff, npo, idk, simnpo, ga. Default per fixture:
    /// tofu-mini grin,grin-no-noise,random-mask,graddiff,npo,idk;
    /// hazard-mini grin,grin-no-noise,random-mask,graddiff,npo,simnpo;
    /// safe-mini grin-idk,grin,random-mask,idk,npo,graddiff.
    #[arg(long)]
    variants: Option<String>,
    #[arg(long, default_value = "0,1,2")]
    seeds: String,
    /// Overrides applied to every variant (TOML or JSON, see `UnlearnConfig`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Grid axis `dotted.path=v1,v2,...` (repeatable; the runs cover the
    /// product of all axes), e.g. `--set selection.ratio=0.01,0.05`.
    #[arg(long = "set")]
    grid: Vec<String>,
    /// Evaluate at most this many rows per set.
    #[arg(long)]
    max_eval_items: Option<usize>,
    /// Write every run's metrics here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn variant_config(variant: &str) -> Result<(String, serde_json::Value)> {
    let (method, patch) = match variant {
        "grin" => ("grin", serde_json::json!({})),
        "grin-no-noise" => ("grin", serde_json::json!({"noise": {"sigma": 0.0}})),
        "grin-idk" => ("grin", serde_json::json!({"finetune": {"loss": {"forget": "idk"}}})),
        "random-mask" => (
            "grin",
            serde_json::json!({"selection": {"kind": "random"}, "noise": {"sigma": 0.0}}),
        ),
        "random-mask-idk" => (
            "grin",
            serde_json::json!({"selection": {"kind": "random"}, "noise": {"sigma": 0.0},
                               "finetune": {"loss": {"forget": "idk"}}}),
        ),
        "magnitude-mask" => (
            "grin",
            serde_json::json!({"selection": {"kind": "magnitude"}, "noise": {"sigma": 0.0}}),
        ),
        m @ ("graddiff" | "npo" | "idk" | "simnpo" | "ga") => (m, serde_json::json!({})),
        other => bail!("unknown variant {other:?}"),
    };
    Ok((method.to_string(), patch))
}

fn parse_value(v: &str) -> serde_json::Value {
    serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()))
}

/// The product of the grid axes as JSON patches.
fn grid_points(axes: &[String]) -> Result<Vec<(String, serde_json::Value)>> {
    let mut points = vec![(String::new(), serde_json::json!({}))];
    for axis in axes {
        let (path, values) = axis
            .split_once('=')
            .with_context(|| format!("--set {axis:?}: expected path=v1,v2"))?;
        let mut next = Vec::new();
        for (label, patch) in &points {
            for v in values.split(',') {
                let mut leaf = parse_value(v);
                for key in path.rsplit('.') {
                    leaf = serde_json::json!({ key: leaf });
                }
                let mut p = patch.clone();
                merge(&mut p, leaf);
                let l = if label.is_empty() {
                    format!("{path}={v}")
                } else {
                    format!("{label} {path}={v}")
                };
                next.push((l, p));
            }
        }
        points = next;
    }
    Ok(points)
}

const TOFU_COLUMNS: &[(&str, &str)] = &[
    ("forget_quality", "forget quality ↑"),
    ("model_utility", "model utility ↑"),
    ("forget_keyword_accuracy", "forget keyword acc ↓"),
    ("forget_answer_probability", "forget answer prob ↓"),
    ("privleak", "privleak (→0)"),
];

const HAZARD_COLUMNS: &[(&str, &str)] = &[
    ("mcq_forget_accuracy", "hazard MCQ acc (→0.25)"),
    ("mcq_general_accuracy", "general MCQ acc ↑"),
    ("forget_answer_probability", "forget corpus prob ↓"),
    ("retain_answer_probability", "retain corpus prob ↑"),
];

const SAFE_COLUMNS: &[(&str, &str)] = &[
    ("harmful_rate", "harmful rate ↓"),
    ("harmful_refusal_rate", "refusal rate on harmful ↑"),
    ("harmful_rate_unseen", "harmful rate, unseen prompts ↓"),
    ("benign_refusal_rate", "benign refusal rate ↓"),
    ("benign_rouge_l_recall", "benign ROUGE-L ↑"),
    ("benign_answer_probability", "benign answer prob ↑"),
];

/// Which benchmark a fixture directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Tofu,
    Hazard,
    Safe,
}

impl Family {
    /// From `fixture.json`'s `kind` (tofu-mini's has none).
    fn detect(fx: &Path) -> Result<Family> {
        let path = fx.join("fixture.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        Ok(match doc.get("kind").and_then(|k| k.as_str()) {
            None | Some("tofu-mini") => Family::Tofu,
            Some("hazard-mini") => Family::Hazard,
            Some("safe-mini") => Family::Safe,
            Some(other) => bail!("{}: unknown fixture kind {other:?}", path.display()),
        })
    }

    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Family::Tofu => TOFU_COLUMNS,
            Family::Hazard => HAZARD_COLUMNS,
            Family::Safe => SAFE_COLUMNS,
        }
    }

    fn default_variants(self) -> &'static str {
        match self {
            Family::Tofu => "grin,grin-no-noise,random-mask,graddiff,npo,idk",
            Family::Hazard => "grin,grin-no-noise,random-mask,graddiff,npo,simnpo",
            Family::Safe => "grin-idk,grin,random-mask-idk,idk,npo,graddiff",
        }
    }
}

fn mean_std(xs: &[f64]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len().max(2).saturating_sub(1) as f64).sqrt();
    if xs.len() > 1 {
        format!("{m:.4} ± {sd:.4}")
    } else {
        format!("{m:.4}")
    }
}

pub fn run(args: BenchUnlearnArgs) -> Result<()> {
    let fx = &args.fixture;
    let family = Family::detect(fx)?;
    let template = "Question: {question}\nAnswer: ".to_string();
    let mut eval = grin::eval::EvalConfig {
        max_items: args.max_eval_items,
        ..Default::default()
    };
    let data_file = |name: &str| fx.join("data").join(name);
    let (forget, retain, holdout) = match family {
        Family::Tofu => {
            let complement = match args.split.as_str() {
                "forget01" => "retain99",
                "forget05" => "retain95",
                "forget10" => "retain90",
                s => bail!("--split {s:?}: expected forget01, forget05 or forget10"),
            };
            (
                load_dataset(&data_file(&format!("{}.jsonl", args.split)))?,
                load_dataset(&data_file(&format!("{complement}.jsonl")))?,
                Some(load_dataset(&data_file("holdout.jsonl"))?),
            )
        }
        Family::Hazard => {
            use grin::hazard::{FORGET_CORPUS, MCQ_GENERAL, MCQ_HAZARD, RETAIN_CORPUS};
            eval.mcq = vec![
                grin::mcq::McqSetSpec::new("forget", data_file(MCQ_HAZARD)),
                grin::mcq::McqSetSpec::new("general", data_file(MCQ_GENERAL)),
            ];
            eval.mcq_scoring = grin::fixture::hazard_mcq_config();
            (
                load_dataset(&data_file(FORGET_CORPUS))?,
                load_dataset(&data_file(RETAIN_CORPUS))?,
                None,
            )
        }
        Family::Safe => {
            use grin::safety::{BENIGN, HARMFUL};
            eval.harm = Some(grin::harm::HarmConfig::new(data_file(HARMFUL), Some(data_file(BENIGN))));
            (
                load_dataset(&data_file(HARMFUL))?,
                load_dataset(&data_file(BENIGN))?,
                None,
            )
        }
    };
    // safe-mini: the same judge on prompts the model never saw.
    let unseen = (family == Family::Safe).then(|| {
        grin::harm::HarmConfig::new(
            data_file(grin::safety::HARMFUL_TEST),
            Some(data_file(grin::safety::BENIGN_TEST)),
        )
    });
    let unseen_metrics = |dir: &Path| -> Result<serde_json::Map<String, serde_json::Value>> {
        let mut m = serde_json::Map::new();
        if let Some(cfg) = &unseen {
            let loaded = crate::commands::load_with_encoder(dir, &template)?;
            let h = grin::harm::evaluate_harm(&loaded.model.inference(), &loaded.encoder, cfg, 32, None, false, None)?;
            m.insert("harmful_rate_unseen".into(), serde_json::json!(h.harmful_rate));
            m.insert(
                "harmful_refusal_rate_unseen".into(),
                serde_json::json!(h.harmful_refusal_rate),
            );
            if let Some(r) = h.benign_refusal_rate {
                m.insert("benign_refusal_rate_unseen".into(), serde_json::json!(r));
            }
        }
        Ok(m)
    };
    let model_dir = fx.join("model");
    let sets = grin::eval::EvalSets {
        forget: &forget,
        retain: Some(&retain),
        holdout: holdout.as_ref(),
    };
    let oracle = match family {
        Family::Tofu => Some(grin::pipeline::oracle_reference(
            &fx.join("oracle"),
            &model_dir,
            &template,
            sets,
            &eval,
            &candle_core::Device::Cpu,
        )?),
        _ => None,
    };
    let gates = match family {
        Family::Tofu => grin::certificate::default_gates(),
        Family::Hazard => grin::certificate::mcq_gates(),
        Family::Safe => grin::certificate::harm_gates(),
    };
    let columns = family.columns();

    // The input model's metrics, once.
    let base = crate::commands::load_with_encoder(&model_dir, &template)?;
    let mut before = grin::eval::evaluate(&base.model.inference(), &base.encoder, sets, oracle.as_ref(), &eval)?.flat();
    drop(base);
    if let Some(obj) = before.as_object_mut() {
        obj.extend(unseen_metrics(&model_dir)?);
    }

    let seeds: Vec<u64> = args
        .seeds
        .split(',')
        .map(|s| s.trim().parse().with_context(|| format!("--seeds: {s:?}")))
        .collect::<Result<_>>()?;
    let points = grid_points(&args.grid)?;
    let overrides: Option<serde_json::Value> = args.config.as_deref().map(crate::commands::read_config).transpose()?;
    let tmp = tempfile::tempdir()?;
    let mut runs = Vec::new();
    let mut rows: Vec<(String, Vec<Vec<f64>>, f64)> = Vec::new();
    let variants = args
        .variants
        .clone()
        .unwrap_or_else(|| family.default_variants().to_string());
    for variant in variants.split(',').map(str::trim) {
        let (method, patch) = variant_config(variant)?;
        for (label, grid_patch) in &points {
            let name = if label.is_empty() {
                variant.to_string()
            } else {
                format!("{variant} {label}")
            };
            let mut values = vec![Vec::new(); columns.len()];
            let mut seconds = 0.0;
            for &seed in &seeds {
                let mut cfg_value = serde_json::to_value(unlearn_config(&method, None, Some(seed))?)?;
                if let Some(o) = &overrides {
                    merge(&mut cfg_value, o.clone());
                }
                merge(&mut cfg_value, patch.clone());
                merge(&mut cfg_value, grid_patch.clone());
                let config: grin::unlearn::UnlearnConfig =
                    serde_json::from_value(cfg_value).with_context(|| format!("{name}: invalid configuration"))?;
                let out = tmp.path().join(format!("run-{}", runs.len()));
                let spec = RunSpec {
                    model_dir: model_dir.clone(),
                    out_dir: out.clone(),
                    template: template.clone(),
                    config,
                    eval: eval.clone(),
                    gates: gates.clone(),
                    oracle: oracle.clone().map(OracleSource::Computed),
                    metrics_before: Some(before.clone()),
                    device: candle_core::Device::Cpu,
                };
                let data = RunData {
                    forget: &forget,
                    retain: &retain,
                    holdout: holdout.as_ref(),
                };
                let outcome = grin::pipeline::run(&spec, data, &mut Silent)?;
                let mut after = outcome.after.flat();
                if let Some(obj) = after.as_object_mut() {
                    obj.extend(unseen_metrics(&out)?);
                }
                for (i, (key, _)) in columns.iter().enumerate() {
                    if let Some(v) = after.get(*key).and_then(|v| v.as_f64()) {
                        values[i].push(v);
                    }
                }
                seconds += outcome.seconds;
                eprintln!(
                    "{name} seed {seed}: {} ({:.0}s)",
                    columns
                        .iter()
                        .map(|(k, _)| format!("{k}={:.4}", after.get(*k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    outcome.seconds
                );
                runs.push(serde_json::json!({
                    "variant": name, "seed": seed, "metrics": after,
                    "steps": outcome.report.steps.len(), "stopped_early": outcome.report.stopped_early,
                    "gates_passed": outcome.passed,
                    "mask_fraction": outcome.report.mask.fraction, "seconds": outcome.seconds,
                    "config": spec.config,
                }));
                std::fs::remove_dir_all(&out).ok();
            }
            rows.push((name, values, seconds / seeds.len() as f64));
        }
    }
    print_table(&args, family, &before, &rows, &seeds);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "fixture": fx, "family": format!("{family:?}").to_lowercase(), "split": args.split,
            "seeds": seeds, "before": before, "runs": runs,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_table(
    args: &BenchUnlearnArgs,
    family: Family,
    before: &serde_json::Value,
    rows: &[(String, Vec<Vec<f64>>, f64)],
    seeds: &[u64],
) {
    let fixture: &Path = &args.fixture;
    let title = match family {
        Family::Tofu => format!("tofu-mini {}", args.split),
        Family::Hazard => "hazard-mini".to_string(),
        Family::Safe => "safe-mini".to_string(),
    };
    let columns = family.columns();
    println!("\n{title} ({}), seeds {:?}, mean ± std\n", fixture.display(), seeds);
    print!("| variant |");
    for (_, title) in columns {
        print!(" {title} |");
    }
    println!(" s/run |");
    print!("|---|");
    for _ in columns {
        print!("---|");
    }
    println!("---|");
    print!("| input model |");
    for (key, _) in columns {
        print!(
            " {} |",
            before
                .get(*key)
                .and_then(|v| v.as_f64())
                .map_or("-".into(), |v| format!("{v:.4}"))
        );
    }
    println!(" - |");
    for (name, cols, secs) in rows {
        print!("| {name} |");
        for c in cols {
            print!(" {} |", mean_std(c));
        }
        println!(" {secs:.0} |");
    }
}
