-- GRIN store schema, SQLite dialect (the embedded default).
-- Keep in step with migrations/postgres/0001_initial.sql (same tables, columns
-- and constraint names) and with docs/store.md.
--
-- Type mapping from the Postgres schema: UUID -> BLOB (16 bytes),
-- TIMESTAMPTZ -> TEXT (RFC 3339, UTC, written by the application at
-- microsecond precision, so text order is time order), JSONB -> TEXT,
-- BOOLEAN -> INTEGER, DOUBLE PRECISION -> REAL. Tables are STRICT so a value
-- of the wrong type is refused instead of stored.

CREATE TABLE models (
    name             TEXT PRIMARY KEY,
    base_checkpoint  TEXT NOT NULL,
    architecture     TEXT NOT NULL,
    prompt_template  TEXT NOT NULL,
    retain_corpus    TEXT,
    holdout_corpus   TEXT,
    default_config   TEXT NOT NULL,
    gates            TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

CREATE TABLE model_versions (
    id                     BLOB PRIMARY KEY,
    model_name             TEXT NOT NULL REFERENCES models (name),
    number                 INTEGER NOT NULL CHECK (number >= 1),
    parent_id              BLOB REFERENCES model_versions (id),
    job_id                 BLOB REFERENCES jobs (id),
    location               TEXT NOT NULL,
    config                 TEXT NOT NULL,
    seed                   INTEGER,
    metrics                TEXT NOT NULL,
    certificate            TEXT,
    fulfilled_request_ids  TEXT NOT NULL,
    status                 TEXT NOT NULL
                           CHECK (status IN ('published', 'awaiting_approval', 'rejected')),
    created_at             TEXT NOT NULL,
    decided_at             TEXT,
    decided_by             TEXT,
    CONSTRAINT model_versions_model_number_key UNIQUE (model_name, number),
    CONSTRAINT model_versions_job_key UNIQUE (job_id)
) STRICT;

CREATE TABLE version_files (
    version_id  BLOB NOT NULL REFERENCES model_versions (id),
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (version_id, path)
) STRICT;

CREATE TABLE aliases (
    model_name  TEXT NOT NULL REFERENCES models (name),
    alias       TEXT NOT NULL,
    version_id  BLOB NOT NULL REFERENCES model_versions (id),
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (model_name, alias)
) STRICT;

CREATE TABLE api_keys (
    id             BLOB PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('submitter', 'reader', 'admin')),
    secret_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT,
    CONSTRAINT api_keys_secret_sha256_key UNIQUE (secret_sha256)
) STRICT;

CREATE TABLE deletion_requests (
    id                 BLOB PRIMARY KEY,
    client_id          TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL,
    body_digest        TEXT NOT NULL,
    model_name         TEXT NOT NULL REFERENCES models (name),
    subject_hmac       TEXT,
    forget_payload     TEXT,
    payload_digest     TEXT NOT NULL,
    method_overrides   TEXT NOT NULL,
    callback_url       TEXT,
    status             TEXT NOT NULL
                       CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                         'awaiting_approval', 'nothing_to_forget')),
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    error              TEXT,
    result_version_id  BLOB REFERENCES model_versions (id),
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT,
    purged_at          TEXT,
    CONSTRAINT deletion_requests_idempotency_key UNIQUE (client_id, idempotency_key)
) STRICT;
CREATE INDEX deletion_requests_model ON deletion_requests (model_name, id);
CREATE INDEX deletion_requests_status ON deletion_requests (status, finished_at);
CREATE INDEX deletion_requests_subject ON deletion_requests (subject_hmac);

CREATE TABLE jobs (
    id                 BLOB PRIMARY KEY,
    model_name         TEXT NOT NULL REFERENCES models (name),
    target_alias       TEXT NOT NULL,
    method_overrides   TEXT NOT NULL,
    batch_key          TEXT NOT NULL,
    state              TEXT NOT NULL
                       CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_after          TEXT NOT NULL,
    lease_expires_at   TEXT,
    heartbeat_at       TEXT,
    worker_id          TEXT,
    progress_stage     TEXT,
    progress_percent   REAL,
    progress_message   TEXT,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    last_error         TEXT,
    base_version_id    BLOB REFERENCES model_versions (id),
    result_version_id  BLOB REFERENCES model_versions (id),
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    started_at         TEXT,
    finished_at        TEXT
) STRICT;
CREATE INDEX jobs_claimable ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_model ON jobs (model_name, id);
CREATE UNIQUE INDEX jobs_one_running_per_model ON jobs (model_name) WHERE state = 'running';

CREATE TABLE job_requests (
    job_id      BLOB NOT NULL REFERENCES jobs (id),
    request_id  BLOB NOT NULL REFERENCES deletion_requests (id),
    PRIMARY KEY (job_id, request_id)
) STRICT;
CREATE INDEX job_requests_request ON job_requests (request_id);

CREATE TABLE corpus_rows (
    id             BLOB PRIMARY KEY,
    model_name     TEXT NOT NULL REFERENCES models (name),
    row_digest     TEXT NOT NULL,
    row_data       TEXT,
    subject_hmacs  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    forgotten_at   TEXT,
    forgotten_by   BLOB REFERENCES deletion_requests (id),
    CONSTRAINT corpus_rows_model_digest_key UNIQUE (model_name, row_digest)
) STRICT;

CREATE TABLE corpus_subjects (
    row_id        BLOB NOT NULL REFERENCES corpus_rows (id),
    subject_hmac  TEXT NOT NULL,
    PRIMARY KEY (row_id, subject_hmac)
) STRICT;
CREATE INDEX corpus_subjects_subject ON corpus_subjects (subject_hmac);

CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY CHECK (seq >= 1),
    id           BLOB NOT NULL UNIQUE,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
) STRICT;
CREATE INDEX audit_log_entity ON audit_log (entity_kind, entity_id);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'grin: UPDATE on audit_log is refused: the table is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'grin: DELETE on audit_log is refused: the table is append-only');
END;

CREATE TRIGGER version_files_no_update BEFORE UPDATE ON version_files
BEGIN
    SELECT RAISE(ABORT, 'grin: UPDATE on version_files is refused: the table is append-only');
END;
CREATE TRIGGER version_files_no_delete BEFORE DELETE ON version_files
BEGIN
    SELECT RAISE(ABORT, 'grin: DELETE on version_files is refused: the table is append-only');
END;

CREATE TRIGGER model_versions_immutable
BEFORE UPDATE OF id, model_name, number, parent_id, job_id, location, config, seed, metrics,
                 certificate, fulfilled_request_ids, created_at ON model_versions
BEGIN
    SELECT RAISE(ABORT, 'grin: model versions are immutable (only the approval decision may change)');
END;
CREATE TRIGGER model_versions_no_delete BEFORE DELETE ON model_versions
BEGIN
    SELECT RAISE(ABORT, 'grin: model versions are never deleted');
END;
