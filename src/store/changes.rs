//! How this process learns that the store changed: a change count that its own writes bump, and
//! a follower that bumps it for commits made by other processes (Postgres LISTEN/NOTIFY,
//! SQLite's change-log revision).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::backend::Backend;
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
    /// meanwhile went unseen. Both backends hear of the same commits: those that moved the
    /// change log (rows that caches hold), not usage snapshots or run records.
    pub async fn follow_changes(&self) {
        match &self.pool {
            Backend::Postgres(pool) => self.listen(pool).await,
            Backend::Sqlite(pool) => self.poll(pool).await,
        }
    }

    /// Postgres: LISTEN on [`postgres::CHANNEL`]. After a lost connection the listener
    /// reconnects and counts a change, since notifications sent meanwhile are gone.
    async fn listen(&self, pool: &sqlx::PgPool) {
        postgres::warm_up(pool).await;
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
    /// command run beside it (a reconcile, an edit by hand) is seen by the change log's
    /// revision, which its triggers move in the same transaction.
    async fn poll(&self, pool: &sqlx::SqlitePool) {
        let mut last = None;
        let mut failing = false;
        loop {
            tokio::time::sleep(SQLITE_POLL).await;
            match sqlx::query_scalar::<_, i64>(super::sql::REVISION)
                .fetch_one(pool)
                .await
            {
                Ok(revision) => {
                    if last.is_some_and(|l| l != revision) {
                        self.changes.bump();
                    }
                    last = Some(revision);
                    failing = false;
                }
                // Said once per failure, not four times a second.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot poll the database for changes");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
