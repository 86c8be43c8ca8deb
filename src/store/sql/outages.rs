//! The shared counters' outages as the platform saw them: what each replica last saw, and one
//! outage row per outage, opened and closed once (and told once each way) whichever replicas
//! see it.

use chrono::{DateTime, TimeDelta, Utc};

use crate::event::Event;
use crate::store::backend::{Backend, on};
use crate::store::{Db, StoreError};

/// How long a replica's look counts: one that stopped looking (it died while it saw the
/// counters down) no longer holds an outage open.
const FRESH: TimeDelta = TimeDelta::seconds(10);

impl Db {
    /// Records that `replica` finds the shared counters down (since `began`) or up at `now`,
    /// then opens the platform's outage when a replica that looked within the last seconds
    /// finds them down and none is open, or closes the open one when none does; the opening
    /// and the closing are each told once, in the transaction that makes them.
    pub async fn look_at_counters(
        &self,
        replica: &str,
        down: bool,
        began: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Looks are taken one at a time: two replicas finding the counters back at once would
        // each count the other's last look, still "down" until it commits, and neither would
        // close the outage. SQLite's write lock, taken by the write below before anything is
        // read, already does this; Postgres locks the table against other looks (reads of it
        // go on).
        if let Backend::Postgres(c) = &mut tx {
            sqlx::query("LOCK TABLE counter_health IN EXCLUSIVE MODE")
                .execute(&mut **c)
                .await?;
        }
        let sql = "INSERT INTO counter_health (replica, down, seen_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (replica) DO UPDATE SET down = excluded.down, seen_at = excluded.seen_at";
        on!(&mut tx, |c| sqlx::query(sql)
            .bind(replica)
            .bind(down)
            .bind(now)
            .execute(&mut **c)
            .await
            .map(drop))?;
        let sql = "SELECT COUNT(*) FROM counter_health WHERE down AND seen_at > $1";
        let seeing_down: i64 = on!(&mut tx, |c| sqlx::query_scalar(sql)
            .bind(now - FRESH)
            .fetch_one(&mut **c)
            .await)?;
        let told = if seeing_down > 0 {
            // Only when none is open: an insert that loses to the unique row still takes a
            // number from the sequence, and an outage is looked at every second.
            let sql = "INSERT INTO counter_outages (open, began_at, opened_by) \
                       SELECT true, $1, $2 WHERE NOT EXISTS (SELECT 1 FROM counter_outages WHERE open) \
                       ON CONFLICT (open) DO NOTHING RETURNING id";
            let opened: Option<i64> = on!(&mut tx, |c| sqlx::query_scalar(sql)
                .bind(began)
                .bind(replica)
                .fetch_optional(&mut **c)
                .await)?;
            opened.map(|id| Event::counters(false, id, replica, began))
        } else {
            let sql = "UPDATE counter_outages SET open = NULL, ended_at = $1, closed_by = $2 \
                       WHERE open RETURNING id";
            let closed: Option<i64> = on!(&mut tx, |c| sqlx::query_scalar(sql)
                .bind(now)
                .bind(replica)
                .fetch_optional(&mut **c)
                .await)?;
            closed.map(|id| Event::counters(true, id, replica, now))
        };
        if let Some(event) = told {
            tx.record_events(&[event]).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
