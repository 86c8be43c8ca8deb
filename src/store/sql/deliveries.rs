//! Delivering the outbox: each event fanned out to the sinks that take it, due deliveries
//! claimed with a lease (any replica; none twice at once), and each outcome recorded.

use chrono::{DateTime, TimeDelta, Utc};

use crate::model::Sink;
use crate::store::backend::{Backend, Tx, on};
use crate::store::rows::{EventRow, columns};
use crate::store::{Backlog, Db, Delivery, DeliveryRecord, Outcome, SinkHealth, StoreError};

/// The most events fanned out, or deliveries claimed, in one statement.
const BATCH: i64 = 500;

/// An event as the fan-out reads it.
#[derive(sqlx::FromRow)]
struct Unfanned {
    seq: i64,
    #[sqlx(rename = "type")]
    kind: String,
    severity: String,
    resource_kind: Option<String>,
    resource_key: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    event_seq: i64,
    sink: String,
    attempts: i64,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    event_seq: i64,
    sink: String,
    state: String,
    attempts: i64,
    due_at: DateTime<Utc>,
    last_status: Option<i64>,
    last_error: Option<String>,
    done_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct HealthRow {
    sink: String,
    pending: i64,
    retrying: i64,
    dead: i64,
    last_error: Option<String>,
}

impl Db {
    /// Makes a delivery, due at `now`, for each event not fanned out yet and each of `sinks`
    /// that takes it; returns how many. Each event is fanned out once, by one replica.
    pub async fn fan_out(&self, sinks: &[Sink], now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        // The mark first: it takes the rows (and on SQLite the write lock) before anything is
        // read, so two replicas never fan out one event twice.
        let sql = match &tx {
            Backend::Postgres(_) => {
                "UPDATE notification_events SET fanned_out = true WHERE seq IN \
                 (SELECT seq FROM notification_events WHERE NOT fanned_out ORDER BY seq LIMIT $1 \
                  FOR UPDATE SKIP LOCKED) \
                 RETURNING seq, type, severity, resource_kind, resource_key"
            }
            Backend::Sqlite(_) => {
                "UPDATE notification_events SET fanned_out = true WHERE seq IN \
                 (SELECT seq FROM notification_events WHERE NOT fanned_out ORDER BY seq LIMIT $1) \
                 RETURNING seq, type, severity, resource_kind, resource_key"
            }
        };
        let events = on!(&mut tx, |c| sqlx::query_as::<_, Unfanned>(sql)
            .bind(BATCH)
            .fetch_all(&mut **c)
            .await)?;
        let mut rows = Vec::new();
        for e in &events {
            // An event of a type or severity this version does not know goes to no sink.
            let (Ok(kind), Ok(severity)) = (e.kind.parse(), e.severity.parse()) else {
                continue;
            };
            // A sink's deliveries about one resource go out in the order of their events; those
            // about no resource are one group.
            let resource = match (&e.resource_kind, &e.resource_key) {
                (Some(kind), Some(key)) => format!("{kind}/{key}"),
                _ => String::new(),
            };
            for sink in sinks.iter().filter(|s| s.takes(kind, severity)) {
                rows.push(serde_json::json!({
                    "event_seq": e.seq,
                    "sink": sink.name.as_str(),
                    "resource": resource,
                    "due_at": now,
                }));
            }
        }
        let made = rows.len();
        if !rows.is_empty() {
            let json = serde_json::Value::Array(rows).to_string();
            let sql = match &tx {
                Backend::Postgres(_) => {
                    "INSERT INTO notification_deliveries (event_seq, sink, resource, due_at) \
                     SELECT d.event_seq, d.sink, d.resource, d.due_at \
                     FROM jsonb_to_recordset($1::jsonb) AS d(event_seq bigint, sink text, resource text, \
                     due_at timestamptz) \
                     ON CONFLICT (event_seq, sink) DO NOTHING"
                }
                Backend::Sqlite(_) => {
                    "INSERT INTO notification_deliveries (event_seq, sink, resource, due_at) \
                     SELECT json_extract(value, '$.event_seq'), json_extract(value, '$.sink'), \
                     json_extract(value, '$.resource'), json_extract(value, '$.due_at') \
                     FROM json_each($1) WHERE true ORDER BY key \
                     ON CONFLICT (event_seq, sink) DO NOTHING"
                }
            };
            on!(&mut tx, |c| sqlx::query(sql)
                .bind(&json)
                .execute(&mut **c)
                .await
                .map(drop))?;
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Claims up to `limit` deliveries due at `now`, each for `lease`: none that another
    /// replica holds, and none about a resource while an earlier one about it waits for the
    /// same sink. A replica that dies holding one leaves it to be claimed again when the lease
    /// ends (at least once).
    pub async fn claim_deliveries(
        &self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut tx = self.begin().await?;
        let lock = match &tx {
            Backend::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE notification_deliveries SET leased_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT d.id FROM notification_deliveries d \
               WHERE d.state = 'pending' AND d.due_at <= $1 \
               AND (d.leased_until IS NULL OR d.leased_until <= $1) \
               AND NOT EXISTS (SELECT 1 FROM notification_deliveries p \
                 WHERE p.sink = d.sink AND p.resource = d.resource AND p.state = 'pending' \
                 AND p.event_seq < d.event_seq) \
               ORDER BY d.event_seq LIMIT $3{lock}) \
             RETURNING id, event_seq, sink, attempts"
        );
        let claimed = on!(&mut tx, |c| sqlx::query_as::<_, ClaimedRow>(sqlx::AssertSqlSafe(
            sql
        ))
        .bind(now)
        .bind(now + lease)
        .bind(limit.clamp(1, BATCH))
        .fetch_all(&mut **c)
        .await)?;
        let events = tx.events_by_seq(claimed.iter().map(|c| c.event_seq)).await?;
        tx.commit().await?;
        let mut deliveries: Vec<Delivery> = claimed
            .into_iter()
            .filter_map(|c| {
                let event = events.iter().find(|e| e.seq == c.event_seq)?.clone();
                Some(Delivery {
                    id: c.id,
                    sink: c.sink,
                    attempt: c.attempts,
                    event,
                })
            })
            .collect();
        deliveries.sort_by_key(|d| d.event.seq);
        Ok(deliveries)
    }

    /// Records how each delivery of `done` went, at `now`, in one statement; each is released
    /// either way.
    pub async fn settle_deliveries(
        &self,
        done: &[(i64, Outcome)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = done
            .iter()
            .map(|(id, outcome)| {
                let (state, status, error, due_at, done_at) = match outcome {
                    Outcome::Sent { status } => ("sent", Some(*status), None, None, Some(now)),
                    Outcome::Retry {
                        status,
                        error,
                        due_at,
                    } => ("pending", *status, Some(error.as_str()), Some(*due_at), None),
                    Outcome::Dead { status, error } => {
                        ("dead", *status, Some(error.as_str()), None, Some(now))
                    }
                };
                serde_json::json!({
                    "id": id, "state": state, "last_status": status, "last_error": error,
                    "due_at": due_at, "done_at": done_at,
                })
            })
            .collect();
        let json = serde_json::Value::Array(rows).to_string();
        let mut conn = self.conn().await?;
        let sql = match &conn {
            Backend::Postgres(_) => {
                "UPDATE notification_deliveries AS d SET state = v.state, last_status = v.last_status, \
                 last_error = COALESCE(v.last_error, d.last_error), due_at = COALESCE(v.due_at, d.due_at), \
                 done_at = v.done_at, leased_until = NULL \
                 FROM jsonb_to_recordset($1::jsonb) AS v(id bigint, state text, last_status bigint, \
                 last_error text, due_at timestamptz, done_at timestamptz) WHERE d.id = v.id"
            }
            Backend::Sqlite(_) => {
                "UPDATE notification_deliveries SET state = v.state, last_status = v.last_status, \
                 last_error = COALESCE(v.last_error, notification_deliveries.last_error), \
                 due_at = COALESCE(v.due_at, notification_deliveries.due_at), done_at = v.done_at, \
                 leased_until = NULL \
                 FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.state') AS state, \
                 json_extract(value, '$.last_status') AS last_status, \
                 json_extract(value, '$.last_error') AS last_error, json_extract(value, '$.due_at') AS due_at, \
                 json_extract(value, '$.done_at') AS done_at FROM json_each($1)) AS v \
                 WHERE notification_deliveries.id = v.id"
            }
        };
        on!(&mut conn, |c| sqlx::query(sql)
            .bind(&json)
            .execute(&mut **c)
            .await
            .map(drop))?;
        Ok(())
    }

    /// How many deliveries wait, and when the oldest of their events happened.
    pub async fn delivery_backlog(&self) -> Result<Backlog, StoreError> {
        let sql = "SELECT COUNT(*) AS pending, MIN(e.occurred_at) AS oldest \
                   FROM notification_deliveries d JOIN notification_events e ON e.seq = d.event_seq \
                   WHERE d.state = 'pending'";
        let mut conn = self.conn().await?;
        let (pending, oldest): (i64, Option<DateTime<Utc>>) =
            on!(&mut conn, |c| sqlx::query_as(sql).fetch_one(&mut **c).await)?;
        Ok(Backlog { pending, oldest })
    }

    /// The deliveries of the events `seqs`, by event.
    pub async fn deliveries_of(&self, seqs: &[i64]) -> Result<Vec<(i64, DeliveryRecord)>, StoreError> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let within = match &conn {
            Backend::Postgres(_) => "event_seq IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint)",
            Backend::Sqlite(_) => "event_seq IN (SELECT value FROM json_each($1))",
        };
        let sql = format!(
            "SELECT event_seq, sink, state, attempts, due_at, last_status, last_error, done_at \
             FROM notification_deliveries WHERE {within} ORDER BY event_seq, sink"
        );
        let ids = serde_json::to_string(seqs).unwrap_or_else(|_| "[]".into());
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, DeliveryRow>(
            sqlx::AssertSqlSafe(sql)
        )
        .bind(&ids)
        .fetch_all(&mut **c)
        .await)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let record = DeliveryRecord {
                    sink: r.sink,
                    state: r.state,
                    attempts: r.attempts,
                    due_at: r.due_at,
                    last_status: r.last_status,
                    last_error: r.last_error,
                    done_at: r.done_at,
                };
                (r.event_seq, record)
            })
            .collect())
    }

    /// Each sink's deliveries not sent, by sink: what the status page shows of failing sinks.
    pub async fn sink_health(&self) -> Result<Vec<SinkHealth>, StoreError> {
        // The last error of each sink by a correlated subquery: one statement whatever the sinks.
        let sql = "SELECT d.sink, \
                   SUM(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END) AS pending, \
                   SUM(CASE WHEN d.state = 'pending' AND d.last_error IS NOT NULL THEN 1 ELSE 0 END) AS retrying, \
                   SUM(CASE WHEN d.state = 'dead' THEN 1 ELSE 0 END) AS dead, \
                   (SELECT e.last_error FROM notification_deliveries e \
                    WHERE e.sink = d.sink AND e.state <> 'sent' AND e.last_error IS NOT NULL \
                    ORDER BY e.event_seq DESC LIMIT 1) AS last_error \
                   FROM notification_deliveries d WHERE d.state <> 'sent' GROUP BY d.sink ORDER BY d.sink";
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, HealthRow>(sql)
            .fetch_all(&mut **c)
            .await)?;
        Ok(rows
            .into_iter()
            .map(|row| SinkHealth {
                sink: row.sink,
                pending: row.pending,
                retrying: row.retrying,
                dead: row.dead,
                last_error: row.last_error,
            })
            .collect())
    }
}

impl Tx<'_> {
    /// The events `seqs` names.
    async fn events_by_seq(
        &mut self,
        seqs: impl Iterator<Item = i64>,
    ) -> Result<Vec<crate::store::EventRecord>, StoreError> {
        let seqs: Vec<i64> = seqs.collect();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let within = match self {
            Backend::Postgres(_) => "seq IN (SELECT jsonb_array_elements_text($1::jsonb)::bigint)",
            Backend::Sqlite(_) => "seq IN (SELECT value FROM json_each($1))",
        };
        let sql = format!(
            concat!("SELECT ", columns!(events), " FROM notification_events WHERE {}"),
            within
        );
        let ids = serde_json::to_string(&seqs).unwrap_or_else(|_| "[]".into());
        let rows = on!(self, |c| sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql))
            .bind(&ids)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(EventRow::record).collect()
    }
}
