//! The `grin` binary end to end on a tiny fixture: fixture, finetune, bench,
//! unlearn with a certificate, eval, and the errors users see.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn grin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_grin"))
        .args(args)
        .env("GRIN_THREADS", "2")
        .output()
        .expect("run grin")
}

fn ok(args: &[&str]) -> String {
    let out = grin(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grin {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = grin(args);
    assert!(!out.status.success(), "grin {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const TINY: &str = r#"
vocab_size = 300
hidden_size = 32
intermediate_size = 64
num_layers = 2
num_heads = 2
num_kv_heads = 1
max_position_embeddings = 96
[text]
n_authors = 8
n_holdout = 2
qa_per_author = 4
seed = 7
[finetune]
epochs = 6
batch_size = 8
[finetune.optimizer]
lr = 0.01
weight_decay = 0.0
"#;

/// One tiny fixture per test binary (a few seconds to build).
fn fixture() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("tiny.toml");
        std::fs::write(&cfg, TINY).unwrap();
        let out = tmp.path().join("fx");
        ok(&["fixture", "tofu-mini", "--out", s(&out), "--config", s(&cfg)]);
        (tmp, out)
    })
    .1
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn fixture_layout_and_determinism() {
    let fx = fixture();
    for f in [
        "data/full.jsonl",
        "data/forget10.jsonl",
        "data/retain90.jsonl",
        "data/holdout.jsonl",
    ] {
        assert!(fx.join(f).is_file(), "{f} missing");
    }
    for d in ["model", "oracle"] {
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(fx.join(d).join(f).is_file(), "{d}/{f} missing");
        }
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(fx.join("fixture.json")).unwrap()).unwrap();
    let loss = report["model"]["final_loss"].as_f64().unwrap();
    // A uniform guess over the 300-token vocabulary scores ln 300 = 5.7.
    assert!(loss.is_finite() && loss < 4.7, "training did not progress: {loss}");

    // Same configuration, same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let again = tmp.path().join("fx");
    ok(&["fixture", "tofu-mini", "--out", s(&again), "--config", s(&cfg)]);
    for f in [
        "data/forget10.jsonl",
        "model/model.safetensors",
        "model/tokenizer.json",
        "oracle/model.safetensors",
    ] {
        assert_eq!(
            std::fs::read(fx.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f} differs"
        );
    }
    // An existing, non-empty output directory is refused.
    let err = fails(&["fixture", "tofu-mini", "--out", s(&again), "--config", s(&cfg)]);
    assert!(err.contains("not empty"), "{err}");
}

#[test]
fn finetune_writes_a_loadable_checkpoint() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let stdout = ok(&[
        "finetune",
        "--model",
        s(&fx.join("model")),
        "--data",
        s(&fx.join("data/forget10.jsonl")),
        "--out",
        s(&out),
        "--epochs",
        "2",
        "--lr",
        "0.001",
    ]);
    assert!(stdout.contains("epoch   2"), "{stdout}");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "finetune.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let json = ok(&[
        "bench",
        "train-step",
        "--model",
        s(&out),
        "--batch",
        "2",
        "--seq-len",
        "16",
        "--steps",
        "2",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0);

    // A data file with a broken line is reported with its line number, and
    // nothing is written.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"question\": \"q\", \"answer\": \"a\"}\n{\"question\": \"q\"}\n",
    )
    .unwrap();
    let out2 = tmp.path().join("ft2");
    let err = fails(&[
        "finetune",
        "--model",
        s(&fx.join("model")),
        "--data",
        s(&bad),
        "--out",
        s(&out2),
    ]);
    assert!(err.contains("bad.jsonl:2") && err.contains("answer"), "{err}");
    assert!(!out2.exists());
}

#[test]
fn unlearn_certificate_verifies_and_detects_tampering() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key.pem");
    ok(&["certificate", "keygen", "--out", s(&key)]);
    let cfg = tmp.path().join("fast.toml");
    std::fs::write(&cfg, "[finetune]\nmax_steps = 3\n").unwrap();
    let out = tmp.path().join("u");
    let stdout = ok(&[
        "unlearn",
        "--model",
        s(&fx.join("model")),
        "--forget",
        s(&fx.join("data/forget10.jsonl")),
        "--retain",
        s(&fx.join("data/retain90.jsonl")),
        "--holdout",
        s(&fx.join("data/holdout.jsonl")),
        "--oracle",
        s(&fx.join("oracle")),
        "--out",
        s(&out),
        "--config",
        s(&cfg),
        "--signing-key",
        s(&key),
    ]);
    assert!(stdout.contains("forget_answer_probability"), "{stdout}");
    let cert = tmp.path().join("u.certificate.json");
    let public = tmp.path().join("key.pem.pub");
    ok(&[
        "certificate",
        "verify",
        s(&cert),
        "--public-key",
        s(&public),
        "--checkpoint",
        s(&out),
    ]);

    // No forget text in the certificate.
    let text = std::fs::read_to_string(&cert).unwrap();
    let forget = std::fs::read_to_string(fx.join("data/forget10.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(forget.lines().next().unwrap()).unwrap();
    assert!(!text.contains(first["answer"].as_str().unwrap()));
    assert!(!text.contains(first["subject"].as_str().unwrap()));

    // One changed byte in a checkpoint file fails the file check.
    let weights = out.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    let err = fails(&[
        "certificate",
        "verify",
        s(&cert),
        "--public-key",
        s(&public),
        "--checkpoint",
        s(&out),
    ]);
    assert!(err.contains("model.safetensors"), "{err}");

    // One changed byte in the certificate fails the signature.
    let tampered = tmp.path().join("t.json");
    std::fs::write(&tampered, text.replacen("\"seed\": 0", "\"seed\": 1", 1)).unwrap();
    let err = fails(&["certificate", "verify", s(&tampered), "--public-key", s(&public)]);
    assert!(err.to_lowercase().contains("signature"), "{err}");

    // Another key is refused as another key.
    let other = tmp.path().join("other.pem");
    ok(&["certificate", "keygen", "--out", s(&other)]);
    let err = fails(&[
        "certificate",
        "verify",
        s(&cert),
        "--public-key",
        s(&tmp.path().join("other.pem.pub")),
    ]);
    assert!(err.to_lowercase().contains("key"), "{err}");
}

#[test]
fn eval_prints_a_table_and_keeps_generations_out_of_json() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("e.json");
    let stdout = ok(&[
        "eval",
        "--model",
        s(&fx.join("model")),
        "--forget",
        s(&fx.join("data/forget10.jsonl")),
        "--retain",
        s(&fx.join("data/retain90.jsonl")),
        "--holdout",
        s(&fx.join("data/holdout.jsonl")),
        "--oracle",
        s(&fx.join("oracle")),
        "--json",
        s(&json),
    ]);
    for m in [
        "forget_answer_probability",
        "model_utility",
        "forget_quality",
        "privleak",
        "mia_auc_min_k",
    ] {
        assert!(stdout.contains(m), "{m} missing from:\n{stdout}");
    }
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(doc["evaluation"]["forget"]["per_item"].as_array().unwrap().len() > 1);
    assert!(!std::fs::read_to_string(&json).unwrap().contains("\"generation\""));

    // An oracle with another tokenizer is refused: forget quality compares
    // token probabilities.
    let other = tmp.path().join("other-oracle");
    std::fs::create_dir(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join("oracle").join(f), other.join(f)).unwrap();
    }
    let tok = std::fs::read_to_string(fx.join("oracle/tokenizer.json")).unwrap();
    std::fs::write(other.join("tokenizer.json"), tok.replacen("\"<pad>\"", "\"<PAD>\"", 1)).unwrap();
    let err = fails(&[
        "eval",
        "--model",
        s(&fx.join("model")),
        "--forget",
        s(&fx.join("data/forget10.jsonl")),
        "--oracle",
        s(&other),
    ]);
    assert!(err.contains("tokenizer differs"), "{err}");

    // A model without truth-ratio fields skips the metric with a reason.
    let plain = tmp.path().join("plain.jsonl");
    std::fs::write(&plain, "{\"question\": \"Who?\", \"answer\": \"Nobody.\"}\n").unwrap();
    let stdout = ok(&["eval", "--model", s(&fx.join("model")), "--forget", s(&plain)]);
    assert!(stdout.contains("skipped truth_ratio"), "{stdout}");
}

#[test]
fn bad_inputs_give_clear_errors_and_write_nothing() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("u");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "unlearn",
            "--model",
            s(&fx.join("model")),
            "--forget",
            s(&fx.join("data/forget10.jsonl")),
            "--retain",
            s(&fx.join("data/retain90.jsonl")),
            "--out",
            s(&out),
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |args: Vec<String>| fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let write = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let c = write("unknown.toml", "[selection]\nratioo = 0.1\n");
    assert!(run(base(&["--config", s(&c)])).contains("ratioo"));
    let c = write("rho.toml", "[selection]\nratio = 1.5\n");
    assert!(run(base(&["--config", s(&c)])).contains("selection.ratio"));
    let c = write("sigma.toml", "[noise]\nsigma = -1.0\n");
    assert!(run(base(&["--config", s(&c)])).contains("noise.sigma"));
    let err = run(base(&["--method", "magic"]));
    assert!(err.contains("magic") && err.contains("graddiff"), "{err}");
    let empty = write("empty.jsonl", "");
    let mut args = base(&[]);
    args[4] = s(&empty).to_string();
    assert!(run(args).contains("empty.jsonl"));
    let mut args = base(&[]);
    args[2] = s(tmp.path()).to_string();
    assert!(run(args).contains("config.json"));
    assert!(!out.exists(), "a failed run left {}", out.display());
}

/// The README's first command, in its quick flavour: the whole service in
/// one process forgets one author over HTTP and verifies the evidence; a
/// second run reuses the model and forgets the next author. The logs never
/// carry the forgotten texts.
#[test]
fn demo_forgets_an_author_and_verifies_the_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_grin"))
            .args(["demo", "--quick", "--dir", s(&dir)])
            .env("GRIN_THREADS", "2")
            .env("GRIN_LOG", "info")
            .output()
            .expect("run grin demo");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "grin demo failed:\n{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let (first, logs) = run();
    for needle in [
        "new version: tofu-mini v2 (published), from v1",
        "forget: answer probability",
        "certificate: Ed25519 signature OK",
        "files match their SHA-256",
        "audit log: hash chain of",
        "forget texts were erased",
    ] {
        assert!(first.contains(needle), "no {needle:?} in\n{first}");
    }
    // Secrets stay in their files (mode 0600), never in the output.
    let secret = std::fs::read_to_string(dir.join("hmac-secret")).unwrap();
    assert!(!first.contains(secret.trim()) && !logs.contains(secret.trim()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("hmac-secret")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the HMAC secret is readable by others");
    }
    // No forgotten answer text in the logs.
    let forget = std::fs::read_to_string(dir.join("tofu-mini-quick/data/forget10.jsonl")).unwrap();
    for line in forget.lines().filter(|l| !l.trim().is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let answer = row["answer"].as_str().unwrap();
        assert!(!logs.contains(answer), "a forgotten answer is in the logs");
    }
    let (second, _) = run();
    assert!(second.contains("reusing"), "{second}");
    assert!(
        second.contains("new version: tofu-mini v3 (published), from v2"),
        "{second}"
    );
}
