//! Each endpoint's success path, idempotency under concurrency, pagination
//! stability, SSE progress, certificates, approvals, aliases, audit,
//! health, metrics and callbacks.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::body::Body;
use axum::http::{Method, Request};
use futures::StreamExt;
use grin_store::{FileEntry, NewVersion, Progress, VersionStatus};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

use crate::common::{store_options, TestApp, TestDb};

backend_tests!(
    request_lifecycle_with_certificate,
    idempotency_under_concurrent_posts,
    pagination_is_stable,
    sse_delivers_progress_then_terminal,
    approval_alias_and_rollback,
    audit_health_and_metrics,
    callbacks_are_signed_and_delivered,
    work_metrics_come_from_the_store,
);

fn version(job: Uuid, requests: &[Uuid], status: VersionStatus) -> NewVersion {
    NewVersion {
        model_name: "m".into(),
        parent_id: None,
        job_id: Some(job),
        location: format!("file:///checkpoints/m/{job}"),
        files: vec![FileEntry {
            path: "model.safetensors".into(),
            sha256: "c".repeat(64),
            bytes: 1000,
        }],
        config: json!({"method": "grin"}),
        seed: Some(7),
        metrics: json!({"forget_quality": 0.9}),
        certificate: Some(json!({"kind": "grin-certificate", "requests": requests})),
        fulfilled_request_ids: requests.to_vec(),
        status,
    }
}

async fn request_lifecycle_with_certificate(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let body = json!({
        "model": "m",
        "items": [
            {"question": "Who is Jane?", "answer": "A baker.", "keywords": ["baker"], "perturbed_answer": ["A pilot."]},
            {"text": "Jane lives at 1 Main St."}
        ],
        "subject": "jane@example.com",
        "method": {"method": "npo", "max_steps": 10, "learning_rate": 0.0001}
    });
    let r = t
        .call(Method::POST, "/v1/deletion-requests", Some(&t.submitter), Some(body))
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let id: Uuid = r.body["id"].as_str().context("id")?.parse()?;
    ensure!(r.body["status"] == "queued");
    ensure!(r.headers["location"] == format!("/v1/deletion-requests/{id}").as_str());
    ensure!(r.body["links"]["events"] == format!("/v1/deletion-requests/{id}/events").as_str());
    ensure!(r.body["subject_hmac"] == t.store.hmac(b"jane@example.com").as_str());
    ensure!(!r.text.contains("jane@example.com") && !r.text.contains("baker"));
    ensure!(r.body["method_overrides"]["method"] == "npo");

    // The payload is stored in the worker's dataset row shape.
    let claimed = t.store.claim("w1", Duration::from_secs(60)).await?.context("claim")?;
    let payloads = t.store.job_payloads(claimed.job.id, "w1").await?;
    ensure!(
        payloads[0].forget_payload
            == Some(json!([
                {"question": "Who is Jane?", "answer": "A baker.", "perturbed_answer": ["A pilot."], "keywords": ["baker"]},
                {"text": "Jane lives at 1 Main St."}
            ])),
        "{:?}",
        payloads[0].forget_payload
    );
    t.store
        .update_progress(
            claimed.job.id,
            "w1",
            &Progress {
                stage: "saliency".into(),
                percent: 20.0,
                message: None,
            },
        )
        .await?;
    let r = t.get(&format!("/v1/deletion-requests/{id}"), &t.submitter).await?;
    ensure!(
        r.body["status"] == "running" && r.body["job"]["stage"] == "saliency",
        "{r:?}"
    );
    t.get(&format!("/v1/deletion-requests/{id}/certificate"), &t.submitter)
        .await?
        .expect_problem(404)?;

    // Jobs.
    let r = t.get("/v1/jobs?state=running&model=m", &t.reader).await?;
    ensure!(r.body["items"].as_array().unwrap().len() == 1, "{r:?}");
    let r = t.get(&format!("/v1/jobs/{}", claimed.job.id), &t.reader).await?;
    ensure!(
        r.body["worker_id"] == "w1" && r.body["attempts"] == 1 && r.body["percent"] == 20.0,
        "{r:?}"
    );
    ensure!(r.body["started_at"].is_string() && r.body["elapsed_seconds"].is_number());

    t.store
        .complete_job(
            claimed.job.id,
            "w1",
            Some(version(claimed.job.id, &[id], VersionStatus::Published)),
        )
        .await?;
    let r = t.get(&format!("/v1/deletion-requests/{id}"), &t.submitter).await?;
    ensure!(
        r.body["status"] == "succeeded" && r.body["purged_at"].is_string(),
        "{r:?}"
    );
    let r = t
        .get(&format!("/v1/deletion-requests/{id}/certificate"), &t.submitter)
        .await?;
    ensure!(r.status == 200 && r.body["kind"] == "grin-certificate", "{r:?}");

    // Models and versions.
    let r = t.get("/v1/models", &t.submitter).await?;
    ensure!(r.body["items"][0]["name"] == "m");
    let r = t.get("/v1/models/m", &t.reader).await?;
    ensure!(r.body["aliases"][0]["alias"] == "production", "{r:?}");
    let r = t.get("/v1/models/m/versions", &t.reader).await?;
    ensure!(r.body["items"].as_array().unwrap().len() == 2);
    let r = t.get("/v1/models/m/versions/2", &t.reader).await?;
    ensure!(r.body["status"] == "published" && r.body["fulfilled_request_ids"][0] == id.to_string().as_str());
    t.get("/v1/models/m/versions/9", &t.reader).await?.expect_problem(404)?;
    t.get("/v1/models/nope", &t.reader).await?.expect_problem(404)?;

    // Cancel: a finished request is 409; a queued one is cancelled.
    t.call(
        Method::POST,
        &format!("/v1/deletion-requests/{id}/cancel"),
        Some(&t.submitter),
        None,
    )
    .await?
    .expect_problem(409)?;
    let other = t.submit("other").await?;
    let r = t
        .call(
            Method::POST,
            &format!("/v1/deletion-requests/{other}/cancel"),
            Some(&t.submitter),
            None,
        )
        .await?;
    ensure!(r.status == 202 && r.body["status"] == "cancelled", "{r:?}");
    Ok(())
}

async fn idempotency_under_concurrent_posts(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let post = |body: Value| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/deletion-requests")
            .header("authorization", format!("Bearer {}", t.submitter))
            .header("content-type", "application/json")
            .header("idempotency-key", "key-1")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    };
    let body = json!({"model": "m", "items": [{"text": "forget me"}]});
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let router = t.router.clone();
        let req = post(body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = router.oneshot(req).await.unwrap();
            let replayed = resp.headers().contains_key("idempotent-replayed");
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            (status, replayed, v["id"].as_str().map(str::to_owned))
        }));
    }
    let mut ids = HashSet::new();
    let mut fresh = 0;
    for task in tasks {
        let (status, replayed, id) = task.await?;
        ensure!(status == 202, "{status}");
        fresh += usize::from(!replayed);
        ids.insert(id.context("id")?);
    }
    ensure!(ids.len() == 1 && fresh == 1, "ids {ids:?}, {fresh} fresh");
    ensure!(db.count("deletion_requests").await? == 1);
    // Same key, different body: 409, nothing stored.
    let r = t.raw(post(json!({"model": "m", "items": [{"text": "else"}]}))).await?;
    r.expect_problem(409)?;
    ensure!(db.count("deletion_requests").await? == 1);
    // The same key from another client is its own request.
    let mut req = post(body);
    req.headers_mut()
        .insert("authorization", format!("Bearer {}", t.submitter2).parse()?);
    let r = t.raw(req).await?;
    ensure!(r.status == 202 && !ids.contains(r.body["id"].as_str().unwrap()));
    Ok(())
}

async fn pagination_is_stable(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(t.submit(&format!("row {i}")).await?);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let uri = match &after {
            Some(a) => format!("/v1/deletion-requests?limit=3&after={a}"),
            None => "/v1/deletion-requests?limit=3".to_owned(),
        };
        let r = t.get(&uri, &t.reader).await?;
        ensure!(r.status == 200, "{r:?}");
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().parse::<Uuid>()?);
        }
        pages += 1;
        if pages == 1 {
            // New requests arriving mid-listing do not shift later pages.
            t.submit("late").await?;
        }
        match r.body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    created.reverse();
    ensure!(seen == created, "seen {seen:?}\ncreated {created:?}");
    ensure!(pages == 3);
    // Filters.
    let r = t
        .get("/v1/deletion-requests?status=queued&model=m&limit=100", &t.reader)
        .await?;
    ensure!(r.body["items"].as_array().unwrap().len() == 8);
    let r = t.get("/v1/deletion-requests?model=other", &t.reader).await?;
    ensure!(r.body["items"].as_array().unwrap().is_empty());
    let r = t
        .get("/v1/deletion-requests?created_before=2000-01-01T00:00:00Z", &t.reader)
        .await?;
    ensure!(
        r.status == 200 && r.body["items"].as_array().unwrap().is_empty(),
        "{r:?}"
    );
    Ok(())
}

/// Reads SSE events (name, id, data) from a streaming body.
async fn next_event(
    body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buf: &mut String,
) -> Result<(String, String, Value)> {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut name, mut id, mut data) = (String::new(), String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if name.is_empty() {
                continue; // keep-alive comment
            }
            return Ok((name, id, serde_json::from_str(&data)?));
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .context("no SSE event within 10 s")?
            .context("stream ended")??;
        buf.push_str(std::str::from_utf8(&chunk)?);
    }
}

async fn sse_delivers_progress_then_terminal(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let id = t.submit("stream me").await?;
    let open = |last: Option<String>| {
        let mut req = Request::builder()
            .uri(format!("/v1/deletion-requests/{id}/events"))
            .header("authorization", format!("Bearer {}", t.submitter));
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        t.router.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    let resp = open(None).await?;
    ensure!(resp.status() == 200);
    ensure!(resp.headers()["content-type"] == "text/event-stream");
    let mut body = resp.into_body().into_data_stream();
    let mut buf = String::new();
    let (name, first_id, data) = next_event(&mut body, &mut buf).await?;
    ensure!(name == "status" && data["status"] == "queued", "{name} {data}");

    let claimed = t.store.claim("w1", Duration::from_secs(60)).await?.context("claim")?;
    let (name, _, data) = next_event(&mut body, &mut buf).await?;
    ensure!(name == "status" && data["status"] == "running", "{name} {data}");
    let mut last_id = String::new();
    for (stage, percent) in [("saliency", 10.0), ("finetune", 60.0)] {
        t.store
            .update_progress(
                claimed.job.id,
                "w1",
                &Progress {
                    stage: stage.into(),
                    percent,
                    message: Some(format!("{stage} running")),
                },
            )
            .await?;
        let (name, eid, data) = next_event(&mut body, &mut buf).await?;
        ensure!(name == "progress" && data["job"]["stage"] == stage, "{name} {data}");
        ensure!(eid.parse::<i64>()? > first_id.parse::<i64>()?);
        last_id = eid;
    }
    drop(body);

    // Resume from Last-Event-ID: nothing is replayed; the next change arrives.
    let resp = open(Some(last_id.clone())).await?;
    let mut body = resp.into_body().into_data_stream();
    let mut buf = String::new();
    t.store
        .complete_job(
            claimed.job.id,
            "w1",
            Some(version(claimed.job.id, &[id], VersionStatus::Published)),
        )
        .await?;
    let (name, eid, data) = next_event(&mut body, &mut buf).await?;
    ensure!(name == "terminal" && data["status"] == "succeeded", "{name} {data}");
    ensure!(eid.parse::<i64>()? > last_id.parse::<i64>()?);
    let end = tokio::time::timeout(Duration::from_secs(5), body.next()).await?;
    ensure!(end.is_none(), "stream did not end after the terminal event");

    // A reconnect after the terminal event ends at once.
    let resp = open(Some(eid)).await?;
    let bytes = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await??;
    ensure!(!String::from_utf8_lossy(&bytes.to_bytes()).contains("event:"));
    Ok(())
}

async fn approval_alias_and_rollback(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let a = t.submit("first").await?;
    let job = t
        .store
        .claim("w1", Duration::from_secs(60))
        .await?
        .context("claim")?
        .job
        .id;
    t.store
        .complete_job(job, "w1", Some(version(job, &[a], VersionStatus::AwaitingApproval)))
        .await?;
    let r = t.get(&format!("/v1/deletion-requests/{a}"), &t.submitter).await?;
    ensure!(r.body["status"] == "awaiting_approval");
    let r = t
        .call(Method::POST, "/v1/models/m/versions/2/approve", Some(&t.admin), None)
        .await?;
    ensure!(r.status == 200 && r.body["status"] == "published", "{r:?}");
    t.call(Method::POST, "/v1/models/m/versions/2/approve", Some(&t.admin), None)
        .await?
        .expect_problem(409)?;
    let r = t.get(&format!("/v1/deletion-requests/{a}"), &t.submitter).await?;
    ensure!(r.body["status"] == "succeeded");

    // Reject path.
    let b = t.submit("second").await?;
    let job = t
        .store
        .claim("w1", Duration::from_secs(60))
        .await?
        .context("claim")?
        .job
        .id;
    t.store
        .complete_job(job, "w1", Some(version(job, &[b], VersionStatus::AwaitingApproval)))
        .await?;
    let r = t
        .call(
            Method::POST,
            "/v1/models/m/versions/3/reject",
            Some(&t.admin),
            Some(json!({"reason": "retain score too low"})),
        )
        .await?;
    ensure!(r.status == 200 && r.body["status"] == "rejected", "{r:?}");
    let r = t.get(&format!("/v1/deletion-requests/{b}"), &t.submitter).await?;
    ensure!(
        r.body["status"] == "failed" && r.body["error"].as_str().unwrap_or("").contains("retain score too low"),
        "{r:?}"
    );

    // Aliases: staging anywhere; production back to v1 refused (would undo a).
    let r = t
        .call(
            Method::PUT,
            "/v1/models/m/aliases/staging",
            Some(&t.admin),
            Some(json!({"version": 1})),
        )
        .await?;
    ensure!(r.status == 200 && r.body["alias"] == "staging", "{r:?}");
    let r = t
        .call(
            Method::PUT,
            "/v1/models/m/aliases/production",
            Some(&t.admin),
            Some(json!({"version": 1})),
        )
        .await?;
    r.expect_problem(409)?;
    ensure!(r.body["type"] == "urn:grin:problem:rollback-refused");
    let r = t
        .call(
            Method::PUT,
            "/v1/models/m/aliases/production",
            Some(&t.admin),
            Some(json!({"version": 1, "reapplied": [a]})),
        )
        .await?;
    ensure!(r.status == 200, "{r:?}");
    Ok(())
}

async fn audit_health_and_metrics(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    t.submit("a").await?;
    t.submit("b").await?;
    let r = t.get("/healthz", "").await?;
    ensure!(r.status == 200 && r.body["status"] == "ok");
    let r = t.get("/readyz", "").await?;
    ensure!(r.status == 200 && r.body["status"] == "ready", "{r:?}");

    let r = t.get("/v1/audit?limit=2", &t.reader).await?;
    ensure!(
        r.body["items"].as_array().unwrap().len() == 2 && r.body["next"].is_i64(),
        "{r:?}"
    );
    let next = r.body["next"].as_i64().unwrap();
    let r = t
        .get(&format!("/v1/audit?after={next}&action=request.created"), &t.reader)
        .await?;
    ensure!(r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["action"] == "request.created"));
    let r = t.get("/v1/audit/verify", &t.reader).await?;
    ensure!(r.body["valid"] == true && r.body["rows"].as_i64().unwrap() > 0, "{r:?}");
    let r = t.get("/v1/audit/export", &t.admin).await?;
    ensure!(r.headers["content-type"] == "application/jsonl");
    let lines: Vec<Value> = r.text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    ensure!(lines.len() as i64 == r.text.lines().count() as i64 && lines.len() >= 4);
    ensure!(lines.windows(2).all(|w| w[1]["prev_hash"] == w[0]["hash"]));

    let r = t.get("/metrics", "").await?;
    ensure!(r.status == 200, "{r:?}");
    for needle in [
        "grin_queue_depth 1",
        "grin_deletion_requests{status=\"queued\"} 2",
        "grin_queue_oldest_age_seconds",
        ",method=\"GET\",route=\"/v1/audit\"}",
        "grin_http_requests_total{method=\"POST\",route=\"/v1/deletion-requests\",status=\"202\"} 2",
        "grin_job_duration_seconds",
        "grin_jobs_rescued_total",
    ] {
        ensure!(r.text.contains(needle), "no {needle:?} in\n{}", r.text);
    }
    ensure!(r.headers.contains_key("x-request-id"));
    Ok(())
}

async fn callbacks_are_signed_and_delivered(db: TestDb) -> Result<()> {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(axum::http::HeaderMap, String)>();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let receiver = {
        let attempts = attempts.clone();
        axum::Router::new().route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let tx = tx.clone();
                let attempts = attempts.clone();
                async move {
                    // The first delivery fails: the retry must follow.
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let _ = tx.send((headers, body));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let mut settings = grin_api::CallbackSettings::new(b"cb-secret".to_vec());
    settings.poll_interval = Duration::from_millis(20);
    settings.backoff_base = Duration::from_millis(20);
    settings.timeout = Duration::from_secs(2);
    let hub = grin_api::CallbackHub::new(settings);
    let t = TestApp::with_state(&db, |s| s.with_callbacks(hub.clone())).await?;
    let dispatcher = grin_api::spawn_callback_dispatcher(t.store.clone(), hub.clone());
    let r = t
        .call(
            Method::POST,
            "/v1/deletion-requests",
            Some(&t.submitter),
            Some(json!({"model": "m", "items": [{"text": "x"}], "callback_url": format!("http://{addr}/hook")})),
        )
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let id = r.body["id"].as_str().unwrap().to_owned();
    t.store.claim("w1", Duration::from_secs(60)).await?.context("claim")?;
    let (headers, body) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await?
        .context("no callback")?;
    let ts: i64 = headers["grin-timestamp"].to_str()?.parse()?;
    let sig = headers["grin-signature"].to_str()?;
    ensure!(grin_api::callbacks::verify(
        b"cb-secret",
        ts,
        body.as_bytes(),
        sig,
        chrono::Utc::now().timestamp(),
        Duration::from_secs(300)
    ));
    ensure!(!grin_api::callbacks::verify(
        b"other",
        ts,
        body.as_bytes(),
        sig,
        chrono::Utc::now().timestamp(),
        Duration::from_secs(300)
    ));
    let event: Value = serde_json::from_str(&body)?;
    ensure!(
        event["request"]["id"] == id.as_str() && event["request"]["status"] == "running",
        "{event}"
    );
    ensure!(headers["grin-event-id"] == format!("{id}:running").as_str());
    ensure!(attempts.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    dispatcher.abort();
    Ok(())
}

/// Job and stage durations and rescued jobs are computed from the store at
/// scrape time (a worker in another process needs no metrics endpoint),
/// and scraping twice does not count anything twice.
async fn work_metrics_come_from_the_store(db: TestDb) -> Result<()> {
    let mut options = store_options();
    options.queue.backoff_base = Duration::from_millis(1);
    options.queue.backoff_max = Duration::from_millis(1);
    let t = TestApp::new(&db).await?;
    let store = grin_store::Store::open(&db.url, options).await?;
    // One job succeeds with stage timings; one is rescued after its lease
    // expires and then fails for good.
    let a = t.submit("first").await?;
    let claimed = store.claim("w1", Duration::from_secs(60)).await?.context("claim")?;
    let mut v = version(claimed.job.id, &[a], VersionStatus::Published);
    v.metrics = json!({"stage_seconds": {"selection": 1.5, "noise": 0.25, "finetune": 30.0}});
    store.complete_job(claimed.job.id, "w1", Some(v)).await?;
    t.submit("second").await?;
    let claimed = store.claim("w2", Duration::from_millis(1)).await?.context("claim")?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    ensure!(store.reap_expired().await?.len() == 1, "the lease expired");
    let again = loop {
        if let Some(c) = store.claim("w3", Duration::from_secs(60)).await? {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    ensure!(again.job.id == claimed.job.id);
    store.fail_job(again.job.id, "w3", "bad input", false).await?;

    for _ in 0..2 {
        let r = t.get("/metrics", "").await?;
        for needle in [
            "grin_job_duration_seconds_count{outcome=\"succeeded\"} 1",
            "grin_job_duration_seconds_count{outcome=\"failed\"} 1",
            "grin_stage_duration_seconds_count{stage=\"finetune\"} 1",
            "grin_stage_duration_seconds_sum{stage=\"finetune\"} 30.0",
            "grin_stage_duration_seconds_count{stage=\"selection\"} 1",
            "grin_jobs_rescued_total 1",
        ] {
            ensure!(r.text.contains(needle), "no {needle:?} in\n{}", r.text);
        }
    }
    store.close().await;
    Ok(())
}
