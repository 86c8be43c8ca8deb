//! The store: [`Db`], one handle over a PostgreSQL or SQLite database chosen from the URL. Its
//! methods, one file per job under `sql/`, are everything the rest of valhalla-ops reads or
//! writes; each query is written once and runs on either backend.
//!
//! What [`Db`] offers, by the file of its `impl Db` (a test holds this list to the code):
//! - `mod.rs`: open, open_with, connect, would_create, in_process, backend, changes, ping; pool (tests)
//! - `changes.rs`: follow_changes (other processes' commits, as [`Changes`])
//! - `sql/migrate.rs`: migrate
//! - `sql/reconcile.rs`: snapshot, snapshot_at_revision, apply, apply_at (the reconciler's
//!   reads and its one transaction), runs, run_count, record_refusal, mark_drift, forget_idle_runs,
//!   audit_filtered; audit (tests)
//! - `sql/feed.rs`: rows, follow (every row, or the change log read back, for the cache:
//!   [`crate::mirror`])
//! - `sql/rules.rs`: rules, rule, put_rule, delete_rule
//! - `sql/clients.rs`: clients, client, register_client, set_client_active
//! - `sql/windows.rs`: windows, create_window
//! - `sql/settings.rs`: maintenance, set_mode, flags
//! - `sql/overrides.rs`: add_override, open_overrides, held, clear_overrides
//! - `sql/usage.rs`: record_usage, snapshots
//! - `sql/admin.rs`: security_counts, lockdown, batch
//! - `sql/events.rs`: events (the notifications outbox, read back), tell (events time made),
//!   notice_expiries (overrides expired and expiring), forget_events
//! - `sql/deliveries.rs`: fan_out, claim_deliveries, settle_deliveries (sending the outbox),
//!   delivery_backlog, deliveries_of, sink_health
//! - `sql/outages.rs`: look_at_counters (the shared counters' outages, once for the platform)

mod backend;
mod changes;
mod error;
mod inputs;
mod postgres;
mod records;
mod rows;
mod sql;
mod sqlite;
mod writes;

use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool, SqlitePool};

use backend::{Conn, Tx, on};

pub use backend::Backend;
pub use changes::Changes;
pub use error::{ApplyError, BatchError, StoreError};
pub use inputs::{
    ApiChange, AuditFilter, ClientFilter, Lift, Lifting, Page, RuleFilter, RunMeta, SnapshotFilter, Usage,
    UsageBatch, WindowFilter, WriteOp,
};
pub use records::{
    Applied, AuditRecord, Backlog, ClientRecord, Delivery, DeliveryRecord, EventRecord, FlagRecord, Held,
    Lockdown, ModeRecord, Outcome, RuleRecord, RuleWritten, RunRecord, SecurityCounts, SinkHealth,
    SnapshotRecord, WindowRecord, WriteDone,
};
pub use sql::{Change, Followed, RowIds, Rows};

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// The embedded default: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://valhalla-ops.db";

/// How a store behaves, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long an apply waits for another writer before failing with [`StoreError::LockHeld`].
    pub lock_timeout: Duration,
    /// Connections to Postgres kept open while idle (none on SQLite): a process that serves
    /// keeps a few, opened when it starts to follow the store, so that a change it must follow
    /// does not wait for a new connection: its TCP and TLS handshakes (sqlx's default
    /// `sslmode=prefer`) and its startup, 6 to 8 ms on loopback (90 ms before sqlx 0.9.1 set
    /// TCP_NODELAY, when two of the handshake's writes waited for delayed ACKs).
    pub warm_connections: u32,
}

impl StoreOptions {
    /// Connections a serving process keeps warm: its view's reload, a request's read, the
    /// snapshot writer and the outbox can all hold one at once.
    const SERVING_CONNECTIONS: u32 = 4;

    /// The options of a process that serves (`serve`, `reconcile --watch`).
    pub fn serving() -> StoreOptions {
        StoreOptions {
            warm_connections: StoreOptions::SERVING_CONNECTIONS,
            ..StoreOptions::default()
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: Duration::from_secs(15),
            warm_connections: 0,
        }
    }
}

/// A database of either backend. Clones share the pool and the change count.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Backend<PgPool, SqlitePool>,
    /// How long a writer waits for the apply lock.
    lock_timeout: Duration,
    /// Committed changes, shared by every clone.
    changes: Arc<Changes>,
}

impl Db {
    /// Connects to `url` with default options and runs pending migrations.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        Db::open_with(url, StoreOptions::default()).await
    }

    /// Connects to `url` and runs pending migrations, as every command that uses the store does.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Db, StoreError> {
        let (db, first) = Db::connecting(url, options).await?;
        match first {
            // On the connection that showed the server answers: a new one costs its TCP and
            // TLS handshakes and its startup again.
            Some(mut first) => {
                sql::migrate_on(Backend::Postgres(&mut first)).await?;
                postgres::close(url, first).await?;
            }
            None => {
                db.migrate().await?;
            }
        }
        Ok(db)
    }

    /// Connects to `url` (`postgres://…`/`postgresql://…`, or `sqlite://…`/`sqlite:…`) without
    /// migrating.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Db, StoreError> {
        let (db, first) = Db::connecting(url, options).await?;
        if let Some(first) = first {
            postgres::close(url, first).await?;
        }
        Ok(db)
    }

    /// Whether opening `url` would create it: a SQLite file that does not exist yet. A command
    /// that may fail before it needs the store (an invalid state) opens such a store only once it
    /// knows it will use it, so that a failed first try leaves no database file behind.
    pub fn would_create(url: &str) -> bool {
        Db::in_process(url) && sqlite::file_missing(url)
    }

    /// Whether the store at `url` runs in this process (SQLite), so that reading it takes one of
    /// this machine's cores, where a server's work is done in its own processes.
    pub fn in_process(url: &str) -> bool {
        url.starts_with("sqlite:")
    }

    /// The store at `url`, and on Postgres the first connection, made outside the pool.
    async fn connecting(url: &str, options: StoreOptions) -> Result<(Db, Option<PgConnection>), StoreError> {
        let (pool, first) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (pool, first) = postgres::connect(url, options.warm_connections).await?;
            (Backend::Postgres(pool), Some(first))
        } else if Db::in_process(url) {
            (
                Backend::Sqlite(sqlite::connect(url, options.lock_timeout).await?),
                None,
            )
        } else {
            return Err(StoreError::UnsupportedUrl(crate::text::url(url)));
        };
        let db = Db {
            pool,
            lock_timeout: options.lock_timeout,
            changes: Arc::default(),
        };
        Ok((db, first))
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// The connection pool, for tests and benchmarks.
    #[cfg(any(test, feature = "test-support"))]
    pub fn pool(&self) -> &Backend<PgPool, SqlitePool> {
        &self.pool
    }

    /// The change count shared by every clone of this store.
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        on!(&mut conn, |c| sqlx::query("SELECT 1")
            .execute(&mut **c)
            .await
            .map(drop))?;
        Ok(())
    }

    /// A pooled connection, for reads that need no transaction.
    async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match &self.pool {
            Backend::Postgres(p) => Backend::Postgres(p.acquire().await?),
            Backend::Sqlite(p) => Backend::Sqlite(p.acquire().await?),
        })
    }

    /// A read-only transaction that sees one consistent snapshot.
    async fn begin_read(&self) -> Result<Tx<'static>, StoreError> {
        Ok(match &self.pool {
            Backend::Postgres(p) => Backend::Postgres(postgres::begin_read(p).await?),
            Backend::Sqlite(p) => Backend::Sqlite(p.begin().await?),
        })
    }

    /// A transaction holding the single-writer lock, or [`StoreError::LockHeld`] when another
    /// writer keeps it longer than the lock timeout.
    async fn begin_apply(&self) -> Result<Tx<'static>, StoreError> {
        Ok(match &self.pool {
            Backend::Postgres(p) => Backend::Postgres(postgres::begin_apply(p, self.lock_timeout).await?),
            Backend::Sqlite(p) => Backend::Sqlite(sqlite::begin_apply(p, self.lock_timeout).await?),
        })
    }

    /// A plain transaction, for writes that take no lock (overrides, usage).
    async fn begin(&self) -> Result<Tx<'static>, StoreError> {
        Ok(match &self.pool {
            Backend::Postgres(p) => Backend::Postgres(p.begin().await?),
            Backend::Sqlite(p) => Backend::Sqlite(p.begin().await?),
        })
    }

    /// Commits `tx` and counts the change, so that this process's caches reload.
    async fn commit(&self, tx: Tx<'_>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.changes.bump();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The public methods of every `impl Db` block under `src/store`, by file (relative to it).
    fn methods() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store");
        let mut files = vec![root.clone()];
        let mut found = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let name = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let mut inside = false;
            for line in text.lines() {
                if line.starts_with("impl Db {") {
                    inside = true;
                } else if line == "}" {
                    inside = false;
                } else if let Some(rest) = line.strip_prefix("    pub ").filter(|_| inside) {
                    let rest = rest.strip_prefix("async ").unwrap_or(rest);
                    if let Some(rest) = rest.strip_prefix("fn ") {
                        let method = rest.split(['(', '<']).next().unwrap().to_owned();
                        found.push((name.clone(), method));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_module_doc_lists_every_method_of_db_under_its_file() {
        let doc: Vec<&str> = include_str!("mod.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect();
        let methods = methods();
        assert!(methods.len() > 40, "{methods:?}");
        for (file, method) in methods {
            let entry = doc
                .iter()
                .position(|l| l.starts_with(&format!("//! - `{file}`:")))
                .unwrap_or_else(|| panic!("{file} is not in the index"));
            let listed = doc[entry..]
                .iter()
                .take_while(|l| **l == doc[entry] || l.starts_with("//!   "))
                .flat_map(|l| l.split([' ', ',', ';', '(', ')']))
                .any(|word| word == method);
            assert!(listed, "Db::{method} ({file}) is not in the index");
        }
    }
}
