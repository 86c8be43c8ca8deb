-- Recurring windows (schedule, duration, timezone) beside one-off ones (starts_at, ends_at),
-- exactly one form per row, and windows that freeze changes. SQLite cannot change a column's
-- constraints in place: the table is rebuilt, its ids, index and change-log triggers kept.
CREATE TABLE maintenance_windows_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL UNIQUE,
    starts_at        TEXT,
    ends_at          TEXT,
    schedule         TEXT,
    duration_minutes INTEGER,
    timezone         TEXT,
    mode             TEXT NOT NULL DEFAULT 'maintenance'
                     CHECK (mode IN ('maintenance', 'read_only', 'freeze_changes')),
    description      TEXT NOT NULL DEFAULT '',
    active           BOOLEAN NOT NULL DEFAULT 1,
    owner            TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CHECK (
        (starts_at IS NOT NULL AND ends_at IS NOT NULL AND ends_at > starts_at
            AND schedule IS NULL AND duration_minutes IS NULL AND timezone IS NULL)
        OR (starts_at IS NULL AND ends_at IS NULL
            AND schedule IS NOT NULL AND duration_minutes > 0 AND timezone IS NOT NULL)
    )
);
INSERT INTO maintenance_windows_new
    (id, name, starts_at, ends_at, mode, description, active, owner, created_at, updated_at)
    SELECT id, name, starts_at, ends_at, mode, description, active, owner, created_at, updated_at
    FROM maintenance_windows;
DROP TABLE maintenance_windows;
ALTER TABLE maintenance_windows_new RENAME TO maintenance_windows;
CREATE INDEX maintenance_windows_starts_at ON maintenance_windows (starts_at);
CREATE TRIGGER maintenance_windows_inserted AFTER INSERT ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', NEW.id); END;
CREATE TRIGGER maintenance_windows_updated AFTER UPDATE ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', NEW.id); END;
CREATE TRIGGER maintenance_windows_deleted AFTER DELETE ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', OLD.id); END;

-- Why a run applied during a freeze of changes (`--during-freeze`), in the run and its audit.
ALTER TABLE reconcile_runs ADD COLUMN during_freeze TEXT;
ALTER TABLE audit_log ADD COLUMN reason TEXT;
