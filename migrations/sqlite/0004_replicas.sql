-- Usage snapshots: one row per replica, counter and window, updated in place while the window
-- is open, so the table holds one row per subject and window of history.
ALTER TABLE rate_limit_snapshots ADD COLUMN rule_key TEXT NOT NULL DEFAULT '';
ALTER TABLE rate_limit_snapshots ADD COLUMN shadow BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE rate_limit_snapshots ADD COLUMN replica TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX rate_limit_snapshots_counter
    ON rate_limit_snapshots (replica, scope, rule_key, key, window_started_at);
CREATE INDEX rate_limit_snapshots_updated_at ON rate_limit_snapshots (updated_at);
