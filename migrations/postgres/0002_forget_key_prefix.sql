-- A key's display prefix belongs to the key: when the hash changes (a rotation through git), the
-- prefix of the old key must not stay on the client.
CREATE FUNCTION api_clients_forget_key_prefix() RETURNS trigger AS $$
BEGIN
    IF NEW.key_sha256 IS DISTINCT FROM OLD.key_sha256 THEN
        NEW.key_prefix := NULL;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_clients_forget_key_prefix
    BEFORE UPDATE OF key_sha256 ON api_clients
    FOR EACH ROW EXECUTE FUNCTION api_clients_forget_key_prefix();
