//! Why the store failed, why an apply or a batch did not happen, and database URLs made fit
//! to show in those messages.

use std::time::Duration;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL `{0}`: use postgres://… or sqlite://…")]
    UnsupportedUrl(String),
    /// The error is shown in the message, not chained: its own text repeats it with noise.
    #[error("cannot connect to {url}: {}", reason(error))]
    Connect { url: String, error: sqlx::Error },
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
    #[error("database error: {}", reason(.0))]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

/// What a database error says, for people: the server's own message without the line of the
/// server's C source that sqlx appends to it (`… does not exist at line 948`).
fn reason(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().unwrap_or_default()),
        None => e.to_string(),
    }
}

/// Why an apply did not happen: the decision refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E> {
    #[error(transparent)]
    Refused(E),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a batch wrote nothing: the write at `index` failed (or the batch could not start).
#[derive(Debug, thiserror::Error)]
#[error("write {index} failed: {source}")]
pub struct BatchError {
    /// The failing write's position in the batch.
    pub index: usize,
    #[source]
    pub source: StoreError,
}
