//! Signed state-change callbacks.
//!
//! A deletion request may name a `callback_url`. Whenever its status
//! changes, the dispatcher POSTs a JSON event there:
//!
//! ```text
//! POST <callback_url>
//! Content-Type: application/json
//! Grin-Event-Id: <request id>:<status>
//! Grin-Timestamp: <unix seconds>
//! Grin-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>
//!
//! {"id": "<request id>:<status>", "type": "deletion_request.status_changed", "request": {...}}
//! ```
//!
//! Receivers verify the signature with [`verify`] (or the snippet in
//! docs/api.md), reject stale timestamps, and de-duplicate by event id:
//! delivery is at least once. Failed deliveries are retried with doubling
//! backoff up to `max_attempts`; each delivery runs in its own task, so
//! nothing waits on a slow receiver.
//!
//! How changes are seen: the dispatcher ([`spawn_callback_dispatcher`])
//! polls the store for the requests it watches: those created through this
//! process, plus, at start-up, every unfinished request with a callback. The
//! worker is never involved, so it is never blocked.
//!
//! Not (yet) here: `https://` receivers (this build has no TLS client; use a
//! local forwarding proxy), and de-duplication across API replicas (each
//! replica that watches a request sends its events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use grin_store::{DeletionRequest, PageRequest, RequestFilter, RequestStatus, Store};
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use uuid::Uuid;

use crate::views::DeletionRequestView;

/// Signing secret and delivery policy.
#[derive(Clone)]
pub struct CallbackSettings {
    /// HMAC-SHA256 key shared with receivers.
    pub secret: Vec<u8>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts per event (the first included).
    pub max_attempts: u32,
    /// Wait after the first failure; doubles per attempt.
    pub backoff_base: Duration,
    /// How often the dispatcher polls watched requests.
    pub poll_interval: Duration,
}

impl CallbackSettings {
    /// Defaults: 10 s timeout, 6 attempts, backoff from 1 s, poll every 2 s.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        CallbackSettings {
            secret: secret.into(),
            timeout: Duration::from_secs(10),
            max_attempts: 6,
            backoff_base: Duration::from_secs(1),
            poll_interval: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for CallbackSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSettings")
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base", &self.backoff_base)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a received signature in constant time, and that the timestamp is
/// within `tolerance` of `now` (unix seconds).
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature: &str, now: i64, tolerance: Duration) -> bool {
    if (now - timestamp).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Whether `url` can receive callbacks (absolute `http://` URL with a host).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("longer than 2048 bytes".into());
    }
    let uri: hyper::Uri = url.parse().map_err(|_| "not a valid URL".to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https callbacks are not supported by this server yet; use http".into()),
        _ => return Err("must be an absolute http:// URL".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

struct Watched {
    url: String,
    status: RequestStatus,
}

struct Inner {
    settings: CallbackSettings,
    watched: Mutex<HashMap<Uuid, Watched>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Tracks requests with callbacks and delivers their events. Cheap to clone.
#[derive(Clone)]
pub struct CallbackHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CallbackHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackHub")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl CallbackHub {
    pub fn new(settings: CallbackSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.timeout));
        CallbackHub {
            inner: Arc::new(Inner {
                settings,
                watched: Mutex::new(HashMap::new()),
                client: Client::builder(TokioExecutor::new()).build(connector),
            }),
        }
    }

    /// Starts following a request (no event for its current status).
    /// A request already followed keeps the status last announced (the
    /// dispatcher's start-up listing must not swallow a change it raced with).
    pub fn watch(&self, request: &DeletionRequest) {
        if let Some(url) = &request.callback_url {
            self.inner
                .watched
                .lock()
                .expect("callback map")
                .entry(request.id)
                .or_insert_with(|| Watched {
                    url: url.clone(),
                    status: request.status,
                });
        }
    }

    /// How many requests are followed.
    pub fn watching(&self) -> usize {
        self.inner.watched.lock().expect("callback map").len()
    }

    /// One poll: sends an event for every watched request whose status
    /// changed, and stops following finished ones. Returns events started.
    pub async fn poll_once(&self, store: &Store) -> usize {
        let ids: Vec<Uuid> = self
            .inner
            .watched
            .lock()
            .expect("callback map")
            .keys()
            .copied()
            .collect();
        let mut sent = 0;
        for id in ids {
            let request = match store.get_request(id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, request_id = %id, "callback poll failed");
                    continue;
                }
            };
            let url = {
                let mut map = self.inner.watched.lock().expect("callback map");
                let Some(w) = map.get_mut(&id) else { continue };
                if w.status == request.status {
                    continue;
                }
                w.status = request.status;
                let url = w.url.clone();
                if request.status.is_terminal() {
                    map.remove(&id);
                }
                url
            };
            let hub = self.clone();
            sent += 1;
            tokio::spawn(async move { hub.deliver(&url, request).await });
        }
        sent
    }

    async fn deliver(&self, url: &str, request: DeletionRequest) {
        let event_id = format!("{}:{}", request.id, request.status);
        let body = serde_json::to_vec(&serde_json::json!({
            "id": event_id,
            "type": "deletion_request.status_changed",
            "request": DeletionRequestView::new(request, None),
        }))
        .unwrap_or_default();
        let s = &self.inner.settings;
        let mut delay = s.backoff_base;
        for attempt in 1..=s.max_attempts.max(1) {
            let ts = chrono::Utc::now().timestamp();
            let req = hyper::Request::post(url)
                .header("content-type", "application/json")
                .header("grin-event-id", &event_id)
                .header("grin-timestamp", ts.to_string())
                .header("grin-signature", sign(&s.secret, ts, &body))
                .body(Full::new(Bytes::from(body.clone())));
            let outcome = match req {
                Ok(req) => match tokio::time::timeout(s.timeout, self.inner.client.request(req)).await {
                    Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                    Ok(Ok(resp)) => Err(format!("status {}", resp.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                },
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    tracing::debug!(event_id, attempt, "callback delivered");
                    return;
                }
                Err(e) => tracing::warn!(event_id, attempt, error = %e, "callback delivery failed"),
            }
            if attempt < s.max_attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(Duration::from_secs(3600));
            }
        }
        tracing::error!(event_id, "callback dropped after the last attempt");
    }
}

/// Follows every unfinished request that has a callback, then polls until
/// the task is aborted.
pub fn spawn_callback_dispatcher(store: Store, hub: CallbackHub) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for status in [
            RequestStatus::Queued,
            RequestStatus::Running,
            RequestStatus::AwaitingApproval,
        ] {
            let filter = RequestFilter {
                status: Some(status),
                ..RequestFilter::default()
            };
            let mut after = None;
            loop {
                match store.list_requests(&filter, PageRequest { after, limit: 1000 }).await {
                    Ok(page) => {
                        page.items.iter().for_each(|r| hub.watch(r));
                        after = page.next;
                        if after.is_none() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "callback dispatcher could not list requests");
                        break;
                    }
                }
            }
        }
        loop {
            hub.poll_once(&store).await;
            tokio::time::sleep(hub.inner.settings.poll_interval).await;
        }
    })
}
