-- Delivery of the outbox's events, one row per event and sink. A server fans each event out to
-- the sinks that take it (`fanned_out`), then any replica claims due rows (FOR UPDATE SKIP
-- LOCKED, with a lease: a replica killed mid-call leaves a row that another claims once the
-- lease ends), sends, and marks them sent, or due again after a backoff, or dead with their last
-- error. `resource` orders a sink's deliveries: one about a resource waits for the earlier ones
-- about it.
ALTER TABLE notification_events ADD COLUMN fanned_out BOOLEAN NOT NULL DEFAULT false;
-- The events written before there were sinks are told to nobody.
UPDATE notification_events SET fanned_out = true;
CREATE INDEX notification_events_unfanned ON notification_events (seq) WHERE NOT fanned_out;

CREATE TABLE notification_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    event_seq    BIGINT NOT NULL REFERENCES notification_events (seq) ON DELETE CASCADE,
    sink         TEXT NOT NULL,
    resource     TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'dead')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    due_at       TIMESTAMPTZ NOT NULL,
    leased_until TIMESTAMPTZ,
    last_status  BIGINT,
    last_error   TEXT,
    done_at      TIMESTAMPTZ,
    UNIQUE (event_seq, sink)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (due_at) WHERE state = 'pending';
CREATE INDEX notification_deliveries_order ON notification_deliveries (sink, resource, event_seq)
    WHERE state = 'pending';
