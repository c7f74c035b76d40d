//! `grin bench unlearn`: GRIN against the baselines on a tofu-mini fixture,
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
    /// A directory made by `grin fixture tofu-mini`.
    #[arg(long)]
    fixture: PathBuf,
    /// Forget split (forget01, forget05 or forget10); retain is its complement.
    #[arg(long, default_value = "forget10")]
    split: String,
    /// Comma-separated variants: grin, grin-no-noise, random-mask,
    /// magnitude-mask, graddiff, npo, idk, simnpo, ga.
    #[arg(long, default_value = "grin,grin-no-noise,random-mask,graddiff,npo,idk")]
    variants: String,
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
        "random-mask" => (
            "grin",
            serde_json::json!({"selection": {"kind": "random"}, "noise": {"sigma": 0.0}}),
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

const COLUMNS: &[(&str, &str)] = &[
    ("forget_quality", "forget quality ↑"),
    ("model_utility", "model utility ↑"),
    ("forget_keyword_accuracy", "forget keyword acc ↓"),
    ("forget_answer_probability", "forget answer prob ↓"),
    ("privleak", "privleak (→0)"),
];

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
    let complement = match args.split.as_str() {
        "forget01" => "retain99",
        "forget05" => "retain95",
        "forget10" => "retain90",
        s => bail!("--split {s:?}: expected forget01, forget05 or forget10"),
    };
    let forget = load_dataset(&fx.join(format!("data/{}.jsonl", args.split)))?;
    let retain = load_dataset(&fx.join(format!("data/{complement}.jsonl")))?;
    let holdout = load_dataset(&fx.join("data/holdout.jsonl"))?;
    let model_dir = fx.join("model");
    let template = "Question: {question}\nAnswer: ".to_string();
    let eval = grin::eval::EvalConfig {
        max_items: args.max_eval_items,
        ..Default::default()
    };
    let sets = grin::eval::EvalSets {
        forget: &forget,
        retain: Some(&retain),
        holdout: Some(&holdout),
    };
    let oracle = grin::pipeline::oracle_reference(
        &fx.join("oracle"),
        &model_dir,
        &template,
        sets,
        &eval,
        &candle_core::Device::Cpu,
    )?;

    // The input model's metrics, once.
    let base = crate::commands::load_with_encoder(&model_dir, &template)?;
    let before = grin::eval::evaluate(&base.model.inference(), &base.encoder, sets, Some(&oracle), &eval)?.flat();
    drop(base);

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
    for variant in args.variants.split(',').map(str::trim) {
        let (method, patch) = variant_config(variant)?;
        for (label, grid_patch) in &points {
            let name = if label.is_empty() {
                variant.to_string()
            } else {
                format!("{variant} {label}")
            };
            let mut columns = vec![Vec::new(); COLUMNS.len()];
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
                    gates: grin::certificate::default_gates(),
                    oracle: Some(OracleSource::Computed(oracle.clone())),
                    metrics_before: Some(before.clone()),
                    device: candle_core::Device::Cpu,
                };
                let data = RunData {
                    forget: &forget,
                    retain: &retain,
                    holdout: Some(&holdout),
                };
                let outcome = grin::pipeline::run(&spec, data, &mut Silent)?;
                let after = outcome.after.flat();
                for (i, (key, _)) in COLUMNS.iter().enumerate() {
                    if let Some(v) = after.get(*key).and_then(|v| v.as_f64()) {
                        columns[i].push(v);
                    }
                }
                seconds += outcome.seconds;
                eprintln!(
                    "{name} seed {seed}: {} ({:.0}s)",
                    COLUMNS
                        .iter()
                        .map(|(k, _)| format!("{k}={:.4}", after.get(*k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    outcome.seconds
                );
                runs.push(serde_json::json!({
                    "variant": name, "seed": seed, "metrics": after,
                    "steps": outcome.report.steps.len(), "stopped_early": outcome.report.stopped_early,
                    "mask_fraction": outcome.report.mask.fraction, "seconds": outcome.seconds,
                    "config": spec.config,
                }));
                std::fs::remove_dir_all(&out).ok();
            }
            rows.push((name, columns, seconds / seeds.len() as f64));
        }
    }
    print_table(&args, &before, &rows, &seeds);
    if let Some(path) = &args.json {
        let doc =
            serde_json::json!({"fixture": fx, "split": args.split, "seeds": seeds, "before": before, "runs": runs});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_table(
    args: &BenchUnlearnArgs,
    before: &serde_json::Value,
    rows: &[(String, Vec<Vec<f64>>, f64)],
    seeds: &[u64],
) {
    let fixture: &Path = &args.fixture;
    println!(
        "\ntofu-mini {} ({}), seeds {:?}, mean ± std\n",
        args.split,
        fixture.display(),
        seeds
    );
    print!("| variant |");
    for (_, title) in COLUMNS {
        print!(" {title} |");
    }
    println!(" s/run |");
    print!("|---|");
    for _ in COLUMNS {
        print!("---|");
    }
    println!("---|");
    print!("| input model |");
    for (key, _) in COLUMNS {
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
