//! The PostgreSQL backend: advisory-locked apply transactions, COPY and UNNEST bulk writes.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use chrono::SecondsFormat;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Postgres, Transaction};

use super::error::StoreError;
use super::writes::{ColType, Column, Step, Value};

/// The advisory lock every applying reconciler takes ("valhalla" in ASCII, as a number).
pub const APPLY_LOCK: i64 = 0x76616c68616c6c61;

/// The lock every writer of the change-logged tables holds from its first change to its commit
/// (migration 8's triggers take it), so revisions are handed out in commit order. An apply takes
/// it at once, after [`APPLY_LOCK`]: nobody else then changes what it reads until it commits, and
/// its snapshot is exact at the revision it read first.
pub const CHANGES_LOCK: i64 = 8386112758749865330;

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a statement waits for a pooled connection, a new one included, before it fails as
/// unavailable. Short, so that while the database is down a request is answered 503 within about
/// a second (instead of piling up behind a 10 s wait), and a probe with a 1 s timeout sees a 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How much COPY data is buffered before it is sent.
const COPY_CHUNK: usize = 1 << 20;

/// Inserts of at least this many rows go through COPY, smaller ones through UNNEST. The bound
/// was measured while sqlx (0.9.0) left Nagle's algorithm on: the small CopyDone message that
/// ends a COPY then waited about 40 ms for the server's delayed ACK, and UNNEST costs about 2 µs
/// more per row, so COPY paid off from about 20,000 rows. sqlx 0.9.1 sets TCP_NODELAY; at
/// 10,000 clients the apply's UNNEST took 75 ms and a `COPY` of the same rows 66–90 ms in psql,
/// so the bound stays.
const COPY_MIN_ROWS: usize = 20_000;

/// Connects (failing fast, with the server's reason, when it is unreachable): the pool, keeping
/// `warm` connections once [`warm_up`] opened them, and the first connection, made directly, for
/// the caller's first statements; [`close`] it after.
pub(super) async fn connect(url: &str, warm: u32) -> Result<(PgPool, PgConnection), StoreError> {
    let connect_err = |error| StoreError::Connect {
        url: crate::text::url(url),
        error,
    };
    let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
    // One direct connection first: a pool reports an unreachable server only as a timeout,
    // while the connection says why (refused, unknown host, authentication).
    let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| connect_err(sqlx::Error::PoolTimedOut))?
        .map_err(connect_err)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .min_connections(warm)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(options);
    Ok((pool, first))
}

/// Opens the pool's warm connections, all at once, and leaves them idle in it. The pool keeps
/// that many from then on: one closed for idleness is replaced at once.
pub(super) async fn warm_up(pool: &PgPool) {
    let warm = pool.options().get_min_connections();
    let opened = futures_util::future::join_all((0..warm).map(|_| pool.acquire())).await;
    if let Some(Err(e)) = opened.iter().find(|c| c.is_err()) {
        tracing::debug!(error = %e, "cannot open the warm connections yet");
    }
}

/// Closes the first connection [`connect`] made.
pub(super) async fn close(url: &str, first: PgConnection) -> Result<(), StoreError> {
    first.close().await.map_err(|error| StoreError::Connect {
        url: crate::text::url(url),
        error,
    })
}

fn pg_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Text => "text",
        ColType::Int => "int8",
        ColType::Bool => "bool",
        ColType::Time => "timestamptz",
    }
}

/// Appends `value` in COPY's text format (tab-separated, `\N` for NULL, backslash escapes).
fn copy_value(buf: &mut String, value: &Value) {
    match value {
        Value::Null | Value::Text(None) => buf.push_str("\\N"),
        Value::Text(Some(s)) => {
            for c in s.chars() {
                match c {
                    '\\' => buf.push_str("\\\\"),
                    '\n' => buf.push_str("\\n"),
                    '\r' => buf.push_str("\\r"),
                    '\t' => buf.push_str("\\t"),
                    c => buf.push(c),
                }
            }
        }
        Value::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Value::Bool(b) => buf.push(if *b { 't' } else { 'f' }),
        Value::Time(t) => buf.push_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }
}

type PgQuery = sqlx::query::Query<'static, Postgres, sqlx::postgres::PgArguments>;

/// Binds each column of `rows` as one array of the column's declared type; `Value::Null` (or a
/// value of another kind) is NULL.
fn bind_columns(mut query: PgQuery, columns: &[Column], rows: &[&[Value]]) -> PgQuery {
    fn column<T>(rows: &[&[Value]], col: usize, get: impl Fn(&Value) -> Option<T>) -> Vec<Option<T>> {
        rows.iter().map(|r| get(&r[col])).collect()
    }
    for (col, (_, ty)) in columns.iter().enumerate() {
        query = match ty {
            ColType::Int => query.bind(column(rows, col, |v| {
                if let Value::Int(i) = v { Some(*i) } else { None }
            })),
            ColType::Bool => query.bind(column(rows, col, |v| {
                if let Value::Bool(b) = v { Some(*b) } else { None }
            })),
            ColType::Time => query.bind(column(rows, col, |v| {
                if let Value::Time(t) = v { Some(*t) } else { None }
            })),
            ColType::Text => query.bind(column(rows, col, |v| {
                if let Value::Text(s) = v { s.clone() } else { None }
            })),
        };
    }
    query
}

/// Inserts `rows` in one statement, one array per column, with `suffix` (an `ON CONFLICT`).
async fn insert_unnest(
    conn: &mut PgConnection,
    table: &str,
    columns: &[Column],
    rows: &[Vec<Value>],
    suffix: &str,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let arrays: Vec<String> = (columns.iter().enumerate())
        .map(|(i, (_, ty))| format!("${}::{}[]", i + 1, pg_type(*ty)))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT * FROM UNNEST({}){suffix}",
        names.join(", "),
        arrays.join(", ")
    );
    let values: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
    bind_columns(sqlx::query(AssertSqlSafe(sql)), columns, &values)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether a Postgres error is a lock wait that timed out (SQLSTATE 55P03).
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03")
}

/// The embedded migrations: version, name, SQL.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "forget key prefix",
        include_str!("../../migrations/postgres/0002_forget_key_prefix.sql"),
    ),
    (
        3,
        "git mode",
        include_str!("../../migrations/postgres/0003_git_mode.sql"),
    ),
    (
        4,
        "replicas",
        include_str!("../../migrations/postgres/0004_replicas.sql"),
    ),
    (
        5,
        "override git value",
        include_str!("../../migrations/postgres/0005_override_git_value.sql"),
    ),
    (
        6,
        "on outage",
        include_str!("../../migrations/postgres/0006_on_outage.sql"),
    ),
    (
        7,
        "run outcomes",
        include_str!("../../migrations/postgres/0007_run_outcomes.sql"),
    ),
    (
        8,
        "change log",
        include_str!("../../migrations/postgres/0008_change_log.sql"),
    ),
    (
        9,
        "gateway clients",
        include_str!("../../migrations/postgres/0009_gateway_clients.sql"),
    ),
    (
        10,
        "notification events",
        include_str!("../../migrations/postgres/0010_notification_events.sql"),
    ),
    (
        11,
        "notification deliveries",
        include_str!("../../migrations/postgres/0011_notification_deliveries.sql"),
    ),
    (
        12,
        "counter outages",
        include_str!("../../migrations/postgres/0012_counter_outages.sql"),
    ),
    (
        13,
        "recurring windows",
        include_str!("../../migrations/postgres/0013_recurring_windows.sql"),
    ),
];

/// The channel that migration 4's triggers notify on every change to a table replicas cache.
pub const CHANNEL: &str = "valhalla_ops_changed";

/// A read-only transaction that sees one consistent snapshot.
pub(super) async fn begin_read(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
}

/// A transaction holding the advisory lock [`APPLY_LOCK`], waiting at most `wait` for it.
pub(super) async fn begin_apply(
    pool: &PgPool,
    wait: Duration,
) -> Result<Transaction<'static, Postgres>, StoreError> {
    let mut tx = pool.begin().await?;
    // SET takes no bind parameters; the value is a number formatted here.
    let set = format!("SET LOCAL lock_timeout = '{}ms'", wait.as_millis().max(1));
    sqlx::query(AssertSqlSafe(set)).execute(&mut *tx).await?;
    // Read committed: every read after this starts once the lock is ours, so it sees what
    // the previous holder committed.
    match sqlx::query("SELECT pg_advisory_xact_lock($1), pg_advisory_xact_lock($2)")
        .bind(APPLY_LOCK)
        .bind(CHANGES_LOCK)
        .execute(&mut *tx)
        .await
    {
        Ok(_) => Ok(tx),
        Err(e) if is_lock_timeout(&e) => Err(StoreError::LockHeld(wait)),
        Err(e) => Err(e.into()),
    }
}

/// Large inserts go through COPY (the fastest path into Postgres); smaller inserts, updates
/// and deletes bind one array per column. Either way one statement per step, whatever the
/// number of rows.
pub(super) async fn run_step(conn: &mut PgConnection, step: &Step) -> Result<(), sqlx::Error> {
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
            let values: Vec<&[Value]> = rows.iter().map(|(_, v)| v.as_slice()).collect();
            let query = sqlx::query(AssertSqlSafe(sql)).bind(ids);
            bind_columns(query, columns, &values).execute(conn).await?;
        }
        Step::Insert { table, columns, rows } if rows.len() < COPY_MIN_ROWS => {
            insert_unnest(conn, table, columns, rows, "").await?;
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
            insert_unnest(conn, table, columns, rows, &clause).await?;
        }
        Step::Insert { table, columns, rows } => {
            let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
            let mut copy = conn
                .copy_in_raw(&format!("COPY {table} ({}) FROM STDIN", names.join(", ")))
                .await?;
            let mut buf = String::with_capacity(COPY_CHUNK + 4096);
            for row in rows {
                for (i, value) in row.iter().enumerate() {
                    if i > 0 {
                        buf.push('\t');
                    }
                    copy_value(&mut buf, value);
                }
                buf.push('\n');
                if buf.len() >= COPY_CHUNK {
                    copy.send(buf.as_bytes()).await?;
                    buf.clear();
                }
            }
            copy.send(buf.as_bytes()).await?;
            copy.finish().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changes_lock_is_the_one_the_triggers_take() {
        let (_, _, sql) = MIGRATIONS[7];
        assert!(
            sql.contains(&format!("pg_advisory_xact_lock({CHANGES_LOCK})")),
            "{sql}"
        );
    }

    #[test]
    fn the_channel_is_the_one_the_migration_notifies_on() {
        let (_, _, sql) = MIGRATIONS[3];
        assert!(sql.contains(&format!("pg_notify('{CHANNEL}'")), "{sql}");
    }
}
