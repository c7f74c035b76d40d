//! Test harness: the shared database harness of `grin_store::testing`, the
//! tiny model fixture, worker configurations and small helpers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use grin::certificate::SigningKey;
use grin::fixture::TofuMiniConfig;
pub use grin_store::testing::*;
use grin_store::{NewModel, NewRequest, Store};
use grin_worker::WorkerConfig;
use serde_json::{json, Value};

pub const ADMIN: &str = "test-admin";

/// Where a test's worker publishes checkpoints: under the test's directory.
pub trait CheckpointRoot {
    fn checkpoint_root(&self) -> PathBuf;
}

impl CheckpointRoot for TestDb {
    fn checkpoint_root(&self) -> PathBuf {
        self.dir.join("checkpoints")
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
        let cfg = TofuMiniConfig::tiny();
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
