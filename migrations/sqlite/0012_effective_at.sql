-- Effective dates: a row not applied before `effective_at_ms` (a future hire, a leaver's
-- last day). NULL: at once. The partial index serves the per-job count of scheduled rows.
ALTER TABLE items ADD COLUMN effective_at_ms INTEGER;
CREATE INDEX items_scheduled_idx ON items (job_id, effective_at_ms) WHERE effective_at_ms IS NOT NULL AND outcome = 'pending';
