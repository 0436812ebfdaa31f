-- Joiners awaiting their account: a pending row whose user was not found yet, and when the
-- wait began (ms). Cleared meaning: the row leaves `pending`. The partial index keeps the
-- per-job count and the gauge cheap however large the job.
ALTER TABLE items ADD COLUMN awaiting_since_ms BIGINT;
CREATE INDEX items_awaiting_idx ON items (job_id) WHERE awaiting_since_ms IS NOT NULL AND outcome = 'pending';
