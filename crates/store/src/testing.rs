//! Test harness shared by the crates whose tests talk to a real database
//! (this crate's, the API's and the worker's): a fresh, migrated database per
//! test on SQLite and on Postgres, and raw SQL access outside the store.
//!
//! Behind the `testing` feature, for dev-dependencies only.
//!
//! ```text
//! async fn claims_once(db: TestDb) -> anyhow::Result<()> { ... }
//! grin_store::backend_tests!(claims_once);   // sqlite::claims_once, postgres::claims_once
//! ```
//!
//! Postgres is reached at `GRIN_TEST_DATABASE_URL` (default
//! [`DEFAULT_ADMIN_URL`]); a test fails, never skips, when it is down.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{Connection, Executor};
use uuid::Uuid;

use crate::{QueueOptions, Store, StoreOptions};

pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The HMAC secret of every test store.
pub const SECRET: &[u8] = b"test-server-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Generates `sqlite::<test>` and `postgres::<test>` for each named test
/// function `async fn(TestDb) -> anyhow::Result<()>` of the calling module.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::testing::run($crate::testing::Kind::Sqlite, super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    $crate::testing::run($crate::testing::Kind::Postgres, super::$name).await;
                }
            )+
        }
    };
}

/// Store options for tests: [`SECRET`], and a fast backoff so that retries
/// happen within a test.
pub fn store_options() -> StoreOptions {
    let mut options = StoreOptions::new(SECRET);
    options.queue = QueueOptions {
        max_attempts: 3,
        max_batch: 16,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
    };
    options
}

/// A fresh, migrated database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    /// A temporary directory that lives as long as the test (for SQLite it
    /// holds the database file; tests put their files here).
    pub dir: PathBuf,
    /// For SQLite: the database file.
    pub path: Option<PathBuf>,
}

impl TestDb {
    /// A new store (own connection pool) on this database, with
    /// [`store_options`].
    pub async fn store(&self) -> Result<Store> {
        self.store_with(store_options()).await
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

    /// Rows in a table, counted outside the store.
    pub async fn count(&self, table: &str) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        Ok(match self.kind {
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await?;
                conn.close().await?;
                n
            }
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut conn).await?;
                conn.close().await?;
                n
            }
        })
    }

    /// Every value of every column of every table, as text (and, on SQLite,
    /// the raw bytes of the database files), for tests that search the
    /// whole database for personal data.
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
                out.push_str(&self.sqlite_file_bytes()?);
            }
        }
        Ok(out)
    }

    /// SQLite: the raw bytes of the database and WAL files (free pages and
    /// unused cell space included), as lossy text.
    pub fn sqlite_file_bytes(&self) -> Result<String> {
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

/// Creates a database (and a temporary directory), runs the test on it,
/// drops both, and re-raises the test's failure.
pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    match kind {
        Kind::Sqlite => {
            let path = dir.path().join("grin.db");
            let db = TestDb {
                kind,
                url: format!("sqlite://{}?mode=rwc", path.display()),
                dir: dir.path().to_path_buf(),
                path: Some(path),
            };
            migrate(&db).await;
            finish(tokio::spawn(test(db)).await);
        }
        Kind::Postgres => {
            let admin_url = std::env::var("GRIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!(
                    "these tests need Postgres and cannot reach it at {admin_url} ({e}); \
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
                dir: dir.path().to_path_buf(),
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
pub fn with_database(admin_url: &str, name: &str) -> String {
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
