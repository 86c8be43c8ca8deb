//! One value per backend (a pool, a connection, a transaction) and the [`on!`] macro that runs
//! the same sqlx code on either, so each query is written once without generic driver bounds.

use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Sqlite, Transaction};

use super::error::StoreError;
use super::writes::Step;
use super::{postgres, sqlite};

/// A value of the PostgreSQL backend or of the SQLite one.
#[derive(Debug, Clone)]
pub enum Backend<P, S> {
    Postgres(P),
    Sqlite(S),
}

/// Runs `$body` with `$c` bound to the backend's value inside `$x`: the body is compiled once per
/// backend, with that backend's concrete types. A connection or transaction is used as
/// `&mut **c`.
macro_rules! on {
    ($x:expr, |$c:ident| $body:expr) => {
        match $x {
            $crate::store::backend::Backend::Postgres($c) => $body,
            $crate::store::backend::Backend::Sqlite($c) => $body,
        }
    };
}
pub(super) use on;

/// A pooled connection, for reads that need no transaction.
pub(super) type Conn = Backend<PoolConnection<Postgres>, PoolConnection<Sqlite>>;

/// A transaction: a read snapshot, or a write holding the apply lock.
pub(super) type Tx<'c> = Backend<Transaction<'c, Postgres>, Transaction<'c, Sqlite>>;

impl Tx<'_> {
    /// Commits; dropping a transaction instead rolls it back.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        on!(self, |tx| tx.commit().await)?;
        Ok(())
    }

    /// Runs one bulk write step in as few statements as the backend allows.
    pub(super) async fn run_step(&mut self, step: &Step) -> Result<(), sqlx::Error> {
        match self {
            Backend::Postgres(tx) => postgres::run_step(tx, step).await,
            Backend::Sqlite(tx) => sqlite::run_step(tx, step).await,
        }
    }
}
