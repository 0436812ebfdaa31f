-- A job's directory scan (pipeline::reads), kept in the store instead of the planner's memory,
-- so that a job over a million users plans and runs in bounded memory, and so that a chunk run
-- by any replica uses the scan. One row per user the scan saw whose externalId the job names:
-- its id, version and role names (a JSON array), and when it was seen. Rows older than
-- `sync.snapshot_max_age_secs` are not used; they are deleted when the job ends, when its
-- planning starts over, and by retention.
CREATE TABLE directory_snapshot (
    job_id      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    version     TEXT,
    roles       TEXT NOT NULL,
    seen_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (job_id, external_id, user_id)
);
CREATE INDEX directory_snapshot_user_idx ON directory_snapshot (job_id, user_id);

-- The Authorization path's read (`sync.read_strategy`, pipeline::reads): division grants name
-- users by id only, so the ids of externalIds seen by scans and lookups are kept here (only
-- while `target.write_api = "authorization"`). An externalId is trusted with an id when exactly
-- one id was seen for it within `sync.user_id_max_age_secs`; a lookup replaces what is known of
-- its externalId, and an id the target refuses is forgotten and its user looked up.
CREATE TABLE user_ids (
    external_id TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    seen_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (external_id, user_id)
);

-- A job's read of its users' grants in the home division: one row per (user, role), for the
-- users of `directory_snapshot` (whose `roles` is then empty and `version` NULL).
CREATE TABLE directory_grants (
    job_id  TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role    TEXT NOT NULL,
    PRIMARY KEY (job_id, user_id, role)
);
