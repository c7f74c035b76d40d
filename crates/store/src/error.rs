//! The crate's error type. Variants are structured so that the HTTP layer can
//! map them to status codes (see [`Error::http_status`]) without reading
//! messages; database constraint violations are recognised by constraint
//! name (Postgres) or error kind (SQLite), never by message text.

use uuid::Uuid;

/// Result alias for the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The entity does not exist.
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },

    /// The entity already exists (e.g. a model name is taken).
    #[error("{entity} {id} already exists")]
    AlreadyExists { entity: &'static str, id: String },

    /// The idempotency key was used before by the same client with a
    /// different request body.
    #[error("idempotency key {idempotency_key:?} was already used by this client for a different request (request {existing_id})")]
    IdempotencyMismatch { idempotency_key: String, existing_id: Uuid },

    /// Moving the alias would bring back data that fulfilled deletion
    /// requests removed. `missing` names those requests.
    #[error("moving alias {alias:?} of model {model:?} to version {version} would undo deletion requests {missing:?}; re-apply them first or name them as re-applied")]
    RollbackRefused {
        model: String,
        alias: String,
        version: i64,
        missing: Vec<Uuid>,
    },

    /// The entity is in a state that does not allow the action.
    #[error("{entity} {id} is {state}: cannot {action}")]
    InvalidState {
        entity: &'static str,
        id: String,
        state: String,
        action: &'static str,
    },

    /// An input value is not acceptable.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },

    /// The job is no longer running under this worker's lease (it expired and
    /// was reaped, was claimed by another worker, or ended). The worker must
    /// stop working on it.
    #[error("job {job_id} is no longer leased to worker {worker_id:?}")]
    LeaseLost { job_id: Uuid, worker_id: String },

    /// Audit verification found a row that does not chain.
    #[error("audit chain broken at seq {seq}: {reason}")]
    AuditChainBroken { seq: i64, reason: String },

    /// A write collided with a uniqueness or foreign-key constraint that the
    /// store did not expect to hit (a concurrent writer, a dangling id).
    /// `constraint` is the constraint's name where the database reports it.
    #[error("conflicting write ({kind}) on constraint {constraint:?}")]
    Constraint {
        kind: &'static str,
        constraint: Option<String>,
    },

    /// The URL's scheme names no supported backend.
    #[error("unsupported database URL scheme {0:?}: expected postgres:// or sqlite:")]
    UnsupportedScheme(String),

    /// Stored data could not be decoded.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// The HTTP status the API should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::NotFound { .. } => 404,
            Error::AlreadyExists { .. }
            | Error::IdempotencyMismatch { .. }
            | Error::RollbackRefused { .. }
            | Error::InvalidState { .. }
            | Error::LeaseLost { .. }
            | Error::Constraint { .. } => 409,
            Error::Invalid { .. } => 422,
            _ => 500,
        }
    }

    /// The name of the violated constraint, for a constraint violation
    /// reported with one.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            Error::Constraint { constraint, .. } => constraint.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let kind = match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => Some("unique"),
                sqlx::error::ErrorKind::ForeignKeyViolation => Some("foreign key"),
                _ => None,
            };
            if let Some(kind) = kind {
                return Error::Constraint {
                    kind,
                    constraint: db.constraint().map(str::to_owned),
                };
            }
        }
        Error::Database(e)
    }
}

/// True when `e` is a unique violation of the named constraint (Postgres
/// reports the name; SQLite reports none, so any unique violation matches).
pub(crate) fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation && db.constraint().is_none_or(|c| c == constraint)
        }
        _ => false,
    }
}
