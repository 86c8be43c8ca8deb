//! What both backends share, written once over sqlx's generic types: the apply transaction,
//! the queries, and rows turned back into domain types. A backend supplies only its [`Dialect`].

use chrono::{DateTime, Utc};
use std::marker::PhantomData;
use std::time::Duration;

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Transaction, Type};

use super::writes::{self, Row, Step};
use super::{
    ApiChange, Applied, ApplyError, AuditFilter, AuditRecord, BatchError, ClientFilter, ClientRecord,
    FlagRecord, LiveState, Lockdown, RuleFilter, RuleRecord, RuleWritten, RunMeta, RunRecord, SecurityCounts,
    SnapshotFilter, SnapshotRecord, StoreError, Usage, WindowFilter, WindowRecord, WriteDone, WriteOp,
};
use crate::domain::{
    ClientName, FlagName, KeySha256, Mode, Owner, ParseError, ProfileName, Role, RuleKey, WindowName,
    WindowSeconds,
};
use crate::model::{
    Actual, Client, FeatureFlag, Kind, Maintenance, MaintenanceInputs, NewOverride, Override, Profile,
    RateLimitRule, Resource, Stored, Window,
};
use crate::plan::Plan;

type RuleRow = (i64, String, String, i32, i32, bool, bool, String, String);
/// A rule row with its timestamps.
type RuleRecordRow = (
    i64,
    String,
    String,
    i32,
    i32,
    bool,
    bool,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);
/// A client row with its display prefix and timestamps.
type ClientRecordRow = (
    i64,
    String,
    String,
    String,
    String,
    bool,
    String,
    String,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);
/// A window row with its timestamps.
type WindowRecordRow = (
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    bool,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);
type FlagRecordRow = (i64, String, bool, String, String, DateTime<Utc>, DateTime<Utc>);
/// The maintenance row with its timestamp and git's own mode.
type MaintenanceRow = (i64, String, String, String, DateTime<Utc>, String, String);
type SnapshotRow = (
    i64,
    String,
    String,
    i32,
    i32,
    i32,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    bool,
    String,
);
type ClientRow = (i64, String, String, String, String, bool, String, String);
type WindowRow = (
    i64,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    bool,
    String,
    String,
);
type FlagRow = (i64, String, bool, String, String);
type ModeRow = (i64, String, String, String);
type SettingRow = (i64, String, String);
type OverrideRow = (
    i64,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);
type RunRow = (
    i64,
    DateTime<Utc>,
    DateTime<Utc>,
    String,
    String,
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
);
type AuditRow = (
    i64,
    Option<i64>,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
);

const SELECT_OPEN_OVERRIDES: &str = "SELECT id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id FROM overrides WHERE cleared_at IS NULL ORDER BY id";
const SELECT_RUNS: &str = "SELECT id, started_at, finished_at, actor, source, created, updated, deleted, deactivated, held, unmanaged FROM reconcile_runs ORDER BY id DESC LIMIT $1";

/// The queries both backends share (`$n` placeholders work on both), with the driver's bounds
/// written once.
pub struct Sql<DB>(PhantomData<DB>);

/// What differs between the backends; everything else of a reconcile is [`Sql`]'s.
pub trait Dialect: Database {
    /// `postgres` or `sqlite`.
    const NAME: &'static str;
    /// The embedded migrations: version, name, SQL.
    const MIGRATIONS: &'static [(i64, &'static str, &'static str)];
    /// Begins a read-only transaction that sees one consistent snapshot.
    fn begin_read(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;
    /// Begins the apply transaction holding the single-writer lock, or fails with
    /// [`StoreError::LockHeld`] when another writer keeps it longer than `wait`.
    fn begin_apply(
        pool: &Pool<Self>,
        wait: Duration,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;
    /// Runs one bulk write step in as few statements as the backend allows.
    fn run_step(
        conn: &mut Self::Connection,
        step: &Step,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

impl<DB> Sql<DB>
where
    DB: Dialect,
    DB::Connection: sqlx::migrate::Migrate,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    RuleRow: for<'r> FromRow<'r, DB::Row>,
    ClientRow: for<'r> FromRow<'r, DB::Row>,
    WindowRow: for<'r> FromRow<'r, DB::Row>,
    FlagRow: for<'r> FromRow<'r, DB::Row>,
    ModeRow: for<'r> FromRow<'r, DB::Row>,
    SettingRow: for<'r> FromRow<'r, DB::Row>,
    OverrideRow: for<'r> FromRow<'r, DB::Row>,
    RunRow: for<'r> FromRow<'r, DB::Row>,
    AuditRow: for<'r> FromRow<'r, DB::Row>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    RuleRecordRow: for<'r> FromRow<'r, DB::Row>,
    MaintenanceRow: for<'r> FromRow<'r, DB::Row>,
    ClientRecordRow: for<'r> FromRow<'r, DB::Row>,
    (String, bool, i64): for<'r> FromRow<'r, DB::Row>,
    (i64, String): for<'r> FromRow<'r, DB::Row>,
    (String, String, DateTime<Utc>): for<'r> FromRow<'r, DB::Row>,
    (i64, i64, i64): for<'r> FromRow<'r, DB::Row>,
    WindowRecordRow: for<'r> FromRow<'r, DB::Row>,
    FlagRecordRow: for<'r> FromRow<'r, DB::Row>,
    SnapshotRow: for<'r> FromRow<'r, DB::Row>,
    for<'q> Option<bool>: Encode<'q, DB> + Type<DB>,
    (i64, String, String, String, DateTime<Utc>): for<'r> FromRow<'r, DB::Row>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
{
    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(pool: &Pool<DB>) -> Result<Vec<i64>, StoreError> {
        use sqlx::migrate::{Migration, MigrationType, Migrator};
        let migrations = DB::MIGRATIONS.iter().map(|(version, name, sql)| {
            Migration::new(
                *version,
                (*name).into(),
                MigrationType::Simple,
                sqlx::SqlStr::from_static(sql),
                false,
            )
        });
        let migrator = Migrator::with_migrations(migrations.collect());
        // A fresh database has no migrations table yet: nothing was applied before.
        let before: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut *pool.acquire().await?)
            .await
            .unwrap_or_default();
        migrator.run(pool).await?;
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !before.iter().any(|(b,)| b == v))
            .collect())
    }

    /// Reads a snapshot in a read-only transaction.
    pub async fn snapshot(pool: &Pool<DB>) -> Result<Actual, StoreError> {
        let mut tx = DB::begin_read(pool).await?;
        let actual = Self::read_actual(&mut tx).await?;
        tx.commit().await?;
        Ok(actual)
    }

    /// Under the lock: reads the store, lets `decide` plan, writes the plan in bulk with its run
    /// and audit rows, and commits. Any error drops the transaction, which rolls it back.
    pub async fn apply<F, E>(
        pool: &Pool<DB>,
        wait: Duration,
        meta: RunMeta,
        decide: F,
    ) -> Result<Applied, ApplyError<E>>
    where
        F: FnOnce(&Actual) -> Result<Plan, E> + Send,
        E: Send,
    {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let actual = Self::read_actual(&mut tx).await?;
        let plan = decide(&actual).map_err(ApplyError::Refused)?;
        let run_id = Self::write(&mut tx, &plan, &meta)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Applied { plan, run_id })
    }

    /// Writes `plan`, its run record and its audit rows; returns the run's id.
    async fn write(conn: &mut DB::Connection, plan: &Plan, meta: &RunMeta) -> Result<i64, sqlx::Error> {
        for step in writes::plan_steps(plan, meta.started_at) {
            DB::run_step(conn, &step).await?;
        }
        let s = plan.summary();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let (run_id,): (i64,) = sqlx::query_as(
            "INSERT INTO reconcile_runs (started_at, finished_at, actor, source, created, updated, deleted, \
             deactivated, held, unmanaged, store_fingerprint, state_fingerprint) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(meta.started_at)
        .bind(crate::clock::now())
        .bind(meta.actor.clone())
        .bind(meta.source.clone())
        .bind(count(s.create))
        .bind(count(s.update))
        .bind(count(s.delete))
        .bind(count(s.deactivate))
        .bind(count(s.held))
        .bind(count(s.unmanaged))
        .bind(plan.store_fingerprint.clone())
        .bind(meta.state_fingerprint.clone())
        .fetch_one(&mut *conn)
        .await?;
        if let Some(step) = writes::audit_step(plan, run_id, meta, meta.started_at) {
            DB::run_step(conn, &step).await?;
        }
        Ok(run_id)
    }

    /// Reads a whole snapshot through `conn`, which the caller has put in a transaction.
    pub async fn read_actual(conn: &mut DB::Connection) -> Result<Actual, StoreError> {
        let rules: Vec<RuleRow> = sqlx::query_as(
        "SELECT id, scope, key, window_seconds, max_requests, enabled, shadow, description, owner FROM rate_limit_rules ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
        let clients: Vec<ClientRow> = sqlx::query_as(
        "SELECT id, name, client_type, role, key_sha256, active, description, owner FROM api_clients ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
        let windows: Vec<WindowRow> = sqlx::query_as(
        "SELECT id, name, starts_at, ends_at, mode, active, description, owner FROM maintenance_windows ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
        let flags: Vec<FlagRow> =
            sqlx::query_as("SELECT id, name, enabled, description, owner FROM feature_flags ORDER BY id")
                .fetch_all(&mut *conn)
                .await?;
        let modes: Vec<ModeRow> = sqlx::query_as("SELECT id, mode, reason, owner FROM maintenance_state")
            .fetch_all(&mut *conn)
            .await?;
        let profiles: Vec<SettingRow> =
            sqlx::query_as("SELECT id, value, owner FROM settings WHERE name = 'deployment_profile'")
                .fetch_all(&mut *conn)
                .await?;
        let overrides: Vec<OverrideRow> = sqlx::query_as(SELECT_OPEN_OVERRIDES)
            .fetch_all(&mut *conn)
            .await?;

        Ok(Actual {
            rules: rules.into_iter().map(rule).collect::<Result<_, _>>()?,
            clients: clients.into_iter().map(client).collect::<Result<_, _>>()?,
            windows: windows.into_iter().map(window).collect::<Result<_, _>>()?,
            flags: flags.into_iter().map(flag).collect::<Result<_, _>>()?,
            maintenance: modes.into_iter().next().map(mode).transpose()?,
            profile: profiles.into_iter().next().map(profile).transpose()?,
            overrides: overrides.into_iter().map(override_).collect::<Result<_, _>>()?,
        })
    }

    /// Records an override.
    pub async fn add_override(
        conn: &mut DB::Connection,
        new: NewOverride,
        now: DateTime<Utc>,
    ) -> Result<Override, StoreError> {
        let sql = "INSERT INTO overrides (resource_kind, resource_key, actor, reason, group_id, created_at, expires_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7) \
                   RETURNING id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id";
        let row: OverrideRow = sqlx::query_as(sql)
            .bind(new.kind.as_str().to_owned())
            .bind(new.key)
            .bind(new.actor)
            .bind(new.reason)
            .bind(new.group_id)
            .bind(now)
            .bind(new.expires_at)
            .fetch_one(conn)
            .await?;
        override_(row)
    }

    /// Overrides not cleared yet.
    pub async fn open_overrides(conn: &mut DB::Connection) -> Result<Vec<Override>, StoreError> {
        let rows: Vec<OverrideRow> = sqlx::query_as(SELECT_OPEN_OVERRIDES).fetch_all(conn).await?;
        rows.into_iter().map(override_).collect()
    }

    /// Clears one open override, or all of them, recording each in the audit log.
    pub async fn clear_overrides(
        conn: &mut DB::Connection,
        id: Option<i64>,
        actor: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let cleared = Self::clear(conn, id, None, actor, source, now).await?;
        match (id, cleared) {
            (Some(id), 0) => Err(StoreError::NoSuchOverride(id)),
            (_, n) => Ok(n),
        }
    }

    /// Clears the open overrides matching `id` and `group` (all when both are absent) and writes
    /// one audit row for each, in one statement.
    async fn clear(
        conn: &mut DB::Connection,
        id: Option<i64>,
        group: Option<&str>,
        actor: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let rows: Vec<OverrideRow> = sqlx::query_as(
            "UPDATE overrides SET cleared_at = $1, cleared_by = $2 WHERE cleared_at IS NULL \
             AND ($3 IS NULL OR id = $3) AND ($4 IS NULL OR group_id = $4) \
             RETURNING id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id",
        )
        .bind(now)
        .bind(actor.to_owned())
        .bind(id)
        .bind(group.map(str::to_owned))
        .fetch_all(&mut *conn)
        .await?;
        let cleared: Vec<Override> = rows.into_iter().map(override_).collect::<Result<_, _>>()?;
        if let Some(step) = writes::clear_audit(&cleared, actor, source, now) {
            DB::run_step(conn, &step).await?;
        }
        Ok(cleared.len() as u64)
    }

    /// The newest runs.
    pub async fn runs(conn: &mut DB::Connection, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows: Vec<RunRow> = sqlx::query_as(SELECT_RUNS).bind(limit).fetch_all(conn).await?;
        Ok(rows.into_iter().map(run).collect())
    }

    /// The newest audit records.
    pub async fn audit(conn: &mut DB::Connection, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        Self::audit_filtered(
            conn,
            &AuditFilter {
                limit,
                ..AuditFilter::default()
            },
        )
        .await
    }

    /// Active clients, for authenticating requests.
    pub async fn active_clients(conn: &mut DB::Connection) -> Result<Vec<Stored<Client>>, StoreError> {
        let rows: Vec<ClientRow> = sqlx::query_as(
            "SELECT id, name, client_type, role, key_sha256, active, description, owner FROM api_clients \
             WHERE active ORDER BY id",
        )
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(client).collect()
    }

    /// What the effective maintenance mode depends on, without reading every resource.
    pub async fn maintenance(conn: &mut DB::Connection) -> Result<MaintenanceInputs, StoreError> {
        let row: MaintenanceRow = sqlx::query_as(
            "SELECT id, mode, reason, owner, updated_at, git_mode, git_reason FROM maintenance_state",
        )
        .fetch_one(&mut *conn)
        .await?;
        let (id, mode, reason, owner, updated_at, git_mode, git_reason) = row;
        let state = self::mode((id, mode, reason, owner.clone()))?;
        let git = self::mode((id, git_mode, git_reason, owner))?;
        let windows: Vec<WindowRow> = sqlx::query_as(
            "SELECT id, name, starts_at, ends_at, mode, active, description, owner FROM maintenance_windows \
             WHERE active ORDER BY starts_at",
        )
        .fetch_all(&mut *conn)
        .await?;
        let overrides: Vec<OverrideRow> = sqlx::query_as(
            "SELECT id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id \
             FROM overrides WHERE cleared_at IS NULL AND resource_kind = 'maintenance_mode' ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(MaintenanceInputs {
            state: state.value,
            git: git.value,
            updated_at,
            windows: windows
                .into_iter()
                .map(|w| window(w).map(|s| s.value))
                .collect::<Result<_, _>>()?,
            overrides: overrides.into_iter().map(override_).collect::<Result<_, _>>()?,
        })
    }

    /// Rules matching `filter`, ordered by scope and key.
    pub async fn rules(
        conn: &mut DB::Connection,
        filter: &RuleFilter,
    ) -> Result<Vec<RuleRecord>, StoreError> {
        let rows: Vec<RuleRecordRow> = sqlx::query_as(
            "SELECT id, scope, key, window_seconds, max_requests, enabled, shadow, description, owner, \
             created_at, updated_at FROM rate_limit_rules \
             WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR key = $2) AND ($3 IS NULL OR enabled = $3) \
             ORDER BY scope, key LIMIT $4 OFFSET $5",
        )
        .bind(filter.scope.map(|s| s.as_str().to_owned()))
        .bind(filter.key.clone())
        .bind(filter.enabled)
        .bind(filter.page.limit)
        .bind(filter.page.offset)
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(rule_record).collect()
    }

    /// Deletes runs of `source` that changed nothing and finished before `before`.
    pub async fn forget_idle_runs(
        conn: &mut DB::Connection,
        source: &str,
        before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM reconcile_runs WHERE source = $1 AND finished_at < $2 \
             AND created = 0 AND updated = 0 AND deleted = 0 AND deactivated = 0",
        )
        .bind(source.to_owned())
        .bind(before)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Every rule, for a replica's cache.
    pub async fn all_rules(conn: &mut DB::Connection) -> Result<Vec<RuleRecord>, StoreError> {
        let rows: Vec<RuleRecordRow> = sqlx::query_as(
            "SELECT id, scope, key, window_seconds, max_requests, enabled, shadow, description, owner, \
             created_at, updated_at FROM rate_limit_rules ORDER BY id",
        )
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(rule_record).collect()
    }

    /// What a replica keeps in memory, read in one snapshot.
    pub async fn live(pool: &Pool<DB>) -> Result<LiveState, StoreError> {
        let mut tx = DB::begin_read(pool).await?;
        let clients = Self::active_clients(&mut tx).await?;
        let rules = Self::all_rules(&mut tx).await?;
        let maintenance = Self::maintenance(&mut tx).await?;
        tx.commit().await?;
        Ok(LiveState {
            clients,
            rules,
            maintenance,
        })
    }

    /// Upserts a replica's counters (one row per counter and window) and forgets rows last
    /// updated before `keep_after`, in one transaction and two statements.
    pub async fn record_usage(
        conn: &mut DB::Connection,
        replica: &str,
        usage: &[Usage],
        now: DateTime<Utc>,
        keep_after: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        if !usage.is_empty() {
            DB::run_step(&mut tx, &writes::usage_step(replica, usage, now)).await?;
        }
        sqlx::query("DELETE FROM rate_limit_snapshots WHERE updated_at < $1")
            .bind(keep_after)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One rule by id.
    pub async fn rule(conn: &mut DB::Connection, id: i64) -> Result<Option<RuleRecord>, StoreError> {
        let row: Option<RuleRecordRow> = sqlx::query_as(
            "SELECT id, scope, key, window_seconds, max_requests, enabled, shadow, description, owner, \
             created_at, updated_at FROM rate_limit_rules WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(conn)
        .await?;
        row.map(rule_record).transpose()
    }

    /// Usage snapshots matching `filter`, newest first.
    pub async fn snapshots(
        conn: &mut DB::Connection,
        filter: &SnapshotFilter,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let rows: Vec<SnapshotRow> = sqlx::query_as(
            "SELECT id, scope, key, window_seconds, max_requests, current_count, window_started_at, updated_at, \
             rule_key, shadow, replica FROM rate_limit_snapshots WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR key = $2) \
             ORDER BY updated_at DESC, id DESC LIMIT $3 OFFSET $4",
        )
        .bind(filter.scope.map(|s| s.as_str().to_owned()))
        .bind(filter.key.clone())
        .bind(filter.page.limit)
        .bind(filter.page.offset)
        .fetch_all(conn)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    scope,
                    key,
                    window_seconds,
                    max_requests,
                    current_count,
                    window_started_at,
                    updated_at,
                    rule_key,
                    shadow,
                    replica,
                )| {
                    SnapshotRecord {
                        rule_key,
                        shadow,
                        replica,
                        id,
                        scope,
                        key,
                        window_seconds: window_seconds.into(),
                        max_requests: max_requests.into(),
                        current_count: current_count.into(),
                        window_started_at,
                        updated_at,
                    }
                },
            )
            .collect())
    }

    /// Creates or updates a rule for an HTTP caller; see [`super::Store::put_rule`].
    pub async fn put_rule(
        pool: &Pool<DB>,
        wait: Duration,
        rule: &RateLimitRule,
        change: &ApiChange,
    ) -> Result<RuleWritten, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let done = Self::put_rule_in(&mut tx, rule, change).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// [`Self::put_rule`] inside the caller's locked transaction (a lockdown, a batch).
    pub async fn put_rule_in(
        conn: &mut DB::Connection,
        rule: &RateLimitRule,
        change: &ApiChange,
    ) -> Result<RuleWritten, StoreError> {
        let current = Self::rule_by_key(&mut *conn, rule).await?.map(RuleRecord::stored);
        let hold = Self::hold_for(current.as_ref(), rule.key(), change)?;
        let hold = Self::api_write(&mut *conn, current.as_ref(), Some(rule), hold, change).await?;
        let record = Self::rule_by_key(&mut *conn, rule)
            .await?
            .ok_or_else(|| StoreError::NotFound(rule.key()))?;
        Ok(RuleWritten {
            rule: record,
            created: current.is_none(),
            hold,
        })
    }

    /// Deletes a rule for an HTTP caller; see [`super::Store::delete_rule`].
    pub async fn delete_rule(
        pool: &Pool<DB>,
        wait: Duration,
        id: i64,
        change: &ApiChange,
    ) -> Result<Option<Override>, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let current = Self::rule(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rate-limit rule {id}")))?
            .stored();
        let hold = Self::hold_for(Some(&current), current.value.key(), change)?;
        let hold = Self::api_write::<RateLimitRule>(&mut tx, Some(&current), None, hold, change).await?;
        tx.commit().await?;
        Ok(hold)
    }

    /// Sets the maintenance mode for an HTTP caller; see [`super::Store::set_mode`].
    pub async fn set_mode(
        pool: &Pool<DB>,
        wait: Duration,
        mode: Mode,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let done = Self::set_mode_in(&mut tx, mode, change).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// [`Self::set_mode`] inside the caller's locked transaction (a lockdown, a batch).
    pub async fn set_mode_in(
        conn: &mut DB::Connection,
        mode: Mode,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let (id, current, reason, owner, _updated): (i64, String, String, String, DateTime<Utc>) =
            sqlx::query_as("SELECT id, mode, reason, owner, updated_at FROM maintenance_state")
                .fetch_one(&mut *conn)
                .await?;
        let current = self::mode((id, current, reason, owner))?;
        // The mode is always held, whoever owns it: an emergency freeze must not be undone.
        let hold = Some(Self::always_hold::<Maintenance>(current.value.key(), change)?);
        let target = Maintenance {
            mode,
            reason: change.reason.clone().unwrap_or_default(),
        };
        // A new mode replaces the previous mode override instead of stacking on it.
        sqlx::query(
            "UPDATE overrides SET cleared_at = $1, cleared_by = $2 \
             WHERE cleared_at IS NULL AND resource_kind = 'maintenance_mode'",
        )
        .bind(change.now)
        .bind(change.actor.clone())
        .execute(&mut *conn)
        .await?;
        // Only the mode in force: git's mode stays what git declared.
        sqlx::query("UPDATE maintenance_state SET mode = $1, reason = $2, updated_at = $3")
            .bind(target.mode.as_str().to_owned())
            .bind(target.reason.clone())
            .bind(change.now)
            .execute(&mut *conn)
            .await?;
        let hold = Self::api_record(&mut *conn, Some(&current), Some(&target), hold, change).await?;
        hold.ok_or_else(|| StoreError::NotFound("the maintenance override".into()))
    }

    /// Clients matching `filter`, by name.
    pub async fn clients(
        conn: &mut DB::Connection,
        filter: &ClientFilter,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        let rows: Vec<ClientRecordRow> = sqlx::query_as(
            "SELECT id, name, client_type, role, key_sha256, active, description, owner, key_prefix, created_at, \
             updated_at FROM api_clients WHERE ($1 IS NULL OR active = $1) AND ($2 IS NULL OR client_type = $2) \
             ORDER BY name LIMIT $3 OFFSET $4",
        )
        .bind(filter.active)
        .bind(filter.client_type.map(|t| t.as_str().to_owned()))
        .bind(filter.page.limit)
        .bind(filter.page.offset)
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(client_record).collect()
    }

    /// One client by id.
    pub async fn client_record(
        conn: &mut DB::Connection,
        id: i64,
    ) -> Result<Option<ClientRecord>, StoreError> {
        Self::client_by(conn, Some(id), None)
            .await?
            .map(client_record)
            .transpose()
    }

    async fn client_by(
        conn: &mut DB::Connection,
        id: Option<i64>,
        name: Option<&str>,
    ) -> Result<Option<ClientRecordRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, name, client_type, role, key_sha256, active, description, owner, key_prefix, created_at, \
             updated_at FROM api_clients WHERE id = $1 OR name = $2",
        )
        .bind(id)
        .bind(name.map(str::to_owned))
        .fetch_optional(conn)
        .await?)
    }

    /// Registers an api-owned client; see [`super::Store::register_client`].
    pub async fn register_client(
        pool: &Pool<DB>,
        wait: Duration,
        client: &Client,
        key_prefix: &str,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        if Self::client_by(&mut tx, None, Some(client.name.as_str()))
            .await?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "a client named {} already exists",
                client.name
            )));
        }
        Self::api_write::<Client>(&mut tx, None, Some(client), None, change).await?;
        sqlx::query("UPDATE api_clients SET key_prefix = $1 WHERE name = $2")
            .bind(key_prefix.to_owned())
            .bind(client.name.as_str().to_owned())
            .execute(&mut *tx)
            .await?;
        let row = Self::client_by(&mut tx, None, Some(client.name.as_str())).await?;
        let record =
            client_record(row.ok_or_else(|| StoreError::NotFound(format!("client {}", client.name)))?)?;
        tx.commit().await?;
        Ok(record)
    }

    /// Activates or deactivates a client; see [`super::Store::set_client_active`].
    pub async fn set_client_active(
        pool: &Pool<DB>,
        wait: Duration,
        id: i64,
        active: bool,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let done = Self::set_client_active_in(&mut tx, id, active, change).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// [`Self::set_client_active`] inside the caller's locked transaction (a lockdown, a batch).
    pub async fn set_client_active_in(
        conn: &mut DB::Connection,
        id: i64,
        active: bool,
        change: &ApiChange,
    ) -> Result<ClientRecord, StoreError> {
        let row = Self::client_by(&mut *conn, Some(id), None).await?;
        let (id_, name, client_type, role, key_sha256, was_active, description, owner, ..) =
            row.ok_or_else(|| StoreError::NotFound(format!("client {id}")))?;
        let current = client((
            id_,
            name,
            client_type,
            role,
            key_sha256,
            was_active,
            description,
            owner,
        ))?;
        let target = Client {
            active,
            ..current.value.clone()
        };
        let hold = Self::hold_for(Some(&current), current.value.key(), change)?;
        Self::api_write(&mut *conn, Some(&current), Some(&target), hold, change).await?;
        let row = Self::client_by(&mut *conn, Some(id), None).await?;
        let record = client_record(row.ok_or_else(|| StoreError::NotFound(format!("client {id}")))?)?;
        Ok(record)
    }

    /// Windows matching `filter`, by start.
    pub async fn windows(
        conn: &mut DB::Connection,
        filter: &WindowFilter,
    ) -> Result<Vec<WindowRecord>, StoreError> {
        let rows: Vec<WindowRecordRow> = sqlx::query_as(
            "SELECT id, name, starts_at, ends_at, mode, active, description, owner, created_at, updated_at \
             FROM maintenance_windows WHERE ($1 IS NULL OR active = $1) AND ($2 IS NULL OR starts_at > $2) \
             ORDER BY starts_at, name LIMIT $3 OFFSET $4",
        )
        .bind(filter.active)
        .bind(filter.starts_after)
        .bind(filter.page.limit)
        .bind(filter.page.offset)
        .fetch_all(conn)
        .await?;
        rows.into_iter().map(window_record).collect()
    }

    /// Creates an api-owned window; see [`super::Store::create_window`].
    pub async fn create_window(
        pool: &Pool<DB>,
        wait: Duration,
        window: &Window,
        change: &ApiChange,
    ) -> Result<WindowRecord, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let by_name = "SELECT id, name, starts_at, ends_at, mode, active, description, owner, created_at, updated_at \
                       FROM maintenance_windows WHERE name = $1";
        let existing: Option<WindowRecordRow> = sqlx::query_as(by_name)
            .bind(window.name.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Err(StoreError::Conflict(format!(
                "a maintenance window named {} already exists",
                window.name
            )));
        }
        Self::api_write::<Window>(&mut tx, None, Some(window), None, change).await?;
        let row: Option<WindowRecordRow> = sqlx::query_as(by_name)
            .bind(window.name.as_str().to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let record =
            window_record(row.ok_or_else(|| StoreError::NotFound(format!("window {}", window.name)))?)?;
        tx.commit().await?;
        Ok(record)
    }

    /// Every feature flag, by name.
    pub async fn flags(conn: &mut DB::Connection) -> Result<Vec<FlagRecord>, StoreError> {
        let rows: Vec<FlagRecordRow> = sqlx::query_as(
            "SELECT id, name, enabled, description, owner, created_at, updated_at FROM feature_flags ORDER BY name",
        )
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(
                |(id, name, enabled, description, owner, created_at, updated_at)| {
                    let stored = flag((id, name, enabled, description, owner))?;
                    Ok(FlagRecord {
                        id,
                        flag: stored.value,
                        owner: stored.owner,
                        created_at,
                        updated_at,
                    })
                },
            )
            .collect()
    }

    /// Counts for the admin security snapshot.
    pub async fn security_counts(conn: &mut DB::Connection) -> Result<SecurityCounts, StoreError> {
        let groups: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT role, active, COUNT(*) FROM api_clients GROUP BY role, active ORDER BY role, active",
        )
        .fetch_all(&mut *conn)
        .await?;
        let oldest: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT name, role, updated_at FROM api_clients WHERE active ORDER BY updated_at, name LIMIT 10",
        )
        .fetch_all(&mut *conn)
        .await?;
        let (rules, disabled_rules, shadow_rules): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN enabled THEN 0 ELSE 1 END), 0), \
             COALESCE(SUM(CASE WHEN shadow THEN 1 ELSE 0 END), 0) FROM rate_limit_rules",
        )
        .fetch_one(&mut *conn)
        .await?;
        let role = |id: i64, r: &str| {
            r.parse::<Role>().map_err(|e| StoreError::Corrupt {
                table: "api_clients",
                id,
                message: e.0,
            })
        };
        Ok(SecurityCounts {
            clients: groups
                .iter()
                .map(|(r, active, n)| Ok((role(0, r)?, *active, *n)))
                .collect::<Result<_, StoreError>>()?,
            oldest_keys: oldest
                .into_iter()
                .map(|(name, r, at)| Ok((name, role(0, &r)?, at)))
                .collect::<Result<_, StoreError>>()?,
            rules,
            disabled_rules,
            shadow_rules,
        })
    }

    /// Audit records matching `filter`, newest first.
    pub async fn audit_filtered(
        conn: &mut DB::Connection,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(
            "SELECT id, run_id, at, actor, source, resource_kind, resource_key, action, before, after FROM audit_log \
             WHERE ($1 IS NULL OR resource_kind = $1) AND ($2 IS NULL OR resource_key = $2) \
             AND ($3 IS NULL OR actor = $3) AND ($4 IS NULL OR at >= $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(filter.kind.clone())
        .bind(filter.key.clone())
        .bind(filter.actor.clone())
        .bind(filter.since)
        .bind(filter.limit)
        .fetch_all(conn)
        .await?;
        Ok(rows.into_iter().map(audit).collect())
    }

    /// Clears the open overrides of a group (a lockdown), or all of them, for an HTTP caller.
    pub async fn clear_override_group(
        conn: &mut DB::Connection,
        group_id: Option<&str>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Self::clear(conn, None, group_id, actor, "api", now).await
    }

    /// Applies `ops` all-or-nothing; see [`super::Store::batch`].
    pub async fn batch(
        pool: &Pool<DB>,
        wait: Duration,
        ops: &[WriteOp],
    ) -> Result<Vec<WriteDone>, BatchError> {
        let at = |index: usize| move |source: StoreError| BatchError { index, source };
        let mut tx = DB::begin_apply(pool, wait).await.map_err(at(0))?;
        let mut done = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                WriteOp::SetMode { mode, change } => Self::set_mode_in(&mut tx, *mode, change)
                    .await
                    .map(WriteDone::Override),
                WriteOp::SetFlag {
                    name,
                    enabled,
                    change,
                } => Self::set_flag_in(&mut tx, name, *enabled, change)
                    .await
                    .map(WriteDone::Override),
                WriteOp::SetProfile { name, change } => Self::set_profile_in(&mut tx, name, change)
                    .await
                    .map(WriteDone::Override),
                WriteOp::ClearOverrides { group_id, actor, now } => {
                    Self::clear_override_group(&mut tx, group_id.as_deref(), actor, *now)
                        .await
                        .map(WriteDone::Cleared)
                }
            };
            // Returning drops the transaction, which rolls back every write made so far.
            done.push(result.map_err(at(index))?);
        }
        tx.commit()
            .await
            .map_err(|e| at(ops.len().saturating_sub(1))(e.into()))?;
        Ok(done)
    }

    /// The override of a change that is always one (the mode, a flag, the profile).
    fn always_hold<T: Resource>(key: String, change: &ApiChange) -> Result<NewOverride, StoreError> {
        let reason = change.reason.clone().filter(|r| !r.trim().is_empty());
        Ok(NewOverride {
            kind: T::KIND,
            reason: reason.ok_or_else(|| StoreError::OverrideNeedsReason(format!("{} {key}", T::KIND)))?,
            key,
            actor: change.actor.clone(),
            expires_at: change.expires_at,
            group_id: change.group_id.clone(),
        })
    }

    /// Sets a feature flag for an HTTP caller, always as an override; an unknown flag is created
    /// (owned by the API).
    pub async fn set_flag_in(
        conn: &mut DB::Connection,
        name: &FlagName,
        enabled: bool,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let row: Option<FlagRow> =
            sqlx::query_as("SELECT id, name, enabled, description, owner FROM feature_flags WHERE name = $1")
                .bind(name.as_str().to_owned())
                .fetch_optional(&mut *conn)
                .await?;
        let current = row.map(flag).transpose()?;
        let target = match &current {
            Some(c) => FeatureFlag {
                enabled,
                ..c.value.clone()
            },
            None => FeatureFlag {
                name: name.clone(),
                enabled,
                description: String::new(),
            },
        };
        let hold = Self::always_hold::<FeatureFlag>(target.key(), change)?;
        let hold = Self::api_write(&mut *conn, current.as_ref(), Some(&target), Some(hold), change).await?;
        hold.ok_or_else(|| StoreError::NotFound("the feature flag override".into()))
    }

    /// Sets the deployment profile for an HTTP caller, always as an override.
    pub async fn set_profile_in(
        conn: &mut DB::Connection,
        name: &ProfileName,
        change: &ApiChange,
    ) -> Result<Override, StoreError> {
        let row: Option<SettingRow> =
            sqlx::query_as("SELECT id, value, owner FROM settings WHERE name = 'deployment_profile'")
                .fetch_optional(&mut *conn)
                .await?;
        let current = row.map(profile).transpose()?;
        let target = Profile { name: name.clone() };
        let hold = Self::always_hold::<Profile>(target.key(), change)?;
        let hold = Self::api_write(&mut *conn, current.as_ref(), Some(&target), Some(hold), change).await?;
        hold.ok_or_else(|| StoreError::NotFound("the deployment profile override".into()))
    }

    /// Locks the platform down in one transaction and one override group: read_only, every
    /// active non-admin client deactivated, and the global limit set when one is given.
    pub async fn lockdown(
        pool: &Pool<DB>,
        wait: Duration,
        global_max_requests: Option<u32>,
        change: &ApiChange,
    ) -> Result<Lockdown, StoreError> {
        let mut tx = DB::begin_apply(pool, wait).await?;
        let mut overrides = vec![Self::set_mode_in(&mut tx, Mode::ReadOnly, change).await?];
        // Every active non-admin client in one statement, its audit rows and overrides in two more.
        let rows: Vec<ClientRow> = sqlx::query_as(
            "UPDATE api_clients SET active = FALSE, updated_at = $1 WHERE active AND role <> 'admin' \
             RETURNING id, name, client_type, role, key_sha256, active, description, owner",
        )
        .bind(change.now)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes: Vec<(Stored<Client>, Client)> = rows
            .into_iter()
            .map(|row| {
                let after = client(row)?;
                let before = Stored {
                    value: Client {
                        active: true,
                        ..after.value.clone()
                    },
                    ..after.clone()
                };
                Ok((before, after.value))
            })
            .collect::<Result<_, StoreError>>()?;
        changes.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        if let Some(step) = writes::api_audit_many(&changes, &change.actor, change.now) {
            DB::run_step(&mut tx, &step).await?;
        }
        let holds = changes
            .iter()
            .filter_map(|(before, _)| Self::hold_for(Some(before), before.value.key(), change).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(step) = writes::overrides_step(&holds, change.now) {
            DB::run_step(&mut tx, &step).await?;
        }
        let deactivated: Vec<String> = changes.iter().map(|(_, after)| after.name.to_string()).collect();
        if let Some(max_requests) = global_max_requests {
            let rule = RateLimitRule {
                scope: crate::domain::Scope::Global,
                key: RuleKey::parse(crate::domain::Scope::Global, RuleKey::GLOBAL)
                    .map_err(|e| StoreError::NotFound(e.0))?,
                window_seconds: WindowSeconds::DEFAULT,
                max_requests,
                enabled: true,
                shadow: false,
                description: format!("lockdown: {}", change.reason.clone().unwrap_or_default()),
            };
            Self::put_rule_in(&mut tx, &rule, change).await?;
        }
        let group = change.group_id.clone().unwrap_or_default();
        let held: Vec<OverrideRow> = sqlx::query_as(
            "SELECT id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id \
             FROM overrides WHERE cleared_at IS NULL AND group_id = $1 ORDER BY id",
        )
        .bind(group.clone())
        .fetch_all(&mut *tx)
        .await?;
        overrides = if held.is_empty() {
            overrides
        } else {
            held.into_iter().map(override_).collect::<Result<_, _>>()?
        };
        tx.commit().await?;
        Ok(Lockdown {
            group_id: group,
            deactivated,
            overrides,
        })
    }

    /// The override an HTTP change to a git-owned resource records; it needs a reason.
    fn hold_for<T: Resource>(
        current: Option<&Stored<T>>,
        key: String,
        change: &ApiChange,
    ) -> Result<Option<NewOverride>, StoreError> {
        let Some(current) = current.filter(|c| c.owner == Owner::Git) else {
            return Ok(None);
        };
        let reason = change.reason.clone().filter(|r| !r.trim().is_empty());
        let reason = reason
            .ok_or_else(|| StoreError::OverrideNeedsReason(format!("{} {}", T::KIND, current.value.key())))?;
        Ok(Some(NewOverride {
            kind: T::KIND,
            key,
            actor: change.actor.clone(),
            reason,
            expires_at: change.expires_at,
            group_id: change.group_id.clone(),
        }))
    }

    /// Writes one HTTP change inside the caller's locked transaction: the row, its audit record,
    /// and the override when there is one; tells the replicas.
    async fn api_write<T: Row>(
        conn: &mut DB::Connection,
        current: Option<&Stored<T>>,
        target: Option<&T>,
        hold: Option<NewOverride>,
        change: &ApiChange,
    ) -> Result<Option<Override>, StoreError> {
        if let Some(step) = writes::api_step(current, target, change.now) {
            DB::run_step(conn, &step).await?;
        }
        Self::api_record(conn, current, target, hold, change).await
    }

    /// Records an HTTP change whose row is written: its audit record and its override; tells
    /// the replicas.
    async fn api_record<T: Row>(
        conn: &mut DB::Connection,
        current: Option<&Stored<T>>,
        target: Option<&T>,
        hold: Option<NewOverride>,
        change: &ApiChange,
    ) -> Result<Option<Override>, StoreError> {
        DB::run_step(
            conn,
            &writes::api_audit(current, target, &change.actor, change.now),
        )
        .await?;
        let hold = match hold {
            Some(new) => Some(Self::add_override(conn, new, change.now).await?),
            None => None,
        };
        Ok(hold)
    }

    async fn rule_by_key(
        conn: &mut DB::Connection,
        rule: &RateLimitRule,
    ) -> Result<Option<RuleRecord>, StoreError> {
        let row: Option<RuleRecordRow> = sqlx::query_as(
            "SELECT id, scope, key, window_seconds, max_requests, enabled, shadow, description, owner, \
             created_at, updated_at FROM rate_limit_rules WHERE scope = $1 AND key = $2",
        )
        .bind(rule.scope.as_str().to_owned())
        .bind(rule.key.as_str().to_owned())
        .fetch_optional(conn)
        .await?;
        row.map(rule_record).transpose()
    }

    /// How many reconcile runs are recorded.
    pub async fn run_count(conn: &mut DB::Connection) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM reconcile_runs")
            .fetch_one(conn)
            .await?;
        Ok(n)
    }

    /// Whether the database answers.
    pub async fn ping(conn: &mut DB::Connection) -> Result<(), StoreError> {
        let _: (i64,) = sqlx::query_as("SELECT CAST(1 AS BIGINT)").fetch_one(conn).await?;
        Ok(())
    }
}

/// Turns a parse failure of a stored value into an error naming the row.
fn corrupt(table: &'static str, id: i64) -> impl Fn(ParseError) -> StoreError {
    move |e| StoreError::Corrupt {
        table,
        id,
        message: e.0,
    }
}

fn window_record(r: WindowRecordRow) -> Result<WindowRecord, StoreError> {
    let (id, name, starts_at, ends_at, mode, active, description, owner, created_at, updated_at) = r;
    let stored = window((id, name, starts_at, ends_at, mode, active, description, owner))?;
    Ok(WindowRecord {
        id,
        window: stored.value,
        owner: stored.owner,
        created_at,
        updated_at,
    })
}

fn client_record(r: ClientRecordRow) -> Result<ClientRecord, StoreError> {
    let (
        id,
        name,
        client_type,
        role,
        key_sha256,
        active,
        description,
        owner,
        key_prefix,
        created_at,
        updated_at,
    ) = r;
    let c = client((
        id,
        name,
        client_type,
        role,
        key_sha256,
        active,
        description,
        owner,
    ))?;
    Ok(ClientRecord {
        id,
        name: c.value.name,
        client_type: c.value.client_type,
        role: c.value.role,
        active: c.value.active,
        description: c.value.description,
        key_prefix,
        owner: c.owner,
        created_at,
        updated_at,
    })
}

fn rule_record(r: RuleRecordRow) -> Result<RuleRecord, StoreError> {
    let (id, scope, key, window, max, enabled, shadow, description, owner, created_at, updated_at) = r;
    let stored = rule((id, scope, key, window, max, enabled, shadow, description, owner))?;
    Ok(RuleRecord {
        id,
        rule: stored.value,
        owner: stored.owner,
        created_at,
        updated_at,
    })
}

fn rule(r: RuleRow) -> Result<Stored<RateLimitRule>, StoreError> {
    let (id, scope, key, window, max, enabled, shadow, description, owner) = r;
    let bad = corrupt("rate_limit_rules", id);
    let scope = scope.parse().map_err(&bad)?;
    let max_requests =
        u32::try_from(max).map_err(|_| bad(ParseError(format!("max_requests {max} is negative"))))?;
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: RateLimitRule {
            key: RuleKey::parse(scope, &key).map_err(&bad)?,
            scope,
            window_seconds: WindowSeconds::new(window.into()).map_err(&bad)?,
            max_requests,
            enabled,
            shadow,
            description,
        },
    })
}

fn client(r: ClientRow) -> Result<Stored<Client>, StoreError> {
    let (id, name, client_type, role, key_sha256, active, description, owner) = r;
    let bad = corrupt("api_clients", id);
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: Client {
            name: ClientName::parse(name).map_err(&bad)?,
            client_type: client_type.parse().map_err(&bad)?,
            role: role.parse().map_err(&bad)?,
            key_sha256: KeySha256::parse(&key_sha256).map_err(&bad)?,
            active,
            description,
        },
    })
}

fn window(r: WindowRow) -> Result<Stored<Window>, StoreError> {
    let (id, name, starts_at, ends_at, mode, active, description, owner) = r;
    let bad = corrupt("maintenance_windows", id);
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: Window {
            name: WindowName::parse(name).map_err(&bad)?,
            starts_at: crate::domain::normalize_time(starts_at),
            ends_at: crate::domain::normalize_time(ends_at),
            mode: mode.parse().map_err(&bad)?,
            active,
            description,
        },
    })
}

fn flag(r: FlagRow) -> Result<Stored<FeatureFlag>, StoreError> {
    let (id, name, enabled, description, owner) = r;
    let bad = corrupt("feature_flags", id);
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: FeatureFlag {
            name: FlagName::parse(name).map_err(&bad)?,
            enabled,
            description,
        },
    })
}

fn mode(r: ModeRow) -> Result<Stored<Maintenance>, StoreError> {
    let (id, mode, reason, owner) = r;
    let bad = corrupt("maintenance_state", id);
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: Maintenance {
            mode: mode.parse().map_err(&bad)?,
            reason,
        },
    })
}

fn profile(r: SettingRow) -> Result<Stored<Profile>, StoreError> {
    let (id, value, owner) = r;
    let bad = corrupt("settings", id);
    Ok(Stored {
        id,
        owner: owner.parse().map_err(&bad)?,
        value: Profile {
            name: ProfileName::parse(value).map_err(&bad)?,
        },
    })
}

/// Turns an overrides row into an [`Override`].
fn override_(r: OverrideRow) -> Result<Override, StoreError> {
    let (id, kind, key, actor, reason, created_at, expires_at, group_id) = r;
    let kind = Kind::parse(&kind)
        .ok_or_else(|| corrupt("overrides", id)(ParseError(format!("unknown resource kind `{kind}`"))))?;
    Ok(Override {
        id,
        kind,
        key,
        actor,
        reason,
        created_at,
        expires_at,
        group_id,
    })
}

/// Turns a reconcile_runs row into a [`RunRecord`].
fn run(r: RunRow) -> RunRecord {
    let (id, started_at, finished_at, actor, source, created, updated, deleted, deactivated, held, unmanaged) =
        r;
    RunRecord {
        id,
        started_at,
        finished_at,
        actor,
        source,
        created: created.into(),
        updated: updated.into(),
        deleted: deleted.into(),
        deactivated: deactivated.into(),
        held: held.into(),
        unmanaged: unmanaged.into(),
    }
}

/// Turns an audit_log row into an [`AuditRecord`].
fn audit(r: AuditRow) -> AuditRecord {
    let (id, run_id, at, actor, source, kind, key, action, before, after) = r;
    AuditRecord {
        id,
        run_id,
        at,
        actor,
        source,
        kind,
        key,
        action,
        before,
        after,
    }
}
