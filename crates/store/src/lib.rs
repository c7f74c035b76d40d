//! Durable state of the GRIN service: deletion requests, the job queue, the
//! model registry (versions, manifests, aliases), the corpus / subject index,
//! API keys and the hash-chained audit log.
//!
//! One interface, [`Store`], over two backends chosen by URL: Postgres
//! (`postgres://...`, production: many API replicas and workers share it)
//! and SQLite (`sqlite://path?mode=rwc`, the embedded default). The schema
//! lives in `migrations/postgres` and `migrations/sqlite` and is applied by
//! [`Store::migrate`]. docs/store.md describes the schema, the job state
//! machine, idempotency, the rollback rule and the audit chain format.
//!
//! What this crate does not do: run GRIN, touch checkpoint files, or speak
//! HTTP. It never logs payloads or subject identities; callers pass subject
//! identities only as HMACs ([`Store::hmac`]).
//!
//! Worker loop, in outline:
//!
//! ```no_run
//! # async fn demo(store: grin_store::Store) -> grin_store::Result<()> {
//! use std::time::Duration;
//! let lease = Duration::from_secs(60);
//! let mut waiter = store.work_waiter().await?;
//! loop {
//!     store.reap_expired().await?;
//!     let Some(claimed) = store.claim("worker-1", lease).await? else {
//!         waiter.wait(Duration::from_secs(10)).await;
//!         continue;
//!     };
//!     let payloads = store.job_payloads(claimed.job.id, "worker-1").await?;
//!     // ... run GRIN, calling store.heartbeat(..) well within the lease and
//!     // stopping when it fails or reports cancel_requested ...
//!     # let _ = payloads;
//!     store.complete_job(claimed.job.id, "worker-1", None).await?;
//! }
//! # }
//! ```

use std::time::Duration;

use uuid::Uuid;

pub mod audit;
mod backend;
pub mod digest;
mod error;
/// The database test harness of this crate's, the API's and the worker's
/// tests (feature `testing`, dev-dependencies only).
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use digest::hmac_hex;
pub use error::{Error, Result};
pub use types::*;

use backend::{postgres, sqlite, Ctx};

/// Which database a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Postgres,
    Sqlite,
}

/// Handle to the store. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Postgres(postgres::Ops),
    Sqlite(sqlite::Ops),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_kind())
            .finish_non_exhaustive()
    }
}

/// Calls the same operation on whichever backend the store uses.
macro_rules! delegate {
    ($self:ident.$method:ident($($arg:expr),* $(,)?)) => {
        match &$self.backend {
            Backend::Postgres(ops) => ops.$method($($arg),*).await,
            Backend::Sqlite(ops) => ops.$method($($arg),*).await,
        }
    };
}

impl Store {
    // ---- connection -------------------------------------------------------

    /// Connects to `url`: `postgres://` / `postgresql://` for Postgres,
    /// `sqlite:` for SQLite (e.g. `sqlite://grin.db?mode=rwc` to create the
    /// file; `sqlite::memory:` for a private in-memory database on a single
    /// connection, gone when the store is dropped). Does not migrate; call
    /// [`Store::migrate`].
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Store> {
        let ctx = Ctx::new(options);
        let scheme = url.split(':').next().unwrap_or_default();
        let backend = match scheme {
            "postgres" | "postgresql" => Backend::Postgres(postgres::Ops::connect(url, ctx).await?),
            "sqlite" => Backend::Sqlite(sqlite::Ops::connect(url, ctx).await?),
            other => return Err(Error::UnsupportedScheme(other.to_owned())),
        };
        Ok(Store { backend })
    }

    /// [`Store::connect`] then [`Store::migrate`].
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store> {
        let store = Store::connect(url, options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the embedded migrations that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        delegate!(self.migrate())
    }

    /// The backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        match &self.backend {
            Backend::Postgres(_) => BackendKind::Postgres,
            Backend::Sqlite(_) => BackendKind::Sqlite,
        }
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Postgres(ops) => ops.pool.close().await,
            Backend::Sqlite(ops) => ops.pool.close().await,
        }
    }

    /// HMAC-SHA256 (lowercase hex) of `data` under the server secret: how a
    /// subject identity becomes a `subject_hmac`.
    pub fn hmac(&self, data: &[u8]) -> String {
        match &self.backend {
            Backend::Postgres(ops) => ops.hmac(data),
            Backend::Sqlite(ops) => ops.hmac(data),
        }
    }

    /// The digest a corpus row is keyed by (HMAC of its canonical JSON).
    pub fn row_digest(&self, row: &serde_json::Value) -> String {
        match &self.backend {
            Backend::Postgres(ops) => ops.hmac_json(row),
            Backend::Sqlite(ops) => ops.hmac_json(row),
        }
    }

    // ---- deletion requests ------------------------------------------------

    /// Creates a deletion request and queues it, joining a queued job of the
    /// same model and method overrides that has room (up to
    /// `QueueOptions::max_batch` requests) or starting a new job.
    ///
    /// Idempotent per `(client_id, idempotency_key)`: the same body again
    /// returns the existing request with `false`; a different body is
    /// [`Error::IdempotencyMismatch`]. Concurrent calls create one request.
    pub async fn create_request(&self, new: &NewRequest) -> Result<(DeletionRequest, bool)> {
        delegate!(self.create_request(new))
    }

    /// One request (without its payload).
    pub async fn get_request(&self, id: Uuid) -> Result<DeletionRequest> {
        delegate!(self.get_request(id))
    }

    /// Requests matching `filter`, newest first.
    pub async fn list_requests(&self, filter: &RequestFilter, page: PageRequest) -> Result<Page<DeletionRequest>> {
        delegate!(self.list_requests(filter, page))
    }

    /// Every request a job served (including ones later re-queued elsewhere).
    pub async fn requests_for_job(&self, job_id: Uuid) -> Result<Vec<DeletionRequest>> {
        delegate!(self.requests_for_job(job_id))
    }

    /// Every job that served a request, oldest first (the last is current).
    pub async fn jobs_for_request(&self, request_id: Uuid) -> Result<Vec<Job>> {
        delegate!(self.jobs_for_request(request_id))
    }

    /// Cancels a request. Queued: cancelled at once (its job is cancelled
    /// too when no other request is left in it). Running: the job's
    /// `cancel_requested` flag is set; the worker sees it on its next
    /// heartbeat and calls [`Store::acknowledge_cancel`]. Cancelling a
    /// cancelled request returns it unchanged; other finished requests are
    /// [`Error::InvalidState`].
    #[tracing::instrument(skip_all, fields(request_id = %id))]
    pub async fn cancel_request(&self, id: Uuid, actor: &str) -> Result<DeletionRequest> {
        delegate!(self.cancel_request(id, actor))
    }

    /// Erases the forget payloads of a job's finished requests now (the
    /// digests stay; each erasure is audited). Returns how many were erased.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn purge_payloads_for_job(&self, job_id: Uuid, actor: &str) -> Result<u64> {
        delegate!(self.purge_payloads_for_job(job_id, actor))
    }

    /// Erases the payloads of failed or cancelled requests that finished
    /// more than `window` ago. Run it periodically.
    pub async fn purge_expired(&self, window: Duration, actor: &str) -> Result<u64> {
        delegate!(self.purge_expired(window, actor))
    }

    // ---- queue ------------------------------------------------------------

    /// Claims the oldest runnable job (queued, `run_after` passed, its model
    /// has no running job and no version awaiting approval) for `worker_id`
    /// with a lease of `lease`, and commits at once. Its requests become
    /// `running`; its `base_version_id` is set to what its target alias
    /// points to now. `None` when nothing is runnable.
    ///
    /// `worker_id` must be unique per worker process.
    #[tracing::instrument(skip_all, fields(worker_id = %worker_id, job_id = tracing::field::Empty))]
    pub async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let claimed = delegate!(self.claim(worker_id, lease))?;
        if let Some(c) = &claimed {
            tracing::Span::current().record("job_id", tracing::field::display(c.job.id));
            tracing::info!(attempt = c.job.attempts, requests = c.requests.len(), "claimed job");
        }
        Ok(claimed)
    }

    /// Renews the lease for another `lease` from now. [`Error::LeaseLost`]
    /// when the job is no longer running under this worker: stop work.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn heartbeat(&self, job_id: Uuid, worker_id: &str, lease: Duration) -> Result<Heartbeat> {
        delegate!(self.heartbeat(job_id, worker_id, lease))
    }

    /// Records progress (stage, percent, message) for dashboards.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn update_progress(&self, job_id: Uuid, worker_id: &str, progress: &Progress) -> Result<()> {
        delegate!(self.update_progress(job_id, worker_id, progress))
    }

    /// The forget payloads of the job's running requests. Only the worker
    /// holding the lease may read them.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn job_payloads(&self, job_id: Uuid, worker_id: &str) -> Result<Vec<RequestPayload>> {
        delegate!(self.job_payloads(job_id, worker_id))
    }

    /// Ends a job successfully, in one transaction: registers `version`
    /// (idempotently, keyed by the job), moves the job's target alias to it
    /// when it is published (rollback rule applied), marks the requests it
    /// fulfilled `succeeded` (or `awaiting_approval`) and the others
    /// `nothing_to_forget`, forgets their corpus rows, purges their payloads,
    /// and audits all of it. `None` means nothing was forgotten.
    ///
    /// Calling it again after success returns the same version, so a worker
    /// that lost track of its commit may retry. A version registered earlier
    /// for this job (see [`Store::register_version`]) is reused.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn complete_job(
        &self,
        job_id: Uuid,
        worker_id: &str,
        version: Option<NewVersion>,
    ) -> Result<Option<ModelVersion>> {
        let version = delegate!(self.complete_job(job_id, worker_id, version))?;
        tracing::info!(version = ?version.as_ref().map(|v| v.number), "job succeeded");
        Ok(version)
    }

    /// Ends an attempt with an error. Retryable and attempts left: back to
    /// `queued` with `run_after` = now + exponential backoff with jitter.
    /// Otherwise `failed`, with its requests (their payloads are kept for the
    /// retention window). If cancellation was requested, the job is
    /// cancelled instead. `error` is shown to clients: no payload text in it.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn fail_job(&self, job_id: Uuid, worker_id: &str, error: &str, retryable: bool) -> Result<Job> {
        let job = delegate!(self.fail_job(job_id, worker_id, error, retryable))?;
        tracing::warn!(state = %job.state, attempt = job.attempts, "job attempt failed");
        Ok(job)
    }

    /// The worker hands a running job back without it having failed (it is
    /// shutting down): the job is `queued` again, runnable at once, and the
    /// attempt it was on is not counted. If cancellation was requested, the
    /// job is cancelled instead. `reason` is shown to clients.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn release_job(&self, job_id: Uuid, worker_id: &str, reason: &str) -> Result<Job> {
        let job = delegate!(self.release_job(job_id, worker_id, reason))?;
        tracing::info!(state = %job.state, "job released");
        Ok(job)
    }

    /// The worker stopped a job whose cancellation was requested: the job is
    /// `cancelled`, requests whose client cancelled are `cancelled`, and the
    /// job's other requests are re-queued in a new job.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn acknowledge_cancel(&self, job_id: Uuid, worker_id: &str) -> Result<Job> {
        delegate!(self.acknowledge_cancel(job_id, worker_id))
    }

    /// Cancels a whole job: queued jobs at once, running ones by flag.
    #[tracing::instrument(skip_all, fields(job_id = %job_id))]
    pub async fn cancel_job(&self, job_id: Uuid, actor: &str) -> Result<Job> {
        delegate!(self.cancel_job(job_id, actor))
    }

    /// Returns running jobs whose lease expired to the queue (with backoff),
    /// or fails them when their attempts are spent, or cancels them when
    /// cancellation was requested. Any process may run it, as often as it
    /// likes; returns the jobs it changed.
    pub async fn reap_expired(&self) -> Result<Vec<Job>> {
        let reaped = delegate!(self.reap_expired())?;
        if !reaped.is_empty() {
            tracing::warn!(jobs = reaped.len(), "reaped expired leases");
        }
        Ok(reaped)
    }

    /// One job.
    pub async fn get_job(&self, id: Uuid) -> Result<Job> {
        delegate!(self.get_job(id))
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter, page: PageRequest) -> Result<Page<Job>> {
        delegate!(self.list_jobs(filter, page))
    }

    /// A waiter that idle workers sleep on between claims. Create it once,
    /// before the first claim, so no wake-up is lost between a claim that
    /// found nothing and the wait.
    pub async fn work_waiter(&self) -> Result<WorkWaiter> {
        Ok(match &self.backend {
            Backend::Postgres(ops) => {
                let listener = match ops.listen().await {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN failed; falling back to polling");
                        None
                    }
                };
                WorkWaiter {
                    local: ops.wake_receiver(),
                    listener,
                }
            }
            Backend::Sqlite(ops) => WorkWaiter {
                local: ops.wake_receiver(),
                listener: None,
            },
        })
    }

    // ---- registry ---------------------------------------------------------

    /// Creates a model with its base checkpoint as version 1 and points
    /// `production` at it.
    pub async fn create_model(&self, new: &NewModel, actor: &str) -> Result<Model> {
        delegate!(self.create_model(new, actor))
    }

    /// One model.
    pub async fn get_model(&self, name: &str) -> Result<Model> {
        delegate!(self.get_model(name))
    }

    /// All models by name.
    pub async fn list_models(&self) -> Result<Vec<Model>> {
        delegate!(self.list_models())
    }

    /// Registers a version with its manifest, atomically. With a `job_id`
    /// it is idempotent: a second registration for the same job returns the
    /// first version and `false` (whatever the second one carried).
    pub async fn register_version(&self, new: &NewVersion, actor: &str) -> Result<(ModelVersion, bool)> {
        delegate!(self.register_version(new, actor))
    }

    /// One version with its manifest.
    pub async fn get_version(&self, id: Uuid) -> Result<ModelVersion> {
        delegate!(self.get_version(id))
    }

    /// A version by its number within a model.
    pub async fn get_version_by_number(&self, model: &str, number: i64) -> Result<ModelVersion> {
        delegate!(self.get_version_by_number(model, number))
    }

    /// The version a job published, if any.
    pub async fn version_for_job(&self, job_id: Uuid) -> Result<Option<ModelVersion>> {
        delegate!(self.version_for_job(job_id))
    }

    /// A model's versions, oldest first.
    pub async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>> {
        delegate!(self.list_versions(model))
    }

    /// Points `alias` at a published version, in one transaction with its
    /// audit record. For `production`, the move is refused with
    /// [`Error::RollbackRefused`] when it would undo fulfilled deletion
    /// requests (see docs/store.md, "Rollback rule"), unless every one of
    /// them is listed in `reapplied` — an explicit, audited statement that
    /// they were re-applied.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version_id: Uuid,
        actor: &str,
        reapplied: &[Uuid],
    ) -> Result<Alias> {
        delegate!(self.set_alias(model, alias, version_id, actor, reapplied))
    }

    /// The requests that moving `production` to this version would undo
    /// (empty: the move is allowed).
    pub async fn rollback_check(&self, version_id: Uuid) -> Result<Vec<Uuid>> {
        delegate!(self.rollback_check(version_id))
    }

    /// One alias.
    pub async fn get_alias(&self, model: &str, alias: &str) -> Result<Alias> {
        delegate!(self.get_alias(model, alias))
    }

    /// A model's aliases.
    pub async fn list_aliases(&self, model: &str) -> Result<Vec<Alias>> {
        delegate!(self.list_aliases(model))
    }

    /// Publishes a version that awaited approval: moves its job's target
    /// alias to it and completes its requests (as `complete_job` would have).
    pub async fn approve_version(&self, version_id: Uuid, actor: &str) -> Result<ModelVersion> {
        delegate!(self.approve_version(version_id, actor))
    }

    /// Rejects a version that awaited approval; its requests fail with
    /// `reason` (shown to clients).
    pub async fn reject_version(&self, version_id: Uuid, actor: &str, reason: &str) -> Result<ModelVersion> {
        delegate!(self.reject_version(version_id, actor, reason))
    }

    // ---- corpus -----------------------------------------------------------

    /// Adds retain-corpus rows (idempotent by row digest; a forgotten row is
    /// not added again). Returns how many were new.
    pub async fn insert_corpus_rows(&self, model: &str, rows: &[NewCorpusRow], actor: &str) -> Result<u64> {
        delegate!(self.insert_corpus_rows(model, rows, actor))
    }

    /// The not-yet-forgotten rows about a subject.
    pub async fn rows_for_subject(&self, model: &str, subject_hmac: &str) -> Result<Vec<CorpusRow>> {
        delegate!(self.rows_for_subject(model, subject_hmac))
    }

    /// How many not-yet-forgotten rows are about a subject.
    pub async fn count_rows_for_subject(&self, model: &str, subject_hmac: &str) -> Result<i64> {
        delegate!(self.count_rows_for_subject(model, subject_hmac))
    }

    /// Rows a job may retain: not forgotten, not about `exclude_subjects`,
    /// not equal to `exclude_digests` (the job's own forget set, see
    /// [`Store::row_digest`]). In insertion order, `after` the given row.
    pub async fn list_retain_rows(
        &self,
        model: &str,
        exclude_subjects: &[String],
        exclude_digests: &[String],
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Page<CorpusRow>> {
        delegate!(self.list_retain_rows(model, exclude_subjects, exclude_digests, after, limit))
    }

    // ---- API keys ---------------------------------------------------------

    /// Creates a key; returns it with its secret, which is not stored and
    /// cannot be shown again.
    pub async fn create_api_key(&self, name: &str, role: Role, actor: &str) -> Result<(ApiKey, String)> {
        delegate!(self.create_api_key(name, role, actor))
    }

    /// The live (not revoked) key with this secret.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<ApiKey>> {
        delegate!(self.authenticate(secret))
    }

    /// All keys, revoked ones included.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        delegate!(self.list_api_keys())
    }

    /// Revokes a key (idempotent).
    pub async fn revoke_api_key(&self, id: Uuid, actor: &str) -> Result<ApiKey> {
        delegate!(self.revoke_api_key(id, actor))
    }

    // ---- audit ------------------------------------------------------------

    /// Appends one record to the audit chain. `details` must carry no
    /// personal data (HMAC digests, ids, counts only).
    pub async fn append_audit(&self, entry: AuditEntry) -> Result<()> {
        delegate!(self.append_audit(entry))
    }

    /// Audit records with `seq > after_seq`, in order.
    pub async fn list_audit(&self, filter: &AuditFilter, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        delegate!(self.list_audit(filter, after_seq, limit))
    }

    /// Walks the whole chain. [`Error::AuditChainBroken`] names the first
    /// row whose sequence, link or hash is wrong.
    #[tracing::instrument(skip_all)]
    pub async fn verify_audit(&self) -> Result<AuditHead> {
        delegate!(self.verify_audit())
    }

    // ---- corpus uploads and OpenDSR (issue #9) -----------------------------

    /// Adds corpus rows in one transaction (idempotent by row digest) and
    /// says what happened to them: a row already stored gains the new
    /// subject tags; a row about a subject whose erasure from this model
    /// already succeeded is stored forgotten (see [`CorpusInsert`]).
    pub async fn insert_corpus_batch(&self, model: &str, rows: &[NewCorpusRow], actor: &str) -> Result<CorpusInsert> {
        delegate!(self.insert_corpus_batch(model, rows, actor))
    }

    /// Row counts of a model's corpus.
    pub async fn corpus_stats(&self, model: &str) -> Result<CorpusStats> {
        delegate!(self.corpus_stats(model))
    }

    /// Live rows of a model tagged with any of `subject_hmacs`: their
    /// number, and the first `limit` of them in insertion order.
    pub async fn corpus_rows_for_subjects(
        &self,
        model: &str,
        subject_hmacs: &[String],
        limit: u32,
    ) -> Result<(i64, Vec<CorpusRow>)> {
        delegate!(self.corpus_rows_for_subjects(model, subject_hmacs, limit))
    }

    /// Every live corpus row, of any model, tagged with one of
    /// `subject_hmacs` (one entry per row and matching tag).
    pub async fn subject_rows(&self, subject_hmacs: &[String]) -> Result<Vec<SubjectRowRef>> {
        delegate!(self.subject_rows(subject_hmacs))
    }

    /// Stores an OpenDSR request, idempotently per `(client_id,
    /// subject_request_id)`: the same id and body digest again returns the
    /// stored request with `false`; another body is
    /// [`Error::IdempotencyMismatch`]. Without targets it is stored
    /// `completed` (nothing to forget, audited). Its initial callbacks are
    /// enqueued in the same transaction.
    pub async fn create_opendsr_request(&self, new: &NewOpenDsrRequest, actor: &str) -> Result<(OpenDsrRequest, bool)> {
        delegate!(self.create_opendsr_request(new, actor))
    }

    /// One OpenDSR request by its id.
    pub async fn get_opendsr_request(&self, id: Uuid) -> Result<OpenDsrRequest> {
        delegate!(self.get_opendsr_request(id))
    }

    /// The OpenDSR request with this `subject_request_id` (of this client,
    /// when given; the newest when several clients used the id).
    pub async fn find_opendsr_request(
        &self,
        client_id: Option<&str>,
        subject_request_id: &str,
    ) -> Result<Option<OpenDsrRequest>> {
        delegate!(self.find_opendsr_request(client_id, subject_request_id))
    }

    /// Records the deletion requests made for an OpenDSR request's targets
    /// (one per target, in order). Only the first call links; later calls
    /// return the request unchanged.
    pub async fn link_opendsr_requests(&self, id: Uuid, request_ids: &[Uuid], actor: &str) -> Result<OpenDsrRequest> {
        delegate!(self.link_opendsr_requests(id, request_ids, actor))
    }

    /// Marks a pending OpenDSR request for cancellation (idempotent);
    /// [`Error::InvalidState`] once it left `pending`. The caller cancels
    /// its deletion requests.
    pub async fn request_opendsr_cancel(&self, id: Uuid, actor: &str) -> Result<OpenDsrRequest> {
        delegate!(self.request_opendsr_cancel(id, actor))
    }

    /// Moves an OpenDSR request from `from` to a later status `to` and
    /// enqueues `callbacks`, atomically and audited. `None` when its status
    /// is no longer `from` (someone else moved it).
    pub async fn transition_opendsr(
        &self,
        id: Uuid,
        from: OpenDsrStatus,
        to: OpenDsrStatus,
        callbacks: &[NewCallback],
        details: serde_json::Value,
        actor: &str,
    ) -> Result<Option<OpenDsrRequest>> {
        delegate!(self.transition_opendsr(id, from, to, callbacks, details, actor))
    }

    /// OpenDSR requests not yet completed or cancelled, oldest first.
    pub async fn open_opendsr_requests(&self, limit: u32) -> Result<Vec<OpenDsrRequest>> {
        delegate!(self.open_opendsr_requests(limit))
    }

    /// Deletion requests by id (unknown ids are left out).
    pub async fn deletion_requests_by_ids(&self, ids: &[Uuid]) -> Result<Vec<DeletionRequest>> {
        delegate!(self.deletion_requests_by_ids(ids))
    }

    /// How many corpus rows these deletion requests forgot.
    pub async fn count_rows_forgotten_by(&self, request_ids: &[Uuid]) -> Result<i64> {
        delegate!(self.count_rows_forgotten_by(request_ids))
    }

    /// Claims up to `limit` due callbacks for `lease` (their next attempt
    /// moves to the end of the lease, so a crashed sender's claims come
    /// back): each request's callbacks to one URL go out in order.
    pub async fn claim_opendsr_callbacks(&self, lease: Duration, limit: u32) -> Result<Vec<OpenDsrCallback>> {
        delegate!(self.claim_opendsr_callbacks(lease, limit))
    }

    /// Records how a callback attempt ended (deliveries and give-ups are
    /// audited). A callback already finished is returned unchanged.
    pub async fn finish_opendsr_callback(
        &self,
        id: Uuid,
        outcome: &CallbackOutcome,
        actor: &str,
    ) -> Result<OpenDsrCallback> {
        delegate!(self.finish_opendsr_callback(id, outcome, actor))
    }

    /// An OpenDSR request's callbacks, oldest first.
    pub async fn opendsr_callbacks(&self, opendsr_id: Uuid) -> Result<Vec<OpenDsrCallback>> {
        delegate!(self.opendsr_callbacks(opendsr_id))
    }
}

/// Where idle workers wait for work: Postgres LISTEN/NOTIFY plus in-process
/// wake-ups; callers poll with the timeout as the fallback (and on SQLite,
/// for other processes' work).
pub struct WorkWaiter {
    local: tokio::sync::watch::Receiver<u64>,
    listener: Option<sqlx::postgres::PgListener>,
}

impl std::fmt::Debug for WorkWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkWaiter")
            .field("listening", &self.listener.is_some())
            .finish()
    }
}

impl WorkWaiter {
    /// Waits until work may have been queued or `timeout` passed; `true`
    /// when woken by a notification.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        let local = self.local.changed();
        match &mut self.listener {
            Some(listener) => {
                tokio::select! {
                    r = listener.recv() => match r {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; polling instead");
                            self.listener = None;
                            false
                        }
                    },
                    r = local => r.is_ok(),
                    () = tokio::time::sleep(timeout) => false,
                }
            }
            None => tokio::select! {
                r = local => r.is_ok(),
                () = tokio::time::sleep(timeout) => false,
            },
        }
    }
}
