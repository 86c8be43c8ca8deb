-- Recurring windows (schedule, duration, timezone) beside one-off ones (starts_at, ends_at),
-- exactly one form per row, and windows that freeze changes.
ALTER TABLE maintenance_windows
    ALTER COLUMN starts_at DROP NOT NULL,
    ALTER COLUMN ends_at DROP NOT NULL,
    ADD COLUMN schedule TEXT,
    ADD COLUMN duration_minutes BIGINT,
    ADD COLUMN timezone TEXT,
    DROP CONSTRAINT maintenance_windows_mode_check,
    DROP CONSTRAINT maintenance_windows_check,
    ADD CONSTRAINT maintenance_windows_mode_check
        CHECK (mode IN ('maintenance', 'read_only', 'freeze_changes')),
    ADD CONSTRAINT maintenance_windows_when_check CHECK (
        (starts_at IS NOT NULL AND ends_at IS NOT NULL AND ends_at > starts_at
            AND schedule IS NULL AND duration_minutes IS NULL AND timezone IS NULL)
        OR (starts_at IS NULL AND ends_at IS NULL
            AND schedule IS NOT NULL AND duration_minutes > 0 AND timezone IS NOT NULL)
    );

-- Why a run applied during a freeze of changes (`--during-freeze`), in the run and its audit.
ALTER TABLE reconcile_runs ADD COLUMN during_freeze TEXT;
ALTER TABLE audit_log ADD COLUMN reason TEXT;
