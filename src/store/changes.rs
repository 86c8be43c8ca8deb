//! How this process learns that the store changed: a change count that its own writes bump, and
//! a follower that bumps it for commits made by other processes (Postgres LISTEN/NOTIFY,
//! SQLite's data version).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{ConnectOptions as _, Connection as _};

use super::backend::Backend;
use super::inputs::UsageBatch;
use super::{Db, postgres};
use crate::backoff::Backoff;

/// How often SQLite is asked whether another process changed the file.
const SQLITE_POLL: Duration = Duration::from_millis(250);

/// How long the follower waits before listening again after failures: capped low, so that once
/// the database is back, changes made meanwhile are seen within about two seconds (this wait
/// plus a connection's).
const LISTEN_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// How many committed changes this process knows of: bumped after every write through this
/// store, and by a replica's listener for writes made elsewhere. Caches compare it with the
/// count they were loaded at.
#[derive(Debug, Default)]
pub struct Changes {
    /// Changes counted so far.
    generation: AtomicU64,
    /// Wakes the tasks waiting for the next change.
    notify: tokio::sync::Notify,
}

impl Changes {
    /// Records a change and wakes whoever waits for one.
    pub fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The number of changes so far.
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Completes at the next change after this call.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

impl Db {
    /// Follows commits made by other processes until the future is dropped: bumps
    /// [`Db::changes`] for each, and once after every (re)connection, since what was committed
    /// meanwhile went unseen. Every `every`, writes the counts that `usage` hands over as
    /// `replica`'s snapshots; on SQLite through the connection that follows, whose data version
    /// does not move for its own commits, so a replica's own snapshots do not look like changes.
    pub async fn follow_changes(
        &self,
        replica: &str,
        every: Duration,
        usage: impl Fn() -> Option<UsageBatch>,
    ) {
        match &self.pool {
            Backend::Postgres(pool) => {
                let flush = async {
                    let mut tick = ticks(every);
                    loop {
                        tick.tick().await;
                        if let Some(batch) = usage()
                            && let Err(e) = self.record_usage(replica, &batch).await
                        {
                            tracing::warn!(error = %e, "cannot write rate-limit snapshots");
                        }
                    }
                };
                tokio::join!(self.listen(pool), flush);
            }
            Backend::Sqlite(pool) => self.poll(pool, replica, every, usage).await,
        }
    }

    /// Postgres: LISTEN on [`postgres::CHANNEL`]. After a lost connection the listener
    /// reconnects and counts a change, since notifications sent meanwhile are gone.
    async fn listen(&self, pool: &sqlx::PgPool) {
        let mut failures = 0;
        loop {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(postgres::CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    let wait = LISTEN_BACKOFF.after(failures);
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot listen for changes");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            failures = 0;
            // Listening now: whatever was committed before is read by the reload this causes.
            self.changes.bump();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => {
                        // One commit notifies once per table it touched: one change for all.
                        while listener.next_buffered().is_some() {}
                        self.changes.bump();
                    }
                    Ok(None) => {
                        tracing::warn!("lost the change listener's connection; resyncing");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the change listener failed; resyncing");
                        break;
                    }
                }
            }
        }
    }

    /// SQLite: one process owns the file, and its own writes count as changes at once. A
    /// command run beside it (a reconcile, an edit by hand) is seen through `PRAGMA
    /// data_version`, which moves when another connection commits.
    async fn poll(
        &self,
        pool: &sqlx::SqlitePool,
        replica: &str,
        every: Duration,
        usage: impl Fn() -> Option<UsageBatch>,
    ) {
        let mut last = None;
        let mut conn: Option<sqlx::SqliteConnection> = None;
        let mut flushes = ticks(every);
        loop {
            let flush = tokio::select! {
                () = tokio::time::sleep(SQLITE_POLL) => false,
                _ = flushes.tick() => true,
            };
            if conn.is_none() {
                conn = pool.connect_options().connect().await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let done = if flush {
                match usage() {
                    Some(batch) => match c.begin().await {
                        Ok(tx) => Backend::Sqlite(tx).record_usage(replica, &batch).await,
                        Err(e) => Err(e.into()),
                    },
                    None => Ok(()),
                }
            } else {
                match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(&mut *c)
                    .await
                {
                    Ok(version) => {
                        if last.is_some_and(|l| l != version) {
                            self.changes.bump();
                        }
                        last = Some(version);
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "cannot poll the database or write snapshots");
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
                // Versions are per connection: the next one starts a new comparison.
                last = None;
            }
        }
    }
}

/// Ticks every `period`, the first one period from now.
fn ticks(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
