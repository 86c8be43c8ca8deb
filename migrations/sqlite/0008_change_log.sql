-- The change log: which rows of what the replicas and the watch loop keep in memory changed, in
-- commit order (SQLite has one writer at a time), whoever changed them. Its newest revision is the
-- store's revision: a cache read at revision R is exact while no row after R exists, and is
-- brought up to date by reading again only the rows named after R.
CREATE TABLE store_changes (
    revision   INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    -- NULL: the whole table may have changed.
    row_id     INTEGER
);
CREATE TRIGGER rate_limit_rules_inserted AFTER INSERT ON rate_limit_rules
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('rate_limit_rules', NEW.id); END;
CREATE TRIGGER rate_limit_rules_updated AFTER UPDATE ON rate_limit_rules
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('rate_limit_rules', NEW.id); END;
CREATE TRIGGER rate_limit_rules_deleted AFTER DELETE ON rate_limit_rules
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('rate_limit_rules', OLD.id); END;
CREATE TRIGGER api_clients_inserted AFTER INSERT ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', NEW.id); END;
CREATE TRIGGER api_clients_updated AFTER UPDATE ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', NEW.id); END;
CREATE TRIGGER api_clients_deleted AFTER DELETE ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', OLD.id); END;
CREATE TRIGGER maintenance_windows_inserted AFTER INSERT ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', NEW.id); END;
CREATE TRIGGER maintenance_windows_updated AFTER UPDATE ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', NEW.id); END;
CREATE TRIGGER maintenance_windows_deleted AFTER DELETE ON maintenance_windows
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_windows', OLD.id); END;
CREATE TRIGGER maintenance_state_inserted AFTER INSERT ON maintenance_state
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_state', NEW.id); END;
CREATE TRIGGER maintenance_state_updated AFTER UPDATE ON maintenance_state
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_state', NEW.id); END;
CREATE TRIGGER maintenance_state_deleted AFTER DELETE ON maintenance_state
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('maintenance_state', OLD.id); END;
CREATE TRIGGER feature_flags_inserted AFTER INSERT ON feature_flags
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('feature_flags', NEW.id); END;
CREATE TRIGGER feature_flags_updated AFTER UPDATE ON feature_flags
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('feature_flags', NEW.id); END;
CREATE TRIGGER feature_flags_deleted AFTER DELETE ON feature_flags
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('feature_flags', OLD.id); END;
CREATE TRIGGER settings_inserted AFTER INSERT ON settings
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('settings', NEW.id); END;
CREATE TRIGGER settings_updated AFTER UPDATE ON settings
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('settings', NEW.id); END;
CREATE TRIGGER settings_deleted AFTER DELETE ON settings
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('settings', OLD.id); END;
CREATE TRIGGER overrides_inserted AFTER INSERT ON overrides
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('overrides', NEW.id); END;
CREATE TRIGGER overrides_updated AFTER UPDATE ON overrides
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('overrides', NEW.id); END;
CREATE TRIGGER overrides_deleted AFTER DELETE ON overrides
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('overrides', OLD.id); END;
INSERT INTO store_changes (table_name, row_id) VALUES ('store_changes', NULL);
