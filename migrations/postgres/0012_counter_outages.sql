-- The shared counters' outages, as the platform saw them: one row per outage, opened by the
-- first replica that finds the counters unreachable and closed once no live replica does.
-- `open` is true on the open row and NULL on the others, and unique: replicas noticing the same
-- outage at once open it once (and tell it once).
CREATE TABLE counter_outages (
    id        BIGSERIAL PRIMARY KEY,
    open      BOOLEAN UNIQUE CHECK (open),
    began_at  TIMESTAMPTZ NOT NULL,
    ended_at  TIMESTAMPTZ,
    opened_by TEXT NOT NULL,
    closed_by TEXT
);
-- What each replica with shared counters last saw of them, once a second.
CREATE TABLE counter_health (
    replica TEXT PRIMARY KEY,
    down    BOOLEAN NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
