//! A replica's in-memory view of the store (clients, rules, the mode) and its rate-limit
//! counters, kept fresh by change signals: this process's own writes at once, other processes'
//! through Postgres LISTEN/NOTIFY or SQLite's data version.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Utc};

use crate::domain::KeySha256;
use crate::limit::{Limiter, RuleTable};
use crate::model::MaintenanceInputs;
use crate::store::{Db, LiveState, RuleRecord, Store as _, StoreError, Usage};

pub use crate::auth::Caller;
pub use crate::clock::Clock;

/// The channel the store's triggers notify on every change to cached tables.
pub const CHANNEL: &str = "valhalla_ops_changed";

/// How often a SQLite replica asks whether another process changed the file.
const SQLITE_POLL: Duration = Duration::from_millis(250);

/// How long a request waits for a reload under way before answering from the previous view.
const STALE_WAIT: Duration = Duration::from_millis(50);

/// How long a replica serves its last view after a failed reload before trying again.
const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between attempts to listen for changes again.
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a replica holds in memory, read from the store in one snapshot.
#[derive(Debug)]
pub struct View {
    /// The change count this view was loaded at.
    generation: u64,
    /// Active clients by key hash.
    pub clients: HashMap<KeySha256, Caller>,
    /// Every rule by id, enabled or not.
    pub rules: HashMap<i64, RuleRecord>,
    /// The enabled rules, compiled for the limiter.
    pub table: RuleTable,
    pub maintenance: MaintenanceInputs,
}

impl View {
    fn new(generation: u64, live: LiveState) -> View {
        let clients = live
            .clients
            .into_iter()
            .map(|c| {
                let caller = Caller {
                    id: c.id,
                    name: c.value.name,
                    role: c.value.role,
                };
                (c.value.key_sha256, caller)
            })
            .collect();
        let table = RuleTable::new(live.rules.iter().map(|r| (r.id, &r.rule)));
        View {
            generation,
            clients,
            rules: live.rules.into_iter().map(|r| (r.id, r)).collect(),
            table,
            maintenance: live.maintenance,
        }
    }
}

/// How a replica counts and records.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// This replica's name in `rate_limit_snapshots`.
    pub name: String,
    /// The most rate-limit counters held in memory.
    pub counters: usize,
    /// How often counters are written to `rate_limit_snapshots`.
    pub snapshot_interval: Duration,
    /// How long snapshot rows are kept.
    pub snapshot_retention: chrono::Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            name: default_name(),
            counters: crate::limit::DEFAULT_CAPACITY,
            snapshot_interval: Duration::from_secs(10),
            snapshot_retention: chrono::Duration::days(7),
        }
    }
}

/// `host:pid`, unique among replicas sharing a database.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

/// One process's view of the store and its counters.
pub struct Replica {
    db: Db,
    /// `None` until the first load.
    view: ArcSwapOption<View>,
    /// One reload at a time; the others wait for it and use its result.
    reloading: tokio::sync::Mutex<Option<Instant>>,
    pub limiter: Limiter,
    pub clock: Clock,
    pub options: ReplicaOptions,
    reloads: AtomicU64,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica over `db`; the view is loaded on first use.
    pub fn new(db: Db, clock: Clock, options: ReplicaOptions) -> Replica {
        Replica {
            db,
            view: ArcSwapOption::empty(),
            reloading: tokio::sync::Mutex::new(None),
            limiter: Limiter::new(options.counters),
            clock,
            options,
            reloads: AtomicU64::new(0),
        }
    }

    /// The current time in milliseconds since the epoch, as the limiter counts.
    pub fn now_ms(&self) -> u64 {
        u64::try_from((self.clock)().timestamp_millis()).unwrap_or(0)
    }

    /// How many times the view was loaded.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The view, reloaded first if a change has been signalled since it was loaded. A reload
    /// already under way elsewhere is waited for briefly (`STALE_WAIT`); if it takes longer (a
    /// very large state), the previous view answers meanwhile rather than stalling every
    /// request. While the store is unreachable the last view is served (and reloading retried
    /// every second).
    pub async fn view(&self) -> Result<Arc<View>, StoreError> {
        let wanted = self.db.changes().current();
        match self.view.load_full() {
            Some(current) if current.generation >= wanted => Ok(current),
            Some(current) => match tokio::time::timeout(STALE_WAIT, self.reloading.lock()).await {
                Ok(guard) => self.reload(guard).await,
                Err(_) => Ok(current),
            },
            None => self.reload(self.reloading.lock().await).await,
        }
    }

    /// The view with every change this process knows of, waiting for a reload however long it
    /// takes: after a write, so that its author reads it back.
    pub async fn fresh_view(&self) -> Result<Arc<View>, StoreError> {
        let wanted = self.db.changes().current();
        match self.view.load_full() {
            Some(current) if current.generation >= wanted => Ok(current),
            _ => self.reload(self.reloading.lock().await).await,
        }
    }

    async fn reload(
        &self,
        mut failed_at: tokio::sync::MutexGuard<'_, Option<Instant>>,
    ) -> Result<Arc<View>, StoreError> {
        let current = self.view.load_full();
        // Read the count before the store: a change committed during the read leaves the
        // view behind the count, so the next request reloads again.
        let wanted = self.db.changes().current();
        if let Some(current) = &current {
            let backing_off = failed_at.is_some_and(|at| at.elapsed() < RELOAD_BACKOFF);
            if current.generation >= wanted || backing_off {
                return Ok(Arc::clone(current));
            }
        }
        match (self.db.live().await, current) {
            (Ok(live), _) => {
                let view = Arc::new(View::new(wanted, live));
                self.view.store(Some(Arc::clone(&view)));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *failed_at = None;
                Ok(view)
            }
            (Err(e), Some(current)) => {
                tracing::warn!(error = %e, "cannot refresh the cached state; serving the last one");
                *failed_at = Some(Instant::now());
                Ok(current)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Writes the counters counted since the last flush to `rate_limit_snapshots` in one
    /// statement, and forgets idle counters.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let Some(batch) = self.take_usage() else {
            return Ok(0);
        };
        self.db
            .record_usage(&self.options.name, &batch.usage, batch.now, batch.keep_after)
            .await?;
        Ok(batch.usage.len())
    }

    /// The counters counted since the last call, as snapshot rows; idle counters are forgotten.
    fn take_usage(&self) -> Option<UsageBatch> {
        let now = (self.clock)();
        let readings = self.limiter.take_dirty();
        self.limiter.sweep(self.now_ms());
        let view = self.view.load_full()?;
        let usage: Vec<Usage> = readings
            .iter()
            .filter_map(|r| {
                let rule = &view.rules.get(&r.key.rule)?.rule;
                Some(Usage {
                    scope: rule.scope,
                    rule_key: rule.key.as_str().to_owned(),
                    key: r
                        .key
                        .addr
                        .map_or_else(|| rule.key.as_str().to_owned(), |a| a.to_string()),
                    shadow: rule.shadow,
                    window_seconds: i64::try_from(r.key.window_ms / 1000).unwrap_or(i64::MAX),
                    max_requests: rule.max_requests.into(),
                    current_count: r.count.into(),
                    window_started_at: DateTime::from_timestamp_millis(
                        i64::try_from(r.window_start_ms).unwrap_or(i64::MAX),
                    )
                    .unwrap_or(now),
                })
            })
            .collect();
        (!usage.is_empty()).then(|| UsageBatch {
            usage,
            now,
            keep_after: now - self.options.snapshot_retention,
        })
    }

    /// Keeps the view fresh and the snapshots written until the guard is dropped: listens for
    /// changes made elsewhere and flushes counters every snapshot interval.
    pub fn spawn(self: &Arc<Self>) -> crate::shutdown::TaskGuard {
        // Reloads as soon as anything changes (a write here, a notification, the file's data
        // version), so requests find the view fresh instead of paying for the reload.
        let refresher = {
            let replica = Arc::clone(self);
            tokio::spawn(async move {
                let changes = Arc::clone(replica.db.changes());
                loop {
                    let changed = changes.changed();
                    tokio::pin!(changed);
                    // Interest first, then the check: a change in between still wakes us.
                    changed.as_mut().enable();
                    let stale = replica
                        .view
                        .load()
                        .as_ref()
                        .is_none_or(|v| v.generation < changes.current());
                    if stale {
                        if let Err(e) = replica.fresh_view().await {
                            tracing::warn!(error = %e, "cannot refresh the cached state");
                        }
                        continue;
                    }
                    changed.await;
                }
            })
        };
        let replica = Arc::clone(self);
        let mut tasks = vec![refresher];
        tasks.extend(match self.db.clone() {
            Db::Postgres(store) => {
                let flusher = {
                    let replica = Arc::clone(self);
                    tokio::spawn(async move {
                        let mut tick = replica.snapshot_ticks();
                        loop {
                            tick.tick().await;
                            if let Err(e) = replica.flush().await {
                                tracing::warn!(error = %e, "cannot write rate-limit snapshots");
                            }
                        }
                    })
                };
                let listener = tokio::spawn(async move { replica.listen(store.pool().clone()).await });
                vec![flusher, listener]
            }
            Db::Sqlite(store) => vec![tokio::spawn(
                async move { replica.poll(store.pool().clone()).await },
            )],
        });
        crate::shutdown::TaskGuard::new(tasks)
    }

    /// Ticks every snapshot interval, the first one interval from now.
    fn snapshot_ticks(&self) -> tokio::time::Interval {
        let period = self.options.snapshot_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    }

    /// Marks the view stale; the refresher reloads it at once.
    fn changed_elsewhere(&self) {
        self.db.changes().bump();
    }

    /// Postgres: LISTEN on [`CHANNEL`]; every notification refreshes the view. After a lost
    /// connection the listener reconnects and the view is reloaded in full, since notifications
    /// sent meanwhile are gone.
    async fn listen(&self, pool: sqlx::PgPool) {
        // Capped low: once the database is back, changes made meanwhile must be enforced within
        // about two seconds (this wait plus a connection's).
        let backoff = crate::backoff::Backoff {
            first: Duration::from_millis(100),
            max: LISTEN_BACKOFF_MAX,
        };
        let mut failures = 0;
        loop {
            let listener = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            };
            let mut listener = match listener.await {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    let wait = backoff.after(failures);
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot listen for changes");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            failures = 0;
            // Listening now: anything committed before is read by this full reload.
            self.changed_elsewhere();
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => {
                        // One commit notifies once per table it touched: one reload for all.
                        while listener.next_buffered().is_some() {}
                        self.changed_elsewhere();
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

    /// SQLite: one process owns the file, and its own writes refresh the view at once. A
    /// command run beside it (a reconcile, an edit by hand) is seen through `PRAGMA
    /// data_version`, which changes when another connection commits. Snapshots are written
    /// through the same connection, so the replica's own flushes do not look like changes.
    async fn poll(&self, pool: sqlx::SqlitePool) {
        use sqlx::{ConnectOptions as _, Connection as _};
        let mut last = None;
        let mut conn: Option<sqlx::SqliteConnection> = None;
        let mut flushes = self.snapshot_ticks();
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
                match self.take_usage() {
                    Some(batch) => {
                        crate::store::record_usage_on(
                            c,
                            &self.options.name,
                            &batch.usage,
                            batch.now,
                            batch.keep_after,
                        )
                        .await
                    }
                    None => Ok(()),
                }
            } else {
                match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                    .fetch_one(&mut *c)
                    .await
                {
                    Ok(version) => {
                        if last.is_some_and(|l| l != version) {
                            self.changed_elsewhere();
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

/// Snapshot rows ready to write.
struct UsageBatch {
    usage: Vec<Usage>,
    now: DateTime<Utc>,
    keep_after: DateTime<Utc>,
}
