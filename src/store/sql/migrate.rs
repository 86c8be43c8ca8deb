//! Applies the embedded migrations of the backend in use.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{PgConnection, SqliteConnection};

use crate::store::backend::on;
use crate::store::{Backend, Db, StoreError, postgres, sqlite};

impl Db {
    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        match &self.pool {
            Backend::Postgres(pool) => migrate_on(Backend::Postgres(&mut *pool.acquire().await?)).await,
            Backend::Sqlite(pool) => migrate_on(Backend::Sqlite(&mut *pool.acquire().await?)).await,
        }
    }
}

/// [`Db::migrate`] on `connection`: what was applied before is read, and the rest applied, on
/// one connection.
pub(in crate::store) async fn migrate_on(
    mut connection: Backend<&mut PgConnection, &mut SqliteConnection>,
) -> Result<Vec<i64>, StoreError> {
    let embedded = match connection {
        Backend::Postgres(_) => postgres::MIGRATIONS,
        Backend::Sqlite(_) => sqlite::MIGRATIONS,
    };
    let migrations = embedded.iter().map(|(version, name, sql)| {
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
    let query = "SELECT version FROM _sqlx_migrations WHERE success";
    let before: Vec<i64> = on!(&mut connection, |c| sqlx::query_scalar(query)
        .fetch_all(&mut **c)
        .await)
    .unwrap_or_default();
    on!(&mut connection, |c| migrator.run(&mut **c).await)?;
    Ok(migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !before.contains(v))
        .collect())
}
