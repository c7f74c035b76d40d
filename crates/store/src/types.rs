//! The entities the store keeps and the inputs that create them. Row types
//! derive `sqlx::FromRow` once for both backends; enumerations are stored as
//! TEXT (see [`text_enum!`]). Forget payloads are deliberately absent from
//! [`DeletionRequest`]: they are read only through
//! [`Store::job_payloads`](crate::Store::job_payloads), by the worker that
//! holds the job's lease.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

use crate::Error;

/// Declares a field-less enum stored as TEXT: `as_str`, `Display`,
/// `FromStr`, serde, and sqlx `Type`/`Encode`/`Decode` for every backend.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::invalid(stringify!($name), format!("unknown value {other:?}"))),
                }
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            str: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <str as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <str as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            &'q str: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&'q str as sqlx::Encode<'q, DB>>::encode(self.as_str(), buf)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            &'r str: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

text_enum! {
    /// Where a deletion request stands.
    RequestStatus {
        /// Waiting for its job to be claimed (also after a retryable failure).
        Queued = "queued",
        /// Its job is running.
        Running = "running",
        /// Fulfilled: a published version forgot the data.
        Succeeded = "succeeded",
        /// The job failed for good; the payload is kept for the retention window.
        Failed = "failed",
        /// Cancelled by the client; the payload is kept for the retention window.
        Cancelled = "cancelled",
        /// A version fulfilling it awaits a reviewer's approval (a gate failed).
        AwaitingApproval = "awaiting_approval",
        /// The job found nothing of it in the model's data (e.g. an unknown subject).
        NothingToForget = "nothing_to_forget",
    }
}

impl RequestStatus {
    /// No further transition happens from this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RequestStatus::Succeeded
                | RequestStatus::Failed
                | RequestStatus::Cancelled
                | RequestStatus::NothingToForget
        )
    }
}

text_enum! {
    /// Where a job stands in the queue. See docs/store.md for the transitions.
    JobState {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// No further transition happens from this state.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

text_enum! {
    /// Whether a model version may be served.
    VersionStatus {
        Published = "published",
        AwaitingApproval = "awaiting_approval",
        Rejected = "rejected",
    }
}

text_enum! {
    /// What an API key may do.
    Role {
        /// Submit deletion requests and read their own.
        Submitter = "submitter",
        /// Read everything.
        Reader = "reader",
        /// Everything, including keys, aliases and approvals.
        Admin = "admin",
    }
}

/// The alias a job's result moves, and the alias that the rollback rule guards.
pub const PRODUCTION: &str = "production";

/// A model the service can make forget.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Model {
    pub name: String,
    /// Location of the base checkpoint (registered as version 1).
    pub base_checkpoint: String,
    pub architecture: String,
    pub prompt_template: String,
    /// Location of the retain corpus file, if any.
    pub retain_corpus: Option<String>,
    /// Location of the holdout corpus file, if any.
    pub holdout_corpus: Option<String>,
    /// Default GRIN configuration for jobs on this model.
    #[sqlx(json)]
    pub default_config: Value,
    /// Quality gates a new version must pass to be published without review.
    #[sqlx(json)]
    pub gates: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input of [`Store::create_model`](crate::Store::create_model).
#[derive(Debug, Clone)]
pub struct NewModel {
    pub name: String,
    pub base_checkpoint: String,
    pub architecture: String,
    pub prompt_template: String,
    pub retain_corpus: Option<String>,
    pub holdout_corpus: Option<String>,
    pub default_config: Value,
    pub gates: Value,
    /// Files of the base checkpoint (may be empty when not yet known).
    pub base_files: Vec<FileEntry>,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct FileEntry {
    /// Path relative to the version's location.
    pub path: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    pub bytes: i64,
}

/// An immutable model version (only `status` and the decision fields change,
/// once, on approval or rejection).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ModelVersion {
    pub id: Uuid,
    pub model_name: String,
    /// 1, 2, 3 ... per model; version 1 is the base checkpoint.
    pub number: i64,
    pub parent_id: Option<Uuid>,
    /// The job that produced it (none for the base checkpoint).
    pub job_id: Option<Uuid>,
    pub location: String,
    #[sqlx(json)]
    pub config: Value,
    pub seed: Option<i64>,
    #[sqlx(json)]
    pub metrics: Value,
    #[sqlx(json(nullable))]
    pub certificate: Option<Value>,
    /// Deletion requests this version fulfilled (not those of its ancestors).
    #[sqlx(json)]
    pub fulfilled_request_ids: Vec<Uuid>,
    pub status: VersionStatus,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    /// The file manifest, sorted by path.
    #[sqlx(skip)]
    pub files: Vec<FileEntry>,
}

/// Input of [`Store::register_version`](crate::Store::register_version) and
/// [`Store::complete_job`](crate::Store::complete_job).
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub model_name: String,
    /// The version it was derived from. `complete_job` fills in the job's
    /// base version when this is `None`.
    pub parent_id: Option<Uuid>,
    /// The producing job; a second registration for the same job returns the
    /// first version (idempotent publish).
    pub job_id: Option<Uuid>,
    pub location: String,
    pub files: Vec<FileEntry>,
    pub config: Value,
    pub seed: Option<i64>,
    pub metrics: Value,
    pub certificate: Option<Value>,
    pub fulfilled_request_ids: Vec<Uuid>,
    /// `Published`, or `AwaitingApproval` when a gate failed.
    pub status: VersionStatus,
}

/// A named pointer to a version (`production`, `staging`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Alias {
    pub model_name: String,
    pub alias: String,
    pub version_id: Uuid,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

/// Input of [`Store::create_request`](crate::Store::create_request).
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Who submits (an API key id, or a name for local tools).
    pub client_id: String,
    /// Unique per client: resubmitting the same body returns the same request.
    pub idempotency_key: String,
    pub model_name: String,
    /// HMAC of the data subject's identity ([`Store::hmac`](crate::Store::hmac)),
    /// for subject-based requests.
    pub subject_hmac: Option<String>,
    /// What to forget (e.g. an array of dataset rows). Personal data: kept
    /// only until the job ends.
    pub forget_payload: Option<Value>,
    /// Per-request overrides of the model's GRIN configuration. Requests are
    /// batched into one job only when their overrides are equal.
    pub method_overrides: Value,
    pub callback_url: Option<String>,
}

/// A deletion request, without its forget payload.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeletionRequest {
    pub id: Uuid,
    pub client_id: String,
    pub idempotency_key: String,
    pub model_name: String,
    pub subject_hmac: Option<String>,
    /// HMAC of the canonical forget payload; kept after the purge.
    pub payload_digest: String,
    #[sqlx(json)]
    pub method_overrides: Value,
    pub callback_url: Option<String>,
    pub status: RequestStatus,
    /// The client asked to cancel while its job was running.
    pub cancel_requested: bool,
    pub error: Option<String>,
    /// The version that fulfilled it (or awaits approval to).
    pub result_version_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the forget payload was erased.
    pub purged_at: Option<DateTime<Utc>>,
}

/// A request's forget payload, as the worker reads it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RequestPayload {
    pub request_id: Uuid,
    pub subject_hmac: Option<String>,
    #[sqlx(json(nullable))]
    pub forget_payload: Option<Value>,
    #[sqlx(json)]
    pub method_overrides: Value,
}

/// A unit of work: run GRIN for one or more requests on one model.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub model_name: String,
    /// The alias the job starts from and, on success, moves.
    pub target_alias: String,
    #[sqlx(json)]
    pub method_overrides: Value,
    pub state: JobState,
    /// Claims so far (the running attempt included).
    pub attempts: i64,
    pub max_attempts: i64,
    /// Not claimable before this instant (backoff).
    pub run_after: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub progress_stage: Option<String>,
    pub progress_percent: Option<f64>,
    pub progress_message: Option<String>,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    /// The version the target alias pointed to when the job was last claimed.
    pub base_version_id: Option<Uuid>,
    pub result_version_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What [`Store::claim`](crate::Store::claim) hands a worker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimedJob {
    pub job: Job,
    /// The requests the job serves (now `running`).
    pub requests: Vec<DeletionRequest>,
}

/// A worker's progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: String,
    /// 0 to 100 (clamped).
    pub percent: f64,
    /// Free text for dashboards. Never put payload text here.
    pub message: Option<String>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Cancellation was requested: the worker should stop and call
    /// [`Store::acknowledge_cancel`](crate::Store::acknowledge_cancel).
    pub cancel_requested: bool,
}

/// An API key (the secret itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A row of a model's retain corpus.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CorpusRow {
    pub id: Uuid,
    pub model_name: String,
    /// HMAC of the canonical row JSON; unique per model.
    pub row_digest: String,
    /// The row; `None` once forgotten.
    #[sqlx(json(nullable))]
    pub row_data: Option<Value>,
    #[sqlx(json)]
    pub subject_hmacs: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub forgotten_at: Option<DateTime<Utc>>,
    pub forgotten_by: Option<Uuid>,
}

/// Input of [`Store::insert_corpus_rows`](crate::Store::insert_corpus_rows).
#[derive(Debug, Clone)]
pub struct NewCorpusRow {
    pub data: Value,
    /// HMACs of the subjects the row is about.
    pub subject_hmacs: Vec<String>,
}

/// A new audit record, before it is sealed into the chain. `details` must
/// not hold personal data: only HMAC digests, ids, counts, states.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub actor: String,
    pub action: String,
    pub entity_kind: String,
    pub entity_id: Option<String>,
    pub details: Value,
}

impl AuditEntry {
    /// A record about `entity_kind` `entity_id`.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        entity_kind: impl Into<String>,
        entity_id: impl ToString,
        details: Value,
    ) -> Self {
        AuditEntry {
            actor: actor.into(),
            action: action.into(),
            entity_kind: entity_kind.into(),
            entity_id: Some(entity_id.to_string()),
            details,
        }
    }
}

/// A sealed audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// 1, 2, 3 ... without gaps.
    pub seq: i64,
    pub id: Uuid,
    /// RFC 3339 UTC with microseconds, exactly as hashed.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub entity_kind: String,
    pub entity_id: Option<String>,
    /// Canonical JSON text, exactly as hashed.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of a successful audit verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditHead {
    /// Rows verified.
    pub rows: i64,
    /// Hash of the last row (the genesis hash when the log is empty). Publish
    /// it elsewhere to detect truncation of the tail.
    pub head_hash: String,
}

/// Filters for [`Store::list_requests`](crate::Store::list_requests).
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub status: Option<RequestStatus>,
    pub model_name: Option<String>,
    pub client_id: Option<String>,
    pub subject_hmac: Option<String>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
}

/// Filters for [`Store::list_jobs`](crate::Store::list_jobs).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub model_name: Option<String>,
    /// Inclusive.
    pub created_from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
}

/// Filters for [`Store::list_audit`](crate::Store::list_audit).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    pub action: Option<String>,
}

/// A page request: newest first, starting after the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// The `next` cursor of the previous page.
    pub after: Option<Uuid>,
    /// Items per page (1 to 1000).
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            after: None,
            limit: 100,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<Uuid>,
}

/// Queue tuning.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Claims a job gets before it fails for good.
    pub max_attempts: i64,
    /// Most requests batched into one job.
    pub max_batch: i64,
    /// Backoff after the first failed attempt; doubles with each attempt.
    pub backoff_base: Duration,
    /// Upper bound of the backoff.
    pub backoff_max: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_attempts: 3,
            max_batch: 16,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// Connection and behaviour options of a [`Store`](crate::Store).
#[derive(Clone)]
pub struct StoreOptions {
    /// Server secret for HMAC digests of personal data. Keep it stable:
    /// digests made under another secret never match.
    pub hmac_secret: Vec<u8>,
    pub queue: QueueOptions,
    /// Pool size.
    pub max_connections: u32,
    /// How long a SQLite writer waits for the database lock.
    pub sqlite_busy_timeout: Duration,
}

impl StoreOptions {
    /// Defaults with the given HMAC secret.
    pub fn new(hmac_secret: impl Into<Vec<u8>>) -> Self {
        StoreOptions {
            hmac_secret: hmac_secret.into(),
            queue: QueueOptions::default(),
            max_connections: 10,
            sqlite_busy_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("hmac_secret", &"<redacted>")
            .field("queue", &self.queue)
            .field("max_connections", &self.max_connections)
            .field("sqlite_busy_timeout", &self.sqlite_busy_timeout)
            .finish()
    }
}

// ---- corpus uploads ---------------------------------------------------------

/// What [`Store::insert_corpus_batch`](crate::Store::insert_corpus_batch) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CorpusInsert {
    /// New rows, live (part of the retain corpus).
    pub inserted: u64,
    /// Rows whose digest was already stored (their new subject tags, if
    /// any, were added to the stored row).
    pub duplicates: u64,
    /// Rows about a subject whose erasure from this model already succeeded:
    /// stored already forgotten (digest and tags only), so they never enter
    /// a retain set.
    pub suppressed: u64,
}

/// Row counts of a model's corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CorpusStats {
    /// Every row ever stored (forgotten ones included).
    pub rows: i64,
    /// Rows not forgotten: the retain corpus.
    pub live: i64,
    /// Rows whose data was erased by a fulfilled request.
    pub forgotten: i64,
}

/// A live corpus row tagged with a subject tag (see
/// [`Store::subject_rows`](crate::Store::subject_rows)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SubjectRowRef {
    pub model_name: String,
    pub subject_hmac: String,
    pub row_id: Uuid,
}

// ---- OpenDSR ----------------------------------------------------------------

text_enum! {
    /// Status of an OpenDSR (OpenGDPR) request, as the spec names them.
    OpenDsrStatus {
        /// Received; no work started yet.
        Pending = "pending",
        /// Some of its deletion requests are running, awaiting approval,
        /// finished while others are not, or failed (the spec has no failure
        /// status: a failed request stays here until an operator acts).
        InProgress = "in_progress",
        /// Every deletion request finished and the data is gone (or there
        /// was nothing to forget).
        Completed = "completed",
        /// Cancelled while pending.
        Cancelled = "cancelled",
    }
}

impl OpenDsrStatus {
    /// No further transition happens from this status.
    pub fn is_final(self) -> bool {
        matches!(self, OpenDsrStatus::Completed | OpenDsrStatus::Cancelled)
    }

    /// Order of progress: statuses only ever move forward.
    pub fn rank(self) -> u8 {
        match self {
            OpenDsrStatus::Pending => 0,
            OpenDsrStatus::InProgress => 1,
            OpenDsrStatus::Completed | OpenDsrStatus::Cancelled => 2,
        }
    }
}

/// One deletion request an OpenDSR request resolves to: a model and one
/// subject tag (HMAC) whose rows it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct OpenDsrTarget {
    pub model_name: String,
    pub subject_hmac: String,
}

/// A status callback to enqueue: where, and the exact JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCallback {
    pub url: String,
    /// Must hold no personal data (ids, times, statuses, counts).
    pub body: String,
}

/// Input of [`Store::create_opendsr_request`](crate::Store::create_opendsr_request).
#[derive(Debug, Clone)]
pub struct NewOpenDsrRequest {
    /// The controller (API key id).
    pub client_id: String,
    pub subject_request_id: String,
    /// HMAC of the canonical request body: the same `subject_request_id`
    /// with another body is [`Error::IdempotencyMismatch`].
    pub body_digest: String,
    pub regulation: Option<String>,
    pub subject_request_type: String,
    pub api_version: String,
    pub submitted_time: DateTime<Utc>,
    pub received_time: DateTime<Utc>,
    pub expected_completion_time: DateTime<Utc>,
    pub status_callback_urls: Vec<String>,
    /// Empty: nothing to forget; the request is stored `completed`.
    pub targets: Vec<OpenDsrTarget>,
    /// Callbacks announcing the initial status (`pending`, or `completed`
    /// when there are no targets).
    pub initial_callbacks: Vec<NewCallback>,
}

/// An OpenDSR request as stored (no identities: only their tags).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OpenDsrRequest {
    pub id: Uuid,
    pub client_id: String,
    pub subject_request_id: String,
    pub body_digest: String,
    pub regulation: Option<String>,
    pub subject_request_type: String,
    pub api_version: String,
    pub submitted_time: DateTime<Utc>,
    pub received_time: DateTime<Utc>,
    pub expected_completion_time: DateTime<Utc>,
    #[sqlx(json)]
    pub status_callback_urls: Vec<String>,
    #[sqlx(json)]
    pub targets: Vec<OpenDsrTarget>,
    /// The deletion requests made for `targets`, in target order.
    #[sqlx(json)]
    pub request_ids: Vec<Uuid>,
    /// The last status announced (callbacks were enqueued for it).
    pub status: OpenDsrStatus,
    /// When its deletion requests were created (`None`: not yet).
    pub resolved_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A queued status callback.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OpenDsrCallback {
    pub id: Uuid,
    pub opendsr_id: Uuid,
    pub url: String,
    pub request_status: OpenDsrStatus,
    pub body: String,
    /// Attempts started (a claim counts as one).
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Given up after the last attempt.
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// How a callback attempt ended (see
/// [`Store::finish_opendsr_callback`](crate::Store::finish_opendsr_callback)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    Delivered,
    /// Try again at `at`.
    Retry {
        at: DateTime<Utc>,
        error: String,
    },
    /// The last attempt failed.
    GiveUp {
        error: String,
    },
}
