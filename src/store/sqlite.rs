//! The SQLite backend, the embedded default: `BEGIN IMMEDIATE` as the writer lock, chunked
//! multi-row statements as bulk writes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection, Transaction};

use super::error::StoreError;
use super::writes::{Column, Step, Value};

/// SQLite's limit on parameters in one statement (SQLITE_MAX_VARIABLE_NUMBER of the bundled
/// library).
const MAX_PARAMS: usize = 32_766;

/// Opens (creating when missing) the database file of `url`; a writer waits up to
/// `lock_timeout` for another (SQLite's busy timeout).
pub(super) async fn connect(url: &str, lock_timeout: Duration) -> Result<SqlitePool, StoreError> {
    let connect_err = |error| StoreError::Connect {
        url: crate::text::url(url),
        error,
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(connect_err)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(lock_timeout);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(connect_err)
}

/// Whether the database file of `url` does not exist yet (an in-memory database never does).
pub(super) fn file_missing(url: &str) -> bool {
    SqliteConnectOptions::from_str(url).is_ok_and(|options| {
        let file = options.get_filename();
        file != std::path::Path::new(":memory:") && !file.exists()
    })
}

type SqliteQuery = sqlx::query::Query<'static, Sqlite, SqliteArguments>;

fn bind_value(query: SqliteQuery, value: &Value) -> SqliteQuery {
    match value {
        Value::Null => query.bind(None::<String>),
        Value::Text(s) => query.bind(s.clone()),
        Value::Int(i) => query.bind(*i),
        Value::Bool(b) => query.bind(*b),
        Value::Time(t) => query.bind(*t),
    }
}

/// `(?, ?, …)` for one row of `width` values.
fn tuple(width: usize) -> String {
    format!("({})", vec!["?"; width].join(", "))
}

/// Inserts `rows` in multi-row statements chunked to the parameter limit, each ending with
/// `suffix` (an `ON CONFLICT`).
async fn insert_chunks(
    conn: &mut SqliteConnection,
    table: &str,
    columns: &[Column],
    rows: &[Vec<Value>],
    suffix: &str,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    for chunk in rows.chunks(MAX_PARAMS / columns.len()) {
        let values = vec![tuple(columns.len()); chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {values}{suffix}",
            names.join(", ")
        );
        let query = chunk
            .iter()
            .flatten()
            .fold(sqlx::query(AssertSqlSafe(sql)), bind_value);
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Whether a SQLite error means another writer holds the database: SQLITE_BUSY (5) in the low
/// byte of the (possibly extended) result code.
fn is_busy(e: &sqlx::Error) -> bool {
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok());
    code.is_some_and(|c| c & 0xff == 5)
}

/// The embedded migrations: version, name, SQL.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "forget key prefix",
        include_str!("../../migrations/sqlite/0002_forget_key_prefix.sql"),
    ),
    (
        3,
        "git mode",
        include_str!("../../migrations/sqlite/0003_git_mode.sql"),
    ),
    (
        4,
        "replicas",
        include_str!("../../migrations/sqlite/0004_replicas.sql"),
    ),
    (
        5,
        "override git value",
        include_str!("../../migrations/sqlite/0005_override_git_value.sql"),
    ),
    (
        6,
        "on outage",
        include_str!("../../migrations/sqlite/0006_on_outage.sql"),
    ),
    (
        7,
        "run outcomes",
        include_str!("../../migrations/sqlite/0007_run_outcomes.sql"),
    ),
    (
        8,
        "change log",
        include_str!("../../migrations/sqlite/0008_change_log.sql"),
    ),
    (
        9,
        "gateway clients",
        include_str!("../../migrations/sqlite/0009_gateway_clients.sql"),
    ),
    (
        10,
        "notification events",
        include_str!("../../migrations/sqlite/0010_notification_events.sql"),
    ),
    (
        11,
        "notification deliveries",
        include_str!("../../migrations/sqlite/0011_notification_deliveries.sql"),
    ),
    (
        12,
        "counter outages",
        include_str!("../../migrations/sqlite/0012_counter_outages.sql"),
    ),
    (
        13,
        "recurring windows",
        include_str!("../../migrations/sqlite/0013_recurring_windows.sql"),
    ),
];

/// A transaction holding the write lock (`BEGIN IMMEDIATE`), waiting up to the busy timeout for
/// it; `wait` is that timeout, for the error.
pub(super) async fn begin_apply(
    pool: &SqlitePool,
    wait: Duration,
) -> Result<Transaction<'static, Sqlite>, StoreError> {
    match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => Ok(tx),
        Err(e) if is_busy(&e) => Err(StoreError::LockHeld(wait)),
        Err(e) => Err(e.into()),
    }
}

/// Multi-row statements, chunked to SQLite's parameter limit.
pub(super) async fn run_step(conn: &mut SqliteConnection, step: &Step) -> Result<(), sqlx::Error> {
    match step {
        Step::Delete { table, ids } => {
            for chunk in ids.chunks(MAX_PARAMS) {
                let sql = format!("DELETE FROM {table} WHERE id IN {}", tuple(chunk.len()));
                let query = chunk
                    .iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), |q, id| q.bind(*id));
                query.execute(&mut *conn).await?;
            }
        }
        Step::Update { table, columns, rows } => {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let sets: Vec<String> = names.iter().map(|n| format!("{n} = u.{n}")).collect();
            for chunk in rows.chunks(MAX_PARAMS / (columns.len() + 1)) {
                let values = vec![tuple(columns.len() + 1); chunk.len()].join(", ");
                let sql = format!(
                    "WITH u(id, {}) AS (VALUES {values}) UPDATE {table} SET {} FROM u WHERE {table}.id = u.id",
                    names.join(", "),
                    sets.join(", ")
                );
                let query = chunk
                    .iter()
                    .fold(sqlx::query(AssertSqlSafe(sql)), |q, (id, row)| {
                        row.iter().fold(q.bind(*id), bind_value)
                    });
                query.execute(&mut *conn).await?;
            }
        }
        Step::Insert { table, columns, rows } => {
            insert_chunks(conn, table, columns, rows, "").await?;
        }
        Step::Upsert {
            table,
            columns,
            rows,
            conflict,
            update,
            grow,
        } => {
            let clause = Step::on_conflict(table, conflict, update, grow);
            insert_chunks(conn, table, columns, rows, &clause).await?;
        }
    }
    Ok(())
}
