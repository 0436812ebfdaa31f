-- Self-healing. A chunk given back after an error is not claimed again before not_before_ms
-- (a backoff, so a failing chunk does not spin). A row counts how many chunk runs its user
-- failed in for a reason that may pass (5xx, time-outs): after sync.max_user_attempts the
-- user is failed with retries_exhausted instead of being retried for ever.
ALTER TABLE chunks ADD COLUMN not_before_ms BIGINT;
ALTER TABLE items ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
