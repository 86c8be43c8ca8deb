//! Rate-limit rules as the API reads and writes them.

use crate::model::{Override, RateLimitRule, Resource};
use crate::store::backend::{Tx, on};
use crate::store::rows::{RuleRecordRow, columns};
use crate::store::sql::overrides::hold_for;
use crate::store::{ApiChange, Db, RuleFilter, RuleRecord, RuleWritten, StoreError};

impl Db {
    /// Rules matching a filter, ordered by scope and key.
    pub async fn rules(&self, filter: &RuleFilter) -> Result<Vec<RuleRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(rule_records),
            " FROM rate_limit_rules WHERE ($1 IS NULL OR scope = $1) AND ($2 IS NULL OR key = $2) \
             AND ($3 IS NULL OR enabled = $3) ORDER BY scope, key LIMIT $4 OFFSET $5"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, RuleRecordRow>(sql)
            .bind(filter.scope.map(|s| s.as_str()))
            .bind(filter.key.as_deref())
            .bind(filter.enabled)
            .bind(filter.page.limit)
            .bind(filter.page.offset)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(RuleRecordRow::record).collect()
    }

    /// One rule by id.
    pub async fn rule(&self, id: i64) -> Result<Option<RuleRecord>, StoreError> {
        let mut tx = self.begin_read().await?;
        let rule = tx.rule(id).await?;
        tx.commit().await?;
        Ok(rule)
    }

    /// Creates or updates the rule of its (scope, key) for an HTTP caller, under the writer lock.
    /// A git-owned rule keeps its owner and gets an override, so the reconciler holds it.
    pub async fn put_rule(
        &self,
        rule: &RateLimitRule,
        change: &ApiChange,
    ) -> Result<RuleWritten, StoreError> {
        let mut tx = self.begin_apply().await?;
        let written = tx.put_rule(rule, change).await?;
        self.commit(tx).await?;
        Ok(written)
    }

    /// Deletes a rule for an HTTP caller; a git-owned one gets an override (held deleted).
    pub async fn delete_rule(&self, id: i64, change: &ApiChange) -> Result<Option<Override>, StoreError> {
        let mut tx = self.begin_apply().await?;
        let current = tx
            .rule(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("rate-limit rule {id}")))?
            .stored();
        let hold = hold_for(Some(&current), change)?;
        let hold = tx
            .api_write::<RateLimitRule>(Some(&current), None, hold, change)
            .await?;
        self.commit(tx).await?;
        Ok(hold)
    }
}

impl Tx<'_> {
    /// One rule by id.
    async fn rule(&mut self, id: i64) -> Result<Option<RuleRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(rule_records),
            " FROM rate_limit_rules WHERE id = $1"
        );
        let row = on!(self, |c| sqlx::query_as::<_, RuleRecordRow>(sql)
            .bind(id)
            .fetch_optional(&mut **c)
            .await)?;
        row.map(RuleRecordRow::record).transpose()
    }

    /// The rule of `rule`'s scope and key.
    async fn rule_by_key(&mut self, rule: &RateLimitRule) -> Result<Option<RuleRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(rule_records),
            " FROM rate_limit_rules WHERE scope = $1 AND key = $2"
        );
        let row = on!(self, |c| sqlx::query_as::<_, RuleRecordRow>(sql)
            .bind(rule.scope.as_str())
            .bind(rule.key.as_str())
            .fetch_optional(&mut **c)
            .await)?;
        row.map(RuleRecordRow::record).transpose()
    }

    /// [`Db::put_rule`] inside a locked transaction (a lockdown's).
    pub(in crate::store) async fn put_rule(
        &mut self,
        rule: &RateLimitRule,
        change: &ApiChange,
    ) -> Result<RuleWritten, StoreError> {
        let current = self.rule_by_key(rule).await?.map(RuleRecord::stored);
        let hold = hold_for(current.as_ref(), change)?;
        let hold = self.api_write(current.as_ref(), Some(rule), hold, change).await?;
        let record = self
            .rule_by_key(rule)
            .await?
            .ok_or_else(|| StoreError::NotFound(rule.key()))?;
        Ok(RuleWritten {
            rule: record,
            created: current.is_none(),
            hold,
        })
    }
}
