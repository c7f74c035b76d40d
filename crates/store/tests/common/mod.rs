//! Test harness: the shared database harness of `grin_store::testing`, and
//! fixtures for the store's tests.

pub use grin_store::testing::*;
use grin_store::{NewModel, NewRequest, NewVersion, Store, VersionStatus};
use serde_json::json;
use uuid::Uuid;

// ---- fixtures -------------------------------------------------------------

pub const ADMIN: &str = "test-admin";

pub fn new_model(name: &str) -> NewModel {
    NewModel {
        name: name.to_owned(),
        base_checkpoint: format!("file:///checkpoints/{name}/base"),
        architecture: "LlamaForCausalLM".into(),
        prompt_template: "Question: {question}\nAnswer: ".into(),
        retain_corpus: Some("retain.jsonl".into()),
        holdout_corpus: None,
        default_config: json!({"method": "graddiff", "lr": 1e-5}),
        gates: json!({"min_retain_score": 0.9}),
        base_files: vec![grin_store::FileEntry {
            path: "model.safetensors".into(),
            sha256: "a".repeat(64),
            bytes: 1234,
        }],
    }
}

pub fn new_request(store: &Store, model: &str, key: &str, text: &str) -> NewRequest {
    NewRequest {
        client_id: "client-1".into(),
        idempotency_key: key.to_owned(),
        model_name: model.to_owned(),
        subject_hmac: Some(store.hmac(b"subject:jane.doe@example.com")),
        forget_payload: Some(json!([{"question": "Who is Jane?", "answer": text}])),
        method_overrides: json!({}),
        callback_url: None,
    }
}

/// A version a worker would publish for `job`, fulfilling `requests`.
pub fn new_version(model: &str, job: Uuid, requests: &[Uuid], status: VersionStatus) -> NewVersion {
    NewVersion {
        model_name: model.to_owned(),
        parent_id: None,
        job_id: Some(job),
        location: format!("file:///checkpoints/{model}/{job}"),
        files: vec![
            grin_store::FileEntry {
                path: "config.json".into(),
                sha256: "b".repeat(64),
                bytes: 10,
            },
            grin_store::FileEntry {
                path: "model.safetensors".into(),
                sha256: "c".repeat(64),
                bytes: 1000,
            },
        ],
        config: json!({"method": "graddiff"}),
        seed: Some(42),
        metrics: json!({"forget_quality": 0.9}),
        certificate: Some(json!({"requests": requests.len()})),
        fulfilled_request_ids: requests.to_vec(),
        status,
    }
}
