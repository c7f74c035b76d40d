//! Evidence that the trainable model is the model users think it is: same
//! logits as candle-transformers and Hugging Face `transformers`, gradients
//! everywhere and correct, checkpoints that round-trip bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor, D};
use grin::checkpoint::{load_model, save_model, SaveOptions};
use grin::config::ModelConfig;
use grin::data::{collate, Encoded};
use grin::model::Model;
use grin::train::{batch_mean_nll, token_nll};
use serde_json::{json, Value};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn cfg(v: &Value) -> ModelConfig {
    ModelConfig::parse(&v.to_string(), Path::new("test/config.json")).expect("valid config")
}

fn llama_json(kv_heads: usize, tied: bool) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": kv_heads,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "hidden_act": "silu", "tie_word_embeddings": tied,
    })
}

fn llama3_json() -> Value {
    let mut v = llama_json(2, true);
    v["rope_theta"] = json!(500000.0);
    v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8});
    v
}

fn qwen2_json() -> Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "vocab_size": 61, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "tie_word_embeddings": true, "sliding_window": 64,
        "max_window_layers": 2, "use_sliding_window": false,
    })
}

fn ids(b: usize, t: usize, vocab: usize, seed: u32) -> Tensor {
    let v: Vec<u32> = (0..b * t)
        .map(|i| ((i as u32 + 1).wrapping_mul(2654435761).wrapping_add(seed * 97) >> 7) % vocab as u32)
        .collect();
    Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The random model's weights as a plain map, for candle-transformers.
fn weight_map(model: &Model) -> HashMap<String, Tensor> {
    model.tensors().into_iter().map(|(k, v)| (k, v.detach())).collect()
}

#[test]
fn logits_match_candle_transformers_llama() -> Result<()> {
    use candle_transformers::models::llama as ct;
    for (name, json) in [("llama2", llama_json(4, false)), ("llama3-gqa-tied", llama3_json())] {
        let c = cfg(&json);
        let model = Model::new_random(&c, DType::F32, &Device::Cpu, 7, 0.2)?;
        let vb = candle_nn::VarBuilder::from_tensors(weight_map(&model), DType::F32, &Device::Cpu);
        let ct_cfg: ct::LlamaConfig = serde_json::from_value(json.clone())?;
        let ct_cfg = ct_cfg.into_config(false);
        let reference = ct::Llama::load(vb, &ct_cfg)?;
        let input = ids(1, 13, 61, 1);
        let mut cache = ct::Cache::new(false, DType::F32, &ct_cfg, &Device::Cpu)?;
        let expected = reference.forward(&input, 0, &mut cache)?; // [1, V], last position
        let ours = model.forward(&input)?; // [1, T, V]
        let diff = max_abs_diff(&ours.i((.., 12, ..))?, &expected);
        assert!(diff < 1e-4, "{name}: max |Δlogit| = {diff}");
        // The fused inference path gives the same numbers.
        let diff = max_abs_diff(&model.inference().forward(&input)?, &ours);
        assert!(diff < 1e-4, "{name}: inference path differs by {diff}");
    }
    Ok(())
}

#[test]
fn logits_match_candle_transformers_qwen2() -> Result<()> {
    use candle_transformers::models::qwen2 as ct;
    let json = qwen2_json();
    let c = cfg(&json);
    let mut model = Model::new_random(&c, DType::F32, &Device::Cpu, 9, 0.2)?;
    // Non-zero biases, so that the bias path is exercised.
    for (name, var) in model.vars() {
        if name.ends_with(".bias") {
            var.set(&Tensor::randn(0f32, 0.3, var.shape(), &Device::Cpu)?)?;
        }
    }
    model = Model::from_tensors(&c, model.tensors(), DType::F32, &Device::Cpu)?;
    let vb = candle_nn::VarBuilder::from_tensors(weight_map(&model), DType::F32, &Device::Cpu);
    let ct_cfg: ct::Config = serde_json::from_value(json)?;
    let mut reference = ct::ModelForCausalLM::new(&ct_cfg, vb)?;
    let input = ids(2, 11, 61, 2);
    let expected = reference.forward(&input, 0)?.squeeze(1)?; // [B, V]
    let ours = model.forward(&input)?.i((.., 10, ..))?;
    let diff = max_abs_diff(&ours, &expected);
    assert!(diff < 1e-4, "qwen2: max |Δlogit| = {diff}");
    Ok(())
}

/// Every case under tests/data/models was written by `transformers`
/// (make_model_refs.py); our per-token loss and logits must match its own.
#[test]
fn per_token_loss_matches_transformers() -> Result<()> {
    let dir = data_dir().join("models");
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir)? {
        let case = entry?.path();
        let reference = case.join("reference.json");
        if !reference.is_file() {
            continue;
        }
        cases += 1;
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&reference)?)?;
        let model = load_model(&case, &Device::Cpu, Some(DType::F32))?;
        let rows: Vec<Vec<u32>> = serde_json::from_value(r["input_ids"].clone())?;
        let (b, t) = (rows.len(), rows[0].len());
        let input = Tensor::from_vec(rows.concat(), (b, t), &Device::Cpu)?;
        let logits = model.forward(&input)?;
        let expected: Vec<Vec<Vec<f32>>> = serde_json::from_value(r["logits"].clone())?;
        let expected = Tensor::new(expected, &Device::Cpu)?;
        let diff = max_abs_diff(&logits, &expected);
        assert!(diff < 1e-4, "{}: max |Δlogit| = {diff}", case.display());

        let examples: Vec<Encoded> = rows
            .iter()
            .map(|ids| Encoded {
                ids: ids.clone(),
                target_start: 1,
            })
            .collect();
        let refs: Vec<&Encoded> = examples.iter().collect();
        let batch = collate(&refs, 0, &Device::Cpu)?;
        let nll = token_nll(&logits, &batch)?.narrow(1, 0, t - 1)?;
        let expected: Vec<Vec<f32>> = serde_json::from_value(r["token_nll"].clone())?;
        let diff = max_abs_diff(&nll, &Tensor::new(expected, &Device::Cpu)?);
        assert!(diff < 1e-4, "{}: max |Δnll| = {diff}", case.display());
    }
    assert!(
        cases >= 5,
        "expected the reference cases in {}, found {cases}",
        dir.display()
    );
    Ok(())
}

fn micro_batch(vocab: usize) -> Result<grin::data::Batch> {
    let rows = [ids(1, 9, vocab, 3), ids(1, 6, vocab, 4)];
    let examples: Vec<Encoded> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Encoded {
            ids: r.flatten_all().unwrap().to_vec1().unwrap(),
            target_start: 2 + i,
        })
        .collect();
    let refs: Vec<&Encoded> = examples.iter().collect();
    Ok(collate(&refs, 0, &Device::Cpu)?)
}

#[test]
fn every_weight_gets_a_gradient() -> Result<()> {
    for json in [llama_json(4, false), llama3_json(), qwen2_json()] {
        let c = cfg(&json);
        let model = Model::new_random(&c, DType::F32, &Device::Cpu, 1, 0.1)?;
        let batch = micro_batch(c.vocab_size)?;
        let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
        let grads = loss.backward()?;
        for (name, var) in model.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient for {name}", c.architecture.hf_class()));
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
        }
    }
    Ok(())
}

/// Analytic gradients against central differences, in f64, on a few entries
/// of every kind of tensor.
#[test]
fn gradients_match_finite_differences() -> Result<()> {
    for json in [llama3_json(), qwen2_json()] {
        let mut j = json.clone();
        j["num_hidden_layers"] = json!(1);
        let c = cfg(&j);
        let model = Model::new_random(&c, DType::F64, &Device::Cpu, 5, 0.3)?;
        for (name, var) in model.vars() {
            if name.ends_with(".bias") {
                var.set(&Tensor::randn(0f64, 0.3, var.shape(), &Device::Cpu)?)?;
            }
        }
        let batch = micro_batch(c.vocab_size)?;
        let loss_of = |m: &Model| -> f64 {
            batch_mean_nll(&m.forward(&batch.input_ids).unwrap(), &batch)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let grads = {
            let loss = batch_mean_nll(&model.forward(&batch.input_ids)?, &batch)?;
            loss.backward()?
        };
        let h = 1e-5;
        for (name, var) in model.vars() {
            let g = grads
                .get(var.as_tensor())
                .expect("gradient")
                .flatten_all()?
                .to_vec1::<f64>()?;
            let original = var.as_tensor().copy()?;
            let flat = original.flatten_all()?.to_vec1::<f64>()?;
            for &k in &[0, flat.len() / 2, flat.len() - 1] {
                let mut plus = flat.clone();
                plus[k] += h;
                var.set(&Tensor::from_vec(plus, original.shape(), &Device::Cpu)?)?;
                let lp = loss_of(&model);
                let mut minus = flat.clone();
                minus[k] -= h;
                var.set(&Tensor::from_vec(minus, original.shape(), &Device::Cpu)?)?;
                let lm = loss_of(&model);
                var.set(&original)?;
                let numeric = (lp - lm) / (2.0 * h);
                let err = (numeric - g[k]).abs();
                assert!(
                    err < 1e-6 + 1e-4 * numeric.abs(),
                    "{name}[{k}]: analytic {} vs numeric {numeric}",
                    g[k]
                );
            }
        }
    }
    Ok(())
}

fn file_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn save_then_load_is_bit_identical() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for (i, json) in [llama_json(4, false), llama3_json(), qwen2_json()].iter().enumerate() {
        let c = cfg(json);
        let model = Model::new_random(&c, DType::F32, &Device::Cpu, 11, 0.1)?;
        let a = tmp.path().join(format!("a{i}"));
        let manifest = save_model(&model, &a, &SaveOptions::default())?;
        assert!(manifest.iter().any(|m| m.path == "model.safetensors"));
        let loaded = load_model(&a, &Device::Cpu, None)?;
        for ((n1, t1), (n2, t2)) in model.tensors().iter().zip(loaded.tensors().iter()) {
            assert_eq!(n1, n2);
            let (x, y): (Vec<f32>, Vec<f32>) = (t1.flatten_all()?.to_vec1()?, t2.flatten_all()?.to_vec1()?);
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{n1} changed"
            );
        }
        // Writing the loaded model again gives the same bytes.
        let b = tmp.path().join(format!("b{i}"));
        save_model(&loaded, &b, &SaveOptions::default())?;
        assert_eq!(file_bytes(&a), file_bytes(&b));
        // Sharded output loads back to the same weights.
        let s = tmp.path().join(format!("s{i}"));
        let opts = SaveOptions {
            max_shard_bytes: 40_000,
            ..SaveOptions::default()
        };
        let manifest = save_model(&model, &s, &opts)?;
        assert!(manifest.iter().filter(|m| m.path.ends_with(".safetensors")).count() >= 2);
        let sharded = load_model(&s, &Device::Cpu, None)?;
        let diff = max_abs_diff(&sharded.forward(&ids(1, 5, 61, 0))?, &model.forward(&ids(1, 5, 61, 0))?);
        assert_eq!(diff, 0.0);
        // Tied models do not write a duplicate lm_head.
        let tensors = candle_core::safetensors::load(a.join("model.safetensors"), &Device::Cpu)?;
        assert_eq!(tensors.contains_key("lm_head.weight"), !c.tie_word_embeddings);
    }
    Ok(())
}

#[test]
fn saving_refuses_a_non_empty_target_and_leaves_no_temporary() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let model = Model::new_random(&cfg(&llama_json(4, false)), DType::F32, &Device::Cpu, 1, 0.1)?;
    let out = tmp.path().join("out");
    std::fs::create_dir(&out)?;
    std::fs::write(out.join("keep.txt"), "x")?;
    let err = save_model(&model, &out, &SaveOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not empty"), "{err}");
    let names: Vec<_> = std::fs::read_dir(tmp.path())?.map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "a temporary directory was left behind: {names:?}");
    Ok(())
}

#[test]
fn bad_checkpoints_are_refused_with_the_reason() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let c = cfg(&llama_json(4, false));
    let model = Model::new_random(&c, DType::F32, &Device::Cpu, 1, 0.1)?;
    let dir = tmp.path().join("m");
    save_model(&model, &dir, &SaveOptions::default())?;
    let st = dir.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> = model.tensors().into_iter().collect();

    let err = load_model(tmp.path(), &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");

    tensors.remove("model.norm.weight");
    candle_core::safetensors::save(&tensors, &st)?;
    let err = load_model(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("missing") && err.contains("model.norm.weight"), "{err}");

    tensors.insert("model.norm.weight".into(), Tensor::ones(7, DType::F32, &Device::Cpu)?);
    candle_core::safetensors::save(&tensors, &st)?;
    let err = load_model(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("model.norm.weight") && err.contains("shape"), "{err}");

    tensors.insert("model.norm.weight".into(), Tensor::ones(32, DType::F32, &Device::Cpu)?);
    tensors.insert(
        "model.layers.0.mlp.gate_proj.bias".into(),
        Tensor::ones(48, DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, &st)?;
    let err = load_model(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("gate_proj.bias"), "{err}");

    std::fs::write(&st, b"not a safetensors file")?;
    let err = load_model(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");

    std::fs::remove_file(&st)?;
    let err = load_model(&dir, &Device::Cpu, None).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
    Ok(())
}

#[test]
fn greedy_generation_follows_the_trainable_argmax() -> Result<()> {
    for json in [llama3_json(), qwen2_json()] {
        let c = cfg(&json);
        let model = Model::new_random(&c, DType::F32, &Device::Cpu, 3, 0.5)?;
        let prompts = vec![vec![5u32, 9, 1, 33], vec![7u32, 2, 40, 11], vec![3u32, 8]];
        let outs = grin::generate::greedy_batch(&model.inference(), &prompts, 12, &[])?;
        for (prompt, out) in prompts.iter().zip(&outs) {
            assert_eq!(out.len(), 12);
            let mut all = prompt.clone();
            all.extend(out);
            let input = Tensor::from_vec(all.clone(), (1, all.len()), &Device::Cpu)?;
            let argmax: Vec<u32> = model.forward(&input)?.squeeze(0)?.argmax(D::Minus1)?.to_vec1()?;
            for (k, tok) in out.iter().enumerate() {
                let pos = prompt.len() + k - 1;
                assert_eq!(argmax[pos], *tok, "position {pos}");
            }
        }
        // EOS stops decoding and is not returned.
        let first = outs[0][0];
        let stopped = grin::generate::greedy(&model.inference(), &prompts[0], 12, &[first])?;
        assert!(stopped.is_empty());
    }
    Ok(())
}

#[test]
fn bf16_forward_runs_and_tracks_f32() -> Result<()> {
    let c = cfg(&llama3_json());
    let f32_model = Model::new_random(&c, DType::F32, &Device::Cpu, 2, 0.1)?;
    let bf16_model = Model::from_tensors(&c, f32_model.tensors(), DType::BF16, &Device::Cpu)?;
    let input = ids(2, 8, 61, 5);
    let a = f32_model.forward(&input)?;
    let b = bf16_model.forward(&input)?.to_dtype(DType::F32)?;
    let diff = max_abs_diff(&a, &b);
    assert!(diff < 0.1, "bf16 logits differ by {diff}");
    Ok(())
}
