//! The PostgreSQL backend: advisory-locked apply transactions and UNNEST bulk writes.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Postgres};

use super::rows::Sql;
use super::writes::{self, ColType, Step, Value};
use super::{Applied, ApplyError, AuditRecord, RunMeta, RunRecord, Store, StoreError, redact};
use crate::model::{Actual, NewOverride, Override};
use crate::plan::Plan;

/// The advisory lock every applying reconciler takes ("valhalla" in ASCII, as a number).
const APPLY_LOCK: i64 = 0x76616c68616c6c61;

/// How long an apply waits for another one to finish before giving up.
const LOCK_WAIT: &str = "SET LOCAL lock_timeout = '15s'";

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects (failing fast when the server is unreachable).
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
        // One direct connection first: a pool reports an unreachable server only as a timeout,
        // while the connection says why (refused, unknown host, authentication).
        let probe = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| connect_err(sqlx::Error::PoolTimedOut))?
            .map_err(connect_err)?;
        probe.close().await.map_err(connect_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }

    /// The connection pool, for tests and the HTTP layer.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Runs one bulk step: a statement per step whatever the number of rows.
async fn run_step(conn: &mut PgConnection, step: &Step) -> Result<(), sqlx::Error> {
    match step {
        Step::Delete { table, ids } => {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE id = ANY($1)")))
                .bind(ids)
                .execute(conn)
                .await?;
        }
        Step::Update { table, columns, rows } => {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let sets: Vec<String> = names.iter().map(|n| format!("{n} = u.{n}")).collect();
            let arrays: Vec<String> = std::iter::once("$1::int8[]".to_owned())
                .chain(
                    columns
                        .iter()
                        .enumerate()
                        .map(|(i, (_, ty))| format!("${}::{}[]", i + 2, pg_type(*ty))),
                )
                .collect();
            let sql = format!(
                "UPDATE {table} AS t SET {} FROM UNNEST({}) AS u(id, {}) WHERE t.id = u.id",
                sets.join(", "),
                arrays.join(", "),
                names.join(", ")
            );
            let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
            let values: Vec<&Vec<Value>> = rows.iter().map(|(_, v)| v).collect();
            let query = sqlx::query(AssertSqlSafe(sql)).bind(ids);
            bind_columns(query, columns.len(), &values).execute(conn).await?;
        }
        Step::Insert { table, columns, rows } => {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let arrays: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("${}::{}[]", i + 1, pg_type(*ty)))
                .collect();
            let sql = format!(
                "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
                names.join(", "),
                arrays.join(", ")
            );
            let values: Vec<&Vec<Value>> = rows.iter().collect();
            bind_columns(sqlx::query(AssertSqlSafe(sql)), columns.len(), &values)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

fn pg_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Text => "text",
        ColType::Int => "int8",
        ColType::Bool => "bool",
        ColType::Time => "timestamptz",
    }
}

type PgQuery = sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>;

/// Binds each column of `rows` as one array.
fn bind_columns(mut query: PgQuery, width: usize, rows: &[&Vec<Value>]) -> PgQuery {
    for col in 0..width {
        // Every row of a step has the same shape, so the first row tells the column's type.
        query = match rows.first().map(|r| &r[col]) {
            Some(Value::Int(_)) => query.bind(column(rows, col, |v| {
                if let Value::Int(i) = v { Some(*i) } else { None }
            })),
            Some(Value::Bool(_)) => query.bind(column(rows, col, |v| {
                if let Value::Bool(b) = v { Some(*b) } else { None }
            })),
            Some(Value::Time(_)) => query.bind(column(rows, col, |v| {
                if let Value::Time(t) = v { Some(*t) } else { None }
            })),
            _ => query.bind(column(rows, col, |v| {
                if let Value::Text(s) = v { s.clone() } else { None }
            })),
        };
    }
    query
}

fn column<T>(rows: &[&Vec<Value>], col: usize, get: impl Fn(&Value) -> Option<T>) -> Vec<Option<T>> {
    rows.iter().map(|r| get(&r[col])).collect()
}

fn bind_value(query: PgQuery, value: &Value) -> PgQuery {
    match value {
        Value::Text(s) => query.bind(s.clone()),
        Value::Int(i) => query.bind(*i),
        Value::Bool(b) => query.bind(*b),
        Value::Time(t) => query.bind(*t),
    }
}

/// Whether a Postgres error is a lock wait that timed out (SQLSTATE 55P03).
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let before: Vec<i64> = applied_versions(&self.pool).await;
        let migrator = super::migrator(&[(
            1,
            "initial",
            include_str!("../../migrations/postgres/0001_initial.sql"),
        )]);
        migrator.run(&self.pool).await?;
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !before.contains(v))
            .collect())
    }

    async fn snapshot(&self) -> Result<Actual, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let actual = Sql::<Postgres>::read_actual(&mut tx).await?;
        tx.commit().await?;
        Ok(actual)
    }

    async fn apply<F, E>(&self, meta: RunMeta, decide: F) -> Result<Applied, ApplyError<E>>
    where
        F: FnOnce(&Actual) -> Result<Plan, E> + Send,
        E: Send,
    {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        sqlx::query(LOCK_WAIT)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        // Read committed: every read below starts after the lock is ours, so it sees what the
        // previous holder committed.
        if let Err(e) = sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPLY_LOCK)
            .execute(&mut *tx)
            .await
        {
            return Err(if is_lock_timeout(&e) {
                StoreError::LockHeld
            } else {
                e.into()
            }
            .into());
        }
        let actual = Sql::<Postgres>::read_actual(&mut tx).await?;
        let plan = decide(&actual).map_err(ApplyError::Refused)?;
        let now = crate::domain::normalize_time(Utc::now());
        for step in writes::plan_steps(&plan, meta.started_at) {
            run_step(&mut tx, &step).await.map_err(StoreError::from)?;
        }
        let run_query = writes::run_values(&plan, &meta, now)
            .iter()
            .fold(sqlx::query(writes::INSERT_RUN), bind_value);
        let run_id: i64 =
            sqlx::Row::try_get(&run_query.fetch_one(&mut *tx).await.map_err(StoreError::from)?, 0)
                .map_err(StoreError::from)?;
        if let Some(step) = writes::audit_step(&plan, run_id, &meta, meta.started_at) {
            run_step(&mut tx, &step).await.map_err(StoreError::from)?;
        }
        if plan.has_changes() {
            // Replicas listen on this channel to drop their caches.
            sqlx::query("SELECT pg_notify('valhalla_ops_changed', $1)")
                .bind(run_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        }
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Applied { plan, run_id })
    }

    async fn add_override(&self, new: NewOverride, now: DateTime<Utc>) -> Result<Override, StoreError> {
        Sql::<Postgres>::add_override(&mut *self.pool.acquire().await?, new, now).await
    }

    async fn open_overrides(&self) -> Result<Vec<Override>, StoreError> {
        Sql::<Postgres>::open_overrides(&mut *self.pool.acquire().await?).await
    }

    async fn clear_overrides(
        &self,
        id: Option<i64>,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        Sql::<Postgres>::clear_overrides(&mut *self.pool.acquire().await?, id, actor, now).await
    }

    async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        Sql::<Postgres>::runs(&mut *self.pool.acquire().await?, limit).await
    }

    async fn audit(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        Sql::<Postgres>::audit(&mut *self.pool.acquire().await?, limit).await
    }
}

/// Versions already applied (none on a fresh database).
async fn applied_versions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}
