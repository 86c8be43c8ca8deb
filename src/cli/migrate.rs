//! `migrate`: apply pending migrations.

use super::Status;

/// Migrates the store and says what was applied.
pub async fn run(config: &super::StoreConfig) -> anyhow::Result<Status> {
    let store = crate::store::Db::connect(&config.url, config.options).await?;
    let applied = store.migrate().await?;
    let message = if applied.is_empty() {
        format!("{} database is up to date.\n", store.backend())
    } else {
        format!(
            "{} database migrated to version {:?}.\n",
            store.backend(),
            applied.last()
        )
    };
    super::print_out(&message)?;
    Ok(Status::Ok)
}
