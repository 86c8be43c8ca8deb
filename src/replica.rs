//! A replica's in-memory view of the store (clients, rules, the mode) and its rate-limit
//! counters, reloaded when the store's change count moves (this process's writes at once, other
//! processes' through the store's change follower).

use std::collections::HashMap;
use std::sync::Arc;

use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::DateTime;

use crate::counting::Counting;
use crate::domain::KeySha256;
use crate::limit::{Decision, RuleTable, Subject};
use crate::model::MaintenanceInputs;
use crate::store::{Db, LiveState, RuleRecord, StoreError, Usage, UsageBatch};

pub use crate::auth::Caller;
pub use crate::clock::Clock;

/// How long a request waits for a reload under way before answering from the previous view.
const STALE_WAIT: Duration = Duration::from_millis(50);

/// How long a replica serves its last view after a failed reload before trying again.
const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Where requests are counted: this replica's memory, or the shared counters.
    pub counting: Counting,
    pub clock: Clock,
    pub options: ReplicaOptions,
    /// How many times the view was loaded, exposed as a metric.
    reloads: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica over `db` that counts in its own memory; the view is loaded on first use.
    pub fn new(db: Db, clock: Clock, options: ReplicaOptions) -> Replica {
        let counting = Counting::memory(options.counters);
        Replica::with_counting(db, clock, options, counting)
    }

    /// A replica over `db` that counts in `counting` (say, [`Counting::shared`]).
    pub fn with_counting(db: Db, clock: Clock, options: ReplicaOptions, counting: Counting) -> Replica {
        Replica {
            db,
            view: ArcSwapOption::empty(),
            reloading: tokio::sync::Mutex::new(None),
            counting,
            clock,
            options,
            reloads: Default::default(),
        }
    }

    /// The current time in milliseconds since the epoch, as the limiter counts.
    pub fn now_ms(&self) -> u64 {
        u64::try_from((self.clock)().timestamp_millis()).unwrap_or(0)
    }

    /// Decides about one request of `subject` against `table` and counts it.
    pub async fn check(&self, table: &RuleTable, subject: &Subject<'_>) -> Decision {
        self.counting.check(&table.matching(subject), self.now_ms()).await
    }

    /// How many times the view was loaded.
    pub fn reloads(&self) -> u64 {
        self.reloads.get()
    }

    /// The reload count itself, for a metrics registry (clones count together).
    pub fn reload_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.reloads.clone()
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
                self.reloads.inc();
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
        self.db.record_usage(&self.options.name, &batch).await?;
        Ok(batch.usage.len())
    }

    /// The counters counted since the last call, as snapshot rows; idle counters are forgotten.
    fn take_usage(&self) -> Option<UsageBatch> {
        let now = (self.clock)();
        let readings = self.counting.take_readings(self.now_ms());
        let view = self.view.load_full()?;
        let usage: Vec<Usage> = readings
            .iter()
            .filter_map(|(counter, r)| {
                let rule = &view.rules.get(&r.key.rule)?.rule;
                Some(Usage {
                    scope: rule.scope,
                    rule_key: rule.key.as_str().to_owned(),
                    key: r
                        .key
                        .addr
                        .map_or_else(|| rule.key.as_str().to_owned(), |a| a.to_string()),
                    shadow: rule.shadow,
                    counter: *counter,
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
    /// changes made elsewhere and writes counters every snapshot interval.
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
        let follower = {
            let replica = Arc::clone(self);
            tokio::spawn(async move {
                let db = replica.db.clone();
                let every = replica.options.snapshot_interval;
                db.follow_changes(&replica.options.name, every, || replica.take_usage())
                    .await;
            })
        };
        crate::shutdown::TaskGuard::new(vec![refresher, follower])
    }
}
