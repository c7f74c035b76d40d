//! End to end on the tiny model: upload the corpus with subjects, an
//! OpenGDPR erasure for one subject (identity sent as a sha256 digest),
//! the worker unlearns it, its rows are forgotten and gone from the retain
//! corpus, the status is completed, and the signed callbacks verify with the
//! certificate from discovery.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use grin::fixture::TofuMiniConfig;
use grin_store::{NewModel, RequestStatus, VersionStatus, PRODUCTION};
use grin_worker::{run_once, JobOutcome, WorkerConfig};
use serde_json::{json, Value};

use super::harness::*;
use crate::common::TestDb;

backend_tests!(erasure_by_subject_identity_end_to_end);

/// The tofu-mini fixture, built once per process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cfg = TofuMiniConfig::tiny();
        let root = tempfile::Builder::new()
            .prefix("grin-api-fixture")
            .tempdir()
            .expect("temp dir")
            .keep();
        let out = root.join("tofu-mini");
        grin::fixture::build_tofu_mini(&cfg, &out, &mut grin::progress::Silent).expect("build tofu-mini");
        out
    })
}

fn split(name: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture().join("data").join(name))
        .expect("split")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect()
}

/// An author's e-mail address (a made-up identity for the fixture's names).
fn email_of(author: &str) -> String {
    let slug: String = author
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '.'
            }
        })
        .collect();
    format!("{slug}@authors.example")
}

fn worker_config(root: PathBuf) -> WorkerConfig {
    let mut cfg = WorkerConfig::new("api-e2e", root, grin::certificate::SigningKey::from_bytes(&[9u8; 32]));
    cfg.lease = Duration::from_secs(60);
    cfg.heartbeat_every = Duration::from_millis(500);
    cfg.poll_interval = Duration::from_millis(200);
    cfg.progress_min_interval = Duration::from_millis(50);
    cfg.eval = grin::eval::EvalConfig {
        batch_size: 16,
        max_new_tokens: 4,
        max_items: Some(6),
        ..Default::default()
    };
    cfg
}

async fn erasure_by_subject_identity_end_to_end(db: TestDb) -> Result<()> {
    let fixture = tokio::task::spawn_blocking(|| fixture().to_path_buf()).await?;
    let live = Live::start(&db).await?;
    let store = live.t.store.clone();
    store
        .create_model(
            &NewModel {
                name: "tofu".into(),
                base_checkpoint: fixture.join("model").display().to_string(),
                architecture: "LlamaForCausalLM".into(),
                prompt_template: grin::data::PromptTemplate::DEFAULT.into(),
                retain_corpus: None,
                holdout_corpus: Some(fixture.join("data/holdout.jsonl").display().to_string()),
                default_config: json!({
                    "method": "grin",
                    "selection": {"batch_size": 8, "max_retain_examples": 16},
                    "finetune": {"max_steps": 3, "batch_size": 4, "early_stop": null},
                    "seed": 3
                }),
                gates: json!([{"name": "forget_p", "metric": "forget_answer_probability", "op": "<=", "threshold": 1.0}]),
                base_files: vec![],
            },
            "test",
        )
        .await?;

    // 1. The corpus, each row tagged with its author's e-mail address.
    let rows = split("full.jsonl");
    let lines: Vec<Value> = rows
        .iter()
        .map(|row| {
            let author = row["subject"].as_str().unwrap_or_default();
            let mut line = row.clone();
            line["subject_identities"] = json!([{"identity_type": "email", "identity_value": email_of(author)}]);
            line
        })
        .collect();
    let http = Http::new();
    let r = upload(&http, &live.base, "tofu", &live.t.admin, jsonl(&lines)).await?;
    ensure!(r.status == 200 && r.json()["inserted"] == rows.len(), "{r:?}");
    let target = split("forget10.jsonl")[0]["subject"]
        .as_str()
        .context("subject")?
        .to_owned();
    let theirs: Vec<&Value> = rows.iter().filter(|r| r["subject"] == target.as_str()).collect();
    ensure!(theirs.len() >= 2, "{} rows", theirs.len());
    let address = email_of(&target);
    let raw_identity = json!([{"identity_type": "email", "identity_value": address, "identity_format": "raw"}]);
    let r = lookup(&http, &live.base, "tofu", &live.t.admin, raw_identity.clone()).await?;
    ensure!(r.json()["count"] == theirs.len(), "{}", r.text());

    // 2. The privacy tool: discovery, then an OpenGDPR erasure with the
    //    identity as a sha256 digest.
    let receiver = Receiver::start(0).await?;
    let hook = receiver.url("tool");
    let mut tool = live.controller(&live.t.submitter);
    tool.discover().await?;
    let id = srid();
    let body = json!({
        "subject_request_id": id,
        "subject_request_type": "erasure",
        "submitted_time": "2024-05-01T12:00:00Z",
        "subject_identities": [{"identity_type": "email", "identity_value": sha256_hex(&address), "identity_format": "sha256"}],
        "api_version": "0.1",
        "status_callback_urls": [hook],
    });
    let r = tool.create(OPENGDPR, &body).await?;
    ensure!(r.status == 201, "{r:?}");
    tool.verify(&r.headers, &r.bytes)?;
    let r = tool.status(OPENGDPR, &id).await?;
    tool.verify(&r.headers, &r.bytes)?;
    ensure!(r.json()["request_status"] == "pending", "{}", r.text());

    // 3. The worker unlearns the subject's rows on the tiny model.
    let report = run_once(&store, &worker_config(db.dir.join("checkpoints")))
        .await?
        .context("a job")?;
    let JobOutcome::Published { version_id, status, .. } = report.outcome.clone() else {
        anyhow::bail!("expected a published version, got {report:?}");
    };
    ensure!(status == VersionStatus::Published, "{report:?}");
    ensure!(store.get_alias("tofu", PRODUCTION).await?.version_id == version_id);

    // 4. Completed, with the rows erased; signed.
    let r = tool.status(OPENGDPR, &id).await?;
    tool.verify(&r.headers, &r.bytes)?;
    let s = r.json();
    ensure!(s["request_status"] == "completed", "{s}");
    ensure!(s["results_count"] == theirs.len(), "{s}");
    let ids = s["extensions"][DOMAIN]["deletion_request_ids"]
        .as_array()
        .context("ids")?
        .clone();
    ensure!(ids.len() == 1, "{s}");
    let request = store.get_request(ids[0].as_str().context("id")?.parse()?).await?;
    ensure!(request.status == RequestStatus::Succeeded && request.result_version_id == Some(version_id));

    // The forgotten rows are the subject's, and the certificate names them.
    let digests: Vec<String> = theirs.iter().map(|r| store.row_digest(r)).collect();
    let version = store.get_version(version_id).await?;
    let cert_text = serde_json::to_string(version.certificate.as_ref().context("certificate")?)?;
    let cert = grin::certificate::verify_document(
        &cert_text,
        &grin::certificate::SigningKey::from_bytes(&[9u8; 32]).verifying_key(),
    )?;
    for d in &digests {
        ensure!(
            cert.forget_digests.iter().any(|f| f.as_str() == d.as_str()),
            "the certificate lists every forgotten row"
        );
    }
    ensure!(
        cert.request_ids == vec![request.id.to_string()],
        "{:?}",
        cert.request_ids
    );
    ensure!(!cert_text.contains(&address) && !cert_text.contains(&target));

    // 5. Gone from the corpus and from every later retain set; the other
    //    authors' rows stay.
    let r = lookup(&http, &live.base, "tofu", &live.t.admin, raw_identity).await?;
    ensure!(r.json()["count"] == 0, "{}", r.text());
    let stats = http
        .send(
            axum::http::Method::GET,
            &format!("{}/v1/models/tofu/corpus", live.base),
            Some(&live.t.reader),
            None,
            vec![],
        )
        .await?
        .json();
    ensure!(
        stats["forgotten"] == theirs.len() && stats["live"] == rows.len() - theirs.len(),
        "{stats}"
    );
    let retain = store.list_retain_rows("tofu", &[], &[], None, 1000).await?;
    ensure!(retain.items.len() == rows.len() - theirs.len());
    ensure!(retain.items.iter().all(|r| !digests.contains(&r.row_digest)));
    ensure!(retain
        .items
        .iter()
        .all(|r| r.row_data.as_ref().is_some_and(|d| d["subject"] != target.as_str())));

    // 6. The callbacks: pending first, completed last, each signed with the
    //    certificate that discovery names.
    let got = receiver.wait_for("/callbacks/tool", 2, Duration::from_secs(30)).await?;
    let got = if checked_statuses(&tool, &got, &hook, &id)?.last().map(String::as_str) == Some("completed") {
        got
    } else {
        receiver.wait_for("/callbacks/tool", 3, Duration::from_secs(30)).await?
    };
    let statuses = checked_statuses(&tool, &got, &hook, &id)?;
    ensure!(statuses.first().map(String::as_str) == Some("pending"), "{statuses:?}");
    ensure!(statuses.last().map(String::as_str) == Some("completed"), "{statuses:?}");
    ensure!(
        statuses == ["pending", "completed"] || statuses == ["pending", "in_progress", "completed"],
        "{statuses:?}"
    );
    let last: Value = serde_json::from_slice(&got.last().unwrap().body)?;
    ensure!(last["results_count"] == theirs.len(), "{last}");

    // No identity or forgotten text in the audit log; the chain verifies.
    let audit = serde_json::to_string(&store.list_audit(&Default::default(), 0, 10_000).await?)?;
    ensure!(!audit.contains(&address) && !audit.contains("authors.example"));
    ensure!(!audit.contains(theirs[0]["answer"].as_str().unwrap_or("?")));
    store.verify_audit().await?;
    Ok(())
}
