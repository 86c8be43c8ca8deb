-- The documented Valhalla schema, plus what the control plane needs: owners, roles, hashed
-- keys, window names and modes, shadow rules, flags, settings, overrides, runs and an audit log.

CREATE TABLE rate_limit_rules (
    id             BIGSERIAL PRIMARY KEY,
    scope          TEXT NOT NULL CHECK (scope IN ('ip', 'user', 'api_key', 'global')),
    key            TEXT NOT NULL,
    window_seconds INTEGER NOT NULL DEFAULT 60 CHECK (window_seconds BETWEEN 1 AND 86400),
    max_requests   INTEGER NOT NULL DEFAULT 60 CHECK (max_requests >= 0),
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    shadow         BOOLEAN NOT NULL DEFAULT FALSE,
    description    TEXT NOT NULL DEFAULT '',
    owner          TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rate_limit_rules_scope_key ON rate_limit_rules (scope, key);

CREATE TABLE rate_limit_snapshots (
    id                BIGSERIAL PRIMARY KEY,
    scope             TEXT NOT NULL,
    key               TEXT NOT NULL,
    window_seconds    INTEGER NOT NULL,
    max_requests      INTEGER NOT NULL,
    current_count     INTEGER NOT NULL DEFAULT 0,
    window_started_at TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX rate_limit_snapshots_scope_key ON rate_limit_snapshots (scope, key);

CREATE TABLE api_clients (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    client_type TEXT NOT NULL CHECK (client_type IN ('weweb', 'heimdall', 'tyr', 'script', 'integration')),
    role        TEXT NOT NULL DEFAULT 'reader' CHECK (role IN ('reader', 'operator', 'admin')),
    -- The key itself is never stored: only its SHA-256 and, for keys the server issued, a prefix.
    key_sha256  TEXT NOT NULL,
    key_prefix  TEXT,
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    description TEXT NOT NULL DEFAULT '',
    owner       TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Unique among active clients: a deactivated client keeps its row (history) without blocking
-- a renamed successor that carries the same key.
CREATE UNIQUE INDEX api_clients_key_sha256 ON api_clients (key_sha256) WHERE active;
CREATE INDEX api_clients_active ON api_clients (active);

CREATE TABLE maintenance_windows (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL,
    mode        TEXT NOT NULL DEFAULT 'maintenance' CHECK (mode IN ('maintenance', 'read_only')),
    description TEXT NOT NULL DEFAULT '',
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    owner       TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX maintenance_windows_starts_at ON maintenance_windows (starts_at);

CREATE TABLE maintenance_state (
    id         BIGINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    mode       TEXT NOT NULL DEFAULT 'normal' CHECK (mode IN ('normal', 'maintenance', 'read_only')),
    reason     TEXT NOT NULL DEFAULT '',
    owner      TEXT NOT NULL DEFAULT 'git' CHECK (owner IN ('git', 'api')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO maintenance_state (id) VALUES (1);

CREATE TABLE feature_flags (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    enabled     BOOLEAN NOT NULL DEFAULT FALSE,
    description TEXT NOT NULL DEFAULT '',
    owner       TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE settings (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    value      TEXT NOT NULL,
    owner      TEXT NOT NULL DEFAULT 'api' CHECK (owner IN ('git', 'api')),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE overrides (
    id            BIGSERIAL PRIMARY KEY,
    resource_kind TEXT NOT NULL,
    resource_key  TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    group_id      TEXT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ,
    -- Cleared overrides stay as history.
    cleared_at    TIMESTAMPTZ,
    cleared_by    TEXT
);
CREATE INDEX overrides_open ON overrides (resource_kind, resource_key) WHERE cleared_at IS NULL;

CREATE TABLE reconcile_runs (
    id                BIGSERIAL PRIMARY KEY,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ NOT NULL,
    actor             TEXT NOT NULL,
    source            TEXT NOT NULL,
    created           INTEGER NOT NULL DEFAULT 0,
    updated           INTEGER NOT NULL DEFAULT 0,
    deleted           INTEGER NOT NULL DEFAULT 0,
    deactivated       INTEGER NOT NULL DEFAULT 0,
    held              INTEGER NOT NULL DEFAULT 0,
    unmanaged         INTEGER NOT NULL DEFAULT 0,
    store_fingerprint TEXT NOT NULL,
    state_fingerprint TEXT NOT NULL
);

CREATE TABLE audit_log (
    id            BIGSERIAL PRIMARY KEY,
    -- The run that made the change. No foreign key: rows are only ever written by the apply
    -- transaction together with their run, and a per-row check would double the cost of bulk
    -- audit writes.
    run_id        BIGINT,
    at            TIMESTAMPTZ NOT NULL,
    actor         TEXT NOT NULL,
    source        TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    resource_key  TEXT NOT NULL,
    action        TEXT NOT NULL,
    -- JSON objects of the fields as plans show them (key hashes shortened, never keys).
    before        TEXT,
    after         TEXT
);
-- Append-only and written in time order: a BRIN index costs next to nothing to maintain.
CREATE INDEX audit_log_at ON audit_log USING brin (at);
CREATE INDEX audit_log_resource ON audit_log (resource_kind, resource_key);
