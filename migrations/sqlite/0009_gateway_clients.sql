-- Gateways (Envoy and the like) are clients of their own type: they call the rate limit service
-- over gRPC, and every call they make counts. SQLite cannot change a CHECK in place: the table
-- is rebuilt with its rows, ids, indexes and triggers.
CREATE TABLE api_clients_next (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    client_type TEXT NOT NULL CHECK (client_type IN ('weweb', 'heimdall', 'tyr', 'script', 'integration', 'gateway')),
    role        TEXT NOT NULL DEFAULT 'reader' CHECK (role IN ('reader', 'operator', 'admin')),
    -- The key itself is never stored: only its SHA-256 and, for keys the server issued, a prefix.
    key_sha256  TEXT NOT NULL,
    key_prefix  TEXT,
    active      BOOLEAN NOT NULL DEFAULT 1,
    description TEXT NOT NULL DEFAULT '',
    owner       TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);
INSERT INTO api_clients_next (id, name, client_type, role, key_sha256, key_prefix, active,
        description, owner, created_at, updated_at)
    SELECT id, name, client_type, role, key_sha256, key_prefix, active, description, owner,
        created_at, updated_at
    FROM api_clients;
-- A deleted client's id is not given again: the old table's sequence carries over (the copy
-- above made the new table's own, from the highest id left).
DELETE FROM sqlite_sequence WHERE name = 'api_clients_next';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'api_clients_next', seq FROM sqlite_sequence WHERE name = 'api_clients';
DROP TABLE api_clients;
ALTER TABLE api_clients_next RENAME TO api_clients;
CREATE UNIQUE INDEX api_clients_key_sha256 ON api_clients (key_sha256) WHERE active = 1;
CREATE INDEX api_clients_active ON api_clients (active);
CREATE TRIGGER api_clients_forget_key_prefix
    AFTER UPDATE OF key_sha256 ON api_clients
    FOR EACH ROW WHEN NEW.key_sha256 IS NOT OLD.key_sha256
BEGIN
    UPDATE api_clients SET key_prefix = NULL WHERE id = NEW.id;
END;
CREATE TRIGGER api_clients_inserted AFTER INSERT ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', NEW.id); END;
CREATE TRIGGER api_clients_updated AFTER UPDATE ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', NEW.id); END;
CREATE TRIGGER api_clients_deleted AFTER DELETE ON api_clients
    BEGIN INSERT INTO store_changes (table_name, row_id) VALUES ('api_clients', OLD.id); END;
