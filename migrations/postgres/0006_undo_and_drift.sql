-- Undo a job, and catch drift.
--
-- A job's kind: 'sync' (a submitted batch), 'revert' (puts back what another job changed) or
-- 'reconcile' (applies the desired state again). A revert names its original job; the original
-- names its latest real (not dry-run) revert. `revert_force`: the revert applies the inverse
-- delta on top of users changed since, instead of leaving them alone.
ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'sync';
ALTER TABLE jobs ADD COLUMN original_job_id TEXT;
ALTER TABLE jobs ADD COLUMN reverted_by TEXT;
ALTER TABLE jobs ADD COLUMN revert_force BIGINT NOT NULL DEFAULT 0;
-- At most one unfinished reconcile, whoever starts it (a caller, the schedule, any replica):
-- the store refuses the second.
CREATE UNIQUE INDEX jobs_one_open_reconcile ON jobs (kind)
    WHERE kind = 'reconcile' AND status IN ('queued', 'running', 'paused', 'awaiting_approval');

-- A row's write: the user's roles before and after it (JSON arrays), what a revert puts back.
-- A generated row (revert, reconcile) also says what it asks: `desired_roles`, the set to reach
-- (a revert: the roles the original found; a reconcile: the desired state), and for a revert
-- `expected_roles`, the roles the original left (the user must still hold them, or force).
ALTER TABLE items ADD COLUMN roles_before TEXT;
ALTER TABLE items ADD COLUMN roles_after TEXT;
ALTER TABLE items ADD COLUMN desired_roles TEXT;
ALTER TABLE items ADD COLUMN expected_roles TEXT;

-- Per managed user, the last desired role set applied (JSON array, expanded) and the job that
-- set it; and the one before, so that a revert of that job puts the one before back (and a
-- revert of the revert swaps them again). `roles` NULL: no desired state (the job that first
-- set one was reverted); reconcile skips such users.
CREATE TABLE desired_state (
    external_id   TEXT PRIMARY KEY,
    roles         TEXT,
    job_id        TEXT NOT NULL,
    prev_roles    TEXT,
    prev_job_id   TEXT,
    updated_at_ms BIGINT NOT NULL
);

-- Scheduled work: the last occurrence of each schedule that a replica claimed. Claiming an
-- occurrence is one conditional UPDATE (`last_occurrence_ms < $occurrence`), in the same
-- transaction as the job it starts, so each occurrence fires on exactly one replica.
CREATE TABLE schedules (
    name               TEXT PRIMARY KEY,
    last_occurrence_ms BIGINT NOT NULL,
    owner              TEXT,
    job_id             TEXT,
    claimed_at_ms      BIGINT
);
