-- A key's display prefix belongs to the key: when the hash changes (a rotation through git), the
-- prefix of the old key must not stay on the client.
CREATE TRIGGER api_clients_forget_key_prefix
    AFTER UPDATE OF key_sha256 ON api_clients
    FOR EACH ROW WHEN NEW.key_sha256 IS NOT OLD.key_sha256
BEGIN
    UPDATE api_clients SET key_prefix = NULL WHERE id = NEW.id;
END;
