-- Times are Unix epoch milliseconds (BIGINT) and flags 0/1 so one SQL text serves SQLite and
-- PostgreSQL; JSON is stored as text.

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    status             TEXT NOT NULL,
    mode               TEXT NOT NULL,
    dry_run            BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    started_at_ms      BIGINT,
    finished_at_ms     BIGINT,
    updated_at_ms      BIGINT NOT NULL,
    planned            BIGINT NOT NULL DEFAULT 0,
    lease_owner        TEXT,
    lease_until_ms     BIGINT,
    c_total            BIGINT NOT NULL DEFAULT 0,
    c_pending          BIGINT NOT NULL DEFAULT 0,
    c_rejected         BIGINT NOT NULL DEFAULT 0,
    c_applied          BIGINT NOT NULL DEFAULT 0,
    c_unchanged        BIGINT NOT NULL DEFAULT 0,
    c_not_found        BIGINT NOT NULL DEFAULT 0,
    c_failed           BIGINT NOT NULL DEFAULT 0,
    c_cancelled        BIGINT NOT NULL DEFAULT 0,
    c_planned          BIGINT NOT NULL DEFAULT 0,
    users_total        BIGINT NOT NULL DEFAULT 0,
    users_changed      BIGINT NOT NULL DEFAULT 0,
    users_unchanged    BIGINT NOT NULL DEFAULT 0,
    scim_requests      BIGINT NOT NULL DEFAULT 0,
    scim_retries       BIGINT NOT NULL DEFAULT 0,
    scim_rate_limited  BIGINT NOT NULL DEFAULT 0,
    paused_reason      TEXT,
    error              TEXT,
    estimate           TEXT,
    approval           TEXT,
    policy_fingerprint TEXT,
    request_id         TEXT
);
CREATE INDEX jobs_status_idx ON jobs (status, id);

CREATE TABLE items (
    job_id              TEXT NOT NULL,
    line                BIGINT NOT NULL,
    external_id         TEXT NOT NULL,
    role_template       TEXT NOT NULL,
    license_tier        TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    reason_code         TEXT,
    reason_message      TEXT,
    user_id             TEXT,
    roles_added         TEXT,
    roles_removed       TEXT,
    permissions_added   TEXT,
    permissions_removed TEXT,
    chunk_no            BIGINT,
    -- 1 once a write for this row's user was sent: after a crash, a user found already right
    -- was applied by this job, not unchanged.
    intent              BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, line)
);
CREATE INDEX items_outcome_idx ON items (job_id, outcome, line);
CREATE INDEX items_user_idx ON items (job_id, external_id, line);
CREATE INDEX items_chunk_idx ON items (job_id, chunk_no);

-- Work leases: a chunk of users is claimed by one worker at a time; an expired lease is claimed
-- again, which is safe because every write is read-diff-write with If-Match.
CREATE TABLE chunks (
    job_id         TEXT NOT NULL,
    chunk_no       BIGINT NOT NULL,
    status         TEXT NOT NULL,
    lease_owner    TEXT,
    lease_until_ms BIGINT,
    attempts       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, chunk_no)
);
CREATE INDEX chunks_status_idx ON chunks (status, lease_until_ms);

CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY,
    body_sha256   TEXT NOT NULL,
    job_id        TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE webhook_outbox (
    event_id           TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    event_type         TEXT NOT NULL,
    payload            TEXT NOT NULL,
    status             TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    last_error         TEXT,
    created_at_ms      BIGINT NOT NULL,
    delivered_at_ms    BIGINT,
    lease_until_ms     BIGINT,
    PRIMARY KEY (event_id, endpoint)
);
CREATE INDEX outbox_due_idx ON webhook_outbox (status, next_attempt_at_ms);
