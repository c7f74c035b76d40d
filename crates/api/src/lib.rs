//! The GRIN HTTP API: deletion requests, jobs, models and versions, the
//! audit log, Server-Sent Events progress, API-key auth, Prometheus metrics
//! and signed state-change callbacks.
//!
//! [`app`] builds the whole [`Router`] from an [`AppState`], so tests drive
//! it with `tower::ServiceExt::oneshot` and no socket; [`serve`] runs it on a
//! listener. The OpenAPI document ([`openapi`], checked in as `openapi.yaml`)
//! is generated from the handlers' `#[utoipa::path]` annotations, and the
//! role each operation requires is read *from that document* by the auth
//! middleware, so the contract, the router and the access rules cannot drift.
//!
//! What this crate does not do: run GRIN (the worker does), load weights, or
//! keep state of its own beyond metrics and callback bookkeeping. Forget
//! texts and subject identities are never logged; identities are stored only
//! as HMACs ([`grin_store::Store::hmac`]). docs/api.md is the user guide.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::Router;

pub mod auth;
pub mod callbacks;
pub mod error;
pub mod extract;
pub mod identity;
pub mod metrics;
pub mod opendsr;
mod routes;
pub mod views;

pub use callbacks::{spawn_callback_dispatcher, CallbackHub, CallbackSettings};
pub use error::{ApiError, FieldError, Problem, PROBLEM_JSON};
pub use metrics::Metrics;
pub use opendsr::{spawn_opendsr_dispatcher, OpenDsr, OpenDsrSettings, ProcessorKey};
pub use routes::openapi;

/// Configurable limits on what one request may carry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most forget items in one deletion request.
    pub max_items: usize,
    /// Longest text field of an item (question, answer, text, ...), in bytes.
    pub max_text_bytes: usize,
    /// Most keywords / perturbed answers per item.
    pub max_list_len: usize,
    /// Largest page a listing returns.
    pub max_page_size: u32,
    /// Bounds of the method overrides a request may ask for.
    pub max_steps: u32,
    pub max_learning_rate: f64,
    pub max_noise_sigma: f64,
    /// Time one request may take before 503 (SSE and exports stream past it).
    pub request_timeout: Duration,
    /// How often an SSE stream polls the store for changes.
    pub sse_poll_interval: Duration,
    /// Largest corpus upload (`POST /v1/models/{name}/corpus`), in bytes.
    /// Uploads stream: this bounds one request, not memory.
    pub max_corpus_bytes: u64,
    /// Longest line of a corpus upload, in bytes.
    pub max_corpus_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1024 * 1024,
            max_items: 1000,
            max_text_bytes: 16 * 1024,
            max_list_len: 64,
            max_page_size: 500,
            max_steps: 10_000,
            max_learning_rate: 1e-2,
            max_noise_sigma: 1.0,
            request_timeout: Duration::from_secs(30),
            sse_poll_interval: Duration::from_millis(500),
            max_corpus_bytes: 8 * 1024 * 1024 * 1024,
            max_corpus_line_bytes: 1024 * 1024,
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: grin_store::Store,
    pub limits: Arc<Limits>,
    pub metrics: Metrics,
    /// `None`: requests with a `callback_url` are refused (422).
    pub callbacks: Option<CallbackHub>,
    /// The OpenDSR processor (routes under `/opendsr/v1`). By default with
    /// a self-signed development key generated on first use.
    pub opendsr: OpenDsr,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("limits", &self.limits)
            .field("callbacks", &self.callbacks.is_some())
            .field("opendsr", &self.opendsr)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// A state with default limits, fresh metrics, no callbacks and the
    /// OpenDSR processor with default settings.
    pub fn new(store: grin_store::Store) -> Self {
        AppState {
            store,
            limits: Arc::new(Limits::default()),
            metrics: Metrics::new(),
            callbacks: None,
            opendsr: OpenDsr::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Arc::new(limits);
        self
    }

    pub fn with_callbacks(mut self, hub: CallbackHub) -> Self {
        self.callbacks = Some(hub);
        self
    }

    /// Configures the OpenDSR processor (key and certificate, domain, public
    /// URL, models, callback policy).
    pub fn with_opendsr(mut self, settings: OpenDsrSettings) -> Self {
        self.opendsr = OpenDsr::new(settings);
        self
    }
}

impl FromRef<AppState> for grin_store::Store {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// The whole API as a router (no socket): `/v1/...`, `/opendsr/v1/...`, `/healthz`, `/readyz`,
/// `/metrics`.
pub fn app(state: AppState) -> Router {
    routes::build(state)
}

/// Serves [`app`] on `listener` until `shutdown` resolves (graceful: open
/// requests finish; SSE streams are cut). Also runs the OpenDSR callback
/// dispatcher ([`spawn_opendsr_dispatcher`]) unless
/// `OpenDsrSettings::dispatcher_in_serve` is off.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "API listening");
    let dispatcher = state
        .opendsr
        .settings()
        .dispatcher_in_serve
        .then(|| spawn_opendsr_dispatcher(state.store.clone(), state.opendsr.clone()));
    let served = axum::serve(listener, app(state)).with_graceful_shutdown(shutdown).await;
    if let Some(d) = dispatcher {
        d.abort();
    }
    served
}
