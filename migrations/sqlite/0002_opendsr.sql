-- OpenDSR (formerly OpenGDPR) processor requests and their callback outbox,
-- SQLite dialect. Keep in step with migrations/postgres/0002_opendsr.sql
-- (same tables, columns and constraint names) and docs/store.md.
--
-- No personal data is stored here: identities appear only as HMAC tags,
-- request bodies only as an HMAC digest; callback bodies carry ids, times,
-- statuses and counts.

CREATE TABLE opendsr_requests (
    id                        BLOB PRIMARY KEY,
    client_id                 TEXT NOT NULL,
    subject_request_id        TEXT NOT NULL,
    body_digest               TEXT NOT NULL,
    regulation                TEXT,
    subject_request_type      TEXT NOT NULL,
    api_version               TEXT NOT NULL,
    submitted_time            TEXT NOT NULL,
    received_time             TEXT NOT NULL,
    expected_completion_time  TEXT NOT NULL,
    status_callback_urls      TEXT NOT NULL,
    targets                   TEXT NOT NULL,
    request_ids               TEXT NOT NULL,
    status                    TEXT NOT NULL
                              CHECK (status IN ('pending', 'in_progress', 'completed', 'cancelled')),
    resolved_at               TEXT,
    cancel_requested_at       TEXT,
    created_at                TEXT NOT NULL,
    updated_at                TEXT NOT NULL,
    CONSTRAINT opendsr_requests_subject_request_key UNIQUE (client_id, subject_request_id)
) STRICT;
CREATE INDEX opendsr_requests_status ON opendsr_requests (status, id);
CREATE INDEX opendsr_requests_subject_request ON opendsr_requests (subject_request_id);

CREATE TABLE opendsr_callbacks (
    id               BLOB PRIMARY KEY,
    opendsr_id       BLOB NOT NULL REFERENCES opendsr_requests (id),
    url              TEXT NOT NULL,
    request_status   TEXT NOT NULL
                     CHECK (request_status IN ('pending', 'in_progress', 'completed', 'cancelled')),
    body             TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    delivered_at     TEXT,
    failed_at        TEXT,
    last_error       TEXT,
    created_at       TEXT NOT NULL
) STRICT;
CREATE INDEX opendsr_callbacks_due ON opendsr_callbacks (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX opendsr_callbacks_request ON opendsr_callbacks (opendsr_id, id);
