-- The notifications outbox: each event is written in the transaction of the change that caused
-- it, so that none is lost and none is told of a change that rolled back. `id` is stable per
-- event (the receiver's idempotency key); an event noticed by several replicas at once (an
-- override expiring) is inserted once, whoever comes first. `seq` orders the events.
CREATE TABLE notification_events (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    type          TEXT NOT NULL,
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    occurred_at   TIMESTAMPTZ NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    resource_kind TEXT,
    resource_key  TEXT,
    data          TEXT NOT NULL DEFAULT '{}'
);
