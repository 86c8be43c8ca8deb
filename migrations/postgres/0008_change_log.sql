-- The change log: which rows of what the replicas and the watch loop keep in memory changed, in
-- commit order, whoever changed them (a reconcile, an HTTP write, someone at a psql prompt). Its
-- newest revision is the store's revision: a cache that was read at revision R is exact as long
-- as no row after R exists, and can be brought up to date by reading again only the rows named
-- after R.
CREATE TABLE store_changes (
    revision   BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    -- NULL: the statement changed more rows than are worth naming, or emptied the table.
    row_id     BIGINT
);

-- Writers of the logged tables take this lock before their first change and keep it until they
-- commit, so revisions are handed out in commit order: a reader that sees revision R has seen
-- every revision before it. Taken before any row is touched, so it cannot deadlock with row
-- locks.
CREATE FUNCTION valhalla_ops_changes_lock() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(8386112758749865330);
    RETURN NULL;
END
$$;

-- One row per changed row, or one NULL row for a statement of more than 1,000 rows (the readers
-- then reload the table whole), and a notification at commit.
CREATE FUNCTION valhalla_ops_log_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*) INTO n FROM new_rows;
        IF n <= 1000 THEN
            INSERT INTO store_changes (table_name, row_id) SELECT TG_TABLE_NAME, id FROM new_rows;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT count(*) INTO n FROM new_rows;
        IF n <= 1000 THEN
            INSERT INTO store_changes (table_name, row_id)
                SELECT TG_TABLE_NAME, id FROM new_rows UNION SELECT TG_TABLE_NAME, id FROM old_rows;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT count(*) INTO n FROM old_rows;
        IF n <= 1000 THEN
            INSERT INTO store_changes (table_name, row_id) SELECT TG_TABLE_NAME, id FROM old_rows;
        END IF;
    ELSE
        n := 1001;
    END IF;
    IF n > 1000 THEN
        INSERT INTO store_changes (table_name, row_id) VALUES (TG_TABLE_NAME, NULL);
    END IF;
    IF n > 0 THEN
        PERFORM pg_notify('valhalla_ops_changed', TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER rate_limit_rules_changed ON rate_limit_rules;
DROP TRIGGER api_clients_changed ON api_clients;
DROP TRIGGER maintenance_windows_changed ON maintenance_windows;
DROP TRIGGER maintenance_state_changed ON maintenance_state;
DROP TRIGGER overrides_changed ON overrides;
DROP FUNCTION valhalla_ops_notify_changed();

DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['rate_limit_rules', 'api_clients', 'maintenance_windows',
                             'maintenance_state', 'feature_flags', 'settings', 'overrides'] LOOP
        EXECUTE format('CREATE TRIGGER %1$s_lock BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %1$s
                        FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_changes_lock()', t);
        EXECUTE format('CREATE TRIGGER %1$s_inserted AFTER INSERT ON %1$s REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_log_changes()', t);
        EXECUTE format('CREATE TRIGGER %1$s_updated AFTER UPDATE ON %1$s
                        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_log_changes()', t);
        EXECUTE format('CREATE TRIGGER %1$s_deleted AFTER DELETE ON %1$s REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_log_changes()', t);
        EXECUTE format('CREATE TRIGGER %1$s_truncated AFTER TRUNCATE ON %1$s
                        FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_log_changes()', t);
    END LOOP;
END
$$;

-- Every store starts at a known revision, so a cache read before any change can follow it.
INSERT INTO store_changes (table_name, row_id) VALUES ('store_changes', NULL);
