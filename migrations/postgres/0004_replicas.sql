-- Usage snapshots: one row per replica, counter and window, updated in place while the window
-- is open, so the table holds one row per subject and window of history.
ALTER TABLE rate_limit_snapshots
    ADD COLUMN rule_key TEXT NOT NULL DEFAULT '',
    ADD COLUMN shadow BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN replica TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX rate_limit_snapshots_counter
    ON rate_limit_snapshots (replica, scope, rule_key, key, window_started_at);
CREATE INDEX rate_limit_snapshots_updated_at ON rate_limit_snapshots (updated_at);

-- Every change to what the replicas cache (rules, clients, windows, the mode, overrides) tells
-- them at commit, whoever makes it: a reconcile, an HTTP write, or someone at a psql prompt.
CREATE FUNCTION valhalla_ops_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('valhalla_ops_changed', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
CREATE TRIGGER rate_limit_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rate_limit_rules
    FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_notify_changed();
CREATE TRIGGER api_clients_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_clients
    FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_notify_changed();
CREATE TRIGGER maintenance_windows_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON maintenance_windows
    FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_notify_changed();
CREATE TRIGGER maintenance_state_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON maintenance_state
    FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_notify_changed();
CREATE TRIGGER overrides_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON overrides
    FOR EACH STATEMENT EXECUTE FUNCTION valhalla_ops_notify_changed();
