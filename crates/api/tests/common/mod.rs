//! Test harness: fresh databases, an app with one key per role, request helpers.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use grin_api::{app, AppState, Limits};
use grin_store::{NewModel, QueueOptions, Role, Store, StoreOptions};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use tower::ServiceExt;
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
}

impl TestDb {
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

    pub async fn store(&self) -> Result<Store> {
        Store::connect(&self.url, self.options())
            .await
            .context("connecting a store")
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
}

pub async fn run<F, Fut>(kind: Kind, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("grin.db").display());
            let db = TestDb { kind, url };
            migrate(&db).await;
            let outcome = tokio::spawn(test(db)).await;
            finish(outcome);
        }
        Kind::Postgres => {
            let admin_url = std::env::var("GRIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
                panic!(
                    "the API tests need Postgres and cannot reach it at {admin_url} ({e}); \
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
    store.close().await;
}

fn finish(outcome: Result<Result<()>, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:?}"),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

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

// ---- the app under test -----------------------------------------------------

pub fn new_model(name: &str) -> NewModel {
    NewModel {
        name: name.to_owned(),
        base_checkpoint: format!("file:///checkpoints/{name}/base"),
        architecture: "LlamaForCausalLM".into(),
        prompt_template: "Question: {question}\nAnswer: ".into(),
        retain_corpus: None,
        holdout_corpus: None,
        default_config: json!({"method": "grin"}),
        gates: json!({}),
        base_files: vec![grin_store::FileEntry {
            path: "model.safetensors".into(),
            sha256: "a".repeat(64),
            bytes: 1234,
        }],
    }
}

/// Test limits: small, so the limit tests stay small; fast SSE polling.
pub fn test_limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        max_items: 5,
        max_text_bytes: 200,
        sse_poll_interval: Duration::from_millis(20),
        ..Limits::default()
    }
}

/// The app with model `m` and one key per role (and a second submitter).
pub struct TestApp {
    pub store: Store,
    pub router: Router,
    pub admin: String,
    pub reader: String,
    pub submitter: String,
    pub submitter2: String,
}

impl TestApp {
    pub async fn new(db: &TestDb) -> Result<TestApp> {
        Self::with_state(db, |s| s).await
    }

    pub async fn with_state(db: &TestDb, f: impl FnOnce(AppState) -> AppState) -> Result<TestApp> {
        let store = db.store().await?;
        store.create_model(&new_model("m"), "test").await?;
        let key = |role: Role, name: &'static str| {
            let store = store.clone();
            async move { store.create_api_key(name, role, "test").await.map(|(_, s)| s) }
        };
        let admin = key(Role::Admin, "admin").await?;
        let reader = key(Role::Reader, "reader").await?;
        let submitter = key(Role::Submitter, "submitter").await?;
        let submitter2 = key(Role::Submitter, "submitter2").await?;
        let state = f(AppState::new(store.clone()).with_limits(test_limits()));
        Ok(TestApp {
            router: app(state),
            store,
            admin,
            reader,
            submitter,
            submitter2,
        })
    }

    pub fn key(&self, role: Role) -> &str {
        match role {
            Role::Admin => &self.admin,
            Role::Reader => &self.reader,
            Role::Submitter => &self.submitter,
        }
    }

    /// Sends a raw request.
    pub async fn raw(&self, req: Request<Body>) -> Result<Resp> {
        let response = self.router.clone().oneshot(req).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// Sends JSON (or nothing) with a key.
    pub async fn call(&self, method: Method, uri: &str, key: Option<&str>, body: Option<Value>) -> Result<Resp> {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&b)?))?,
            None => req.body(Body::empty())?,
        };
        self.raw(req).await
    }

    pub async fn get(&self, uri: &str, key: &str) -> Result<Resp> {
        self.call(Method::GET, uri, Some(key), None).await
    }

    /// Creates a deletion request as the submitter; returns its id.
    pub async fn submit(&self, text: &str) -> Result<Uuid> {
        let r = self
            .call(
                Method::POST,
                "/v1/deletion-requests",
                Some(&self.submitter),
                Some(json!({"model": "m", "items": [{"text": text}]})),
            )
            .await?;
        anyhow::ensure!(r.status == StatusCode::ACCEPTED, "{r:?}");
        Ok(r.body["id"].as_str().context("id")?.parse()?)
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// Asserts a problem+json body with this status.
    pub fn expect_problem(&self, status: u16) -> Result<&Self> {
        anyhow::ensure!(self.status.as_u16() == status, "expected {status}, got {self:?}");
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        anyhow::ensure!(ct == "application/problem+json", "content type {ct:?}: {self:?}");
        anyhow::ensure!(self.body["status"] == status, "problem body {self:?}");
        anyhow::ensure!(self.body["title"].is_string() && self.body["type"].is_string());
        Ok(self)
    }
}
