//! The notifications outbox: events written in the transaction of their cause, and read back.

use chrono::{DateTime, Utc};

use crate::event::Event;
use crate::store::backend::{Backend, Tx, on};
use crate::store::rows::{EventRow, columns};
use crate::store::{Db, EventRecord, StoreError};

impl Db {
    /// Writes events that time made (not a change of the store's: those are written in the
    /// change's transaction), each once: an id already written is left as it is.
    pub async fn tell(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        tx.record_events(events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the events that happened before `before`; returns how many.
    pub async fn forget_events(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let sql = "DELETE FROM notification_events WHERE occurred_at < $1";
        let mut conn = self.conn().await?;
        Ok(on!(&mut conn, |c| sqlx::query(sql)
            .bind(before)
            .execute(&mut **c)
            .await
            .map(|r| r.rows_affected()))?)
    }

    /// The most recent events, newest first.
    pub async fn events(&self, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(events),
            " FROM notification_events ORDER BY seq DESC LIMIT $1"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, EventRow>(sql)
            .bind(limit)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(EventRow::record).collect()
    }
}

/// How far back an expiry is still told: a store no server watched for longer (every replica
/// down) does not flood the sinks with old news when one comes back.
const EXPIRY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The overrides that expired by `$1` (after `$2`) and were not lifted before, told once each;
/// `$json` is the backend's JSON object, as text.
macro_rules! expired {
    ($json:expr) => {
        concat!(
            "INSERT INTO notification_events (id, type, severity, occurred_at, actor, reason, \
             resource_kind, resource_key, data) \
             SELECT 'override-expired:' || o.id, 'override.expired', 'info', o.expires_at, \
             'valhalla-ops', o.reason, o.resource_kind, o.resource_key, ",
            $json,
            " FROM overrides o WHERE o.expires_at <= $1 AND o.expires_at > $2 \
             AND (o.cleared_at IS NULL OR o.cleared_at >= o.expires_at) \
             AND NOT EXISTS (SELECT 1 FROM notification_events e \
                             WHERE e.id = 'override-expired:' || o.id) \
             ORDER BY o.expires_at, o.id ON CONFLICT (id) DO NOTHING"
        )
    };
}

/// The open overrides that expire after `$1` and by `$2`, reminded of once each.
macro_rules! expiring {
    ($json:expr) => {
        concat!(
            "INSERT INTO notification_events (id, type, severity, occurred_at, actor, reason, \
             resource_kind, resource_key, data) \
             SELECT 'override-expiring:' || o.id, 'override.expiring', 'warning', $1, \
             'valhalla-ops', o.reason, o.resource_kind, o.resource_key, ",
            $json,
            " FROM overrides o WHERE o.cleared_at IS NULL AND o.expires_at > $1 AND o.expires_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM notification_events e \
                             WHERE e.id = 'override-expiring:' || o.id) \
             ORDER BY o.expires_at, o.id ON CONFLICT (id) DO NOTHING"
        )
    };
}

/// What git restores when an override ends, as it may be shown: its state-file entry with a
/// key's hash replaced by `(hidden)` (`model::shown_json`, in SQL); Postgres, then SQLite.
macro_rules! restores {
    (postgres) => {
        "(CASE WHEN o.git_value::jsonb ? 'key_sha256' \
         THEN jsonb_set(o.git_value::jsonb, '{key_sha256}', '\"(hidden)\"') ELSE o.git_value::jsonb END)"
    };
    (sqlite) => {
        "json(CASE WHEN json_extract(o.git_value, '$.key_sha256') IS NOT NULL \
         THEN json_set(o.git_value, '$.key_sha256', '(hidden)') ELSE o.git_value END)"
    };
}

/// Each statement on Postgres, then on SQLite: only the JSON object is written differently.
const EXPIRED: [&str; 2] = [
    expired!(concat!(
        "json_build_object('override_id', o.id, 'set_by', o.actor, 'restores', ",
        restores!(postgres),
        ")::text"
    )),
    expired!(concat!(
        "json_object('override_id', o.id, 'set_by', o.actor, 'restores', ",
        restores!(sqlite),
        ")"
    )),
];
const EXPIRING: [&str; 2] = [
    expiring!(concat!(
        "json_build_object('override_id', o.id, 'set_by', o.actor, 'expires_at', o.expires_at, 'restores', ",
        restores!(postgres),
        ")::text"
    )),
    expiring!(concat!(
        "json_object('override_id', o.id, 'set_by', o.actor, 'expires_at', o.expires_at, 'restores', ",
        restores!(sqlite),
        ")"
    )),
];

impl Db {
    /// Writes what time has told by `now`: each override that expired (within the last hour,
    /// not lifted before), and a reminder for each that expires within `lead`. Each is written
    /// once, whichever replica notices first: its id is made from the override. Returns how
    /// many were written.
    pub async fn notice_expiries(
        &self,
        now: DateTime<Utc>,
        lead: chrono::TimeDelta,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let pick = |sql: &[&'static str; 2]| match &tx {
            Backend::Postgres(_) => sql[0],
            Backend::Sqlite(_) => sql[1],
        };
        let (expired, expiring) = (pick(&EXPIRED), pick(&EXPIRING));
        let mut written = on!(&mut tx, |c| sqlx::query(expired)
            .bind(now)
            .bind(now - EXPIRY_HORIZON)
            .execute(&mut **c)
            .await
            .map(|r| r.rows_affected()))?;
        if lead > chrono::TimeDelta::zero() {
            written += on!(&mut tx, |c| sqlx::query(expiring)
                .bind(now)
                .bind(now + lead)
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()))?;
        }
        tx.commit().await?;
        Ok(written)
    }
}

impl Tx<'_> {
    /// Writes `events` in one statement; an event whose id is already written is left as it is
    /// (a time-driven event noticed twice is one event).
    pub(in crate::store) async fn record_events(&mut self, events: &[Event]) -> Result<(), sqlx::Error> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id,
                    "type": e.kind.as_str(),
                    "severity": e.severity.as_str(),
                    "occurred_at": e.at,
                    "actor": e.actor,
                    "reason": e.reason,
                    "resource_kind": e.resource.as_ref().map(|r| &r.kind),
                    "resource_key": e.resource.as_ref().map(|r| &r.key),
                    "data": e.data.to_string(),
                })
            })
            .collect();
        let json = serde_json::Value::Array(rows).to_string();
        // In the order given (both functions return the array's elements in order): `seq`
        // orders each resource's events for delivery.
        let sql = match self {
            Backend::Postgres(_) => {
                "INSERT INTO notification_events (id, type, severity, occurred_at, actor, reason, \
                 resource_kind, resource_key, data) \
                 SELECT e.id, e.type, e.severity, e.occurred_at, e.actor, e.reason, e.resource_kind, \
                 e.resource_key, e.data \
                 FROM jsonb_to_recordset($1::jsonb) AS e(id text, type text, severity text, \
                 occurred_at timestamptz, actor text, reason text, resource_kind text, \
                 resource_key text, data text) \
                 ON CONFLICT (id) DO NOTHING"
            }
            Backend::Sqlite(_) => {
                "INSERT INTO notification_events (id, type, severity, occurred_at, actor, reason, \
                 resource_kind, resource_key, data) \
                 SELECT json_extract(value, '$.id'), json_extract(value, '$.type'), \
                 json_extract(value, '$.severity'), json_extract(value, '$.occurred_at'), \
                 json_extract(value, '$.actor'), json_extract(value, '$.reason'), \
                 json_extract(value, '$.resource_kind'), json_extract(value, '$.resource_key'), \
                 json_extract(value, '$.data') \
                 FROM json_each($1) WHERE true ORDER BY key \
                 ON CONFLICT (id) DO NOTHING"
            }
        };
        on!(self, |c| sqlx::query(sql)
            .bind(&json)
            .execute(&mut **c)
            .await
            .map(drop))
    }
}
