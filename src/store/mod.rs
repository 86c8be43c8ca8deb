//! The store: one `Store` trait, a PostgreSQL and a SQLite backend chosen from the URL.

pub mod postgres;
mod shared;
pub mod sqlite;
mod writes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{ClientName, ClientType, FlagName, Mode, Owner, ProfileName, Role, Scope};
use crate::model::{
    Actual, Client, FeatureFlag, MaintenanceInputs, NewOverride, Override, RateLimitRule, Stored, Window,
};
use crate::plan::Plan;

use shared::Sql;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The embedded default: a SQLite file in the working directory, created on first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://valhalla-ops.db";

/// How a store behaves, beyond its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long an apply waits for another writer before failing with [`StoreError::LockHeld`].
    pub lock_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            lock_timeout: Duration::from_secs(15),
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("another reconcile holds the apply lock (waited {0:?}); try again when it has finished")]
    LockHeld(Duration),
    #[error("table {table}, row {id}: {message}; fix or remove the row by hand")]
    Corrupt {
        table: &'static str,
        id: i64,
        message: String,
    },
    #[error("override #{0} does not exist or is already cleared")]
    NoSuchOverride(i64),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0} is declared in git: changing it over HTTP makes an override, which needs a `reason`")]
    OverrideNeedsReason(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why an apply did not happen: the decision refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E> {
    #[error(transparent)]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who runs a reconcile and against which desired state; recorded with the run.
#[derive(Debug, Clone)]
pub struct RunMeta {
    pub actor: String,
    /// Where the run came from: `cli`, `watch`, `api`.
    pub source: String,
    pub started_at: DateTime<Utc>,
    pub state_fingerprint: String,
}

/// A recorded reconcile run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub actor: String,
    pub source: String,
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub deactivated: i64,
    pub held: i64,
    pub unmanaged: i64,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub source: String,
    pub kind: String,
    pub key: String,
    pub action: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    /// The plan that was written.
    pub plan: Plan,
    pub run_id: i64,
}

/// What the rest of valhalla-ops asks of a store; [`Db`] implements it for both backends, each
/// of which supplies only its dialect (`shared::Dialect`). `apply` is the only writer of managed
/// resources: it takes the single-writer lock, reads a snapshot, lets `decide` turn it into a
/// plan (pure, and free to refuse), writes the plan in bulk with its run and audit rows, and
/// commits; any failure rolls the whole transaction back.
pub trait Store: Send + Sync {
    /// `postgres` or `sqlite`.
    fn backend(&self) -> &'static str;

    /// Applies pending migrations; returns the versions applied now.
    fn migrate(&self) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Reads everything a plan depends on in one consistent snapshot.
    fn snapshot(&self) -> impl Future<Output = Result<Actual, StoreError>> + Send;

    /// Decides and applies a plan atomically under the apply lock.
    fn apply<F, E>(
        &self,
        meta: RunMeta,
        decide: F,
    ) -> impl Future<Output = Result<Applied, ApplyError<E>>> + Send
    where
        F: FnOnce(&Actual) -> Result<Plan, E> + Send,
        E: Send;

    /// Records an override.
    fn add_override(
        &self,
        new: NewOverride,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Override, StoreError>> + Send;

    /// Overrides not cleared yet (some may have expired).
    fn open_overrides(&self) -> impl Future<Output = Result<Vec<Override>, StoreError>> + Send;

    /// Clears one override (`Some(id)`) or every open one, audited with `source` (`cli`, `api`);
    /// returns how many were cleared.
    fn clear_overrides(
        &self,
        id: Option<i64>,
        actor: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The most recent reconcile runs, newest first.
    fn runs(&self, limit: i64) -> impl Future<Output = Result<Vec<RunRecord>, StoreError>> + Send;

    /// The most recent audit records, newest first.
    fn audit(&self, limit: i64) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// Active clients, for authenticating requests.
    fn active_clients(&self) -> impl Future<Output = Result<Vec<Stored<Client>>, StoreError>> + Send;

    /// What the effective maintenance mode depends on.
    fn maintenance(&self) -> impl Future<Output = Result<MaintenanceInputs, StoreError>> + Send;

    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rules matching a filter, ordered by scope and key.
    fn rules(&self, filter: &RuleFilter) -> impl Future<Output = Result<Vec<RuleRecord>, StoreError>> + Send;

    /// One rule by id.
    fn rule(&self, id: i64) -> impl Future<Output = Result<Option<RuleRecord>, StoreError>> + Send;

    /// Usage snapshots matching a filter, newest first.
    fn snapshots(
        &self,
        filter: &SnapshotFilter,
    ) -> impl Future<Output = Result<Vec<SnapshotRecord>, StoreError>> + Send;

    /// Creates or updates the rule of its (scope, key) for an HTTP caller, under the writer lock.
    /// A git-owned rule keeps its owner and gets an override, so the reconciler holds it.
    fn put_rule(
        &self,
        rule: &RateLimitRule,
        change: &ApiChange,
    ) -> impl Future<Output = Result<RuleWritten, StoreError>> + Send;

    /// Deletes a rule for an HTTP caller; a git-owned one gets an override (held deleted).
    fn delete_rule(
        &self,
        id: i64,
        change: &ApiChange,
    ) -> impl Future<Output = Result<Option<Override>, StoreError>> + Send;

    /// Sets the maintenance mode for an HTTP caller: always an override (it needs a reason),
    /// which the reconciler holds until it ends.
    fn set_mode(
        &self,
        mode: Mode,
        change: &ApiChange,
    ) -> impl Future<Output = Result<Override, StoreError>> + Send;

    /// Clients matching a filter, by name; never key material beyond the display prefix.
    fn clients(
        &self,
        filter: &ClientFilter,
    ) -> impl Future<Output = Result<Vec<ClientRecord>, StoreError>> + Send;

    /// One client by id, as the API shows it.
    fn client(&self, id: i64) -> impl Future<Output = Result<Option<ClientRecord>, StoreError>> + Send;

    /// Maintenance windows matching a filter, by start.
    fn windows(
        &self,
        filter: &WindowFilter,
    ) -> impl Future<Output = Result<Vec<WindowRecord>, StoreError>> + Send;

    /// Creates an api-owned window; [`StoreError::Conflict`] when the name is taken.
    fn create_window(
        &self,
        window: &Window,
        change: &ApiChange,
    ) -> impl Future<Output = Result<WindowRecord, StoreError>> + Send;

    /// Every feature flag, by name.
    fn flags(&self) -> impl Future<Output = Result<Vec<FlagRecord>, StoreError>> + Send;

    /// Counts for the admin security snapshot.
    fn security_counts(&self) -> impl Future<Output = Result<SecurityCounts, StoreError>> + Send;

    /// Audit records matching a filter, newest first.
    fn audit_filtered(
        &self,
        filter: &AuditFilter,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, StoreError>> + Send;

    /// Locks the platform down: read_only, non-admin clients deactivated, the global limit set
    /// when given; one transaction, one override group (`change.group_id`).
    fn lockdown(
        &self,
        global_max_requests: Option<u32>,
        change: &ApiChange,
    ) -> impl Future<Output = Result<Lockdown, StoreError>> + Send;

    /// Applies writes all-or-nothing in one locked transaction; on failure, nothing is written
    /// and the error names the failing write by its index.
    fn batch(&self, ops: &[WriteOp]) -> impl Future<Output = Result<Vec<WriteDone>, BatchError>> + Send;

    /// How many reconcile runs the store has recorded.
    fn run_count(&self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// Deletes runs of `source` that changed nothing and finished before `before` (a watch
    /// loop records a run every pass); runs that changed something are kept with their audit.
    fn forget_idle_runs(
        &self,
        source: &str,
        before: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Active clients, every rule and the maintenance inputs, read in one snapshot.
    fn live(&self) -> impl Future<Output = Result<LiveState, StoreError>> + Send;

    /// Upserts a replica's counters and forgets snapshot rows last updated before
    /// `keep_after`.
    fn record_usage(
        &self,
        replica: &str,
        usage: &[Usage],
        now: DateTime<Utc>,
        keep_after: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Registers a client owned by the API; [`StoreError::Conflict`] when the name is taken.
    fn register_client(
        &self,
        client: &Client,
        key_prefix: &str,
        change: &ApiChange,
    ) -> impl Future<Output = Result<ClientRecord, StoreError>> + Send;

    /// Activates or deactivates a client; a git-owned one gets an override (it needs a reason).
    fn set_client_active(
        &self,
        id: i64,
        active: bool,
        change: &ApiChange,
    ) -> impl Future<Output = Result<ClientRecord, StoreError>> + Send;
}

/// Who changes something over HTTP, and why: recorded in the audit log and in an override when
/// the change touches a git-owned resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiChange {
    /// The calling client's name.
    pub actor: String,
    pub reason: Option<String>,
    /// When an override made by this change ends (`None`: until cleared).
    pub expires_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Overrides made together (a lockdown) share a group, lifted together.
    pub group_id: Option<String>,
}

/// The result of [`Store::put_rule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleWritten {
    #[serde(flatten)]
    pub rule: RuleRecord,
    /// Whether the rule is new.
    #[serde(skip)]
    pub created: bool,
    /// The override recorded because the rule is git-owned.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub hold: Option<Override>,
}

/// Which clients to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFilter {
    pub active: Option<bool>,
    pub client_type: Option<ClientType>,
    pub page: Page,
}

/// A client as the API shows it: no key and no hash, only the key's display prefix (for keys the
/// server issued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClientRecord {
    pub id: i64,
    pub name: ClientName,
    pub client_type: ClientType,
    pub role: Role,
    pub active: bool,
    pub description: String,
    pub key_prefix: Option<String>,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which maintenance windows to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowFilter {
    pub active: Option<bool>,
    /// Only windows that start after this time.
    pub starts_after: Option<DateTime<Utc>>,
    pub page: Page,
}

/// A stored window with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WindowRecord {
    pub id: i64,
    #[serde(flatten)]
    pub window: Window,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored feature flag with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FlagRecord {
    pub id: i64,
    #[serde(flatten)]
    pub flag: FeatureFlag,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Counts of clients and rules for the security snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityCounts {
    /// (role, active, count) for every combination present.
    pub clients: Vec<(Role, bool, i64)>,
    /// Active clients, the longest unchanged first: (name, role, last changed).
    pub oldest_keys: Vec<(String, Role, DateTime<Utc>)>,
    pub rules: i64,
    pub disabled_rules: i64,
    pub shadow_rules: i64,
}

/// Which audit records to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub key: Option<String>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: i64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    SetMode {
        mode: Mode,
        change: ApiChange,
    },
    SetFlag {
        name: FlagName,
        enabled: bool,
        change: ApiChange,
    },
    SetProfile {
        name: ProfileName,
        change: ApiChange,
    },
    ClearOverrides {
        group_id: Option<String>,
        actor: String,
        now: DateTime<Utc>,
    },
}

/// What one write of a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteDone {
    Override(Override),
    Cleared(u64),
}

/// Why a batch wrote nothing: the write at `index` failed (or the batch could not start).
#[derive(Debug, thiserror::Error)]
#[error("write {index} failed: {source}")]
pub struct BatchError {
    pub index: usize,
    #[source]
    pub source: StoreError,
}

/// What a lockdown did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockdown {
    /// The override group; `clear_overrides` with it lifts the lockdown.
    pub group_id: String,
    /// The clients deactivated, by name.
    pub deactivated: Vec<String>,
    pub overrides: Vec<Override>,
}

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// Which rules to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFilter {
    pub scope: Option<Scope>,
    pub key: Option<String>,
    pub enabled: Option<bool>,
    pub page: Page,
}

/// Which usage snapshots to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub scope: Option<Scope>,
    pub key: Option<String>,
    pub page: Page,
}

/// A stored rule with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RuleRecord {
    pub id: i64,
    #[serde(flatten)]
    pub rule: RateLimitRule,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RuleRecord {
    /// The rule as the planner and the writers see it.
    pub fn stored(self) -> Stored<RateLimitRule> {
        Stored {
            id: self.id,
            owner: self.owner,
            value: self.rule,
        }
    }
}

/// A counter snapshot written by enforcement (an audit of usage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SnapshotRecord {
    pub id: i64,
    pub scope: String,
    /// The counted subject: the rule's key, or for a network rule the address counted.
    pub key: String,
    /// The key of the rule that counted (the network, for a network rule).
    pub rule_key: String,
    pub shadow: bool,
    /// The replica whose counter this is: counters are per replica.
    pub replica: String,
    pub window_seconds: i64,
    pub max_requests: i64,
    pub current_count: i64,
    pub window_started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One counter's count in one window, as a replica records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub scope: Scope,
    pub rule_key: String,
    /// The counted subject: the rule's key, or for a network rule the address.
    pub key: String,
    pub shadow: bool,
    pub window_seconds: i64,
    pub max_requests: i64,
    pub current_count: i64,
    pub window_started_at: DateTime<Utc>,
}

/// What a replica keeps in memory: active clients, every rule, the maintenance inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveState {
    pub clients: Vec<Stored<Client>>,
    pub rules: Vec<RuleRecord>,
    pub maintenance: MaintenanceInputs,
}

/// How many committed changes this process knows of: bumped after every write through this
/// store, and by a replica's listener for writes made elsewhere. Caches compare it with the
/// count they were loaded at.
#[derive(Debug, Default)]
pub struct Changes {
    generation: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl Changes {
    /// Records a change and wakes whoever waits for one.
    pub fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// The number of changes so far.
    pub fn current(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Completes at the next change after this call.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Either backend, chosen once from the URL's scheme.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Db {
    /// The change count shared by every clone of this store.
    pub fn changes(&self) -> &Arc<Changes> {
        match self {
            Db::Postgres(s) => &s.changes,
            Db::Sqlite(s) => &s.changes,
        }
    }

    /// Passes `result` through, counting a change when the write succeeded (it has committed).
    fn written<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_ok() {
            self.changes().bump();
        }
        result
    }

    /// Connects to `url` with default options and runs pending migrations.
    pub async fn open(url: &str) -> Result<Db, StoreError> {
        Db::open_with(url, StoreOptions::default()).await
    }

    /// Connects to `url` and runs pending migrations, as every command that uses the store does.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Db, StoreError> {
        let db = Db::connect(url, options).await?;
        db.migrate().await?;
        Ok(db)
    }

    /// Connects to `url` (`postgres://…`/`postgresql://…`, or `sqlite://…`/`sqlite:…`) without
    /// migrating.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Db, StoreError> {
        Ok(
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Db::Postgres(PgStore::connect(url, options).await?)
            } else if url.starts_with("sqlite:") {
                Db::Sqlite(SqliteStore::connect(url, options).await?)
            } else {
                return Err(StoreError::UnsupportedUrl(redact(url)));
            },
        )
    }
}

/// Runs `$e` with `$s` bound to the backend inside and `DB` naming its sqlx database type.
macro_rules! on_backend {
    ($self:ident, |$s:ident| $e:expr) => {
        match $self {
            Db::Postgres($s) => {
                type DB = sqlx::Postgres;
                $e
            }
            Db::Sqlite($s) => {
                type DB = sqlx::Sqlite;
                $e
            }
        }
    };
}

impl Store for Db {
    fn backend(&self) -> &'static str {
        on_backend!(self, |_s| <DB as shared::Dialect>::NAME)
    }
    async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::migrate(&s.pool).await)
    }
    async fn snapshot(&self) -> Result<Actual, StoreError> {
        on_backend!(self, |s| Sql::<DB>::snapshot(&s.pool).await)
    }
    async fn apply<F, E>(&self, meta: RunMeta, decide: F) -> Result<Applied, ApplyError<E>>
    where
        F: FnOnce(&Actual) -> Result<Plan, E> + Send,
        E: Send,
    {
        self.written(on_backend!(self, |s| Sql::<DB>::apply(
            &s.pool,
            s.lock_timeout,
            meta,
            decide
        )
        .await))
    }
    async fn add_override(&self, new: NewOverride, now: DateTime<Utc>) -> Result<Override, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::add_override(
            &mut *s.pool.acquire().await?,
            new,
            now
        )
        .await))
    }
    async fn open_overrides(&self) -> Result<Vec<Override>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::open_overrides(&mut *s.pool.acquire().await?)
            .await)
    }
    async fn clear_overrides(
        &self,
        id: Option<i64>,
        actor: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::clear_overrides(
            &mut *s.pool.acquire().await?,
            id,
            actor,
            source,
            now
        )
        .await))
    }
    async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::runs(&mut *s.pool.acquire().await?, limit)
            .await)
    }
    async fn audit(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::audit(&mut *s.pool.acquire().await?, limit)
            .await)
    }
    async fn active_clients(&self) -> Result<Vec<Stored<Client>>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::active_clients(&mut *s.pool.acquire().await?)
            .await)
    }
    async fn maintenance(&self) -> Result<MaintenanceInputs, StoreError> {
        on_backend!(self, |s| Sql::<DB>::maintenance(&mut *s.pool.acquire().await?)
            .await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, |s| Sql::<DB>::ping(&mut *s.pool.acquire().await?).await)
    }
    async fn rules(&self, filter: &RuleFilter) -> Result<Vec<RuleRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::rules(&mut *s.pool.acquire().await?, filter)
            .await)
    }
    async fn rule(&self, id: i64) -> Result<Option<RuleRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::rule(&mut *s.pool.acquire().await?, id).await)
    }
    async fn snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<SnapshotRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::snapshots(
            &mut *s.pool.acquire().await?,
            filter
        )
        .await)
    }
    async fn put_rule(&self, rule: &RateLimitRule, change: &ApiChange) -> Result<RuleWritten, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::put_rule(
            &s.pool,
            s.lock_timeout,
            rule,
            change
        )
        .await))
    }
    async fn delete_rule(&self, id: i64, change: &ApiChange) -> Result<Option<Override>, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::delete_rule(
            &s.pool,
            s.lock_timeout,
            id,
            change
        )
        .await))
    }
    async fn set_mode(&self, mode: Mode, change: &ApiChange) -> Result<Override, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::set_mode(
            &s.pool,
            s.lock_timeout,
            mode,
            change
        )
        .await))
    }
    async fn clients(&self, filter: &ClientFilter) -> Result<Vec<ClientRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::clients(
            &mut *s.pool.acquire().await?,
            filter
        )
        .await)
    }
    async fn client(&self, id: i64) -> Result<Option<ClientRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::client_record(
            &mut *s.pool.acquire().await?,
            id
        )
        .await)
    }
    async fn windows(&self, filter: &WindowFilter) -> Result<Vec<WindowRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::windows(
            &mut *s.pool.acquire().await?,
            filter
        )
        .await)
    }
    async fn create_window(&self, window: &Window, change: &ApiChange) -> Result<WindowRecord, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::create_window(
            &s.pool,
            s.lock_timeout,
            window,
            change
        )
        .await))
    }
    async fn flags(&self) -> Result<Vec<FlagRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::flags(&mut *s.pool.acquire().await?).await)
    }
    async fn security_counts(&self) -> Result<SecurityCounts, StoreError> {
        on_backend!(self, |s| Sql::<DB>::security_counts(
            &mut *s.pool.acquire().await?
        )
        .await)
    }
    async fn audit_filtered(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        on_backend!(self, |s| Sql::<DB>::audit_filtered(
            &mut *s.pool.acquire().await?,
            filter
        )
        .await)
    }
    async fn lockdown(
        &self,
        global_max_requests: Option<u32>,
        change: &ApiChange,
    ) -> Result<Lockdown, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::lockdown(
            &s.pool,
            s.lock_timeout,
            global_max_requests,
            change
        )
        .await))
    }
    async fn batch(&self, ops: &[WriteOp]) -> Result<Vec<WriteDone>, BatchError> {
        self.written(on_backend!(self, |s| Sql::<DB>::batch(
            &s.pool,
            s.lock_timeout,
            ops
        )
        .await))
    }
    async fn forget_idle_runs(&self, source: &str, before: DateTime<Utc>) -> Result<(), StoreError> {
        on_backend!(self, |s| Sql::<DB>::forget_idle_runs(
            &mut *s.pool.acquire().await?,
            source,
            before
        )
        .await)
    }
    async fn live(&self) -> Result<LiveState, StoreError> {
        on_backend!(self, |s| Sql::<DB>::live(&s.pool).await)
    }
    async fn record_usage(
        &self,
        replica: &str,
        usage: &[Usage],
        now: DateTime<Utc>,
        keep_after: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        on_backend!(self, |s| Sql::<DB>::record_usage(
            &mut *s.pool.acquire().await?,
            replica,
            usage,
            now,
            keep_after
        )
        .await)
    }
    async fn run_count(&self) -> Result<i64, StoreError> {
        on_backend!(self, |s| Sql::<DB>::run_count(&mut *s.pool.acquire().await?)
            .await)
    }
    async fn register_client(
        &self,
        client: &Client,
        key_prefix: &str,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::register_client(
            &s.pool,
            s.lock_timeout,
            client,
            key_prefix,
            change
        )
        .await))
    }
    async fn set_client_active(
        &self,
        id: i64,
        active: bool,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        self.written(on_backend!(self, |s| Sql::<DB>::set_client_active(
            &s.pool,
            s.lock_timeout,
            id,
            active,
            change
        )
        .await))
    }
}

/// [`Store::record_usage`] through one SQLite connection: a replica writes its snapshots through
/// the connection that polls `data_version`, which does not change for its own commits.
pub async fn record_usage_on(
    conn: &mut sqlx::SqliteConnection,
    replica: &str,
    usage: &[Usage],
    now: DateTime<Utc>,
    keep_after: DateTime<Utc>,
) -> Result<(), StoreError> {
    Sql::<sqlx::Sqlite>::record_usage(conn, replica, usage, now, keep_after).await
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
