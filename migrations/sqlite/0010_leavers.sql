-- Leavers. A row's `action`: 'assign' (its role_template is one of the user's roles) or
-- 'revoke' (the user keeps no managed role). A roster `full` batch's leavers are stored as
-- 'revoke' rows the store generates from `desired_state` when the job is committed.
ALTER TABLE items ADD COLUMN action TEXT NOT NULL DEFAULT 'assign';
