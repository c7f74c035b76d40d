//! Request bodies and response documents of the API. Inputs reject unknown
//! fields; outputs are views of the store's rows (the forget payload is
//! never among them).

use chrono::{DateTime, Utc};
use grin_store::{Alias, AuditRecord, DeletionRequest, FileEntry, Job, Model, ModelVersion};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

// ---- inputs ----------------------------------------------------------------

/// `POST /v1/deletion-requests`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeletionRequest {
    /// The registered model to make forget.
    pub model: String,
    /// What to forget: question-answer pairs or raw texts. May be empty when
    /// `subject` is given.
    #[serde(default)]
    pub items: Vec<ForgetItem>,
    /// A data subject's identity (e.g. an e-mail address), resolved through
    /// the model's corpus index. Stored only as an HMAC; never logged.
    #[serde(default)]
    pub subject: Option<String>,
    /// Per-request method overrides, within the server's bounds.
    #[serde(default)]
    pub method: Option<MethodOverrides>,
    /// `http://` URL that receives a signed POST on every state change.
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// One record to forget: a QA pair (`question` + `answer`) or a raw `text`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgetItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paraphrased_answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbed_answer: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Words whose leakage the evaluation checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
}

/// GRIN method overrides; absent fields keep the model's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodName>,
    /// Fine-tune steps (1 to the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Fine-tune learning rate (0 < lr <= the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// Relative noise σ (0 to the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_sigma: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Unlearning methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    Grin,
    Graddiff,
    Npo,
    Idk,
    Simnpo,
    Ga,
}

/// `POST .../cancel` has no body; `POST .../reject`:
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    /// Shown to the requesters as their requests' error.
    pub reason: String,
}

/// `PUT /v1/models/{name}/aliases/{alias}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAliasBody {
    /// The version number to point the alias at.
    pub version: i64,
    /// Requests the operator states were re-applied (rollback rule).
    #[serde(default)]
    pub reapplied: Vec<Uuid>,
}

/// Filters of `GET /v1/deletion-requests`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestListQuery {
    /// queued, running, succeeded, failed, cancelled, awaiting_approval, nothing_to_forget
    pub status: Option<String>,
    pub model: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// The `next` cursor of the previous page.
    pub after: Option<Uuid>,
    /// Page size (1 to the server's maximum; default 50).
    pub limit: Option<u32>,
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobListQuery {
    /// queued, running, succeeded, failed, cancelled
    pub state: Option<String>,
    pub model: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub after: Option<Uuid>,
    pub limit: Option<u32>,
}

/// Filters of `GET /v1/audit` and `GET /v1/audit/export`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub entity_kind: Option<String>,
    pub entity_id: Option<String>,
    pub action: Option<String>,
    /// Records with a larger `seq` (the `next` cursor of the previous page).
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

// ---- outputs ---------------------------------------------------------------

/// Links of a deletion request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub events: String,
    pub certificate: String,
    pub cancel: String,
}

/// The job currently serving a request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobSummary {
    pub id: Uuid,
    pub state: String,
    pub attempts: i64,
    pub stage: Option<String>,
    pub percent: Option<f64>,
    pub message: Option<String>,
}

/// A deletion request (its forget payload is never shown).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletionRequestView {
    pub id: Uuid,
    pub model: String,
    /// queued, running, succeeded, failed, cancelled, awaiting_approval, nothing_to_forget
    pub status: String,
    /// HMAC of the subject identity, if one was given.
    pub subject_hmac: Option<String>,
    /// HMAC of the forget payload (kept after the payload is erased).
    pub payload_digest: String,
    #[schema(value_type = Object)]
    pub method_overrides: Value,
    pub callback_url: Option<String>,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub result_version_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the forget payload was erased.
    pub purged_at: Option<DateTime<Utc>>,
    /// The current job (on single-request reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSummary>,
    pub links: RequestLinks,
}

impl DeletionRequestView {
    pub fn new(r: DeletionRequest, job: Option<&Job>) -> Self {
        let base = format!("/v1/deletion-requests/{}", r.id);
        DeletionRequestView {
            id: r.id,
            model: r.model_name,
            status: r.status.as_str().to_owned(),
            subject_hmac: r.subject_hmac,
            payload_digest: r.payload_digest,
            method_overrides: r.method_overrides,
            callback_url: r.callback_url,
            cancel_requested: r.cancel_requested,
            error: r.error,
            result_version_id: r.result_version_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            purged_at: r.purged_at,
            job: job.map(|j| JobSummary {
                id: j.id,
                state: j.state.as_str().to_owned(),
                attempts: j.attempts,
                stage: j.progress_stage.clone(),
                percent: j.progress_percent,
                message: j.progress_message.clone(),
            }),
            links: RequestLinks {
                events: format!("{base}/events"),
                certificate: format!("{base}/certificate"),
                cancel: format!("{base}/cancel"),
                self_: base,
            },
        }
    }
}

/// A page of deletion requests, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletionRequestPage {
    pub items: Vec<DeletionRequestView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<Uuid>,
}

/// A job with its progress and timings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub model: String,
    pub target_alias: String,
    #[schema(value_type = Object)]
    pub method_overrides: Value,
    /// queued, running, succeeded, failed, cancelled
    pub state: String,
    pub stage: Option<String>,
    pub percent: Option<f64>,
    pub message: Option<String>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub last_error: Option<String>,
    pub base_version_id: Option<Uuid>,
    pub result_version_id: Option<Uuid>,
    pub run_after: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Run time so far (running) or in total (finished), in seconds.
    pub elapsed_seconds: Option<f64>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        let elapsed_seconds = j.started_at.map(|s| {
            let end = j.finished_at.unwrap_or_else(Utc::now);
            (end - s).num_milliseconds().max(0) as f64 / 1000.0
        });
        JobView {
            id: j.id,
            model: j.model_name,
            target_alias: j.target_alias,
            method_overrides: j.method_overrides,
            state: j.state.as_str().to_owned(),
            stage: j.progress_stage,
            percent: j.progress_percent,
            message: j.progress_message,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            worker_id: j.worker_id,
            cancel_requested: j.cancel_requested,
            last_error: j.last_error,
            base_version_id: j.base_version_id,
            result_version_id: j.result_version_id,
            run_after: j.run_after,
            lease_expires_at: j.lease_expires_at,
            heartbeat_at: j.heartbeat_at,
            created_at: j.created_at,
            updated_at: j.updated_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            elapsed_seconds,
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    pub next: Option<Uuid>,
}

/// A model and its aliases.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelView {
    pub name: String,
    pub base_checkpoint: String,
    pub architecture: String,
    pub prompt_template: String,
    pub retain_corpus: Option<String>,
    pub holdout_corpus: Option<String>,
    #[schema(value_type = Object)]
    pub default_config: Value,
    /// The model's gates: `null` for the default gates, or a list of gate
    /// specs (any JSON value, as the worker accepts).
    pub gates: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Present on single-model reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<AliasView>>,
}

impl ModelView {
    pub fn new(m: Model, aliases: Option<Vec<Alias>>) -> Self {
        ModelView {
            name: m.name,
            base_checkpoint: m.base_checkpoint,
            architecture: m.architecture,
            prompt_template: m.prompt_template,
            retain_corpus: m.retain_corpus,
            holdout_corpus: m.holdout_corpus,
            default_config: m.default_config,
            gates: m.gates,
            created_at: m.created_at,
            updated_at: m.updated_at,
            aliases: aliases.map(|a| a.into_iter().map(AliasView::from).collect()),
        }
    }
}

/// Models by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ModelList {
    pub items: Vec<ModelView>,
}

/// An alias and the version it points to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AliasView {
    pub model: String,
    pub alias: String,
    pub version_id: Uuid,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl From<Alias> for AliasView {
    fn from(a: Alias) -> Self {
        AliasView {
            model: a.model_name,
            alias: a.alias,
            version_id: a.version_id,
            updated_at: a.updated_at,
            updated_by: a.updated_by,
        }
    }
}

/// One file of a version's manifest.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileView {
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
}

impl From<FileEntry> for FileView {
    fn from(f: FileEntry) -> Self {
        FileView {
            path: f.path,
            sha256: f.sha256,
            bytes: f.bytes,
        }
    }
}

/// An immutable model version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    pub id: Uuid,
    pub model: String,
    pub number: i64,
    pub parent_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub location: String,
    #[schema(value_type = Object)]
    pub config: Value,
    pub seed: Option<i64>,
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub has_certificate: bool,
    pub fulfilled_request_ids: Vec<Uuid>,
    /// published, awaiting_approval, rejected
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<String>,
    pub files: Vec<FileView>,
}

impl From<ModelVersion> for VersionView {
    fn from(v: ModelVersion) -> Self {
        VersionView {
            id: v.id,
            model: v.model_name,
            number: v.number,
            parent_id: v.parent_id,
            job_id: v.job_id,
            location: v.location,
            config: v.config,
            seed: v.seed,
            metrics: v.metrics,
            has_certificate: v.certificate.is_some(),
            fulfilled_request_ids: v.fulfilled_request_ids,
            status: v.status.as_str().to_owned(),
            created_at: v.created_at,
            decided_at: v.decided_at,
            decided_by: v.decided_by,
            files: v.files.into_iter().map(FileView::from).collect(),
        }
    }
}

/// A model's versions, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionList {
    pub items: Vec<VersionView>,
}

/// A sealed audit record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecordView {
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

impl From<AuditRecord> for AuditRecordView {
    fn from(r: AuditRecord) -> Self {
        AuditRecordView {
            seq: r.seq,
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            entity_kind: r.entity_kind,
            entity_id: r.entity_id,
            details: r.details,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// A page of audit records in `seq` order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditRecordView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<i64>,
}

/// The result of walking the audit chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditVerification {
    pub valid: bool,
    pub rows: Option<i64>,
    pub head_hash: Option<String>,
    /// The first broken row, when not valid.
    pub broken_seq: Option<i64>,
    pub reason: Option<String>,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

// ---- corpus (issue #9) -------------------------------------------------------

/// An identity in a request body: the OpenDSR identity object. In corpus
/// uploads a bare string (an untyped subject, matched exactly) is accepted
/// too.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityObject {
    /// One of the OpenDSR identity types (see `GET /opendsr/v1/discovery`).
    #[schema(value_type = IdentityType)]
    pub identity_type: String,
    /// The value, or its hex digest for the hashed formats. Stored only as
    /// HMACs; never logged or echoed.
    #[schema(min_length = 1, max_length = 512)]
    pub identity_value: String,
    /// `raw` (default), `sha256`, `md5` or `sha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdentityFormat>)]
    pub identity_format: Option<String>,
}

/// The identity types of the OpenDSR specification (§5.1).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityType {
    ControllerCustomerId,
    AndroidAdvertisingId,
    AndroidId,
    Email,
    FireAdvertisingId,
    IosAdvertisingId,
    IosVendorId,
    MicrosoftAdvertisingId,
    MicrosoftPublisherId,
    RokuPublisherId,
    RokuAdvertisingId,
}

/// How an identity value is encoded (§5.2): in clear, or the hex digest of
/// the normalised value.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityFormat {
    Raw,
    Sha256,
    Md5,
    Sha1,
}

/// Request types of the specification (§6.2); only `erasure` is fulfilled.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SubjectRequestType {
    Erasure,
    Access,
    Portability,
}

/// Regulations of the specification.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Regulation {
    Gdpr,
    Ccpa,
}

/// One line of a corpus upload (JSON Lines): a dataset row (TOFU fields
/// `question`/`answer`/... or `text`, plus any extra fields), optionally
/// tagged with the subjects it concerns. `subject_identities` is removed
/// before the row is stored; the identities are kept only as HMAC tags.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CorpusLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Identity objects, or plain strings for untyped subjects.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub subject_identities: Option<Vec<Value>>,
}

/// What an upload did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CorpusUploadView {
    pub model: String,
    /// Rows read.
    pub received: u64,
    /// New live rows (added to the retain corpus).
    pub inserted: u64,
    /// Rows already stored (by digest); their new subject tags were added.
    pub duplicates: u64,
    /// Rows about a subject already erased from this model: stored
    /// forgotten, never retained.
    pub suppressed: u64,
}

/// Row counts of a model's corpus.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CorpusStatsView {
    pub model: String,
    /// Rows ever stored.
    pub rows: i64,
    /// Live rows: the model's retain corpus.
    pub live: i64,
    /// Rows whose data a fulfilled request erased (digest kept).
    pub forgotten: i64,
}

/// `POST /v1/models/{name}/corpus/lookup`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorpusLookup {
    /// Identity objects (or plain strings), as in uploads.
    #[schema(value_type = Vec<Object>)]
    pub subject_identities: Vec<Value>,
    /// Most rows returned (1 to the server's page maximum; default 50).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A live corpus row.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CorpusRowView {
    pub id: Uuid,
    pub row_digest: String,
    pub created_at: DateTime<Utc>,
    /// The dataset row.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// The live rows about the given identities.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CorpusLookupView {
    pub model: String,
    /// How many live rows concern the identities.
    pub count: i64,
    /// The first of them, oldest first.
    pub rows: Vec<CorpusRowView>,
}

// ---- OpenDSR (issue #9) --------------------------------------------------------

/// An identity type and format the processor accepts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SupportedIdentity {
    pub identity_type: String,
    pub identity_format: String,
}

/// `GET /opendsr/v1/discovery` (OpenDSR §6.3).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiscoveryView {
    pub api_version: String,
    pub supported_identities: Vec<SupportedIdentity>,
    /// `["erasure"]`.
    pub supported_subject_request_types: Vec<String>,
    /// URL of the X.509 certificate (PEM) whose key signs responses and callbacks.
    pub processor_certificate: String,
}

/// An OpenDSR / OpenGDPR request (§7.1). Unknown top-level fields are
/// ignored, as other processors do.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrRequestBody {
    /// `gdpr` or `ccpa` (required on the OpenDSR route, optional on the OpenGDPR one).
    #[schema(value_type = Option<Regulation>)]
    pub regulation: Option<String>,
    /// A lowercase UUID v4 chosen by the controller; the request's identity
    /// here (idempotent: the same id and body again return the same answer).
    pub subject_request_id: Uuid,
    /// `erasure` (`access` and `portability` are refused).
    #[schema(value_type = SubjectRequestType)]
    pub subject_request_type: String,
    /// RFC 3339 time of the data subject's request.
    pub submitted_time: DateTime<Utc>,
    /// At least one identity.
    #[schema(min_items = 1, max_items = 32)]
    pub subject_identities: Vec<IdentityObject>,
    pub api_version: Option<String>,
    /// `http://` URLs that receive a signed callback on every status change.
    #[schema(max_items = 10)]
    pub status_callback_urls: Option<Vec<String>>,
    /// Processor-keyed extensions; under this processor's domain,
    /// `{"models": ["name", ...]}` limits the erasure to those models.
    #[schema(value_type = Option<Object>)]
    pub extensions: Option<Value>,
}

/// `201` to a new (or replayed) request (§7.3); signed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrCreatedView {
    pub controller_id: String,
    pub expected_completion_time: String,
    pub received_time: String,
    /// Base64 of the request body as received. Do not log or store it.
    pub encoded_request: String,
    pub subject_request_id: String,
}

/// A request's status (§8.3); signed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrStatusView {
    pub controller_id: String,
    pub expected_completion_time: String,
    pub subject_request_id: String,
    /// `pending`, `in_progress`, `completed` or `cancelled`.
    pub request_status: String,
    pub api_version: String,
    /// Always null: erasure has no results to download.
    pub results_url: Option<String>,
    /// When completed: corpus rows erased.
    pub results_count: Option<i64>,
    /// Keyed by the processor domain: `status` (this processor's view,
    /// e.g. `failed`, which the specification has no status for) and the
    /// `deletion_request_ids` serving the request.
    #[schema(value_type = Object)]
    pub extensions: Value,
}

/// `202` to a cancellation (§9.2); signed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrCancelledView {
    pub controller_id: String,
    pub subject_request_id: String,
    pub received_time: String,
    pub api_version: String,
}

/// One detail of an OpenDSR error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrErrorDetail {
    /// E.g. `Validation`, `Request`, `Authentication`.
    pub domain: String,
    /// Machine-readable: `required`, `invalid_value`, `unsupported_identity_type`,
    /// `unsupported_identity_format`, `invalid_identity_value`,
    /// `unsupported_request_type`, `duplicate_subject_request_id`, `invalid_state`, ...
    pub reason: String,
    /// Names the field; never contains identity values.
    pub message: String,
}

/// The error object (§7.6).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrErrorObject {
    /// The HTTP status.
    pub code: u16,
    pub message: String,
    pub errors: Vec<OpenDsrErrorDetail>,
}

/// Error body of the OpenDSR routes (§7.5).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenDsrErrorBody {
    pub error: OpenDsrErrorObject,
}
