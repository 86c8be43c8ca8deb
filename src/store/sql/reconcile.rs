//! The reconciler's side of the store: the snapshot a plan is made from, the locked apply that
//! writes it with its run and audit rows, and the record of runs and audit.

use chrono::{DateTime, Utc};

use crate::event::Event;
use crate::model::Actual;
use crate::plan::{Action, Plan};
use crate::store::backend::{Tx, on};
use crate::store::rows::{AuditRow, ClientRow, FlagRow, RuleRow, RunRow, WindowRow, columns};
use crate::store::writes;
use crate::store::{Applied, ApplyError, AuditFilter, AuditRecord, Db, RunMeta, RunRecord, StoreError};

impl Db {
    /// Reads everything a plan depends on in one consistent snapshot.
    pub async fn snapshot(&self) -> Result<Actual, StoreError> {
        let mut tx = self.begin_read().await?;
        let actual = tx.actual().await?;
        tx.commit().await?;
        Ok(actual)
    }

    /// [`Db::snapshot`] with the store's revision read first in the same transaction: the
    /// snapshot is at least that new, so a store still at that revision under the lock holds
    /// exactly what was read (see [`Db::apply_at`]).
    pub async fn snapshot_at_revision(&self) -> Result<(Actual, i64), StoreError> {
        let mut tx = self.begin_read().await?;
        let revision = tx.revision().await?;
        let actual = tx.actual().await?;
        tx.commit().await?;
        Ok((actual, revision))
    }

    /// The only writer of managed resources: takes the single-writer lock, reads a snapshot,
    /// lets `decide` turn it into a plan (pure, and free to refuse), writes the plan in bulk with
    /// its run and audit rows, and commits. Any failure rolls the whole transaction back.
    pub async fn apply<F, E>(&self, meta: RunMeta, decide: F) -> Result<Applied, ApplyError<E>>
    where
        F: FnOnce(&Actual) -> Result<Plan, E> + Send,
        E: Send,
    {
        let mut tx = self.begin_apply().await?;
        let revision = tx.revision().await?;
        let actual = tx.actual().await?;
        let plan = decide(&actual).map_err(ApplyError::Refused)?;
        let run_id = tx.write_plan(&plan, &meta).await?;
        let written = tx.revision().await?;
        self.commit(tx).await?;
        Ok(Applied {
            plan,
            run_id,
            revision,
            written,
        })
    }

    /// [`Db::apply`] of a plan made from a snapshot kept at `revision`: writes it if the store
    /// is still at that revision once the lock is held, and returns `None` (writing nothing)
    /// if anyone changed it since.
    pub async fn apply_at<F, E>(
        &self,
        meta: RunMeta,
        revision: i64,
        decide: F,
    ) -> Result<Option<Applied>, ApplyError<E>>
    where
        F: FnOnce() -> Result<Plan, E> + Send,
        E: Send,
    {
        let mut tx = self.begin_apply().await?;
        if tx.revision().await? != revision {
            return Ok(None);
        }
        let plan = decide().map_err(ApplyError::Refused)?;
        let run_id = tx.write_plan(&plan, &meta).await?;
        let written = tx.revision().await?;
        self.commit(tx).await?;
        Ok(Some(Applied {
            plan,
            run_id,
            revision,
            written,
        }))
    }

    /// The most recent reconcile runs, newest first.
    pub async fn runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(runs),
            " FROM reconcile_runs ORDER BY id DESC LIMIT $1"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, RunRow>(sql)
            .bind(limit)
            .fetch_all(&mut **c)
            .await)?;
        Ok(rows.into_iter().map(RunRecord::from).collect())
    }

    /// How many reconcile runs the store has recorded.
    pub async fn run_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM reconcile_runs";
        let mut conn = self.conn().await?;
        Ok(on!(&mut conn, |c| sqlx::query_scalar(sql)
            .fetch_one(&mut **c)
            .await)?)
    }

    /// Records a run whose plan was refused (nothing applied), with why; returns its id.
    pub async fn record_refusal(&self, meta: &RunMeta, refusal: &str) -> Result<i64, StoreError> {
        let sql = "INSERT INTO reconcile_runs (started_at, finished_at, actor, source, \
                   store_fingerprint, state_fingerprint, refusal) \
                   VALUES ($1, $2, $3, $4, '', $5, $6) RETURNING id";
        let mut tx = self.begin().await?;
        let id = on!(&mut tx, |c| sqlx::query_scalar(sql)
            .bind(meta.started_at)
            .bind(crate::clock::now())
            .bind(&meta.actor)
            .bind(&meta.source)
            .bind(&meta.state_fingerprint)
            .bind(refusal)
            .fetch_one(&mut **c)
            .await)?;
        let refused = Event::reconcile_refused(id, refusal, &meta.actor, &meta.source, meta.started_at);
        tx.record_events(&[refused]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Marks a run as having corrected drift (known only once its changes are compared with
    /// the files that were last applied).
    pub async fn mark_drift(&self, run_id: i64) -> Result<(), StoreError> {
        let sql = "UPDATE reconcile_runs SET drift = TRUE WHERE id = $1 RETURNING actor, finished_at";
        let mut tx = self.begin().await?;
        let run: Option<(String, DateTime<Utc>)> = on!(&mut tx, |c| sqlx::query_as(sql)
            .bind(run_id)
            .fetch_optional(&mut **c)
            .await)?;
        if let Some((actor, at)) = run {
            tx.record_events(&[Event::drift_corrected(run_id, &actor, at)])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes runs of `source` that changed nothing and finished before `before` (a watch
    /// loop records a run every pass); runs that changed something are kept with their audit.
    pub async fn forget_idle_runs(&self, source: &str, before: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "DELETE FROM reconcile_runs WHERE source = $1 AND finished_at < $2 \
                   AND created = 0 AND updated = 0 AND deleted = 0 AND deactivated = 0 \
                   AND refusal IS NULL";
        let mut conn = self.conn().await?;
        on!(&mut conn, |c| sqlx::query(sql)
            .bind(source)
            .bind(before)
            .execute(&mut **c)
            .await
            .map(drop))?;
        Ok(())
    }

    /// The most recent audit records, newest first (the HTTP API reads them filtered).
    #[cfg(any(test, feature = "test-support"))]
    pub async fn audit(&self, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_filtered(&AuditFilter {
            limit,
            ..AuditFilter::default()
        })
        .await
    }

    /// Audit records matching a filter, newest first.
    pub async fn audit_filtered(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(audit),
            " FROM audit_log WHERE ($1 IS NULL OR resource_kind = $1) \
             AND ($2 IS NULL OR resource_key = $2) AND ($3 IS NULL OR actor = $3) \
             AND ($4 IS NULL OR at >= $4) ORDER BY id DESC LIMIT $5"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, AuditRow>(sql)
            .bind(filter.kind.as_deref())
            .bind(filter.key.as_deref())
            .bind(filter.actor.as_deref())
            .bind(filter.since)
            .bind(filter.limit)
            .fetch_all(&mut **c)
            .await)?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }
}

impl Tx<'_> {
    /// Reads a whole snapshot; the transaction decides its isolation.
    pub(in crate::store) async fn actual(&mut self) -> Result<Actual, StoreError> {
        let rules = on!(self, |c| sqlx::query_as::<_, RuleRow>(concat!(
            "SELECT ",
            columns!(rules),
            " FROM rate_limit_rules ORDER BY id"
        ))
        .fetch_all(&mut **c)
        .await)?;
        let clients = on!(self, |c| sqlx::query_as::<_, ClientRow>(concat!(
            "SELECT ",
            columns!(clients),
            " FROM api_clients ORDER BY id"
        ))
        .fetch_all(&mut **c)
        .await)?;
        let windows = on!(self, |c| sqlx::query_as::<_, WindowRow>(concat!(
            "SELECT ",
            columns!(windows),
            " FROM maintenance_windows ORDER BY id"
        ))
        .fetch_all(&mut **c)
        .await)?;
        let flags = on!(self, |c| sqlx::query_as::<_, FlagRow>(concat!(
            "SELECT ",
            columns!(flags),
            " FROM feature_flags ORDER BY id"
        ))
        .fetch_all(&mut **c)
        .await)?;
        let mode = self.mode_row().await?;
        let profile = self.profile().await?;
        let notifications = self.sinks().await?;
        let overrides = self.open_overrides().await?;
        Ok(Actual {
            rules: rules.into_iter().map(RuleRow::stored).collect::<Result<_, _>>()?,
            clients: clients
                .into_iter()
                .map(ClientRow::stored)
                .collect::<Result<_, _>>()?,
            windows: windows
                .into_iter()
                .map(WindowRow::stored)
                .collect::<Result<_, _>>()?,
            flags: flags.into_iter().map(FlagRow::stored).collect::<Result<_, _>>()?,
            maintenance: mode.map(|m| m.stored()).transpose()?,
            profile,
            notifications,
            overrides,
        })
    }

    /// Writes `plan`, its run record and its audit rows; returns the run's id.
    async fn write_plan(&mut self, plan: &Plan, meta: &RunMeta) -> Result<i64, StoreError> {
        // Only a plan that writes the mode or a window can change the effective mode.
        let moves_mode = plan.maintenance.iter().any(|op| op.action.writes())
            || plan.windows.iter().any(|op| op.action.writes());
        let before = match moves_mode {
            true => Some(self.effective_mode(meta.started_at).await?),
            false => None,
        };
        // The audit rows are made on a thread of their own beside the plan's rows: both only
        // read the plan, and for a large plan each takes about a tenth of a second.
        let (steps, audit) = std::thread::scope(|scope| {
            let audit = scope.spawn(|| writes::AuditRows::of(plan, meta, meta.started_at));
            let steps = writes::plan_steps(plan, meta.started_at);
            let audit = audit
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (steps, audit)
        });
        for step in steps {
            self.run_step(&step).await?;
        }
        let s = plan.summary();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let sql = "INSERT INTO reconcile_runs (started_at, finished_at, actor, source, created, updated, \
                   deleted, deactivated, held, unmanaged, store_fingerprint, state_fingerprint, \
                   during_freeze) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id";
        let run_id: i64 = on!(self, |c| sqlx::query_scalar(sql)
            .bind(meta.started_at)
            .bind(crate::clock::now())
            .bind(&meta.actor)
            .bind(&meta.source)
            .bind(count(s.create))
            .bind(count(s.update))
            .bind(count(s.delete))
            .bind(count(s.deactivate))
            .bind(count(s.held))
            .bind(count(s.unmanaged))
            .bind(&plan.store_fingerprint)
            .bind(&meta.state_fingerprint)
            .bind(&meta.during_freeze)
            .fetch_one(&mut **c)
            .await)?;
        if let Some(step) = audit.step(run_id) {
            self.run_step(&step).await?;
        }
        // A run that wrote nothing (most watch passes) is not news.
        if s.changes() > 0 {
            let applied = Event::reconcile_applied(run_id, &s, &meta.actor, &meta.source, meta.started_at);
            let mut told = vec![applied];
            told.extend(client_events(plan, run_id, meta));
            self.record_events(&told).await?;
        }
        if let Some(before) = before {
            let after = self.effective_mode(meta.started_at).await?;
            if after != before {
                let id = format!("mode-changed:run:{run_id}");
                let told = Event::mode_changed(id, (before, after), "git", &meta.actor, "", meta.started_at);
                self.record_events(&[told]).await?;
            }
        }
        self.trim_changes().await?;
        Ok(run_id)
    }
}

/// What a plan does to clients that the people on call hear of: a client deactivated (its name
/// gone from git) and a key replaced.
fn client_events(plan: &Plan, run_id: i64, meta: &RunMeta) -> Vec<Event> {
    let cause = format!("run:{run_id}");
    plan.clients
        .iter()
        .filter_map(|op| {
            let (current, target) = (op.current.as_ref()?, op.target.as_ref()?);
            let name = current.value.name.as_str();
            match op.action {
                Action::Deactivate if current.value.active => Some(Event::client_deactivated(
                    current.id,
                    name,
                    (&meta.actor, ""),
                    &cause,
                    meta.started_at,
                )),
                Action::Update if current.value.key_sha256 != target.key_sha256 => Some(
                    Event::client_key_changed(current.id, name, &meta.actor, run_id, meta.started_at),
                ),
                _ => None,
            }
        })
        .collect()
}
