//! `grin demo`: the whole service on one machine, with no database server
//! and no network. It builds (or reuses) the tofu-mini model, opens an
//! embedded SQLite store, starts the HTTP API and a worker in this process,
//! creates API keys, submits a deletion request for one fictitious author
//! over HTTP, follows its progress, and prints the before/after metrics, the
//! new version and the results of verifying its certificate, its files and
//! the audit chain. Every step goes through the public HTTP API a privacy
//! tool would use; the store is touched directly only to set up (model, keys),
//! as `grin models register` and `grin keys create` do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use grin::fixture::TofuMiniConfig;
use grin_store::{NewModel, Role, Store, StoreOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

const MODEL: &str = "tofu-mini";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Data directory: model, SQLite database, keys, checkpoints. Reused by
    /// later runs (each run forgets the next author and publishes a new
    /// version).
    #[arg(long, default_value = "grin-demo")]
    dir: PathBuf,
    /// A much smaller model and evaluation (seconds, not minutes): for CI
    /// and a first look. The quality figures are not meaningful.
    #[arg(long)]
    quick: bool,
    /// Give up when the request has not finished after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
}

/// Settings of one flavour of the demo.
struct Flavour {
    fixture: TofuMiniConfig,
    eval_items: usize,
    max_new_tokens: usize,
    method: Value,
}

impl Flavour {
    fn new(quick: bool) -> Self {
        if !quick {
            return Flavour {
                fixture: TofuMiniConfig {
                    oracle: false,
                    ..TofuMiniConfig::default()
                },
                eval_items: 40,
                max_new_tokens: 24,
                method: json!({}),
            };
        }
        let mut fixture = TofuMiniConfig {
            oracle: false,
            vocab_size: 512,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            max_position_embeddings: 256,
            ..TofuMiniConfig::default()
        };
        fixture.text.n_authors = 8;
        fixture.text.n_holdout = 1;
        fixture.text.qa_per_author = 4;
        fixture.finetune.epochs = 4;
        Flavour {
            fixture,
            eval_items: 8,
            max_new_tokens: 8,
            method: json!({"finetune": {"max_steps": 4}}),
        }
    }
}

pub fn demo(args: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let flavour = Flavour::new(args.quick);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    println!("GRIN demo: everything lives in {}/", dir.display());

    // 1. The model.
    let fixture_dir = dir.join(if args.quick { "tofu-mini-quick" } else { "tofu-mini" });
    step(1, "the model");
    if fixture_dir.join("model/config.json").is_file() {
        println!("      reusing {}", fixture_dir.display());
    } else {
        println!(
            "      training tofu-mini: a small Llama that memorised {} fictitious authors (about {} on 2 cores)",
            flavour.fixture.text.n_authors - flavour.fixture.text.n_holdout,
            if args.quick { "10 s" } else { "1-2 min" }
        );
        let mut bars = crate::bar::Bars::new();
        let report = grin::fixture::build_tofu_mini(&flavour.fixture, &fixture_dir, &mut bars)?;
        bars.finish();
        println!(
            "      {} parameters; forget10 answer probability {:.3}; {:.0} s",
            report.parameters, report.model.forget10, report.seconds
        );
    }

    // 2. Secrets, store, model registration, keys.
    step(2, "the service (SQLite, API and worker in this process)");
    let hmac_secret = secret_file(&dir.join("hmac-secret"))?;
    let key_path = dir.join("signing-key.pem");
    if !key_path.is_file() {
        let key = grin::certificate::generate_signing_key()?;
        grin::certificate::save_signing_key(&key, &key_path)?;
    }
    let signing_key = grin::certificate::load_signing_key(&key_path)?;
    let verifying_key = signing_key.verifying_key();
    let db_url = format!("sqlite://{}?mode=rwc", dir.join("grin.db").display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let store = Store::open(&db_url, StoreOptions::new(hmac_secret.into_bytes()))
            .await
            .context("opening the demo database")?;
        register_model(&store, &fixture_dir, &flavour).await?;
        let (_, submitter) = store.create_api_key("demo-submitter", Role::Submitter, "demo").await?;
        let (_, auditor) = store.create_api_key("demo-auditor", Role::Reader, "demo").await?;

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut cfg = grin_worker::WorkerConfig::new(
            grin_worker::WorkerConfig::unique_worker_id("demo"),
            dir.join("checkpoints"),
            signing_key,
        );
        cfg.poll_interval = Duration::from_millis(500);
        cfg.coalesce_window = Duration::ZERO;
        cfg.progress_min_interval = Duration::from_millis(200);
        cfg.eval.max_items = Some(flavour.eval_items);
        cfg.eval.max_new_tokens = flavour.max_new_tokens;
        let worker = tokio::spawn(grin_worker::run(store.clone(), cfg, stop_rx.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let mut stop = stop_rx.clone();
        let server = tokio::spawn(grin_api::serve(
            listener,
            grin_api::AppState::new(store.clone()),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ));
        println!("      API on {base}; keys demo-submitter (submitter) and demo-auditor (reader)");

        let http = Http::new(base);
        let result = run_request(&http, &submitter, &auditor, &fixture_dir, &verifying_key, &dir, &args).await;
        let _ = stop_tx.send(true);
        worker.await??;
        server.await??;
        store.close().await;
        result
    })?;
    println!(
        "\ndone in {:.0} s. Run it again to forget the next author.",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn step(n: usize, what: &str) {
    println!("\n[{n}/5] {what}");
}

/// A random secret kept in `path` (created with mode 0600 on first use).
fn secret_file(path: &Path) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok(s.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, secret.as_bytes())?;
    Ok(secret)
}

async fn register_model(store: &Store, fixture_dir: &Path, flavour: &Flavour) -> Result<()> {
    match store.get_model(MODEL).await {
        Ok(_) => return Ok(()),
        Err(grin_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let checkpoint = fixture_dir.join("model");
    let files = crate::service::file_entries(&checkpoint)?;
    store
        .create_model(
            &NewModel {
                name: MODEL.into(),
                base_checkpoint: checkpoint.display().to_string(),
                architecture: "LlamaForCausalLM".into(),
                prompt_template: grin::data::PromptTemplate::DEFAULT.into(),
                retain_corpus: Some(fixture_dir.join("data/retain90.jsonl").display().to_string()),
                holdout_corpus: Some(fixture_dir.join("data/holdout.jsonl").display().to_string()),
                default_config: flavour.method.clone(),
                gates: Value::Null,
                base_files: files,
            },
            "demo",
        )
        .await?;
    Ok(())
}

/// Submit, follow, and check one deletion request over HTTP.
async fn run_request(
    http: &Http,
    submitter: &str,
    auditor: &str,
    fixture_dir: &Path,
    verifying_key: &ed25519_dalek::VerifyingKey,
    dir: &Path,
    args: &DemoArgs,
) -> Result<()> {
    // The next author not forgotten yet: one per earlier version.
    let versions = http.get(&format!("/v1/models/{MODEL}/versions"), auditor).await?;
    let done = versions["items"].as_array().map_or(1, Vec::len).saturating_sub(1);
    let forget = read_jsonl(&fixture_dir.join("data/forget10.jsonl"))?;
    let mut authors: Vec<&str> = forget.iter().filter_map(|r| r["subject"].as_str()).collect();
    authors.dedup();
    ensure!(!authors.is_empty(), "forget10.jsonl names no authors");
    let author = authors[done % authors.len()];
    let items: Vec<Value> = forget
        .iter()
        .filter(|r| r["subject"] == json!(author))
        .map(|r| {
            json!({
                "question": r["question"], "answer": r["answer"],
                "paraphrased_answer": r["paraphrased_answer"],
                "perturbed_answer": r["perturbed_answer"], "keywords": r["keywords"],
            })
        })
        .collect();

    step(3, "a deletion request, over HTTP");
    let created = http
        .post(
            "/v1/deletion-requests",
            submitter,
            &json!({"model": MODEL, "items": items}),
        )
        .await?;
    let id = created["id"].as_str().context("the request has no id")?.to_owned();
    println!(
        "      POST /v1/deletion-requests: forget the {} question/answer pairs about {author} (a fictitious author) -> {}",
        items.len(),
        created["status"].as_str().unwrap_or("?")
    );
    println!("      request {id}");

    step(
        4,
        "the worker forgets (saliency -> noise -> masked fine-tune -> evaluation)",
    );
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("      [{bar:40}] {pos:>3}% {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let request = loop {
        let r = http.get(&format!("/v1/deletion-requests/{id}"), submitter).await?;
        let status = r["status"].as_str().unwrap_or("?").to_owned();
        if let Some(job) = r.get("job") {
            let percent = job["percent"].as_f64().unwrap_or(0.0);
            bar.set_position(percent.clamp(0.0, 100.0) as u64);
            bar.set_message(format!("{} ({status})", job["stage"].as_str().unwrap_or("queued")));
        }
        if !matches!(status.as_str(), "queued" | "running") {
            bar.set_position(100);
            bar.finish_with_message(status.clone());
            break r;
        }
        ensure!(
            Instant::now() < deadline,
            "the request did not finish within {} s",
            args.timeout_secs
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let status = request["status"].as_str().unwrap_or("?");
    if !matches!(status, "succeeded" | "awaiting_approval") {
        bail!(
            "the request ended {status}: {}",
            request["error"].as_str().unwrap_or("no error message")
        );
    }

    step(5, "the result, and the evidence");
    let version_id = request["result_version_id"].as_str().context("no result version")?;
    let versions = http.get(&format!("/v1/models/{MODEL}/versions"), auditor).await?;
    let version = versions["items"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["id"] == json!(version_id)))
        .context("the new version is not listed")?
        .clone();
    let number = version["number"].as_i64().unwrap_or(0);
    println!(
        "      new version: {MODEL} v{number} ({}), from v{}",
        version["status"].as_str().unwrap_or("?"),
        number - 1
    );
    print_metrics(&version["metrics"]);

    // The certificate, checked offline with the public key.
    let cert_json = http
        .get(&format!("/v1/deletion-requests/{id}/certificate"), submitter)
        .await?;
    let text = serde_json::to_string(&cert_json)?;
    let cert = grin::certificate::verify_document(&text, verifying_key).context("certificate signature")?;
    println!(
        "      certificate: Ed25519 signature OK (key {}), covers {} forgotten items by digest",
        &grin::certificate::public_key_hex(verifying_key)[..16],
        cert.forget_digests.len()
    );
    let location = version["location"].as_str().context("version location")?;
    let model_dir = grin_worker::data::local_path(location);
    grin::certificate::verify_files(&cert, &model_dir).context("checkpoint files")?;
    println!(
        "      checkpoint: {} files match their SHA-256 in the certificate ({})",
        cert.files.len(),
        model_dir.strip_prefix(dir).unwrap_or(&model_dir).display()
    );
    let audit = http.get("/v1/audit/verify", auditor).await?;
    ensure!(audit["valid"] == json!(true), "audit chain: {audit}");
    println!(
        "      audit log: hash chain of {} records verifies",
        audit["rows"].as_i64().unwrap_or(0)
    );
    let after = http.get(&format!("/v1/deletion-requests/{id}"), submitter).await?;
    ensure!(
        after["purged_at"].is_string(),
        "the request's forget payload was not erased"
    );
    println!("      the request's forget texts were erased from the database when the job ended");
    Ok(())
}

fn print_metrics(metrics: &Value) {
    const ROWS: [(&str, &str, &str); 7] = [
        ("forget_answer_probability", "forget: answer probability", "lower"),
        ("forget_rouge_l_recall", "forget: ROUGE-L recall", "lower"),
        ("forget_keyword_accuracy", "forget: keyword accuracy", "lower"),
        ("retain_answer_probability", "retain: answer probability", "keep"),
        ("retain_rouge_l_recall", "retain: ROUGE-L recall", "keep"),
        ("model_utility", "model utility", "keep"),
        ("mia_auc_min_k", "membership inference AUC", "to 0.5"),
    ];
    println!("      {:<30} {:>8} {:>8}   goal", "metric", "before", "after");
    for (key, label, goal) in ROWS {
        let (b, a) = (&metrics["before"][key], &metrics["after"][key]);
        if b.is_null() && a.is_null() {
            continue;
        }
        let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |x| format!("{x:.3}"));
        println!("      {label:<30} {:>8} {:>8}   {goal}", f(b), f(a));
    }
    if let Some(gates) = metrics["gates"].as_array() {
        let passed = gates.iter().filter(|g| g["passed"] == json!(true)).count();
        println!("      gates: {passed}/{} passed", gates.len());
    }
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

/// A minimal JSON-over-HTTP client for the demo's calls.
struct Http {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new(base: String) -> Self {
        Http {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn get(&self, path: &str, key: &str) -> Result<Value> {
        self.call("GET", path, key, None).await
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> Result<Value> {
        self.call("POST", path, key, Some(body)).await
    }

    async fn call(&self, method: &str, path: &str, key: &str, body: Option<&Value>) -> Result<Value> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.map(Value::to_string).unwrap_or_default())))?;
        let res = self
            .client
            .request(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        ensure!(
            status.is_success(),
            "{method} {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        Ok(value)
    }
}
