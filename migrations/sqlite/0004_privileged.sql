-- Privileged grants. Whether the API key that submitted a job carried `roles:privileged`, so
-- that planning (maybe on another replica, maybe after the key changed) can tell whether the
-- job's grants of the policy's privileged roles wait for approval.
ALTER TABLE jobs ADD COLUMN privileged_allowed BIGINT NOT NULL DEFAULT 0;
