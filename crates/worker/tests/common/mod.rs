//! Test harness: fresh databases (the approach of crates/store/tests), the
//! tiny model fixture, worker configurations and small helpers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use grin::certificate::SigningKey;
use grin::fixture::TofuMiniConfig;
use grin::tofu::TofuConfig;
use grin::train::{AdamWConfig, FinetuneConfig, Schedule};
use grin_store::{NewModel, NewRequest, QueueOptions, Store, StoreOptions};
use grin_worker::WorkerConfig;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use uuid::Uuid;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const SECRET: &[u8] = b"worker-test-secret";
pub const ADMIN: &str = "test-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Generates `sqlite::<test>` and `postgres::<test>` for each named test
/// function `async fn(TestDb) -> anyhow::Result<()>` of the calling module.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::common::run(crate::common::Kind::Sqlite, super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    crate::common::run(crate::common::Kind::Postgres, super::$name).await;
                }
            )+
        }
    };
}

/// A fresh, migrated database for one test, with a checkpoint root.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    /// Temporary directory holding the SQLite file and the checkpoint root.
    pub dir: PathBuf,
}

pub fn store_options() -> StoreOptions {
    let mut options = StoreOptions::new(SECRET);
    options.queue = QueueOptions {
        max_attempts: 3,
        max_batch: 16,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    };
    options
}

impl TestDb {
    pub async fn store(&self) -> Result<Store> {
        Store::connect(&self.url, store_options())
            .await
            .context("connecting a store")
    }

    pub fn checkpoint_root(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }
}

/// Creates a database, runs the test on it, drops the database, and
/// re-raises the test's failure.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    match kind {
        Kind::Sqlite => {
            let path = dir.path().join("grin.db");
            let db = TestDb {
                url: format!("sqlite://{}?mode=rwc", path.display()),
                dir: dir.path().to_path_buf(),
            };
            migrate(&db).await;
            finish(tokio::spawn(test(db)).await);
        }
        Kind::Postgres => {
            let admin_url = std::env::var("GRIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!(
                    "the worker tests need Postgres and cannot reach it at {admin_url} ({e}); \
                     start one or set GRIN_TEST_DATABASE_URL"
                )
            });
            let name = format!("grin_test_{}", Uuid::new_v4().simple());
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("CREATE DATABASE");
            let db = TestDb {
                url: with_database(&admin_url, &name),
                dir: dir.path().to_path_buf(),
            };
            migrate(&db).await;
            let outcome = tokio::spawn(test(db)).await;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .expect("DROP DATABASE");
            let _ = admin.close().await;
            finish(outcome);
        }
    }
}

async fn migrate(db: &TestDb) {
    let store = db.store().await.expect("connect");
    store.migrate().await.expect("migrate");
    store.close().await;
}

fn finish(outcome: Result<Result<()>, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:?}"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

// ---- the tiny model ---------------------------------------------------------

/// The tofu-mini fixture, built once per process (or taken from
/// `GRIN_WORKER_TEST_FIXTURE`, which child worker processes receive).
pub fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("GRIN_WORKER_TEST_FIXTURE") {
            return PathBuf::from(dir);
        }
        let cfg = TofuMiniConfig {
            text: TofuConfig {
                n_authors: 6,
                n_holdout: 1,
                qa_per_author: 3,
                seed: 7,
            },
            vocab_size: 300,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            max_position_embeddings: 96,
            init_std: 0.02,
            init_seed: 0,
            finetune: FinetuneConfig {
                epochs: 3,
                batch_size: 8,
                warmup_ratio: 0.0,
                optimizer: AdamWConfig {
                    lr: 3e-3,
                    weight_decay: 0.0,
                    schedule: Schedule::Constant,
                    ..AdamWConfig::default()
                },
                seed: 0,
            },
            oracle: false,
        };
        let root = tempfile::Builder::new()
            .prefix("grin-worker-fixture")
            .tempdir()
            .expect("temp dir")
            .keep();
        let out = root.join("tofu-mini");
        grin::fixture::build_tofu_mini(&cfg, &out, &mut grin::progress::Silent).expect("build tofu-mini");
        out
    })
}

/// The rows of a fixture split, as JSON values.
pub fn split(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture().join("data").join(name)).expect("split file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect()
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// A fast worker configuration for tests.
pub fn worker_config(db: &TestDb, id: &str) -> WorkerConfig {
    worker_config_at(db.checkpoint_root(), id)
}

/// [`worker_config`] for a checkpoint root.
pub fn worker_config_at(root: PathBuf, id: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(id, root, signing_key());
    cfg.lease = Duration::from_secs(30);
    cfg.heartbeat_every = Duration::from_millis(200);
    cfg.poll_interval = Duration::from_millis(200);
    cfg.progress_min_interval = Duration::from_millis(50);
    cfg.reap_every = Duration::from_millis(200);
    cfg.coalesce_window = Duration::ZERO;
    cfg.shutdown_grace = Duration::from_secs(10);
    cfg.eval = grin::eval::EvalConfig {
        batch_size: 16,
        max_new_tokens: 4,
        max_items: Some(6),
        ..Default::default()
    };
    cfg
}

/// GRIN settings that finish in a moment (`steps` masked fine-tune steps).
pub fn quick_config(steps: usize) -> Value {
    json!({
        "method": "grin",
        "selection": {"batch_size": 8, "max_retain_examples": 16},
        "finetune": {"max_steps": steps, "batch_size": 4, "early_stop": null},
        "seed": 3
    })
}

/// Gates that always pass / always fail.
pub fn passing_gates() -> Value {
    json!([{"name": "forget_p", "metric": "forget_answer_probability", "op": "<=", "threshold": 1.0}])
}

pub fn failing_gates() -> Value {
    json!([{"name": "forget_p", "metric": "forget_answer_probability", "op": "<=", "threshold": 0.0}])
}

/// Registers a model on the fixture (or on `base`), with the retain file
/// as fallback and no corpus rows.
pub async fn create_model(
    store: &Store,
    name: &str,
    base: Option<&Path>,
    config: Value,
    gates: Value,
) -> Result<grin_store::Model> {
    let base = base.map(Path::to_path_buf).unwrap_or_else(|| fixture().join("model"));
    Ok(store
        .create_model(
            &NewModel {
                name: name.into(),
                base_checkpoint: base.display().to_string(),
                architecture: "LlamaForCausalLM".into(),
                prompt_template: grin::data::PromptTemplate::DEFAULT.into(),
                retain_corpus: Some(fixture().join("data/retain90.jsonl").display().to_string()),
                holdout_corpus: Some(fixture().join("data/holdout.jsonl").display().to_string()),
                default_config: config,
                gates,
                base_files: vec![],
            },
            ADMIN,
        )
        .await?)
}

pub fn payload_request(model: &str, key: &str, rows: &[Value]) -> NewRequest {
    NewRequest {
        client_id: "client-1".into(),
        idempotency_key: key.into(),
        model_name: model.into(),
        subject_hmac: None,
        forget_payload: Some(Value::Array(rows.to_vec())),
        method_overrides: json!({}),
        callback_url: None,
    }
}

/// Files and directories directly under `dir` (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|l| {
            l.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `f` until it yields `Some`, or fails after `timeout`.
pub async fn eventually<T, Fut>(timeout: Duration, mut f: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
