//! The admin console's reads and writes: the security snapshot, the lockdown, and batches of
//! writes applied all-or-nothing.

use crate::domain::{MaxRequests, Mode, OnOutage, Role, RuleKey, Scope, WindowSeconds};
use crate::event::Event;
use crate::model::{Client, RateLimitRule, Stored};
use crate::store::backend::on;
use crate::store::rows::{ClientRow, columns};
use crate::store::sql::overrides::{Cleared, hold_for};
use crate::store::writes;
use crate::store::{
    ApiChange, BatchError, Db, Lift, Lockdown, SecurityCounts, StoreError, WriteDone, WriteOp,
};

impl Db {
    /// Counts for the admin security snapshot.
    pub async fn security_counts(&self) -> Result<SecurityCounts, StoreError> {
        let mut tx = self.begin_read().await?;
        let groups: Vec<(String, bool, i64)> = on!(&mut tx, |c| sqlx::query_as(
            "SELECT role, active, COUNT(*) FROM api_clients GROUP BY role, active ORDER BY role, active"
        )
        .fetch_all(&mut **c)
        .await)?;
        let oldest: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = on!(&mut tx, |c| {
            sqlx::query_as(
            "SELECT name, role, updated_at FROM api_clients WHERE active ORDER BY updated_at, name LIMIT 10"
        )
        .fetch_all(&mut **c)
        .await
        })?;
        let (rules, disabled_rules, shadow_rules): (i64, i64, i64) = on!(&mut tx, |c| sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN enabled THEN 0 ELSE 1 END), 0), \
             COALESCE(SUM(CASE WHEN shadow THEN 1 ELSE 0 END), 0) FROM rate_limit_rules"
        )
        .fetch_one(&mut **c)
        .await)?;
        tx.commit().await?;
        let role = |r: &str| {
            r.parse::<Role>().map_err(|e| StoreError::Corrupt {
                table: "api_clients",
                id: 0,
                message: e.0,
            })
        };
        Ok(SecurityCounts {
            clients: groups
                .iter()
                .map(|(r, active, n)| Ok((role(r)?, *active, *n)))
                .collect::<Result<_, StoreError>>()?,
            oldest_keys: oldest
                .into_iter()
                .map(|(name, r, at)| Ok((name, role(&r)?, at)))
                .collect::<Result<_, StoreError>>()?,
            rules,
            disabled_rules,
            shadow_rules,
        })
    }

    /// Locks the platform down in one transaction and one override group
    /// (`change.group_id`): read_only, every active non-admin client deactivated, and the
    /// global limit set when one is given.
    pub async fn lockdown(
        &self,
        global_max_requests: Option<MaxRequests>,
        change: &ApiChange,
    ) -> Result<Lockdown, StoreError> {
        let mut tx = self.begin_apply().await?;
        let mode_hold = tx.set_mode(Mode::ReadOnly, change).await?;
        // Every active non-admin client in one statement, its audit rows and overrides in two more.
        let sql = concat!(
            "UPDATE api_clients SET active = FALSE, updated_at = $1 WHERE active AND role <> 'admin' \
             RETURNING ",
            columns!(clients)
        );
        let rows = on!(&mut tx, |c| sqlx::query_as::<_, ClientRow>(sql)
            .bind(change.now)
            .fetch_all(&mut **c)
            .await)?;
        let mut changes: Vec<(Stored<Client>, Client)> = rows
            .into_iter()
            .map(|row| {
                let after = row.stored()?;
                let before = Stored {
                    value: Client {
                        active: true,
                        ..after.value.clone()
                    },
                    ..after.clone()
                };
                Ok((before, after.value))
            })
            .collect::<Result<_, StoreError>>()?;
        changes.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        if let Some(step) = writes::api_audit_many(&changes, &change.actor, change.now) {
            tx.run_step(&step).await?;
        }
        let holds = changes
            .iter()
            .filter_map(|(before, _)| hold_for(Some(before), change).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(step) = writes::overrides_step(&holds, change.now) {
            tx.run_step(&step).await?;
        }
        let deactivated: Vec<String> = changes.iter().map(|(_, after)| after.name.to_string()).collect();
        if let Some(max_requests) = global_max_requests {
            let rule = RateLimitRule {
                scope: Scope::Global,
                key: RuleKey::parse(Scope::Global, RuleKey::GLOBAL).map_err(|e| StoreError::NotFound(e.0))?,
                window_seconds: WindowSeconds::DEFAULT,
                max_requests,
                enabled: true,
                shadow: false,
                on_outage: OnOutage::DEFAULT,
                description: format!("lockdown: {}", change.reason.clone().unwrap_or_default()),
            };
            tx.put_rule(&rule, change).await?;
        }
        let group = change.group_id.clone().unwrap_or_default();
        let held = tx.open_overrides_of(Some(&group)).await?;
        let overrides = if held.is_empty() { vec![mode_hold] } else { held };
        let reason = change.reason.clone().unwrap_or_default();
        let started = Event::lockdown_started(&group, overrides.len(), &change.actor, &reason, change.now);
        tx.record_events(&[started]).await?;
        self.commit(tx).await?;
        Ok(Lockdown {
            group_id: group,
            deactivated,
            overrides,
        })
    }

    /// Applies writes all-or-nothing in one locked transaction; on failure, nothing is written
    /// and the error names the failing write by its index.
    pub async fn batch(&self, ops: &[WriteOp]) -> Result<Vec<WriteDone>, BatchError> {
        let at = |index: usize| move |source: StoreError| BatchError { index, source };
        let mut tx = self.begin_apply().await.map_err(at(0))?;
        let mut done = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                WriteOp::SetMode { mode, change } => {
                    tx.set_mode(*mode, change).await.map(WriteDone::Override)
                }
                WriteOp::SetFlag {
                    name,
                    enabled,
                    change,
                } => tx.set_flag(name, *enabled, change).await.map(WriteDone::Override),
                WriteOp::SetProfile { name, change } => {
                    tx.set_profile(name, change).await.map(WriteDone::Override)
                }
                WriteOp::ClearOverrides { group_id, actor, now } => {
                    let lift = Lift {
                        actor,
                        source: "api",
                        reason: None,
                        now: *now,
                    };
                    let which = match group_id.as_deref() {
                        Some(group) => Cleared::Group(group),
                        None => Cleared::Every,
                    };
                    tx.clear(which, &lift).await.map(WriteDone::Cleared)
                }
            };
            // Returning drops the transaction, which rolls back every write made so far.
            done.push(result.map_err(at(index))?);
        }
        self.commit(tx).await.map_err(at(ops.len().saturating_sub(1)))?;
        Ok(done)
    }
}
