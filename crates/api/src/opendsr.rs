//! The OpenDSR (formerly OpenGDPR) processor: settings, the processor's
//! signing key and certificate, how an OpenDSR request maps onto deletion
//! requests and statuses, and the dispatcher that delivers signed status
//! callbacks.
//!
//! **Signatures.** Responses to `POST`, `GET` and `DELETE` on the request
//! routes, and every callback, carry
//!
//! ```text
//! X-OpenDSR-Processor-Domain: <processor domain>
//! X-OpenDSR-Signature: base64(RSASSA-PKCS1-v1_5-SHA256(processor key, <raw body>))
//! ```
//!
//! and the same two headers under their OpenGDPR names
//! (`X-OpenGDPR-Processor-Domain`, `X-OpenGDPR-Signature`). The X.509
//! certificate of the key is served at the URL that `/discovery` names in
//! `processor_certificate`. Without a configured key the processor generates
//! a self-signed development certificate on first use and logs a warning:
//! the specification requires a certificate from a trusted CA.
//!
//! **Mapping.** An erasure request's identities become subject tags (see
//! [`crate::identity`]); every `(model, tag)` pair that holds live corpus
//! rows becomes one deletion request (a minimal set of tags per model
//! covering those rows). No rows anywhere: the request is `completed` at
//! once, audited as `opendsr.nothing_to_forget`. The OpenDSR status follows
//! its deletion requests (see [`derive_status`]) and only moves forward;
//! each move is stored with one outbox callback per URL
//! ([`grin_store::Store::transition_opendsr`]). [`spawn_opendsr_dispatcher`]
//! (started by [`crate::serve`]) refreshes open requests and delivers the
//! outbox with retries and doubling backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use grin_store::{
    CallbackOutcome, DeletionRequest, NewCallback, NewRequest, OpenDsrCallback, OpenDsrRequest, OpenDsrStatus,
    OpenDsrTarget, RequestStatus, Store, SubjectRowRef,
};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;
use x509_cert::der::{DecodePem, EncodePem};

/// The OpenDSR API version this processor speaks.
pub const API_VERSION: &str = "1.0";
/// Where the routes live: `{public_url}/opendsr/v1/...`.
pub const BASE_PATH: &str = "/opendsr/v1";
/// The only request type this processor fulfils.
pub const ERASURE: &str = "erasure";
/// Request types of the specification (§6.2).
pub const REQUEST_TYPES: &[&str] = &["access", "portability", "erasure"];

/// Response and callback headers (OpenDSR names, then the older OpenGDPR ones).
pub const DOMAIN_HEADERS: [&str; 2] = ["x-opendsr-processor-domain", "x-opengdpr-processor-domain"];
pub const SIGNATURE_HEADERS: [&str; 2] = ["x-opendsr-signature", "x-opengdpr-signature"];

/// Configuration of the OpenDSR processor.
#[derive(Clone)]
pub struct OpenDsrSettings {
    /// The domain the certificate is issued to, sent in
    /// `X-OpenDSR-Processor-Domain` (e.g. `opendsr.grin.example.com`).
    pub processor_domain: String,
    /// Public base URL of the service (e.g. `https://grin.example.com`); the
    /// certificate URL in `/discovery` is built from it. `None`: from the
    /// request's `Host` header, over `http`.
    pub public_url: Option<String>,
    /// The processor's key and certificate. `None`: a self-signed
    /// development certificate is generated on first use (with a warning).
    pub key: Option<Arc<ProcessorKey>>,
    /// Models an erasure applies to. `None`: every registered model.
    pub models: Option<Vec<String>>,
    /// Added to the receive time for `expected_completion_time`.
    pub expected_completion: Duration,
    /// Per-attempt timeout of a callback.
    pub callback_timeout: Duration,
    /// Attempts per callback (the first included) before giving up.
    pub callback_max_attempts: u32,
    /// Wait after the first failed attempt; doubles up to `callback_backoff_max`.
    pub callback_backoff_base: Duration,
    pub callback_backoff_max: Duration,
    /// How often the dispatcher refreshes open requests and sends due callbacks.
    pub poll_interval: Duration,
    /// Whether [`crate::serve`] starts the dispatcher.
    pub dispatcher_in_serve: bool,
}

impl Default for OpenDsrSettings {
    fn default() -> Self {
        OpenDsrSettings {
            processor_domain: "localhost".into(),
            public_url: None,
            key: None,
            models: None,
            expected_completion: Duration::from_secs(7 * 24 * 3600),
            callback_timeout: Duration::from_secs(10),
            callback_max_attempts: 10,
            callback_backoff_base: Duration::from_secs(5),
            callback_backoff_max: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            dispatcher_in_serve: true,
        }
    }
}

impl std::fmt::Debug for OpenDsrSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDsrSettings")
            .field("processor_domain", &self.processor_domain)
            .field("public_url", &self.public_url)
            .field("key", &self.key.as_ref().map(|k| k.self_signed_dev))
            .field("models", &self.models)
            .field("expected_completion", &self.expected_completion)
            .field("callback_max_attempts", &self.callback_max_attempts)
            .finish_non_exhaustive()
    }
}

/// Errors of the processor key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the processor key is not an RSA private key in PKCS#8 or PKCS#1 PEM")]
    Key,
    #[error("the processor certificate is not an X.509 certificate in PEM: {0}")]
    Certificate(String),
    #[error("the processor certificate does not belong to the processor key")]
    Mismatch,
    #[error("generating the development key failed: {0}")]
    Generate(String),
}

/// The processor's RSA signing key and its X.509 certificate.
pub struct ProcessorKey {
    signing: rsa::pkcs1v15::SigningKey<Sha256>,
    certificate_pem: String,
    /// Generated at start-up, self-signed: for development only.
    pub self_signed_dev: bool,
}

impl std::fmt::Debug for ProcessorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorKey")
            .field("self_signed_dev", &self.self_signed_dev)
            .finish_non_exhaustive()
    }
}

impl ProcessorKey {
    /// A key (RSA, PKCS#8 or PKCS#1 PEM) and its certificate (X.509 PEM,
    /// issued by a CA to the processor domain). Fails when the certificate's
    /// public key is not the key's.
    pub fn from_pem(key_pem: &str, certificate_pem: &str) -> Result<Self, KeyError> {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(key_pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(key_pem))
            .map_err(|_| KeyError::Key)?;
        let cert = x509_cert::Certificate::from_pem(certificate_pem.trim().as_bytes())
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let public = public_key_of(&cert).map_err(KeyError::Certificate)?;
        if public != key.to_public_key() {
            return Err(KeyError::Mismatch);
        }
        Ok(ProcessorKey {
            signing: rsa::pkcs1v15::SigningKey::new(key),
            certificate_pem: certificate_pem.trim().to_owned() + "\n",
            self_signed_dev: false,
        })
    }

    /// A fresh 2048-bit key with a self-signed certificate for `domain`,
    /// valid for a year. For development and tests only: OpenDSR controllers
    /// must not trust self-signed certificates.
    pub fn generate_self_signed(domain: &str) -> Result<Self, KeyError> {
        use std::str::FromStr;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::asn1::Ia5String;
        use x509_cert::ext::pkix::name::GeneralName;
        use x509_cert::ext::pkix::SubjectAltName;
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::{EncodePublicKey, SubjectPublicKeyInfoOwned};
        use x509_cert::time::Validity;

        let err = |e: &dyn std::fmt::Display| KeyError::Generate(e.to_string());
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| err(&e))?;
        let signing = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
        let spki_der = key.to_public_key().to_public_key_der().map_err(|e| err(&e))?;
        let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_bytes()).map_err(|e| err(&e))?;
        let cn = domain.replace([',', '=', '+', '"', '\\', '<', '>', ';'], "-");
        let subject = Name::from_str(&format!("CN={cn},O=GRIN development (self-signed)")).map_err(|e| err(&e))?;
        let serial = SerialNumber::new(&rand::random::<[u8; 16]>().map(|b| b & 0x7f)).map_err(|e| err(&e))?;
        let validity = Validity::from_now(Duration::from_secs(365 * 24 * 3600)).map_err(|e| err(&e))?;
        let profile = Profile::Leaf {
            issuer: subject.clone(),
            enable_key_agreement: false,
            enable_key_encipherment: false,
        };
        let mut builder =
            CertificateBuilder::new(profile, serial, validity, subject, spki, &signing).map_err(|e| err(&e))?;
        let dns = Ia5String::new(&cn).map_err(|e| err(&e))?;
        builder
            .add_extension(&SubjectAltName(vec![GeneralName::DnsName(dns)]))
            .map_err(|e| err(&e))?;
        let cert = builder.build::<rsa::pkcs1v15::Signature>().map_err(|e| err(&e))?;
        let pem = cert.to_pem(x509_cert::der::pem::LineEnding::LF).map_err(|e| err(&e))?;
        Ok(ProcessorKey {
            signing,
            certificate_pem: pem,
            self_signed_dev: true,
        })
    }

    /// `base64(RSASSA-PKCS1-v1_5-SHA256(body))`.
    pub fn sign(&self, body: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.signing.sign(body).to_vec())
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }
}

fn public_key_of(cert: &x509_cert::Certificate) -> Result<rsa::RsaPublicKey, String> {
    use x509_cert::der::Encode;
    use x509_cert::spki::DecodePublicKey;
    let der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    rsa::RsaPublicKey::from_public_key_der(&der).map_err(|_| "not an RSA public key".to_string())
}

/// Checks `X-OpenDSR-Signature` of `body` against a PEM certificate, as a
/// controller does (after validating the certificate itself).
pub fn verify_signature(certificate_pem: &str, body: &[u8], signature_b64: &str) -> bool {
    let Ok(cert) = x509_cert::Certificate::from_pem(certificate_pem.trim().as_bytes()) else {
        return false;
    };
    let Ok(public) = public_key_of(&cert) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
        return false;
    };
    let Ok(signature) = rsa::pkcs1v15::Signature::try_from(raw.as_slice()) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
        .verify(body, &signature)
        .is_ok()
}

struct Inner {
    settings: OpenDsrSettings,
    key: tokio::sync::OnceCell<Arc<ProcessorKey>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// The OpenDSR processor shared by the handlers and the dispatcher. Cheap
/// to clone.
#[derive(Clone)]
pub struct OpenDsr {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OpenDsr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenDsr")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Default for OpenDsr {
    fn default() -> Self {
        OpenDsr::new(OpenDsrSettings::default())
    }
}

/// Actor name in the audit log.
const ACTOR: &str = "opendsr";

impl OpenDsr {
    pub fn new(settings: OpenDsrSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.callback_timeout));
        let key = tokio::sync::OnceCell::new_with(settings.key.clone());
        OpenDsr {
            inner: Arc::new(Inner {
                settings,
                key,
                client: Client::builder(TokioExecutor::new()).build(connector),
            }),
        }
    }

    pub fn settings(&self) -> &OpenDsrSettings {
        &self.inner.settings
    }

    /// The processor key: the configured one, or a self-signed development
    /// key generated on first use.
    pub async fn key(&self) -> Result<Arc<ProcessorKey>, KeyError> {
        let domain = self.inner.settings.processor_domain.clone();
        self.inner
            .key
            .get_or_try_init(|| async move {
                let key = tokio::task::spawn_blocking(move || ProcessorKey::generate_self_signed(&domain))
                    .await
                    .map_err(|e| KeyError::Generate(e.to_string()))??;
                tracing::warn!(
                    domain = %self.inner.settings.processor_domain,
                    "OpenDSR: no processor key configured; generated a self-signed development certificate. \
                     Controllers that validate certificates (as the specification requires) will reject its \
                     signatures: configure a CA-issued key and certificate for production"
                );
                Ok(Arc::new(key))
            })
            .await
            .cloned()
    }

    /// Brings an OpenDSR request up to date: makes its deletion requests if
    /// that has not happened yet, cancels them when cancellation was asked
    /// for, and records (with callbacks) a status its deletion requests
    /// moved it to. Safe to call from any process, any number of times.
    pub async fn refresh(&self, store: &Store, record: OpenDsrRequest) -> grin_store::Result<OpenDsrRequest> {
        let mut record = record;
        if record.status.is_final() {
            return Ok(record);
        }
        if record.resolved_at.is_none() {
            record = resolve(store, &record).await?;
        }
        let mut requests = store.deletion_requests_by_ids(&record.request_ids).await?;
        if record.cancel_requested_at.is_some() {
            let mut cancelled = false;
            for r in &requests {
                if r.status == RequestStatus::Queued || (r.status == RequestStatus::Running && !r.cancel_requested) {
                    match store.cancel_request(r.id, ACTOR).await {
                        Ok(_) | Err(grin_store::Error::InvalidState { .. }) => cancelled = true,
                        Err(e) => return Err(e),
                    }
                }
            }
            if cancelled {
                requests = store.deletion_requests_by_ids(&record.request_ids).await?;
            }
        }
        let computed = derive_status(&requests);
        if computed.rank() <= record.status.rank() {
            return Ok(record);
        }
        let results_count = if computed == OpenDsrStatus::Completed {
            Some(store.count_rows_forgotten_by(&record.request_ids).await?)
        } else {
            None
        };
        let callbacks: Vec<NewCallback> = record
            .status_callback_urls
            .iter()
            .map(|url| NewCallback {
                url: url.clone(),
                body: callback_body(&record, computed, url, results_count),
            })
            .collect();
        let details = json!({"deletion_requests": summary(&requests), "results_count": results_count});
        match store
            .transition_opendsr(record.id, record.status, computed, &callbacks, details, ACTOR)
            .await?
        {
            Some(updated) => {
                tracing::info!(opendsr_id = %updated.id, status = %updated.status, "OpenDSR request status changed");
                Ok(updated)
            }
            // Another process moved it first: read what it recorded.
            None => store.get_opendsr_request(record.id).await,
        }
    }

    /// One round of the dispatcher: refreshes open requests, then sends the
    /// callbacks that are due. Returns how many callbacks were attempted.
    pub async fn dispatch_once(&self, store: &Store) -> usize {
        match store.open_opendsr_requests(500).await {
            Ok(open) => {
                for record in open {
                    let id = record.id;
                    if let Err(e) = self.refresh(store, record).await {
                        tracing::warn!(opendsr_id = %id, error = %e, "refreshing an OpenDSR request failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing open OpenDSR requests failed"),
        }
        let s = &self.inner.settings;
        let lease = s.callback_timeout * 2 + Duration::from_secs(30);
        let due = match store.claim_opendsr_callbacks(lease, 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "claiming OpenDSR callbacks failed");
                return 0;
            }
        };
        let n = due.len();
        let sends = due.into_iter().map(|cb| self.deliver(store, cb));
        futures::future::join_all(sends).await;
        n
    }

    /// One attempt at one callback, and its outcome recorded.
    async fn deliver(&self, store: &Store, cb: OpenDsrCallback) {
        let s = &self.inner.settings;
        let outcome = match self.key().await {
            Err(e) => Err(format!("no processor key: {e}")),
            Ok(key) => self.post(&key, &cb).await,
        };
        let outcome = match outcome {
            Ok(()) => CallbackOutcome::Delivered,
            Err(error) if cb.attempts >= i64::from(s.callback_max_attempts.max(1)) => {
                tracing::error!(opendsr_id = %cb.opendsr_id, callback_id = %cb.id, attempts = cb.attempts, error = %error,
                    "OpenDSR callback given up after its last attempt");
                CallbackOutcome::GiveUp { error }
            }
            Err(error) => {
                let exp = u32::try_from(cb.attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(20);
                let wait = s
                    .callback_backoff_base
                    .saturating_mul(1 << exp)
                    .min(s.callback_backoff_max);
                tracing::warn!(opendsr_id = %cb.opendsr_id, callback_id = %cb.id, attempts = cb.attempts, error = %error,
                    retry_in_ms = wait.as_millis() as u64, "OpenDSR callback failed; will retry");
                let at = Utc::now() + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::MAX);
                CallbackOutcome::Retry { at, error }
            }
        };
        if let Err(e) = store.finish_opendsr_callback(cb.id, &outcome, ACTOR).await {
            tracing::warn!(callback_id = %cb.id, error = %e, "recording an OpenDSR callback attempt failed");
        }
    }

    async fn post(&self, key: &ProcessorKey, cb: &OpenDsrCallback) -> Result<(), String> {
        let s = &self.inner.settings;
        let signature = key.sign(cb.body.as_bytes());
        let mut req = hyper::Request::post(cb.url.as_str()).header("content-type", "application/json");
        for name in DOMAIN_HEADERS {
            req = req.header(name, &s.processor_domain);
        }
        for name in SIGNATURE_HEADERS {
            req = req.header(name, &signature);
        }
        let req = req
            .body(Full::new(Bytes::from(cb.body.clone())))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(s.callback_timeout, self.inner.client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
            Ok(Ok(resp)) => Err(format!("status {}", resp.status())),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// Makes one deletion request per target (idempotently: the idempotency key
/// names the OpenDSR request and the target) and links them.
async fn resolve(store: &Store, record: &OpenDsrRequest) -> grin_store::Result<OpenDsrRequest> {
    let mut ids = Vec::with_capacity(record.targets.len());
    for (i, target) in record.targets.iter().enumerate() {
        let (request, _) = store
            .create_request(&NewRequest {
                client_id: record.client_id.clone(),
                idempotency_key: format!("opendsr:{}:{i}", record.id),
                model_name: target.model_name.clone(),
                subject_hmac: Some(target.subject_hmac.clone()),
                forget_payload: None,
                method_overrides: json!({}),
                callback_url: None,
            })
            .await?;
        ids.push(request.id);
    }
    store.link_opendsr_requests(record.id, &ids, ACTOR).await
}

fn summary(requests: &[DeletionRequest]) -> Value {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for r in requests {
        *by_status.entry(r.status.as_str()).or_default() += 1;
    }
    json!(by_status)
}

/// The OpenDSR status of a set of deletion requests:
///
/// - none (nothing to forget), or all finished with at least one
///   `succeeded` or all `nothing_to_forget`: `completed`;
/// - all finished, all `cancelled` (or cancelled and nothing to forget):
///   `cancelled`;
/// - all `queued`: `pending`;
/// - otherwise (running, awaiting approval, partly finished, or `failed`,
///   which the specification has no status for): `in_progress`.
pub fn derive_status(requests: &[DeletionRequest]) -> OpenDsrStatus {
    if requests.is_empty() {
        return OpenDsrStatus::Completed;
    }
    let all = |f: &dyn Fn(RequestStatus) -> bool| requests.iter().all(|r| f(r.status));
    let any = |s: RequestStatus| requests.iter().any(|r| r.status == s);
    let settled = all(&|s| {
        matches!(
            s,
            RequestStatus::Succeeded | RequestStatus::NothingToForget | RequestStatus::Cancelled
        )
    });
    if settled {
        if any(RequestStatus::Succeeded) || !any(RequestStatus::Cancelled) {
            return OpenDsrStatus::Completed;
        }
        return OpenDsrStatus::Cancelled;
    }
    if all(&|s| s == RequestStatus::Queued) {
        return OpenDsrStatus::Pending;
    }
    OpenDsrStatus::InProgress
}

/// The processor's own status of a request, for the `extensions` of a
/// status response: `failed` when a deletion request failed for good (the
/// OpenDSR status then stays `in_progress`), else the OpenDSR status.
pub fn processor_status(record: &OpenDsrRequest, requests: &[DeletionRequest]) -> &'static str {
    if requests.iter().any(|r| r.status == RequestStatus::Failed) {
        return "failed";
    }
    if requests.iter().any(|r| r.status == RequestStatus::AwaitingApproval) {
        return "awaiting_approval";
    }
    record.status.as_str()
}

/// RFC 3339, UTC, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The callback body (§8.6): no personal data.
pub fn callback_body(record: &OpenDsrRequest, status: OpenDsrStatus, url: &str, results_count: Option<i64>) -> String {
    let mut body = json!({
        "controller_id": record.client_id,
        "expected_completion_time": rfc3339(record.expected_completion_time),
        "status_callback_url": url,
        "subject_request_id": record.subject_request_id,
        "request_status": status.as_str(),
        "api_version": record.api_version,
    });
    if let Some(n) = results_count {
        body["results_count"] = json!(n);
    }
    serde_json::to_string(&body).unwrap_or_default()
}

/// Picks, per model, subject tags whose rows cover every live row of the
/// identities (tags earlier in `preference` first). No rows: no targets.
pub fn choose_targets(rows: &[SubjectRowRef], preference: &[String]) -> Vec<OpenDsrTarget> {
    let mut by_model: BTreeMap<&str, BTreeMap<&str, BTreeSet<Uuid>>> = BTreeMap::new();
    for r in rows {
        by_model
            .entry(r.model_name.as_str())
            .or_default()
            .entry(r.subject_hmac.as_str())
            .or_default()
            .insert(r.row_id);
    }
    let mut targets = Vec::new();
    for (model, tags) in by_model {
        let mut covered: BTreeSet<Uuid> = BTreeSet::new();
        let ordered = preference
            .iter()
            .filter_map(|t| tags.get_key_value(t.as_str()))
            .chain(tags.iter().filter(|(t, _)| !preference.iter().any(|p| p == *t)));
        for (tag, rows) in ordered {
            if rows.iter().any(|r| !covered.contains(r)) {
                covered.extend(rows.iter().copied());
                targets.push(OpenDsrTarget {
                    model_name: model.to_owned(),
                    subject_hmac: (*tag).to_owned(),
                });
            }
        }
    }
    targets
}

/// Refreshes open OpenDSR requests and delivers their callbacks every
/// `poll_interval`, until the task is aborted.
pub fn spawn_opendsr_dispatcher(store: Store, opendsr: OpenDsr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            opendsr.dispatch_once(&store).await;
            tokio::time::sleep(opendsr.settings().poll_interval).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(status: RequestStatus) -> DeletionRequest {
        let now = Utc::now();
        DeletionRequest {
            id: Uuid::now_v7(),
            client_id: "c".into(),
            idempotency_key: "k".into(),
            model_name: "m".into(),
            subject_hmac: None,
            payload_digest: "d".into(),
            method_overrides: json!({}),
            callback_url: None,
            status,
            cancel_requested: false,
            error: None,
            result_version_id: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            purged_at: None,
        }
    }

    #[test]
    fn statuses_map_onto_the_spec() {
        use OpenDsrStatus as O;
        use RequestStatus as R;
        let cases: &[(&[R], O)] = &[
            (&[], O::Completed),
            (&[R::Queued, R::Queued], O::Pending),
            (&[R::Queued, R::Running], O::InProgress),
            (&[R::Succeeded, R::Queued], O::InProgress),
            (&[R::AwaitingApproval], O::InProgress),
            (&[R::Failed, R::Succeeded], O::InProgress),
            (&[R::Succeeded, R::NothingToForget], O::Completed),
            (&[R::NothingToForget], O::Completed),
            (&[R::Cancelled, R::Cancelled], O::Cancelled),
            (&[R::Cancelled, R::Succeeded], O::Completed),
        ];
        for (statuses, want) in cases {
            let requests: Vec<_> = statuses.iter().map(|s| request(*s)).collect();
            assert_eq!(derive_status(&requests), *want, "{statuses:?}");
        }
    }

    #[test]
    fn targets_cover_rows_with_few_tags() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let r = |m: &str, t: &str, id| SubjectRowRef {
            model_name: m.into(),
            subject_hmac: t.into(),
            row_id: id,
        };
        let rows = vec![r("m", "sha", a), r("m", "md5", a), r("m", "md5", b), r("n", "plain", a)];
        let pref = vec!["sha".to_string(), "md5".to_string(), "plain".to_string()];
        let t = choose_targets(&rows, &pref);
        let got: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.model_name.as_str(), t.subject_hmac.as_str()))
            .collect();
        assert_eq!(got, vec![("m", "sha"), ("m", "md5"), ("n", "plain")]);
        let rows = vec![r("m", "sha", a), r("m", "md5", a)];
        assert_eq!(choose_targets(&rows, &pref).len(), 1);
        assert!(choose_targets(&[], &pref).is_empty());
    }

    #[test]
    fn dev_key_signs_and_verifies() {
        let key = ProcessorKey::generate_self_signed("opendsr.example.test").unwrap();
        let sig = key.sign(b"{\"a\":1}");
        assert!(verify_signature(key.certificate_pem(), b"{\"a\":1}", &sig));
        assert!(!verify_signature(key.certificate_pem(), b"{\"a\":2}", &sig));
        let again = ProcessorKey::generate_self_signed("x").unwrap();
        assert!(!verify_signature(again.certificate_pem(), b"{\"a\":1}", &sig));
        assert!(key.certificate_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
