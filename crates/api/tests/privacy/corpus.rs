//! The corpus registry: streaming JSON Lines uploads tagged with subject
//! identities (stored only as HMACs), idempotency by row digest, look-ups
//! across identity formats, errors that name lines, and rows about an
//! erased subject kept out of every later retain set.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::body::Body;
use axum::http::{Method, Request};
use grin_store::{NewVersion, RequestStatus, VersionStatus};
use serde_json::{json, Value};

use super::harness::*;
use crate::common::{TestApp, TestDb};

backend_tests!(
    uploads_stream_tag_and_are_idempotent,
    bad_lines_are_named_and_earlier_rows_kept,
    erased_subjects_never_return_to_the_retain_corpus
);

fn qa(i: usize, subject: Option<Value>) -> Value {
    let mut row = json!({"question": format!("Question {i}?"), "answer": format!("Answer {i}."), "keywords": ["k"]});
    if let Some(s) = subject {
        row["subject_identities"] = s;
    }
    row
}

fn email(value: &str, format: &str) -> Value {
    json!({"identity_type": "email", "identity_value": value, "identity_format": format})
}

async fn count_for(t: &TestApp, identities: Value) -> Result<i64> {
    let r = t
        .call(
            Method::POST,
            "/v1/models/m/corpus/lookup",
            Some(&t.admin),
            Some(json!({"subject_identities": identities})),
        )
        .await?;
    ensure!(r.status == 200, "{r:?}");
    r.body["count"].as_i64().context("count")
}

/// Sends `bytes` in chunks of `chunk` bytes (lines split across chunks).
async fn upload_chunked(t: &TestApp, key: &str, bytes: Vec<u8>, chunk: usize) -> Result<crate::common::Resp> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    let body = Body::from_stream(futures::stream::iter(chunks));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/models/m/corpus")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/x-ndjson")
        .body(body)?;
    t.raw(req).await
}

async fn uploads_stream_tag_and_are_idempotent(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let jane = "Jane.Doe@Example.com";
    let norm = "jane.doe@example.com";
    // 1200 rows (more than one batch): 1000 untagged, then rows tagged with
    // Jane in every format, one with a plain subject string, and one with a
    // device id.
    let mut rows: Vec<Value> = (0..1000).map(|i| qa(i, None)).collect();
    rows.push(qa(1000, Some(json!([email(jane, "raw")]))));
    rows.push(qa(1001, Some(json!([email(&sha256_hex(norm), "sha256")]))));
    rows.push(qa(1002, Some(json!([email(&md5_hex(norm).to_uppercase(), "md5")]))));
    rows.push(qa(1003, Some(json!([email(&sha1_hex(norm), "sha1")]))));
    rows.push(qa(1004, Some(json!(["Jane Doe"]))));
    rows.push(json!({"text": "A device log.", "subject_identities": [
        {"identity_type": "ios_advertising_id", "identity_value": "6D92078A-8246-4BA4-AE5B-76104861E7DC"}
    ]}));
    rows.extend((1006..1200).map(|i| qa(i, None)));
    let body = jsonl(&rows);
    let r = upload_chunked(&t, &t.admin, body.clone(), 777).await?;
    ensure!(r.status == 200, "{r:?}");
    ensure!(
        r.body == json!({"model": "m", "received": 1200, "inserted": 1200, "duplicates": 0, "suppressed": 0}),
        "{}",
        r.body
    );
    // Again: every row is known.
    let r = upload_chunked(&t, &t.admin, body, 4096).await?;
    ensure!(r.body["inserted"] == 0 && r.body["duplicates"] == 1200, "{}", r.body);
    let stats = t.get("/v1/models/m/corpus", &t.reader).await?;
    ensure!(
        stats.body == json!({"model": "m", "rows": 1200, "live": 1200, "forgotten": 0}),
        "{}",
        stats.body
    );

    // A raw identity meets every format it was uploaded in (and the exact
    // plain string of its value); a digest meets raw uploads and its own kind.
    ensure!(count_for(&t, json!([email(" jane.doe@EXAMPLE.com", "raw")])).await? == 4);
    ensure!(count_for(&t, json!([email(&sha256_hex(norm), "sha256")])).await? == 2);
    ensure!(count_for(&t, json!([email(&md5_hex(norm), "md5")])).await? == 2);
    ensure!(count_for(&t, json!([email(&sha1_hex(norm), "sha1")])).await? == 2);
    // The exact string as uploaded also matches as a plain subject (what
    // `subject` of POST /v1/deletion-requests uses).
    ensure!(count_for(&t, json!([jane])).await? == 1);
    ensure!(count_for(&t, json!(["Jane Doe"])).await? == 1);
    ensure!(
        count_for(
            &t,
            json!([{"identity_type": "ios_advertising_id",
        "identity_value": "6d92078a-8246-4ba4-ae5b-76104861e7dc"}])
        )
        .await?
            == 1
    );
    ensure!(count_for(&t, json!([email("john@example.com", "raw")])).await? == 0);
    // Types keep identities apart.
    ensure!(
        count_for(
            &t,
            json!([{"identity_type": "controller_customer_id", "identity_value": norm}])
        )
        .await?
            == 0
    );

    // The rows come back without their identities.
    let r = t
        .call(
            Method::POST,
            "/v1/models/m/corpus/lookup",
            Some(&t.admin),
            Some(json!({"subject_identities": [email(jane, "raw")], "limit": 2})),
        )
        .await?;
    let got = r.body["rows"].as_array().context("rows")?;
    ensure!(got.len() == 2 && r.body["count"] == 4, "{}", r.body);
    ensure!(got[0]["data"] == json!({"question": "Question 1000?", "answer": "Answer 1000.", "keywords": ["k"]}));
    // Identities are stored only as HMACs.
    let dump = dump_tags(&db).await?;
    ensure!(!dump.is_empty());
    for needle in ["jane", "Jane", "6d92078a", &sha256_hex(norm), &md5_hex(norm)] {
        ensure!(!dump.iter().any(|d| d.contains(needle)), "{needle} stored in clear");
    }
    // Admin only for uploads and look-ups; readers see counts.
    let r = upload_chunked(&t, &t.reader, jsonl(&[qa(1, None)]), 100).await?;
    r.expect_problem(403)?;
    Ok(())
}

/// Every stored subject tag, and every row's stored text.
async fn dump_tags(db: &TestDb) -> Result<Vec<String>> {
    use sqlx::Connection;
    let q1 = "SELECT subject_hmac FROM corpus_subjects";
    Ok(match db.kind {
        crate::common::Kind::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await?;
            let mut out: Vec<String> = sqlx::query_scalar(q1).fetch_all(&mut conn).await?;
            let more: Vec<String> =
                sqlx::query_scalar("SELECT subject_hmacs::text || COALESCE(row_data::text, '') FROM corpus_rows")
                    .fetch_all(&mut conn)
                    .await?;
            out.extend(more);
            out
        }
        crate::common::Kind::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await?;
            let mut out: Vec<String> = sqlx::query_scalar(q1).fetch_all(&mut conn).await?;
            let more: Vec<String> =
                sqlx::query_scalar("SELECT subject_hmacs || COALESCE(row_data, '') FROM corpus_rows")
                    .fetch_all(&mut conn)
                    .await?;
            out.extend(more);
            out
        }
    })
}

async fn bad_lines_are_named_and_earlier_rows_kept(db: TestDb) -> Result<()> {
    let t = TestApp::with_state(&db, |s| {
        s.with_limits(grin_api::Limits {
            max_corpus_line_bytes: 2048,
            max_corpus_bytes: 64 * 1024,
            ..crate::common::test_limits()
        })
    })
    .await?;
    let secret = "do-not-echo-this";
    let cases: Vec<(Value, &str)> = vec![
        (json!({"question": format!("{secret}?")}), "missing field \"answer\""),
        (json!({"text": ""}), "field \"text\" is empty"),
        (json!({"foo": secret}), "a row needs"),
        (
            json!({"text": secret, "subject_identities": [email(secret, "raw")]}),
            "subject_identities[0]",
        ),
        (
            json!({"text": secret, "subject_identities": [{"identity_type": "phone", "identity_value": secret}]}),
            "unsupported",
        ),
        (
            json!({"text": secret, "subject_identities": {"a": 1}}),
            "must be an array",
        ),
        (json!([secret]), "must be a JSON object"),
    ];
    let mut stored = 0;
    for (i, (bad, why)) in cases.iter().enumerate() {
        let good = [
            json!({"text": format!("good row {i} a")}),
            json!({"text": format!("good row {i} b")}),
        ];
        let mut body = jsonl(&good);
        body.extend(b"\n"); // an empty line is skipped
        body.extend(jsonl(std::slice::from_ref(bad)));
        body.extend(jsonl(&[json!({"text": format!("after the bad line {i}")})]));
        let r = upload_chunked(&t, &t.admin, body, 10).await?;
        r.expect_problem(422)?;
        ensure!(r.body["errors"][0]["field"] == "line 4", "{}", r.body);
        let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(why), "{message:?} lacks {why:?}");
        ensure!(!r.text.contains(secret), "echoed: {}", r.text);
        ensure!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("2 rows before it were stored")),
            "{}",
            r.body
        );
        stored += 2;
        ensure!(
            db.count("corpus_rows").await? == stored,
            "rows before the bad line are kept, none after"
        );
    }
    // Not JSON; too long a line; too large an upload.
    let r = upload_chunked(&t, &t.admin, b"{\"text\": \"x\"}\n{not json\n".to_vec(), 5).await?;
    r.expect_problem(422)?;
    ensure!(
        r.body["errors"][0] == json!({"field": "line 2", "message": "not valid JSON"}),
        "{}",
        r.body
    );
    let long = jsonl(&[json!({"text": "y".repeat(3000)})]);
    let r = upload_chunked(&t, &t.admin, long, 512).await?;
    r.expect_problem(422)?;
    ensure!(r.body["errors"][0]["message"] == "longer than 2048 bytes", "{}", r.body);
    let big: Vec<Value> = (0..3000)
        .map(|i| json!({"text": format!("bulk row number {i}")}))
        .collect();
    upload_chunked(&t, &t.admin, jsonl(&big), 1000)
        .await?
        .expect_problem(413)?;
    // Media type, unknown model.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/models/m/corpus")
        .header("authorization", format!("Bearer {}", t.admin))
        .header("content-type", "text/csv")
        .body(Body::from("a,b"))?;
    t.raw(req).await?.expect_problem(415)?;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/models/nope/corpus")
        .header("authorization", format!("Bearer {}", t.admin))
        .header("content-type", "application/x-ndjson")
        .body(Body::from("{\"text\": \"x\"}\n"))?;
    t.raw(req).await?.expect_problem(404)?;
    t.get("/v1/models/nope/corpus", &t.admin).await?.expect_problem(404)?;
    // Look-up validation.
    let r = t
        .call(
            Method::POST,
            "/v1/models/m/corpus/lookup",
            Some(&t.admin),
            Some(json!({"subject_identities": [email(secret, "raw")]})),
        )
        .await?;
    r.expect_problem(422)?;
    ensure!(!r.text.contains(secret));
    t.call(
        Method::POST,
        "/v1/models/m/corpus/lookup",
        Some(&t.admin),
        Some(json!({"subject_identities": []})),
    )
    .await?
    .expect_problem(422)?;
    Ok(())
}

async fn erased_subjects_never_return_to_the_retain_corpus(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let ann = "ann@example.com";
    let tagged = |i: usize| qa(i, Some(json!([email(ann, "raw")])));
    let first: Vec<Value> = vec![tagged(1), tagged(2), qa(3, None), qa(4, None)];
    let r = upload_chunked(&t, &t.admin, jsonl(&first), 64).await?;
    ensure!(r.body["inserted"] == 4, "{}", r.body);

    // A subject-based deletion request (no items): `subject` is the exact
    // identity value, matched through the plain tag.
    let r = t
        .call(
            Method::POST,
            "/v1/deletion-requests",
            Some(&t.submitter),
            Some(json!({"model": "m", "subject": ann})),
        )
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let request: uuid::Uuid = r.body["id"].as_str().context("id")?.parse()?;
    let subject = t.store.get_request(request).await?.subject_hmac.context("subject")?;
    ensure!(t.store.count_rows_for_subject("m", &subject).await? == 2);
    // A request about an unknown subject, in the same job.
    let r = t
        .call(
            Method::POST,
            "/v1/deletion-requests",
            Some(&t.submitter),
            Some(json!({"model": "m", "subject": "nobody@example.com"})),
        )
        .await?;
    let unknown: uuid::Uuid = r.body["id"].as_str().context("id")?.parse()?;

    // The worker's part, as the store sees it: the job publishes a version
    // fulfilling the first request; the other had nothing to forget.
    let claimed = t.store.claim("w", Duration::from_secs(60)).await?.context("job")?;
    ensure!(claimed.requests.len() == 2);
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
        fulfilled_request_ids: vec![request],
        status: VersionStatus::Published,
    };
    t.store.complete_job(claimed.job.id, "w", Some(version)).await?;
    ensure!(t.store.get_request(request).await?.status == RequestStatus::Succeeded);
    ensure!(t.store.get_request(unknown).await?.status == RequestStatus::NothingToForget);
    let audit = t.store.list_audit(&Default::default(), 0, 1000).await?;
    ensure!(audit.iter().any(|a| a.action == "request.nothing_to_forget"), "audited");

    // The subject's rows are forgotten and out of the retain corpus.
    let stats = t.get("/v1/models/m/corpus", &t.admin).await?;
    ensure!(
        stats.body["live"] == 2 && stats.body["forgotten"] == 2,
        "{}",
        stats.body
    );
    let retain = t.store.list_retain_rows("m", &[], &[], None, 1000).await?;
    ensure!(retain.items.len() == 2);
    ensure!(retain.items.iter().all(|r| r.subject_hmacs.is_empty()), "{retain:?}");
    ensure!(count_for(&t, json!([email(ann, "raw")])).await? == 0);

    // Uploading the same rows again brings nothing back; a new row about
    // the subject arrives forgotten; a known live row newly tagged with the
    // subject is forgotten too.
    let r = upload_chunked(&t, &t.admin, jsonl(&first), 50).await?;
    ensure!(r.body["inserted"] == 0 && r.body["duplicates"] == 4, "{}", r.body);
    let later = vec![tagged(5), qa(3, Some(json!([ann]))), qa(6, None)];
    let r = upload_chunked(&t, &t.admin, jsonl(&later), 50).await?;
    ensure!(
        r.body["inserted"] == 1 && r.body["suppressed"] == 2 && r.body["duplicates"] == 1,
        "{}",
        r.body
    );
    let retain = t.store.list_retain_rows("m", &[], &[], None, 1000).await?;
    let texts: Vec<String> = retain
        .items
        .iter()
        .filter_map(|r| {
            r.row_data
                .as_ref()
                .map(|d| d["question"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    ensure!(texts == ["Question 4?", "Question 6?"], "{texts:?}");
    let stats = t.get("/v1/models/m/corpus", &t.admin).await?;
    ensure!(
        stats.body == json!({"model": "m", "rows": 6, "live": 2, "forgotten": 4}),
        "{}",
        stats.body
    );
    t.store.verify_audit().await?;
    Ok(())
}
