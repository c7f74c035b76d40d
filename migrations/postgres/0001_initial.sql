-- GRIN store schema, Postgres dialect.
-- Keep in step with migrations/sqlite/0001_initial.sql (same tables, columns
-- and constraint names) and with docs/store.md.
--
-- Conventions: ids are UUIDv7 (time ordered; list endpoints page on them);
-- every timestamp is written by the application, truncated to microseconds;
-- JSON columns are JSONB; enumerations are TEXT with a CHECK.

CREATE TABLE models (
    name             TEXT PRIMARY KEY,
    base_checkpoint  TEXT NOT NULL,
    architecture     TEXT NOT NULL,
    prompt_template  TEXT NOT NULL,
    retain_corpus    TEXT,
    holdout_corpus   TEXT,
    default_config   JSONB NOT NULL,
    gates            JSONB NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Immutable once written, except for the approval decision (status,
-- decided_at, decided_by): enforced by a trigger below.
CREATE TABLE model_versions (
    id                     UUID PRIMARY KEY,
    model_name             TEXT NOT NULL REFERENCES models (name),
    number                 BIGINT NOT NULL CHECK (number >= 1),
    parent_id              UUID REFERENCES model_versions (id),
    job_id                 UUID,
    location               TEXT NOT NULL,
    config                 JSONB NOT NULL,
    seed                   BIGINT,
    metrics                JSONB NOT NULL,
    certificate            JSONB,
    fulfilled_request_ids  JSONB NOT NULL,
    status                 TEXT NOT NULL
                           CHECK (status IN ('published', 'awaiting_approval', 'rejected')),
    created_at             TIMESTAMPTZ NOT NULL,
    decided_at             TIMESTAMPTZ,
    decided_by             TEXT,
    CONSTRAINT model_versions_model_number_key UNIQUE (model_name, number),
    -- idempotent publish: one version per producing job
    CONSTRAINT model_versions_job_key UNIQUE (job_id)
);

CREATE TABLE version_files (
    version_id  UUID NOT NULL REFERENCES model_versions (id),
    path        TEXT NOT NULL,
    sha256      TEXT NOT NULL CHECK (length(sha256) = 64),
    bytes       BIGINT NOT NULL CHECK (bytes >= 0),
    PRIMARY KEY (version_id, path)
);

CREATE TABLE aliases (
    model_name  TEXT NOT NULL REFERENCES models (name),
    alias       TEXT NOT NULL,
    version_id  UUID NOT NULL REFERENCES model_versions (id),
    updated_at  TIMESTAMPTZ NOT NULL,
    updated_by  TEXT NOT NULL,
    PRIMARY KEY (model_name, alias)
);

CREATE TABLE api_keys (
    id             UUID PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('submitter', 'reader', 'admin')),
    secret_sha256  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    revoked_at     TIMESTAMPTZ,
    CONSTRAINT api_keys_secret_sha256_key UNIQUE (secret_sha256)
);

CREATE TABLE deletion_requests (
    id                 UUID PRIMARY KEY,
    client_id          TEXT NOT NULL,
    idempotency_key    TEXT NOT NULL,
    body_digest        TEXT NOT NULL,
    model_name         TEXT NOT NULL REFERENCES models (name),
    subject_hmac       TEXT,
    forget_payload     JSONB,
    payload_digest     TEXT NOT NULL,
    method_overrides   JSONB NOT NULL,
    callback_url       TEXT,
    status             TEXT NOT NULL
                       CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled',
                                         'awaiting_approval', 'nothing_to_forget')),
    cancel_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    error              TEXT,
    result_version_id  UUID REFERENCES model_versions (id),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    finished_at        TIMESTAMPTZ,
    purged_at          TIMESTAMPTZ,
    CONSTRAINT deletion_requests_idempotency_key UNIQUE (client_id, idempotency_key)
);
CREATE INDEX deletion_requests_model ON deletion_requests (model_name, id);
CREATE INDEX deletion_requests_status ON deletion_requests (status, finished_at);
CREATE INDEX deletion_requests_subject ON deletion_requests (subject_hmac);

CREATE TABLE jobs (
    id                 UUID PRIMARY KEY,
    model_name         TEXT NOT NULL REFERENCES models (name),
    target_alias       TEXT NOT NULL,
    method_overrides   JSONB NOT NULL,
    batch_key          TEXT NOT NULL,
    state              TEXT NOT NULL
                       CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts           BIGINT NOT NULL DEFAULT 0,
    max_attempts       BIGINT NOT NULL CHECK (max_attempts >= 1),
    run_after          TIMESTAMPTZ NOT NULL,
    lease_expires_at   TIMESTAMPTZ,
    heartbeat_at       TIMESTAMPTZ,
    worker_id          TEXT,
    progress_stage     TEXT,
    progress_percent   DOUBLE PRECISION,
    progress_message   TEXT,
    cancel_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    last_error         TEXT,
    base_version_id    UUID REFERENCES model_versions (id),
    result_version_id  UUID REFERENCES model_versions (id),
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    started_at         TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ
);
CREATE INDEX jobs_claimable ON jobs (run_after, id) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_model ON jobs (model_name, id);
-- Each job builds on the version the previous one published: at most one
-- running job per model.
CREATE UNIQUE INDEX jobs_one_running_per_model ON jobs (model_name) WHERE state = 'running';

ALTER TABLE model_versions
    ADD CONSTRAINT model_versions_job_fkey FOREIGN KEY (job_id) REFERENCES jobs (id);

-- Which jobs served which requests (several requests may share one job; a
-- request re-queued after a cancellation gets a row for each job).
CREATE TABLE job_requests (
    job_id      UUID NOT NULL REFERENCES jobs (id),
    request_id  UUID NOT NULL REFERENCES deletion_requests (id),
    PRIMARY KEY (job_id, request_id)
);
CREATE INDEX job_requests_request ON job_requests (request_id);

-- Retain corpus rows and the subjects they mention. A forgotten row keeps
-- its digest (so it cannot be inserted again) but loses its data.
CREATE TABLE corpus_rows (
    id             UUID PRIMARY KEY,
    model_name     TEXT NOT NULL REFERENCES models (name),
    row_digest     TEXT NOT NULL,
    row_data       JSONB,
    subject_hmacs  JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    forgotten_at   TIMESTAMPTZ,
    forgotten_by   UUID REFERENCES deletion_requests (id),
    CONSTRAINT corpus_rows_model_digest_key UNIQUE (model_name, row_digest)
);

CREATE TABLE corpus_subjects (
    row_id        UUID NOT NULL REFERENCES corpus_rows (id),
    subject_hmac  TEXT NOT NULL,
    PRIMARY KEY (row_id, subject_hmac)
);
CREATE INDEX corpus_subjects_subject ON corpus_subjects (subject_hmac);

-- Append-only, hash-chained. `at` and `details` are stored as the exact text
-- that is hashed: hash = sha256_hex(prev_hash || canonical_json(row)).
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY CHECK (seq >= 1),
    id           UUID NOT NULL UNIQUE,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    entity_kind  TEXT NOT NULL,
    entity_id    TEXT,
    details      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_kind, entity_id);

CREATE FUNCTION grin_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'grin: % on % is refused: the table is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION grin_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION grin_refuse_change();

CREATE TRIGGER version_files_append_only
    BEFORE UPDATE OR DELETE ON version_files
    FOR EACH ROW EXECUTE FUNCTION grin_refuse_change();

CREATE FUNCTION grin_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'grin: model versions are never deleted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.id, NEW.model_name, NEW.number, NEW.parent_id, NEW.job_id, NEW.location,
        NEW.config, NEW.seed, NEW.metrics, NEW.certificate, NEW.fulfilled_request_ids,
        NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.model_name, OLD.number, OLD.parent_id, OLD.job_id, OLD.location,
        OLD.config, OLD.seed, OLD.metrics, OLD.certificate, OLD.fulfilled_request_ids,
        OLD.created_at) THEN
        RAISE EXCEPTION 'grin: model versions are immutable (only the approval decision may change)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER model_versions_immutable
    BEFORE UPDATE OR DELETE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION grin_version_immutable();
