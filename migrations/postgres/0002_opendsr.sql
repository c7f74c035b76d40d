-- OpenDSR (formerly OpenGDPR) processor requests and their callback outbox.
-- Keep in step with migrations/sqlite/0002_opendsr.sql and docs/store.md.
--
-- No personal data is stored here: a request's identities appear only as
-- HMAC tags (in `targets`, the (model, tag) pairs it resolved to), its body
-- only as an HMAC digest (`body_digest`, for idempotency on
-- subject_request_id); callback bodies carry ids, times, statuses and counts.

CREATE TABLE opendsr_requests (
    id                        UUID PRIMARY KEY,
    -- the controller: the API key that submitted it
    client_id                 TEXT NOT NULL,
    subject_request_id        TEXT NOT NULL,
    body_digest               TEXT NOT NULL,
    regulation                TEXT,
    subject_request_type      TEXT NOT NULL,
    api_version               TEXT NOT NULL,
    submitted_time            TIMESTAMPTZ NOT NULL,
    received_time             TIMESTAMPTZ NOT NULL,
    expected_completion_time  TIMESTAMPTZ NOT NULL,
    status_callback_urls      JSONB NOT NULL,
    targets                   JSONB NOT NULL,
    -- the deletion requests made for `targets` (set once, with resolved_at)
    request_ids               JSONB NOT NULL,
    status                    TEXT NOT NULL
                              CHECK (status IN ('pending', 'in_progress', 'completed', 'cancelled')),
    resolved_at               TIMESTAMPTZ,
    cancel_requested_at       TIMESTAMPTZ,
    created_at                TIMESTAMPTZ NOT NULL,
    updated_at                TIMESTAMPTZ NOT NULL,
    CONSTRAINT opendsr_requests_subject_request_key UNIQUE (client_id, subject_request_id)
);
CREATE INDEX opendsr_requests_status ON opendsr_requests (status, id);
CREATE INDEX opendsr_requests_subject_request ON opendsr_requests (subject_request_id);

-- Status callbacks to deliver (an outbox): one row per state change and URL,
-- claimed with a lease, retried with backoff until delivered or given up.
CREATE TABLE opendsr_callbacks (
    id               UUID PRIMARY KEY,
    opendsr_id       UUID NOT NULL REFERENCES opendsr_requests (id),
    url              TEXT NOT NULL,
    request_status   TEXT NOT NULL
                     CHECK (request_status IN ('pending', 'in_progress', 'completed', 'cancelled')),
    body             TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    delivered_at     TIMESTAMPTZ,
    failed_at        TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX opendsr_callbacks_due ON opendsr_callbacks (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX opendsr_callbacks_request ON opendsr_callbacks (opendsr_id, id);
