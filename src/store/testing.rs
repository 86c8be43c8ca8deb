//! What the tests and benchmarks reach into besides [`Db::pool`] and [`Db::audit`], never in
//! the binary (the `test-support` feature); and the unit tests' scratch databases.

/// The advisory lock's key that every apply takes on Postgres.
pub use super::postgres::APPLY_LOCK;

#[cfg(test)]
pub(crate) use scratch::{drop_postgres, postgres, runtime, sqlite};

#[cfg(test)]
mod scratch {
    use chrono::Utc;

    use crate::store::{Backend, Db};

    /// A fresh SQLite store in its own directory.
    pub(crate) async fn sqlite() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        (Db::open(&url).await.unwrap(), dir)
    }

    /// A fresh Postgres database, dropped by the caller with [`drop_postgres`], when a server is
    /// configured; `None` (saying so on stderr, as `what`) when not.
    pub(crate) async fn postgres(what: &str) -> Option<(Db, String, String)> {
        let Ok(admin) = std::env::var("VALHALLA_TEST_POSTGRES_URL") else {
            eprintln!("{what}: VALHALLA_TEST_POSTGRES_URL is not set; the Postgres half did not run");
            return None;
        };
        let name = format!(
            "vops_unit_{}_{}",
            std::process::id(),
            Utc::now().timestamp_subsec_nanos()
        );
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Some((Db::open(url.as_str()).await.unwrap(), admin, name))
    }

    pub(crate) async fn drop_postgres(db: Db, admin: &str, name: &str) {
        if let Backend::Postgres(p) = db.pool() {
            p.close().await;
        }
        let pool = sqlx::PgPool::connect(admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&pool)
        .await
        .unwrap();
    }

    pub(crate) fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }
}
