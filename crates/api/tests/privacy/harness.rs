//! A live server on a socket, a plain HTTP client, a callback receiver, and
//! an OpenDSR controller written from the specification: it learns the
//! certificate URL from `/discovery`, downloads the certificate, and checks
//! every signature against it (RSA PKCS#1 v1.5, SHA-256, base64, over the
//! raw body) before it trusts a response or a callback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use base64::Engine as _;
use grin_api::{spawn_opendsr_dispatcher, OpenDsr, OpenDsrSettings, ProcessorKey};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde_json::Value;
use sha2::Sha256;
use x509_cert::der::{DecodePem, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use crate::common::{TestApp, TestDb};

/// The processor domain of the tests.
pub const DOMAIN: &str = "opendsr.grin.test";

/// One processor key per test process (RSA key generation takes a moment).
pub fn processor_key() -> Arc<ProcessorKey> {
    static KEY: OnceLock<Arc<ProcessorKey>> = OnceLock::new();
    KEY.get_or_init(|| Arc::new(ProcessorKey::generate_self_signed(DOMAIN).expect("a key")))
        .clone()
}

/// Fast settings: quick polling and retries.
pub fn settings() -> OpenDsrSettings {
    OpenDsrSettings {
        processor_domain: DOMAIN.into(),
        key: Some(processor_key()),
        callback_timeout: Duration::from_secs(2),
        callback_max_attempts: 5,
        callback_backoff_base: Duration::from_millis(50),
        callback_backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        expected_completion: Duration::from_secs(24 * 3600),
        ..OpenDsrSettings::default()
    }
}

/// The API (model `m`, a key per role) on a socket, with the OpenDSR
/// dispatcher running as `grin serve` runs it.
pub struct Live {
    pub t: TestApp,
    pub base: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl Live {
    pub async fn start(db: &TestDb) -> Result<Live> {
        Live::start_with(db, |s| s).await
    }

    pub async fn start_with(db: &TestDb, f: impl FnOnce(grin_api::AppState) -> grin_api::AppState) -> Result<Live> {
        let settings = settings();
        let t = TestApp::with_state(db, |s| f(s.with_opendsr(settings.clone()))).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = t.router.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let dispatcher = spawn_opendsr_dispatcher(t.store.clone(), OpenDsr::new(settings));
        Ok(Live {
            t,
            base,
            tasks: vec![server, dispatcher],
        })
    }

    /// A controller using `key`.
    pub fn controller(&self, key: &str) -> Controller {
        Controller {
            http: Http::new(),
            base: self.base.clone(),
            key: key.to_owned(),
            certificate: None,
        }
    }
}

// ---- plain HTTP ---------------------------------------------------------------

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A 4xx/5xx in the OpenDSR error shape (§7.5) with this status and,
    /// in its first detail, this reason.
    pub fn expect_spec_error(&self, status: u16, reason: &str) -> Result<&Self> {
        ensure!(
            self.status == status,
            "expected {status}, got {} {}",
            self.status,
            self.text()
        );
        ensure!(
            self.header("content-type") == Some("application/json"),
            "content type {:?}",
            self.header("content-type")
        );
        let body = self.json();
        let error = &body["error"];
        ensure!(error["code"] == status, "{body}");
        ensure!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        let details = error["errors"].as_array().context("errors")?;
        ensure!(!details.is_empty(), "{body}");
        for d in details {
            ensure!(
                d["domain"].is_string() && d["reason"].is_string() && d["message"].is_string(),
                "{body}"
            );
        }
        ensure!(
            details.iter().any(|d| d["reason"] == reason),
            "reason {reason:?} missing: {body}"
        );
        Ok(self)
    }
}

impl Http {
    pub fn new() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Reply> {
        let mut req = hyper::Request::builder().method(method).uri(url);
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = self.client.request(req.body(Full::new(Bytes::from(body)))?).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Reply { status, headers, bytes })
    }
}

// ---- the callback receiver --------------------------------------------------------

/// One callback as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// Answer 503 to this many requests before accepting (exercises retries).
    fail_first: AtomicUsize,
    refused: AtomicUsize,
}

/// An HTTP server that records the callbacks POSTed to it.
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(State(state): State<Arc<ReceiverState>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    if state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    StatusCode::ACCEPTED
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Result<Receiver> {
        let state = Arc::new(ReceiverState::default());
        state.fail_first.store(fail_first, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::post(record))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { base, state, task })
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/callbacks/{name}", self.base)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Waits until `n` callbacks arrived at `path`.
    pub async fn wait_for(&self, path: &str, n: usize, timeout: Duration) -> Result<Vec<Received>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| r.path == path).collect();
            if got.len() >= n {
                return Ok(got);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} callbacks at {path} after {timeout:?}, expected {n}: {got:?}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- the controller -----------------------------------------------------------------

/// An OpenDSR controller, from the specification.
pub struct Controller {
    pub http: Http,
    pub base: String,
    pub key: String,
    /// The processor certificate (PEM), after [`Controller::discover`].
    pub certificate: Option<String>,
}

pub const OPENDSR: &str = "opendsr_requests";
pub const OPENGDPR: &str = "opengdpr_requests";

impl Controller {
    fn url(&self, path: &str) -> String {
        format!("{}/opendsr/v1/{path}", self.base)
    }

    /// `GET /discovery` (public), then the certificate it names.
    pub async fn discover(&mut self) -> Result<Value> {
        let r = self
            .http
            .send(Method::GET, &self.url("discovery"), None, None, vec![])
            .await?;
        ensure!(r.status == 200, "{r:?}");
        let doc = r.json();
        let url = doc["processor_certificate"].as_str().context("processor_certificate")?;
        ensure!(url.starts_with("http://"), "{url}");
        let cert = self.http.send(Method::GET, url, None, None, vec![]).await?;
        ensure!(cert.status == 200, "{cert:?}");
        ensure!(cert.header("content-type") == Some("application/x-pem-file"));
        self.certificate = Some(cert.text());
        Ok(doc)
    }

    pub async fn create(&self, route: &str, body: &Value) -> Result<Reply> {
        self.create_raw(route, serde_json::to_vec(body)?).await
    }

    pub async fn create_raw(&self, route: &str, body: Vec<u8>) -> Result<Reply> {
        self.http
            .send(
                Method::POST,
                &self.url(route),
                Some(&self.key),
                Some("application/json"),
                body,
            )
            .await
    }

    pub async fn status(&self, route: &str, id: &str) -> Result<Reply> {
        self.http
            .send(
                Method::GET,
                &self.url(&format!("{route}/{id}")),
                Some(&self.key),
                None,
                vec![],
            )
            .await
    }

    pub async fn cancel(&self, route: &str, id: &str) -> Result<Reply> {
        self.http
            .send(
                Method::DELETE,
                &self.url(&format!("{route}/{id}")),
                Some(&self.key),
                None,
                vec![],
            )
            .await
    }

    /// Checks a signed message (response or callback) as §8.8 says: the
    /// processor domain is the certificate's, and the signature over the
    /// raw body verifies with the certificate's key. Both header names
    /// (OpenDSR and OpenGDPR) must carry the same values.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<()> {
        let pem = self.certificate.as_deref().context("discover first")?;
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let domain = get("x-opendsr-processor-domain").context("X-OpenDSR-Processor-Domain")?;
        ensure!(get("x-opengdpr-processor-domain") == Some(domain));
        ensure!(
            certificate_names(pem)?.iter().any(|n| n == domain),
            "domain {domain} not in the certificate"
        );
        let signature = get("x-opendsr-signature").context("X-OpenDSR-Signature")?;
        ensure!(get("x-opengdpr-signature") == Some(signature));
        ensure!(verify_with_certificate(pem, body, signature)?, "bad signature");
        Ok(())
    }
}

/// The DNS names in a certificate's subjectAltName.
pub fn certificate_names(pem: &str) -> Result<Vec<String>> {
    let cert = x509_cert::Certificate::from_pem(pem.trim().as_bytes())?;
    let Some((_, san)) = cert.tbs_certificate.get::<SubjectAltName>()? else {
        bail!("no subjectAltName");
    };
    Ok(san
        .0
        .iter()
        .filter_map(|n| match n {
            GeneralName::DnsName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect())
}

/// RSASSA-PKCS1-v1_5 with SHA-256, base64 signature, with the public key
/// of an X.509 certificate (PEM).
pub fn verify_with_certificate(pem: &str, body: &[u8], signature_b64: &str) -> Result<bool> {
    let cert = x509_cert::Certificate::from_pem(pem.trim().as_bytes())?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der()?;
    let key = rsa::RsaPublicKey::from_public_key_der(&spki)?;
    let raw = base64::engine::general_purpose::STANDARD.decode(signature_b64)?;
    let signature = Signature::try_from(raw.as_slice())?;
    Ok(VerifyingKey::<Sha256>::new(key).verify(body, &signature).is_ok())
}

/// A fresh lowercase UUID v4.
pub fn srid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Hex MD5.
pub fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// Hex SHA-1.
pub fn sha1_hex(s: &str) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(s.as_bytes()))
}

/// JSON Lines of `rows`.
pub fn jsonl(rows: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        out.extend(serde_json::to_vec(row).expect("json"));
        out.push(b'\n');
    }
    out
}

/// Uploads corpus rows (JSON Lines) as `key`.
pub async fn upload(http: &Http, base: &str, model: &str, key: &str, body: Vec<u8>) -> Result<Reply> {
    http.send(
        Method::POST,
        &format!("{base}/v1/models/{model}/corpus"),
        Some(key),
        Some("application/x-ndjson"),
        body,
    )
    .await
}

/// Corpus look-up as `key`.
pub async fn lookup(http: &Http, base: &str, model: &str, key: &str, identities: Value) -> Result<Reply> {
    http.send(
        Method::POST,
        &format!("{base}/v1/models/{model}/corpus/lookup"),
        Some(key),
        Some("application/json"),
        serde_json::to_vec(&serde_json::json!({"subject_identities": identities, "limit": 500}))?,
    )
    .await
}

/// The callbacks' statuses, after checking each one's signature and body.
pub fn checked_statuses(controller: &Controller, callbacks: &[Received], url: &str, srid: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for cb in callbacks {
        controller.verify(&cb.headers, &cb.body)?;
        // A tampered body fails (the check is not vacuous).
        let mut tampered = cb.body.clone();
        tampered.push(b' ');
        ensure!(controller.verify(&cb.headers, &tampered).is_err());
        ensure!(
            cb.headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json"),
            "{cb:?}"
        );
        let body: Value = serde_json::from_slice(&cb.body)?;
        ensure!(body["subject_request_id"] == srid, "{body}");
        ensure!(body["status_callback_url"] == url, "{body}");
        ensure!(
            body["controller_id"].is_string() && body["expected_completion_time"].is_string(),
            "{body}"
        );
        out.push(body["request_status"].as_str().context("request_status")?.to_owned());
    }
    Ok(out)
}
