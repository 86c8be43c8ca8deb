//! Why the store failed, why an apply or a batch did not happen, and database URLs made fit
//! to show in those messages.

use std::time::Duration;

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

/// Why a batch wrote nothing: the write at `index` failed (or the batch could not start).
#[derive(Debug, thiserror::Error)]
#[error("write {index} failed: {source}")]
pub struct BatchError {
    /// The failing write's position in the batch.
    pub index: usize,
    #[source]
    pub source: StoreError,
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
