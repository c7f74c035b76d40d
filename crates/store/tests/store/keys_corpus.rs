//! API keys and the corpus / subject index.

use anyhow::{ensure, Context, Result};
use grin_store::{Error, NewCorpusRow, Role};
use serde_json::json;

use crate::common::{new_model, TestDb, ADMIN};

backend_tests!(api_keys_store_only_a_hash, corpus_index_by_subject_and_retain_set);

async fn api_keys_store_only_a_hash(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    let (key, secret) = store.create_api_key("ci", Role::Submitter, ADMIN).await?;
    ensure!(secret.starts_with("grin_") && secret.len() > 40);
    ensure!(store.authenticate(&secret).await? == Some(key.clone()));
    ensure!(store.authenticate("grin_wrong").await?.is_none());
    ensure!(!db.dump().await?.contains(&secret), "the secret is not stored");
    let (admin, _) = store.create_api_key("ops", Role::Admin, ADMIN).await?;
    ensure!(store.list_api_keys().await?.len() == 2 && admin.role == Role::Admin);

    let revoked = store.revoke_api_key(key.id, ADMIN).await?;
    ensure!(revoked.revoked_at.is_some());
    ensure!(store.authenticate(&secret).await?.is_none());
    ensure!(store.revoke_api_key(key.id, ADMIN).await?.revoked_at == revoked.revoked_at);
    ensure!(matches!(
        store.revoke_api_key(uuid::Uuid::nil(), ADMIN).await,
        Err(Error::NotFound { .. })
    ));
    store.verify_audit().await?;
    Ok(())
}

async fn corpus_index_by_subject_and_retain_set(db: TestDb) -> Result<()> {
    let store = db.store().await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let jane = store.hmac(b"jane");
    let john = store.hmac(b"john");
    let rows: Vec<NewCorpusRow> = (0..6)
        .map(|i| NewCorpusRow {
            data: json!({"question": format!("q{i}"), "answer": format!("a{i}")}),
            subject_hmacs: match i {
                0 | 1 => vec![jane.clone()],
                2 => vec![jane.clone(), john.clone()],
                3 => vec![john.clone()],
                _ => vec![],
            },
        })
        .collect();
    ensure!(store.insert_corpus_rows("m", &rows, ADMIN).await? == 6);
    ensure!(store.insert_corpus_rows("m", &rows, ADMIN).await? == 0, "idempotent");
    ensure!(store.count_rows_for_subject("m", &jane).await? == 3);
    let johns = store.rows_for_subject("m", &john).await?;
    ensure!(johns.len() == 2 && johns.iter().all(|r| r.subject_hmacs.contains(&john)));
    ensure!(johns[0].row_digest == store.row_digest(&rows[2].data));
    ensure!(matches!(
        store
            .insert_corpus_rows(
                "m",
                &[NewCorpusRow {
                    data: json!({}),
                    subject_hmacs: vec!["jane".into()],
                }],
                ADMIN,
            )
            .await,
        Err(Error::Invalid { .. })
    ));

    // Retain set for a job forgetting Jane and one explicit row.
    let exclude_digest = store.row_digest(&rows[4].data);
    let mut retained = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_retain_rows(
                "m",
                std::slice::from_ref(&jane),
                std::slice::from_ref(&exclude_digest),
                after,
                1,
            )
            .await?;
        retained.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let answers: Vec<_> = retained
        .iter()
        .map(|r| r.row_data.as_ref().context("data").map(|d| d["answer"].clone()))
        .collect::<Result<_>>()?;
    ensure!(answers == vec![json!("a3"), json!("a5")], "{answers:?}");
    let everything = store.list_retain_rows("m", &[], &[], None, 100).await?;
    ensure!(everything.items.len() == 6 && everything.next.is_none());
    Ok(())
}

/// `sqlite::memory:` keeps one connection, so the migrated schema stays.
#[tokio::test]
async fn sqlite_in_memory_store_works() -> Result<()> {
    let store = grin_store::Store::open("sqlite::memory:", grin_store::StoreOptions::new(b"s".to_vec())).await?;
    store.create_model(&new_model("m"), ADMIN).await?;
    let request = crate::common::new_request(&store, "m", "k", "t");
    store.create_request(&request).await?;
    let claimed = store
        .claim("w", std::time::Duration::from_secs(5))
        .await?
        .context("claimable")?;
    store.complete_job(claimed.job.id, "w", None).await?;
    ensure!(store.verify_audit().await?.rows > 0);
    Ok(())
}
