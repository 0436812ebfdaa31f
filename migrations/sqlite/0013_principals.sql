-- Who did what: the principal (JSON text: kind, name, and for a token its issuer and subject)
-- that submitted a job (or rolesync's schedule, for a scheduled reconcile), approved it, and
-- cancelled it. NULL for jobs stored before this migration, and until the act.
ALTER TABLE jobs ADD COLUMN submitted_by TEXT;
ALTER TABLE jobs ADD COLUMN approved_by TEXT;
ALTER TABLE jobs ADD COLUMN cancelled_by TEXT;
