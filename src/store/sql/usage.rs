//! What replicas write and the API reads back: the usage snapshots of their counters.

use crate::store::backend::{Tx, on};
use crate::store::rows::{SnapshotRow, columns};
use crate::store::writes;
use crate::store::{Db, SnapshotFilter, SnapshotRecord, StoreError, UsageBatch};

impl Db {
    /// Upserts `replica`'s counters and forgets snapshot rows last updated before the batch's
    /// `keep_after`.
    pub async fn record_usage(&self, replica: &str, batch: &UsageBatch) -> Result<(), StoreError> {
        self.begin().await?.record_usage(replica, batch).await
    }

    /// Usage snapshots matching a filter, newest first.
    pub async fn snapshots(&self, filter: &SnapshotFilter) -> Result<Vec<SnapshotRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(snapshots),
            " FROM rate_limit_snapshots WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR key = $2) \
             ORDER BY updated_at DESC, id DESC LIMIT $3 OFFSET $4"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, SnapshotRow>(sql)
            .bind(filter.scope.map(|s| s.as_str()))
            .bind(filter.key.as_deref())
            .bind(filter.page.limit)
            .bind(filter.page.offset)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(SnapshotRow::record).collect()
    }
}

impl Tx<'_> {
    /// Upserts the counters (one row per counter and window) and forgets old rows, in two
    /// statements, and commits.
    pub(in crate::store) async fn record_usage(
        mut self,
        replica: &str,
        batch: &UsageBatch,
    ) -> Result<(), StoreError> {
        if !batch.usage.is_empty() {
            self.run_step(&writes::usage_step(replica, &batch.usage, batch.now))
                .await?;
        }
        let sql = "DELETE FROM rate_limit_snapshots WHERE updated_at < $1";
        on!(&mut self, |c| sqlx::query(sql)
            .bind(batch.keep_after)
            .execute(&mut **c)
            .await
            .map(drop))?;
        // Replicas write here every few seconds, which also keeps the change log short where
        // nothing else writes.
        self.trim_changes().await?;
        self.commit().await
    }
}
