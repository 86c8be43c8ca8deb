//! A replica's in-memory view of the store (its [`Mirror`], and the clients by key, the rule
//! table and the mode inputs kept from it) and its rate-limit counters, brought up to date when
//! the store's change count moves (this process's writes at once, other processes' through the
//! store's change follower).

use std::num::NonZeroU32;
use std::sync::Arc;

use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use chrono::DateTime;

use crate::counting::Counting;
use crate::limit::{CounterKey, Decision, Rule, RuleTable, Subject};
use crate::mirror::{Delta, Mirror, Step};
use crate::model::{Client, MaintenanceInputs, Stored};
use crate::store::{Db, StoreError, Usage, UsageBatch};

use crate::auth::Caller;
use crate::clock::Clock;

/// The longest a request waits for the view to follow a change before it is answered from the
/// previous one.
const STALE_WAIT: Duration = Duration::from_millis(50);

/// How long a replica serves its last view after a failed reload before trying again.
const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

/// What a replica serves from: the store's rows ([`Mirror`]) and what requests look up in
/// them, kept in step with them row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The change count this view was loaded at.
    generation: u64,
    /// The store's rows, exact at a revision.
    pub mirror: Mirror,
    /// Active clients by key hash.
    pub clients: crate::auth::Clients,
    /// The enabled rules, compiled for the limiter.
    pub table: RuleTable,
    pub maintenance: MaintenanceInputs,
}

impl View {
    fn new(generation: u64, mirror: Mirror) -> View {
        let mut clients = crate::auth::Clients::new();
        for client in mirror.client_map().values() {
            add_client(&mut clients, client);
        }
        View {
            generation,
            clients,
            table: RuleTable::new(mirror.rule_map().values().map(|r| (r.id, &r.rule))),
            maintenance: mirror.maintenance(),
            mirror,
        }
    }

    /// This view over `mirror`, which `delta` brought from this view's mirror.
    fn patched(&self, generation: u64, mirror: Mirror, delta: &Delta) -> View {
        let mut view = View {
            generation,
            mirror,
            ..self.clone()
        };
        for swap in &delta.rules {
            if let Some(old) = &swap.before {
                view.table.remove(old.id, &old.rule);
            }
            if let Some(new) = &swap.after {
                view.table.insert(new.id, &new.rule);
            }
        }
        // Every client out before any comes in: a key may move from one client to another.
        for old in delta.clients.iter().filter_map(|s| s.before.as_ref()) {
            let hash = &old.value.key_sha256;
            if view.clients.get(hash).is_some_and(|c| c.id == old.id) {
                view.clients.remove(hash);
            }
        }
        for new in delta.clients.iter().filter_map(|s| s.after.as_ref()) {
            add_client(&mut view.clients, new);
        }
        if delta.touches_maintenance() {
            view.maintenance = view.mirror.maintenance();
        }
        view
    }
}

/// Adds `client` to the callers by key hash, if it is active.
fn add_client(clients: &mut crate::auth::Clients, client: &Stored<Client>) {
    if !client.value.active {
        return;
    }
    let caller = Caller {
        id: client.id,
        name: client.value.name.clone(),
        client_type: client.value.client_type,
        role: client.value.role,
    };
    clients.insert(client.value.key_sha256.clone(), caller);
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
    /// How many times the view was loaded whole, exposed as a metric.
    reloads: prometheus_client::metrics::counter::Counter,
    /// How many times the view followed the change log row by row.
    row_reloads: prometheus_client::metrics::counter::Counter,
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
            row_reloads: Default::default(),
        }
    }

    /// The store this replica serves from.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The current time in milliseconds since the epoch, as the limiter counts.
    pub fn now_ms(&self) -> u64 {
        u64::try_from((self.clock)().timestamp_millis()).unwrap_or(0)
    }

    /// Decides about one request of `subject` against `table` and counts it.
    pub async fn check(&self, table: &RuleTable, subject: &Subject<'_>) -> Decision {
        self.counting.check(&table.matching(subject), self.now_ms()).await
    }

    /// [`check`](Self::check) for `hits` requests at once, over rules already matched.
    pub async fn check_hits(&self, matched: &[(&Arc<Rule>, CounterKey)], hits: NonZeroU32) -> Decision {
        self.counting.check_hits(matched, self.now_ms(), hits).await
    }

    /// What [`check`](Self::check) would decide, counting nothing.
    pub async fn peek(&self, table: &RuleTable, subject: &Subject<'_>) -> Decision {
        self.counting.peek(&table.matching(subject), self.now_ms()).await
    }

    /// How many times the view was loaded whole.
    pub fn reloads(&self) -> u64 {
        self.reloads.get()
    }

    /// How many times the view followed changed rows alone.
    pub fn row_reloads(&self) -> u64 {
        self.row_reloads.get()
    }

    /// The reload counts themselves (whole, then row by row), for a metrics registry (clones
    /// count together).
    pub fn reload_counters(
        &self,
    ) -> (
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    ) {
        (self.reloads.clone(), self.row_reloads.clone())
    }

    /// The view, brought up to date first if a change has been signalled since it was loaded:
    /// a request answered after a change is known sees it (a client deactivated a moment ago is
    /// refused). That costs the rows that changed, a few milliseconds; a reload that takes
    /// longer than `STALE_WAIT` (the change log could not name the rows, and everything is
    /// read again) is not waited for: the previous view answers meanwhile. While the store is
    /// unreachable the last view is served (and reloading retried every second).
    pub async fn view(&self) -> Result<Arc<View>, StoreError> {
        match self.current() {
            Ok(current) => Ok(current),
            // Out of line: catching up is a future of kilobytes, which every request's future
            // would otherwise carry, and copy each time it is moved, for a view that is current.
            Err(behind) => Box::pin(self.catch_up(behind)).await,
        }
    }

    /// The view, when it has every change signalled: what [`Replica::view`] answers without
    /// waiting.
    pub fn view_now(&self) -> Option<Arc<View>> {
        self.current().ok()
    }

    /// The view if it has every change signalled; else what there is.
    fn current(&self) -> Result<Arc<View>, Option<Arc<View>>> {
        let wanted = self.db.changes().current();
        match self.view.load_full() {
            Some(current) if current.generation >= wanted => Ok(current),
            behind => Err(behind),
        }
    }

    /// [`Replica::view`] when the view is behind (or not loaded yet).
    async fn catch_up(&self, behind: Option<Arc<View>>) -> Result<Arc<View>, StoreError> {
        let Some(current) = behind else {
            return self.reload(self.reloading.lock().await).await;
        };
        match tokio::time::timeout(STALE_WAIT, self.reloading.lock()).await {
            Ok(guard) => match tokio::time::timeout(STALE_WAIT, self.reload(guard)).await {
                Ok(view) => view,
                // Too long for a request: the replica's refresher (or the next request) reads
                // it again.
                Err(_) => Ok(current),
            },
            Err(_) => Ok(current),
        }
    }

    /// The view with every change this process knows of, waiting for a reload however long it
    /// takes: after a write, so that its author reads it back.
    pub async fn fresh_view(&self) -> Result<Arc<View>, StoreError> {
        match self.current() {
            Ok(current) => Ok(current),
            Err(_) => Box::pin(async { self.reload(self.reloading.lock().await).await }).await,
        }
    }

    /// Brings the view up to the store's revision: the rows the change log names, or
    /// everything when it cannot say.
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
        let followed = match &current {
            Some(current) => {
                let mut mirror = current.mirror.clone();
                mirror.follow(&self.db).await.map(|step| match step {
                    Step::Same => View {
                        generation: wanted,
                        mirror,
                        ..View::clone(current)
                    },
                    Step::Rows(delta) => {
                        self.row_reloads.inc();
                        current.patched(wanted, mirror, &delta)
                    }
                    Step::Whole => {
                        self.reloads.inc();
                        View::new(wanted, mirror)
                    }
                })
            }
            None => Mirror::load(&self.db).await.map(|mirror| {
                self.reloads.inc();
                View::new(wanted, mirror)
            }),
        };
        let view = match (followed, &current) {
            (Ok(view), _) => Arc::new(view),
            (Err(e), Some(current)) => {
                tracing::warn!(error = %e, "cannot refresh the cached state; serving the last one");
                *failed_at = Some(Instant::now());
                return Ok(Arc::clone(current));
            }
            (Err(e), None) => return Err(e),
        };
        self.view.store(Some(Arc::clone(&view)));
        *failed_at = None;
        crate::outage::store_answered();
        Ok(view)
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
                let rule = &view.mirror.rule(r.key.rule)?.rule;
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
                    max_requests: rule.max_requests.get().into(),
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
    /// changes made elsewhere, and writes counters every snapshot interval.
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
            let db = self.db.clone();
            tokio::spawn(async move { db.follow_changes().await })
        };
        let snapshots = {
            let replica = Arc::clone(self);
            tokio::spawn(async move {
                let every = replica.options.snapshot_interval;
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if let Err(e) = replica.flush().await {
                        tracing::warn!(error = %e, "cannot write rate-limit snapshots");
                    }
                }
            })
        };
        crate::shutdown::TaskGuard::new(vec![refresher, follower, snapshots])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::{ClientName, ClientType, KeySha256, Mode, Owner, Role, Scope};
    use crate::limit::table::tests::record;
    use crate::model::Maintenance;
    use crate::store::{ModeRecord, RowIds, Rows as StoreRows, RuleRecord};

    /// One row written: a rule (`Some`: its key and limit, enabled or not; `None`: deleted), or
    /// a client (active or not, with one of a few keys, so a key moves between clients).
    #[derive(Debug, Clone)]
    enum Write {
        Rule(i64, Option<(u8, u32, bool)>),
        Client(i64, Option<(u8, bool)>),
    }

    fn write() -> impl Strategy<Value = Write> {
        prop_oneof![
            (1..12i64, proptest::option::of((0..10u8, 0..5u32, any::<bool>())))
                .prop_map(|(id, r)| Write::Rule(id, r)),
            (1..6i64, proptest::option::of((0..4u8, any::<bool>()))).prop_map(|(id, c)| Write::Client(id, c)),
        ]
    }

    /// The store as rows by id, which `rows` turns into what a whole read returns.
    #[derive(Default)]
    struct Rows {
        rules: BTreeMap<i64, (u8, u32, bool)>,
        clients: BTreeMap<i64, (u8, bool)>,
    }

    impl Rows {
        fn rule(id: i64, (key, max, enabled): (u8, u32, bool)) -> RuleRecord {
            // Keys of several kinds, so every slot of the table is exercised.
            let (scope, key) = match key % 5 {
                0 => (Scope::Global, "*".to_owned()),
                1 => (Scope::Ip, format!("10.0.0.{key}")),
                2 => (Scope::Ip, format!("10.{key}.0.0/16")),
                3 => (Scope::ApiKey, format!("client-{key}")),
                _ => (Scope::User, format!("user-{key}")),
            };
            let (_, mut rule) = record(id, scope, &key, max);
            rule.enabled = enabled;
            RuleRecord {
                id,
                rule,
                owner: Owner::Git,
                created_at: DateTime::UNIX_EPOCH,
                updated_at: DateTime::UNIX_EPOCH,
            }
        }

        fn client(id: i64, (key, active): (u8, bool)) -> Stored<Client> {
            Stored {
                id,
                owner: Owner::Git,
                value: Client {
                    name: ClientName::parse(format!("client-{id}")).unwrap(),
                    client_type: ClientType::Integration,
                    role: Role::Reader,
                    key_sha256: KeySha256::of_key(&format!("key-{key}")),
                    active,
                    description: String::new(),
                },
            }
        }

        /// Writes `w` as the store would: a write its unique indexes refuse (a rule key taken,
        /// an active key hash taken) changes nothing. Returns whether it was written.
        fn write(&mut self, w: &Write) -> bool {
            match *w {
                Write::Rule(id, Some(r)) => {
                    let key = |r: &RuleRecord| (r.rule.scope, r.rule.key.as_str().to_owned());
                    let new = key(&Rows::rule(id, r));
                    let taken = self
                        .rules
                        .iter()
                        .any(|(other, o)| *other != id && key(&Rows::rule(*other, *o)) == new);
                    if !taken {
                        self.rules.insert(id, r);
                    }
                    !taken
                }
                Write::Client(id, Some((hash, active))) => {
                    let taken = active
                        && self
                            .clients
                            .iter()
                            .any(|(other, (h, a))| *other != id && *a && *h == hash);
                    if !taken {
                        self.clients.insert(id, (hash, active));
                    }
                    !taken
                }
                Write::Rule(id, None) => self.rules.remove(&id).is_some(),
                Write::Client(id, None) => self.clients.remove(&id).is_some(),
            }
        }

        /// What a whole read returns.
        fn rows(&self) -> StoreRows {
            let normal = Maintenance {
                mode: Mode::Normal,
                reason: String::new(),
            };
            StoreRows {
                rules: self.rules.iter().map(|(id, r)| Rows::rule(*id, *r)).collect(),
                clients: self.clients.iter().map(|(id, c)| Rows::client(*id, *c)).collect(),
                mode: Some(ModeRecord {
                    stored: Stored {
                        id: 1,
                        owner: Owner::Git,
                        value: normal.clone(),
                    },
                    git: normal,
                    updated_at: DateTime::UNIX_EPOCH,
                }),
                profile: Some(None),
                overrides: Some(Vec::new()),
                ..StoreRows::default()
            }
        }
    }

    proptest! {
        /// A view that followed the changed rows equals a view read whole, after every batch.
        #[test]
        fn a_followed_view_equals_a_whole_reload(batches in prop::collection::vec(prop::collection::vec(write(), 1..6), 1..12)) {
            let mut rows = Rows::default();
            let mut view = View::new(0, Mirror::of(0, rows.rows()).unwrap());
            for (n, batch) in batches.into_iter().enumerate() {
                let mut ids = RowIds::default();
                for w in batch {
                    if rows.write(&w) {
                        match w {
                            Write::Rule(id, _) => ids.rules.push(id),
                            Write::Client(id, _) => ids.clients.push(id),
                        }
                    }
                }
                ids.rules.sort_unstable();
                ids.rules.dedup();
                ids.clients.sort_unstable();
                ids.clients.dedup();
                // What the store holds of the changed rows now, as the change log's reader
                // returns them.
                let whole = rows.rows();
                let changed = StoreRows {
                    rules: whole.rules.iter().filter(|r| ids.rules.contains(&r.id)).cloned().collect(),
                    clients: whole.clients.iter().filter(|c| ids.clients.contains(&c.id)).cloned().collect(),
                    ..StoreRows::default()
                };
                let generation = n as u64 + 1;
                let mut mirror = view.mirror.clone();
                let delta = mirror.patch(generation as i64, ids, changed);
                view = view.patched(generation, mirror, &delta);
                prop_assert_eq!(&view, &View::new(generation, Mirror::of(generation as i64, whole).unwrap()));
            }
        }
    }
}
