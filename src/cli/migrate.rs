//! `migrate`: apply pending migrations.

use super::Status;

/// Migrates the store and says what was applied.
pub async fn run(config: &super::StoreConfig) -> anyhow::Result<Status> {
    let store = crate::store::Db::connect(&config.url, config.options).await?;
    let applied = store.migrate().await?;
    let message = match applied.last() {
        None => format!("{} database is up to date.\n", store.backend()),
        Some(version) => format!(
            "{} database migrated to version {version} ({} migration{} applied).\n",
            store.backend(),
            applied.len(),
            if applied.len() == 1 { "" } else { "s" }
        ),
    };
    super::print_out(&message)?;
    Ok(Status::Ok)
}
