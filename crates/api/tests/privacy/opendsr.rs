//! The OpenDSR processor API through a controller written from the
//! specification: discovery, create, status, cancel, idempotency, signed
//! responses and callbacks (with a retry), nothing-to-forget, and the
//! error shape for bad identities, formats and request types.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::http::Method;
use base64::Engine as _;
use grin_store::{NewVersion, OpenDsrStatus, RequestStatus, VersionStatus};
use serde_json::{json, Value};

use super::harness::*;
use crate::common::TestDb;

backend_tests!(
    discovery_names_the_certificate,
    create_status_cancel_with_signed_callbacks,
    progress_to_completed_with_callbacks_in_order,
    nothing_to_forget_completes_at_once,
    bad_requests_get_the_spec_error_body
);

const WAIT: Duration = Duration::from_secs(20);

fn email(name: &str) -> String {
    format!("{name}@example.com")
}

fn identity(value: &str) -> Value {
    json!({"identity_type": "email", "identity_value": value, "identity_format": "raw"})
}

fn erasure(srid: &str, identities: Value, callbacks: &[String]) -> Value {
    json!({
        "regulation": "gdpr",
        "subject_request_id": srid,
        "subject_request_type": "erasure",
        "submitted_time": "2024-05-01T12:00:00Z",
        "subject_identities": identities,
        "api_version": "1.0",
        "status_callback_urls": callbacks,
    })
}

/// Uploads `n` QA rows about each person (tagged with their raw e-mail).
async fn corpus(live: &Live, people: &[&str], n: usize) -> Result<()> {
    let mut rows = Vec::new();
    for p in people {
        for i in 0..n {
            rows.push(json!({
                "question": format!("What is fact {i} about {p}?"),
                "answer": format!("Fact {i} of {p}."),
                "subject_identities": [identity(&email(p))],
            }));
        }
    }
    rows.push(json!({"text": "A row about nobody in particular."}));
    let r = upload(&Http::new(), &live.base, "m", &live.t.admin, jsonl(&rows)).await?;
    ensure!(r.status == 200, "{r:?}");
    ensure!(r.json()["inserted"] == people.len() * n + 1, "{}", r.text());
    Ok(())
}

async fn discovery_names_the_certificate(db: TestDb) -> Result<()> {
    let live = Live::start(&db).await?;
    let mut c = live.controller(&live.t.submitter);
    let doc = c.discover().await?;
    ensure!(doc["api_version"] == "1.0", "{doc}");
    ensure!(doc["supported_subject_request_types"] == json!(["erasure"]), "{doc}");
    let ids = doc["supported_identities"].as_array().context("identities")?;
    ensure!(ids.len() == 11 * 4, "{}", ids.len());
    for pair in [
        ("email", "raw"),
        ("email", "sha256"),
        ("email", "md5"),
        ("email", "sha1"),
        ("ios_advertising_id", "raw"),
    ] {
        ensure!(
            ids.iter()
                .any(|i| i["identity_type"] == pair.0 && i["identity_format"] == pair.1),
            "{pair:?}"
        );
    }
    ensure!(
        doc["processor_certificate"]
            .as_str()
            .is_some_and(|u| u == format!("{}/opendsr/v1/processor_certificate.pem", live.base)),
        "{doc}"
    );
    let pem = c.certificate.as_deref().context("certificate")?;
    ensure!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    ensure!(certificate_names(pem)? == vec![DOMAIN.to_owned()]);
    // The certificate is the processor's: its key verifies what the
    // processor signs, and nothing else.
    let key = processor_key();
    ensure!(verify_with_certificate(pem, b"body", &key.sign(b"body"))?);
    ensure!(!verify_with_certificate(pem, b"body!", &key.sign(b"body"))?);
    Ok(())
}

async fn create_status_cancel_with_signed_callbacks(db: TestDb) -> Result<()> {
    let live = Live::start(&db).await?;
    corpus(&live, &["ana", "bo"], 3).await?;
    // The receiver refuses the first delivery: the processor retries.
    let receiver = Receiver::start(1).await?;
    let hook = receiver.url("ana");
    let mut c = live.controller(&live.t.submitter);
    c.discover().await?;

    let id = srid();
    let body = erasure(&id, json!([identity(&email("ana"))]), std::slice::from_ref(&hook));
    let sent = serde_json::to_vec(&body)?;
    let r = c.create_raw(OPENDSR, sent.clone()).await?;
    ensure!(r.status == 201, "{r:?}");
    c.verify(&r.headers, &r.bytes)?;
    let created = r.json();
    ensure!(created["subject_request_id"] == id.as_str(), "{created}");
    ensure!(created["controller_id"].is_string());
    ensure!(
        base64::engine::general_purpose::STANDARD.decode(created["encoded_request"].as_str().context("encoded")?)?
            == sent,
        "encoded_request is the body as sent"
    );
    let received_time = created["received_time"].clone();
    let expected = chrono::DateTime::parse_from_rfc3339(created["expected_completion_time"].as_str().unwrap())?;
    let got = chrono::DateTime::parse_from_rfc3339(received_time.as_str().unwrap())?;
    ensure!(expected - got == chrono::TimeDelta::hours(24), "{created}");

    // One deletion request for model m, queued.
    let rec = live.t.store.find_opendsr_request(None, &id).await?.context("stored")?;
    ensure!(rec.request_ids.len() == 1 && rec.targets.len() == 1, "{rec:?}");
    let dr = live.t.store.get_request(rec.request_ids[0]).await?;
    ensure!(
        dr.status == RequestStatus::Queued && dr.subject_hmac.is_some(),
        "{dr:?}"
    );

    // Status: pending, signed.
    let r = c.status(OPENDSR, &id).await?;
    ensure!(r.status == 200, "{r:?}");
    c.verify(&r.headers, &r.bytes)?;
    let s = r.json();
    ensure!(
        s["request_status"] == "pending" && s["subject_request_id"] == id.as_str(),
        "{s}"
    );
    ensure!(s["results_url"].is_null() && s["api_version"] == "1.0", "{s}");
    ensure!(s["extensions"][DOMAIN]["deletion_request_ids"] == json!([dr.id]), "{s}");
    // The same request under the OpenGDPR name.
    let r = c.status(OPENGDPR, &id.to_uppercase()).await?;
    ensure!(r.status == 200 && r.json()["request_status"] == "pending", "{r:?}");

    // Idempotent on subject_request_id: the same body again is the same answer...
    let r = c.create_raw(OPENDSR, sent.clone()).await?;
    ensure!(
        r.status == 201 && r.header("idempotent-replayed") == Some("true"),
        "{r:?}"
    );
    c.verify(&r.headers, &r.bytes)?;
    ensure!(r.json()["received_time"] == received_time, "{}", r.text());
    // ... another body is refused; nothing new is stored.
    let other = erasure(&id, json!([identity(&email("bo"))]), std::slice::from_ref(&hook));
    c.create(OPENDSR, &other)
        .await?
        .expect_spec_error(400, "duplicate_subject_request_id")?;
    ensure!(db.count("opendsr_requests").await? == 1 && db.count("deletion_requests").await? == 1);

    // Others' requests are invisible to a submitter; readers see them; readers cannot cancel.
    live.controller(&live.t.submitter2)
        .status(OPENDSR, &id)
        .await?
        .expect_spec_error(404, "not_found")?;
    ensure!(live.controller(&live.t.reader).status(OPENDSR, &id).await?.status == 200);
    let r = live.controller(&live.t.reader).cancel(OPENDSR, &id).await?;
    ensure!(r.status == 403, "{r:?}");

    // Cancel while pending: 202, signed; the deletion request is cancelled.
    let r = c.cancel(OPENDSR, &id).await?;
    ensure!(r.status == 202, "{r:?}");
    c.verify(&r.headers, &r.bytes)?;
    let body = r.json();
    ensure!(
        body["subject_request_id"] == id.as_str() && body["received_time"].is_string(),
        "{body}"
    );
    ensure!(live.t.store.get_request(dr.id).await?.status == RequestStatus::Cancelled);
    let r = c.status(OPENDSR, &id).await?;
    ensure!(r.json()["request_status"] == "cancelled", "{}", r.text());
    // Cancelling again is harmless.
    ensure!(c.cancel(OPENDSR, &id).await?.status == 202);

    // Callbacks: pending, then cancelled, each signed; the first was retried.
    let callbacks = receiver.wait_for("/callbacks/ana", 2, WAIT).await?;
    let statuses = checked_statuses(&c, &callbacks, &hook, &id)?;
    ensure!(statuses == ["pending", "cancelled"], "{statuses:?}");
    ensure!(receiver.refused() == 1, "one refusal");
    let rows = live.t.store.opendsr_callbacks(rec.id).await?;
    ensure!(
        rows.len() == 2 && rows.iter().all(|r| r.delivered_at.is_some()),
        "{rows:?}"
    );
    ensure!(rows[0].attempts == 2 && rows[1].attempts == 1, "{rows:?}");

    // No identity anywhere in the audit log; the chain holds.
    let audit = live.t.store.list_audit(&Default::default(), 0, 1000).await?;
    ensure!(audit.iter().any(|a| a.action == "opendsr.received"));
    ensure!(audit.iter().any(|a| a.action == "opendsr.callback_delivered"));
    ensure!(!serde_json::to_string(&audit)?.contains("example.com"));
    live.t.store.verify_audit().await?;
    Ok(())
}

async fn progress_to_completed_with_callbacks_in_order(db: TestDb) -> Result<()> {
    let live = Live::start(&db).await?;
    corpus(&live, &["cy", "di"], 2).await?;
    let receiver = Receiver::start(0).await?;
    let hooks = [receiver.url("one"), receiver.url("two")];
    let mut c = live.controller(&live.t.admin);
    c.discover().await?;
    let id = srid();
    // The identity in sha256 format: it matches rows uploaded raw.
    let hashed =
        json!([{"identity_type": "email", "identity_value": sha256_hex(&email("cy")), "identity_format": "sha256"}]);
    // The OpenGDPR route: `regulation` is optional there.
    let mut body = erasure(&id, hashed, &hooks);
    body.as_object_mut().unwrap().remove("regulation");
    let r = c.create(OPENGDPR, &body).await?;
    ensure!(r.status == 201, "{r:?}");
    let rec = live.t.store.find_opendsr_request(None, &id).await?.context("stored")?;
    ensure!(rec.request_ids.len() == 1, "{rec:?}");

    // A worker claims the job: in_progress; a running request cannot be cancelled.
    let claimed = live
        .t
        .store
        .claim("w1", Duration::from_secs(60))
        .await?
        .context("a job")?;
    let r = c.status(OPENGDPR, &id).await?;
    ensure!(r.json()["request_status"] == "in_progress", "{}", r.text());
    c.cancel(OPENGDPR, &id).await?.expect_spec_error(400, "invalid_state")?;

    // It publishes a version that forgot the subject: completed, with the
    // number of corpus rows erased.
    let version = NewVersion {
        model_name: "m".into(),
        parent_id: None,
        job_id: Some(claimed.job.id),
        location: "file:///checkpoints/m/2".into(),
        files: vec![],
        config: json!({}),
        seed: None,
        metrics: json!({}),
        certificate: None,
        fulfilled_request_ids: rec.request_ids.clone(),
        status: VersionStatus::Published,
    };
    live.t.store.complete_job(claimed.job.id, "w1", Some(version)).await?;
    let r = c.status(OPENGDPR, &id).await?;
    c.verify(&r.headers, &r.bytes)?;
    let s = r.json();
    ensure!(s["request_status"] == "completed" && s["results_count"] == 2, "{s}");
    ensure!(s["extensions"][DOMAIN]["status"] == "completed", "{s}");
    ensure!(
        live.t.store.get_opendsr_request(rec.id).await?.status == OpenDsrStatus::Completed,
        "recorded"
    );

    // Both URLs got pending, in_progress, completed, in that order, signed.
    for hook in &hooks {
        let path = hook.trim_start_matches(&receiver.base).to_owned();
        let got = receiver.wait_for(&path, 3, WAIT).await?;
        let statuses = checked_statuses(&c, &got, hook, &id)?;
        ensure!(statuses == ["pending", "in_progress", "completed"], "{statuses:?}");
        let last: Value = serde_json::from_slice(&got[2].body)?;
        ensure!(last["results_count"] == 2, "{last}");
    }
    // The other subject's rows are untouched.
    let r = lookup(
        &Http::new(),
        &live.base,
        "m",
        &live.t.admin,
        json!([identity(&email("di"))]),
    )
    .await?;
    ensure!(r.json()["count"] == 2, "{}", r.text());
    let r = lookup(
        &Http::new(),
        &live.base,
        "m",
        &live.t.admin,
        json!([identity(&email("cy"))]),
    )
    .await?;
    ensure!(r.json()["count"] == 0, "{}", r.text());
    Ok(())
}

async fn nothing_to_forget_completes_at_once(db: TestDb) -> Result<()> {
    let live = Live::start(&db).await?;
    corpus(&live, &["ed"], 1).await?;
    let receiver = Receiver::start(0).await?;
    let hook = receiver.url("x");
    let mut c = live.controller(&live.t.submitter);
    c.discover().await?;
    let id = srid();
    let r = c
        .create(
            OPENDSR,
            &erasure(&id, json!([identity(&email("nobody"))]), std::slice::from_ref(&hook)),
        )
        .await?;
    ensure!(r.status == 201, "{r:?}");
    let r = c.status(OPENDSR, &id).await?;
    c.verify(&r.headers, &r.bytes)?;
    ensure!(
        r.json()["request_status"] == "completed" && r.json()["results_count"] == 0,
        "{}",
        r.text()
    );
    ensure!(db.count("deletion_requests").await? == 0, "no work queued");
    c.cancel(OPENDSR, &id).await?.expect_spec_error(400, "invalid_state")?;
    let got = receiver.wait_for("/callbacks/x", 1, WAIT).await?;
    ensure!(checked_statuses(&c, &got, &hook, &id)? == ["completed"]);
    let audit = live.t.store.list_audit(&Default::default(), 0, 1000).await?;
    ensure!(
        audit.iter().any(|a| a.action == "opendsr.nothing_to_forget"),
        "audited as nothing to forget"
    );
    ensure!(!serde_json::to_string(&audit)?.contains("nobody"));
    Ok(())
}

async fn bad_requests_get_the_spec_error_body(db: TestDb) -> Result<()> {
    let live = Live::start(&db).await?;
    corpus(&live, &["fay"], 1).await?;
    let c = live.controller(&live.t.submitter);
    let secret = "fay.secret.value@example.com";
    let ok = || erasure(&srid(), json!([identity(secret)]), &[]);
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut v = ok();
        f(v.as_object_mut().unwrap());
        v
    };
    let id = |t: &str, v: &str, f: &str| json!([{"identity_type": t, "identity_value": v, "identity_format": f}]);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "access",
            with(&|m| {
                m.insert("subject_request_type".into(), json!("access"));
            }),
            "unsupported_request_type",
        ),
        (
            "portability",
            with(&|m| {
                m.insert("subject_request_type".into(), json!("portability"));
            }),
            "unsupported_request_type",
        ),
        (
            "unknown type",
            with(&|m| {
                m.insert("subject_request_type".into(), json!("rectification"));
            }),
            "invalid_value",
        ),
        (
            "identity type",
            with(&|m| {
                m.insert("subject_identities".into(), id("phone_number", secret, "raw"));
            }),
            "unsupported_identity_type",
        ),
        (
            "identity format",
            with(&|m| {
                m.insert("subject_identities".into(), id("email", secret, "base64"));
            }),
            "unsupported_identity_format",
        ),
        (
            "bad sha256",
            with(&|m| {
                m.insert("subject_identities".into(), id("email", secret, "sha256"));
            }),
            "invalid_identity_value",
        ),
        (
            "short md5",
            with(&|m| {
                m.insert("subject_identities".into(), id("email", &md5_hex(secret)[..30], "md5"));
            }),
            "invalid_identity_value",
        ),
        (
            "not an e-mail",
            with(&|m| {
                m.insert("subject_identities".into(), id("email", "fay.secret.value", "raw"));
            }),
            "invalid_identity_value",
        ),
        (
            "not a UUID",
            with(&|m| {
                m.insert("subject_identities".into(), id("ios_advertising_id", secret, "raw"));
            }),
            "invalid_identity_value",
        ),
        (
            "no value",
            with(&|m| {
                m.insert("subject_identities".into(), json!([{"identity_type": "email"}]));
            }),
            "required",
        ),
        (
            "no identities",
            with(&|m| {
                m.insert("subject_identities".into(), json!([]));
            }),
            "required",
        ),
        (
            "no id",
            with(&|m| {
                m.remove("subject_request_id");
            }),
            "required",
        ),
        (
            "id not a UUID",
            with(&|m| {
                m.insert("subject_request_id".into(), json!("ticket-4711"));
            }),
            "invalid_value",
        ),
        (
            "no regulation",
            with(&|m| {
                m.remove("regulation");
            }),
            "required",
        ),
        (
            "regulation",
            with(&|m| {
                m.insert("regulation".into(), json!("hipaa"));
            }),
            "invalid_value",
        ),
        (
            "time",
            with(&|m| {
                m.insert("submitted_time".into(), json!("yesterday"));
            }),
            "invalid_value",
        ),
        (
            "callback",
            with(&|m| {
                m.insert("status_callback_urls".into(), json!(["ftp://x/y"]));
            }),
            "invalid_value",
        ),
        ("not an object", json!([1, 2]), "invalid_value"),
    ];
    for (name, body, reason) in &cases {
        let r = c.create(OPENDSR, body).await?;
        r.expect_spec_error(400, reason).with_context(|| name.to_string())?;
        ensure!(
            !r.text().contains("fay.secret"),
            "{name}: the identity is echoed: {}",
            r.text()
        );
    }
    // Several problems at once are all named.
    let r = c
        .create(
            OPENDSR,
            &with(&|m| {
                m.remove("subject_request_id");
                m.insert("subject_identities".into(), id("phone", secret, "raw"));
            }),
        )
        .await?;
    r.expect_spec_error(400, "unsupported_identity_type")?;
    ensure!(
        r.json()["error"]["errors"].as_array().unwrap().len() == 2,
        "{}",
        r.text()
    );
    // Malformed JSON, wrong media type, too large.
    c.create_raw(OPENDSR, b"{\"subject_request_id\": ".to_vec())
        .await?
        .expect_spec_error(400, "malformed_json")?;
    c.http
        .send(
            Method::POST,
            &format!("{}/opendsr/v1/{OPENDSR}", live.base),
            Some(&live.t.submitter),
            Some("text/plain"),
            serde_json::to_vec(&ok())?,
        )
        .await?
        .expect_spec_error(415, "unsupported_media_type")?;
    c.create_raw(OPENDSR, vec![b' '; 70 * 1024])
        .await?
        .expect_spec_error(413, "too_large")?;
    // Unknown and malformed ids.
    c.status(OPENDSR, &srid()).await?.expect_spec_error(404, "not_found")?;
    c.status(OPENGDPR, "not-a-uuid")
        .await?
        .expect_spec_error(404, "not_found")?;
    c.cancel(OPENDSR, &srid()).await?.expect_spec_error(404, "not_found")?;
    // An unknown model in this processor's extension.
    let r = c
        .create(
            OPENDSR,
            &with(&|m| {
                m.insert(
                    "extensions".into(),
                    json!({DOMAIN: {"models": ["nope"]}, "other.example": {"x": 1}}),
                );
            }),
        )
        .await?;
    r.expect_spec_error(400, "invalid_value")?;
    // Authentication stays the API's: problem documents.
    let r = live.controller("not-a-key").create(OPENDSR, &ok()).await?;
    ensure!(
        r.status == 401 && r.header("content-type") == Some("application/problem+json"),
        "{r:?}"
    );

    // Nothing was stored by any of it.
    ensure!(db.count("opendsr_requests").await? == 0, "stored a rejected request");
    ensure!(db.count("deletion_requests").await? == 0);
    // ... and the valid request is accepted, on both routes (regulation
    // optional on the OpenGDPR one).
    ensure!(c.create(OPENDSR, &ok()).await?.status == 201);
    let r = c
        .create(
            OPENGDPR,
            &with(&|m| {
                m.remove("regulation");
            }),
        )
        .await?;
    ensure!(r.status == 201, "{r:?}");
    Ok(())
}
