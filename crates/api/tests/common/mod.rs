//! Test harness: the shared database harness of `grin_store::testing`, and
//! an app with one key per role, request helpers.

use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use grin_api::{app, AppState, Limits};
pub use grin_store::testing::*;
use grin_store::{NewModel, Role, Store};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

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
