//! Test harness: fresh databases, stores, raw SQL access and fixtures.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use grin_store::{NewModel, NewRequest, NewVersion, QueueOptions, Store, StoreOptions, VersionStatus};
use serde_json::json;
use sqlx::{Connection, Executor};
use uuid::Uuid;

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const SECRET: &[u8] = b"test-server-secret";

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

/// A fresh, migrated database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    /// For SQLite: the database file.
    pub path: Option<std::path::PathBuf>,
}

impl TestDb {
    /// Test defaults: fast backoff so retries happen within a test.
    pub fn options(&self) -> StoreOptions {
        let mut options = StoreOptions::new(SECRET);
        options.queue = QueueOptions {
            max_attempts: 3,
            max_batch: 16,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
        };
        options
    }

    /// A new store (own connection pool) on this database.
    pub async fn store(&self) -> Result<Store> {
        self.store_with(self.options()).await
    }

    pub async fn store_with(&self, options: StoreOptions) -> Result<Store> {
        Store::connect(&self.url, options).await.context("connecting a store")
    }

    /// Runs raw SQL on a connection of its own, outside the store.
    pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self.kind {
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                conn.execute(sql).await?;
                conn.close().await
            }
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                conn.execute(sql).await?;
                conn.close().await
            }
        }
    }

    /// Every value of every column of every table, as text.
    pub async fn dump(&self) -> Result<String> {
        let mut out = String::new();
        match self.kind {
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
                )
                .fetch_all(&mut conn)
                .await?;
                anyhow::ensure!(tables.len() >= 10, "expected the store's tables, got {tables:?}");
                for table in tables {
                    // A row cast to text renders every column.
                    let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
                        .fetch_all(&mut conn)
                        .await?;
                    out.push_str(&format!("== {table}\n{}\n", rows.join("\n")));
                }
                conn.close().await?;
            }
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let tables: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                        .fetch_all(&mut conn)
                        .await?;
                anyhow::ensure!(tables.len() >= 10, "expected the store's tables, got {tables:?}");
                for table in tables {
                    let columns: Vec<String> =
                        sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                            .fetch_all(&mut conn)
                            .await?;
                    let select = columns
                        .iter()
                        .map(|c| format!("quote(\"{c}\")"))
                        .collect::<Vec<_>>()
                        .join(" || '|' || ");
                    let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {select} FROM \"{table}\""))
                        .fetch_all(&mut conn)
                        .await?;
                    out.push_str(&format!("== {table}\n{}\n", rows.join("\n")));
                }
                conn.close().await?;
                out.push_str(&self.sqlite_file_bytes().await?);
            }
        }
        Ok(out)
    }

    /// SQLite: the raw bytes of the database and WAL files (free pages and
    /// unused cell space included), as lossy text.
    pub async fn sqlite_file_bytes(&self) -> Result<String> {
        let path = self.path.as_ref().context("not a SQLite database")?;
        let mut out = String::new();
        for file in [path.clone(), path.with_extension("db-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        Ok(out)
    }
}

/// Creates a database, runs the test on it, drops the database, and
/// re-raises the test's failure.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("grin.db");
            let url = format!("sqlite://{}?mode=rwc", path.display());
            let db = TestDb {
                kind,
                url,
                path: Some(path),
            };
            migrate(&db).await;
            let outcome = tokio::spawn(test(db)).await;
            finish(outcome);
        }
        Kind::Postgres => {
            let admin_url = std::env::var("GRIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!(
                    "the store tests need Postgres and cannot reach it at {admin_url} ({e}); \
                     start one or set GRIN_TEST_DATABASE_URL"
                )
            });
            let name = format!("grin_test_{}", Uuid::new_v4().simple());
            admin
                .execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("CREATE DATABASE");
            let db = TestDb {
                kind,
                url: with_database(&admin_url, &name),
                path: None,
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
    // Migrating twice is a no-op.
    store.migrate().await.expect("migrate again");
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
fn with_database(admin_url: &str, name: &str) -> String {
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

/// Polls `f` until it yields `Some`, or fails after `timeout`.
pub async fn eventually<T, E, Fut>(timeout: Duration, mut f: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<Option<T>, E>>,
    E: Into<anyhow::Error>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await.map_err(Into::into)? {
            return Ok(v);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
