//! Applies the embedded migrations of the backend in use.

use sqlx::migrate::{Migration, MigrationType, Migrator};

use crate::store::backend::on;
use crate::store::{Backend, Db, StoreError, postgres, sqlite};

impl Db {
    /// Applies pending migrations; returns the versions applied now.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let embedded = match self.pool {
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
        let before: Vec<i64> =
            on!(&self.pool, |p| sqlx::query_scalar(query).fetch_all(p).await).unwrap_or_default();
        on!(&self.pool, |p| migrator.run(p).await)?;
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !before.contains(v))
            .collect())
    }
}
