//! Deletion requests: idempotent creation under concurrency, validation,
//! listings.

use std::time::Duration;

use anyhow::{ensure, Result};
use grin_store::{Error, PageRequest, RequestFilter, RequestStatus};
use serde_json::json;

use crate::common::{new_model, new_request, TestDb, ADMIN};

backend_tests!(
    concurrent_creates_with_one_key_make_one_request,
    requests_are_validated,
    requests_list_with_filters_and_cursor,
);

async fn concurrent_creates_with_one_key_make_one_request(db: TestDb) -> Result<()> {
    const STORES: usize = 4;
    const TASKS_PER_STORE: usize = 6;
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    store.create_model(&new_model("other"), ADMIN).await?;
    let request = new_request(&store, "m", "same-key", "forget me");

    let mut tasks = Vec::new();
    for _ in 0..STORES {
        let store = db.store().await?;
        for _ in 0..TASKS_PER_STORE {
            let store = store.clone();
            let request = request.clone();
            tasks.push(tokio::spawn(async move { store.create_request(&request).await }));
        }
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (r, new) = t.await??;
        ids.push(r.id);
        created += usize::from(new);
    }
    ensure!(created == 1, "{created} creations reported");
    ids.dedup();
    ensure!(ids.len() == 1, "different ids returned: {ids:?}");
    let all = store
        .list_requests(&RequestFilter::default(), PageRequest::default())
        .await?;
    ensure!(all.items.len() == 1, "{} requests stored", all.items.len());
    ensure!(store.jobs_for_request(ids[0]).await?.len() == 1);

    // Same key, different body: refused, whatever model it names.
    let mut different = request.clone();
    different.forget_payload = Some(json!([{"text": "something else"}]));
    let refused = store.create_request(&different).await;
    ensure!(
        matches!(&refused, Err(Error::IdempotencyMismatch { existing_id, .. }) if *existing_id == ids[0]),
        "{refused:?}"
    );
    ensure!(refused.as_ref().err().map(Error::http_status) == Some(409));
    let mut other_model = request.clone();
    other_model.model_name = "other".into();
    ensure!(matches!(
        store.create_request(&other_model).await,
        Err(Error::IdempotencyMismatch { .. })
    ));
    // The same key from another client is another request.
    let mut other_client = request.clone();
    other_client.client_id = "client-2".into();
    let (r2, new) = store.create_request(&other_client).await?;
    ensure!(new && r2.id != ids[0]);
    Ok(())
}

async fn requests_are_validated(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let good = new_request(&store, "m", "k", "t");

    let mut raw_subject = good.clone();
    raw_subject.subject_hmac = Some("jane.doe@example.com".into());
    ensure!(matches!(
        store.create_request(&raw_subject).await,
        Err(Error::Invalid {
            field: "subject_hmac",
            ..
        })
    ));
    let mut empty = good.clone();
    empty.subject_hmac = None;
    empty.forget_payload = None;
    ensure!(matches!(store.create_request(&empty).await, Err(Error::Invalid { .. })));
    let mut no_key = good.clone();
    no_key.idempotency_key = String::new();
    ensure!(matches!(
        store.create_request(&no_key).await,
        Err(Error::Invalid { .. })
    ));
    let mut bad_overrides = good.clone();
    bad_overrides.method_overrides = json!([1]);
    ensure!(matches!(
        store.create_request(&bad_overrides).await,
        Err(Error::Invalid { .. })
    ));
    let mut unknown_model = good.clone();
    unknown_model.model_name = "nope".into();
    let missing = store.create_request(&unknown_model).await;
    ensure!(
        matches!(missing, Err(Error::NotFound { entity: "model", .. })),
        "{missing:?}"
    );
    ensure!(missing.err().map(|e| e.http_status()) == Some(404));
    // A subject-only request is fine.
    let mut subject_only = good.clone();
    subject_only.forget_payload = None;
    let (r, _) = store.create_request(&subject_only).await?;
    ensure!(r.status == RequestStatus::Queued && r.subject_hmac.is_some());
    Ok(())
}

async fn requests_list_with_filters_and_cursor(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("a"), ADMIN).await?;
    store.create_model(&new_model("b"), ADMIN).await?;
    let mut created = Vec::new();
    for i in 0..7 {
        let model = if i % 2 == 0 { "a" } else { "b" };
        let (r, _) = store
            .create_request(&new_request(&store, model, &format!("k{i}"), &format!("t{i}")))
            .await?;
        created.push(r);
    }
    let middle = created[3].created_at;
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Pages of 3, newest first, covering everything exactly once.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_requests(&RequestFilter::default(), PageRequest { after, limit: 3 })
            .await?;
        ensure!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|r| r.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<_> = created.iter().map(|r| r.id).collect();
    expected.reverse();
    ensure!(seen == expected, "pagination order");

    let only_a = store
        .list_requests(
            &RequestFilter {
                model_name: Some("a".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await?;
    ensure!(only_a.items.len() == 4 && only_a.items.iter().all(|r| r.model_name == "a"));
    let since = store
        .list_requests(
            &RequestFilter {
                created_from: Some(middle),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await?;
    ensure!(
        since.items.len() == 4,
        "created_from is inclusive: {}",
        since.items.len()
    );
    let before = store
        .list_requests(
            &RequestFilter {
                created_before: Some(middle),
                status: Some(RequestStatus::Queued),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await?;
    ensure!(before.items.len() == 3);
    let subject = store.hmac(b"subject:jane.doe@example.com");
    let by_subject = store
        .list_requests(
            &RequestFilter {
                subject_hmac: Some(subject),
                client_id: Some("client-1".into()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await?;
    ensure!(by_subject.items.len() == 7);
    let none = store
        .list_requests(
            &RequestFilter {
                status: Some(RequestStatus::Succeeded),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await?;
    ensure!(none.items.is_empty() && none.next.is_none());
    Ok(())
}
