//! The validation catalogue: each bad request gets its exact status as
//! problem+json, and nothing is stored.

use anyhow::{ensure, Result};
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{json, Value};

use crate::common::{TestApp, TestDb};

backend_tests!(validation_catalogue);

async fn validation_catalogue(db: TestDb) -> Result<()> {
    let t = TestApp::new(&db).await?;
    let audit_before = db.count("audit_log").await?;
    let long = "x".repeat(201);
    let json_cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            "empty forget list",
            json!({"model": "m", "items": []}),
            422,
            Some("items"),
        ),
        ("no items, no subject", json!({"model": "m"}), 422, Some("items")),
        (
            "unknown model",
            json!({"model": "nope", "items": [{"text": "a"}]}),
            422,
            Some("model"),
        ),
        ("wrong type", json!({"model": "m", "items": "text"}), 422, Some("items")),
        (
            "wrong nested type",
            json!({"model": "m", "items": [{"text": 5}]}),
            422,
            Some("items[0].text"),
        ),
        (
            "unknown field",
            json!({"model": "m", "items": [{"text": "a"}], "extra": 1}),
            422,
            None,
        ),
        (
            "unknown item field",
            json!({"model": "m", "items": [{"txt": "a"}]}),
            422,
            Some("items[0].txt"),
        ),
        (
            "too many items",
            json!({"model": "m", "items": (0..6).map(|i| json!({"text": format!("t{i}")})).collect::<Vec<_>>()}),
            422,
            Some("items"),
        ),
        (
            "text over the limit",
            json!({"model": "m", "items": [{"text": long}]}),
            422,
            Some("items[0].text"),
        ),
        (
            "question without answer",
            json!({"model": "m", "items": [{"question": "q"}]}),
            422,
            Some("items[0]"),
        ),
        (
            "blank subject",
            json!({"model": "m", "subject": " "}),
            422,
            Some("subject"),
        ),
        (
            "override out of bounds",
            json!({"model": "m", "items": [{"text": "a"}], "method": {"learning_rate": 5.0}}),
            422,
            Some("method.learning_rate"),
        ),
        (
            "unknown method",
            json!({"model": "m", "items": [{"text": "a"}], "method": {"method": "magic"}}),
            422,
            Some("method.method"),
        ),
        (
            "callbacks disabled",
            json!({"model": "m", "items": [{"text": "a"}], "callback_url": "http://127.0.0.1:9/x"}),
            422,
            Some("callback_url"),
        ),
        ("not an object", json!([1, 2]), 422, None),
    ];
    for (name, body, status, field) in json_cases {
        let r = t
            .call(Method::POST, "/v1/deletion-requests", Some(&t.submitter), Some(body))
            .await?;
        r.expect_problem(status).map_err(|e| e.context(name))?;
        if let Some(field) = field {
            let fields: Vec<&str> = r.body["errors"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
                .unwrap_or_default();
            ensure!(fields.contains(&field), "{name}: fields {fields:?}");
        }
    }

    let raw = |content_type: &str, body: Vec<u8>| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/deletion-requests")
            .header("authorization", format!("Bearer {}", t.submitter))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap()
    };
    // Invalid UTF-8 inside a JSON string.
    let mut bad_utf8 = br#"{"model": "m", "items": [{"text": ""#.to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(br#""}]}"#);
    t.raw(raw("application/json", bad_utf8)).await?.expect_problem(400)?;
    t.raw(raw("application/json", b"{\"model\": ".to_vec()))
        .await?
        .expect_problem(400)?;
    t.raw(raw("text/plain", b"{}".to_vec())).await?.expect_problem(415)?;
    let huge = serde_json::to_vec(&json!({"model": "m", "items": [{"text": "y".repeat(70 * 1024)}]}))?;
    t.raw(raw("application/json", huge)).await?.expect_problem(413)?;
    // An oversized Idempotency-Key.
    let r = t
        .raw(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/deletion-requests")
                .header("authorization", format!("Bearer {}", t.submitter))
                .header("content-type", "application/json")
                .header("idempotency-key", "k".repeat(300))
                .body(Body::from(r#"{"model":"m","items":[{"text":"a"}]}"#))?,
        )
        .await?;
    r.expect_problem(422)?;

    // Nothing was stored.
    ensure!(db.count("deletion_requests").await? == 0);
    ensure!(db.count("jobs").await? == 0);
    ensure!(db.count("audit_log").await? == audit_before);

    // Unknown routes, wrong methods, bad query values: problem+json too.
    t.get("/v1/nope", &t.admin).await?.expect_problem(404)?;
    let r = t.call(Method::DELETE, "/v1/models", Some(&t.admin), None).await?;
    r.expect_problem(405)?;
    ensure!(r.headers.contains_key("allow"));
    t.get("/v1/deletion-requests?status=bogus", &t.admin)
        .await?
        .expect_problem(422)?;
    t.get("/v1/deletion-requests?limit=0", &t.admin)
        .await?
        .expect_problem(422)?;
    t.get("/v1/deletion-requests?bogus=1", &t.admin)
        .await?
        .expect_problem(422)?;
    t.get("/v1/deletion-requests/not-a-uuid", &t.admin)
        .await?
        .expect_problem(404)?;
    Ok(())
}
