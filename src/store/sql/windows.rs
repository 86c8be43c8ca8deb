//! Maintenance windows as the API reads and writes them.

use crate::model::Window;
use crate::store::backend::{Tx, on};
use crate::store::rows::{WindowRecordRow, WindowRow, columns, readable};
use crate::store::{ApiChange, Db, StoreError, WindowFilter, WindowRecord};

impl Db {
    /// Maintenance windows matching a filter, by start.
    pub async fn windows(&self, filter: &WindowFilter) -> Result<Vec<WindowRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(window_records),
            " FROM maintenance_windows WHERE ($1 IS NULL OR active = $1) \
             AND ($2 IS NULL OR starts_at IS NULL OR starts_at > $2) \
             ORDER BY starts_at IS NULL, starts_at, name LIMIT $3 OFFSET $4"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, WindowRecordRow>(sql)
            .bind(filter.active)
            .bind(filter.starts_after)
            .bind(filter.page.limit)
            .bind(filter.page.offset)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(WindowRecordRow::record).collect()
    }

    /// Creates an api-owned window; [`StoreError::Conflict`] when the name is taken.
    pub async fn create_window(
        &self,
        window: &Window,
        change: &ApiChange,
    ) -> Result<WindowRecord, StoreError> {
        let name = window.name.as_str();
        let mut tx = self.begin_apply().await?;
        if tx.window_by_name(name).await?.is_some() {
            return Err(StoreError::Conflict(format!(
                "a maintenance window named {name} already exists"
            )));
        }
        tx.api_write::<Window>(None, Some(window), None, change).await?;
        let row = tx.window_by_name(name).await?;
        let record = row
            .ok_or_else(|| StoreError::NotFound(format!("window {name}")))?
            .record()?;
        self.commit(tx).await?;
        Ok(record)
    }
}

impl Tx<'_> {
    async fn window_by_name(&mut self, name: &str) -> Result<Option<WindowRecordRow>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(window_records),
            " FROM maintenance_windows WHERE name = $1"
        );
        Ok(on!(self, |c| sqlx::query_as::<_, WindowRecordRow>(sql)
            .bind(name)
            .fetch_optional(&mut **c)
            .await)?)
    }

    /// The active windows, by id.
    pub(in crate::store) async fn active_windows(&mut self) -> Result<Vec<Window>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(windows),
            " FROM maintenance_windows WHERE active ORDER BY id"
        );
        let rows = on!(self, |c| sqlx::query_as::<_, WindowRow>(sql)
            .fetch_all(&mut **c)
            .await)?;
        readable(rows, |r| Ok(r.stored()?.value))
    }
}
