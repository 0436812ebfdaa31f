-- The drift feed (`[drift] source = "audit"`, pipeline::drift): one row per feed. Its checkpoint
-- (epoch milliseconds: every audit message up to it was handled) and the lease of the replica
-- polling it, so that one replica polls at a time and a restart resumes where the last poll
-- ended. The checkpoint moves only in the transaction that queues the poll's events.
CREATE TABLE drift_feed (
    name           TEXT PRIMARY KEY,
    checkpoint_ms  BIGINT NOT NULL,
    owner          TEXT,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    updated_at_ms  BIGINT NOT NULL DEFAULT 0
);

-- Audit events pushed to `POST /v1/events/genesys` (Amazon EventBridge delivers at least
-- once): the ids seen, so that a redelivery is recognised. Pruned by retention.
CREATE TABLE pushed_events (
    event_id       TEXT PRIMARY KEY,
    received_at_ms BIGINT NOT NULL
);

-- Why a generated job was started, when something other than a person asked for it: the drift
-- feed's reconcile over the users it found, or its fall back to a full scan (and why).
ALTER TABLE jobs ADD COLUMN reason TEXT;
