-- What each rule does while the shared counter store (Redis) is unreachable: admit (open),
-- refuse with 503 (closed), or count in the replica's memory (local, the default, which is
-- what every rule did before counters could be shared).
ALTER TABLE rate_limit_rules
    ADD COLUMN on_outage TEXT NOT NULL DEFAULT 'local' CHECK (on_outage IN ('open', 'closed', 'local'));

-- Whose count a snapshot row is: a replica's own (`memory`, the row's `replica` names it) or
-- the one count all replicas share (`redis`, written by any replica, with an empty `replica`,
-- so one shared count is one row, not one per replica).
ALTER TABLE rate_limit_snapshots
    ADD COLUMN counter TEXT NOT NULL DEFAULT 'memory' CHECK (counter IN ('memory', 'redis'));
