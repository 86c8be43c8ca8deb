-- What git declares for the mode, kept beside the mode in force: when an override expires, the
-- effective mode is git's at once, without waiting for the next reconcile to write it back.
ALTER TABLE maintenance_state
    ADD COLUMN git_mode TEXT NOT NULL DEFAULT 'normal' CHECK (git_mode IN ('normal', 'maintenance', 'read_only')),
    ADD COLUMN git_reason TEXT NOT NULL DEFAULT '';
UPDATE maintenance_state SET git_mode = mode, git_reason = reason;
