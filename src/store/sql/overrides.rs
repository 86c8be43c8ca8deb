//! Overrides and the HTTP changes that make them: a change over HTTP writes its row and audit
//! record, and holds a git-owned resource (or the mode, a flag, the profile) with an override
//! until it expires or is cleared.

use chrono::{DateTime, Utc};

use crate::desired::export::Entry;
use crate::domain::Owner;
use crate::event::Event;
use crate::model::{Kind, NewOverride, Override, Resource, Stored};
use crate::store::backend::{Tx, on};
use crate::store::rows::{HeldRow, OverrideRow, columns};
use crate::store::writes::{self, Row};
use crate::store::{ApiChange, Db, Held, Lift, Lifting, StoreError};

impl Db {
    /// Records an override.
    pub async fn add_override(&self, new: NewOverride, now: DateTime<Utc>) -> Result<Override, StoreError> {
        let mut tx = self.begin().await?;
        let added = tx.add_override(new, now).await?;
        self.commit(tx).await?;
        Ok(added)
    }

    /// Overrides not cleared yet (some may have expired).
    pub async fn open_overrides(&self) -> Result<Vec<Override>, StoreError> {
        let mut tx = self.begin_read().await?;
        let open = tx.open_overrides().await?;
        tx.commit().await?;
        Ok(open)
    }

    /// The overrides in force at `now`, with what git declared for each resource they hold.
    pub async fn held(&self, now: DateTime<Utc>) -> Result<Vec<Held>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(held),
            " FROM overrides WHERE cleared_at IS NULL ORDER BY id"
        );
        let mut conn = self.conn().await?;
        let rows = on!(&mut conn, |c| sqlx::query_as::<_, HeldRow>(sql)
            .fetch_all(&mut **c)
            .await)?;
        let held: Vec<Held> = rows.into_iter().map(HeldRow::parse).collect::<Result<_, _>>()?;
        Ok(held.into_iter().filter(|h| h.hold.is_active(now)).collect())
    }

    /// Clears the overrides `which` names, audited with the lift's source (`cli`, `api`);
    /// returns how many were cleared, or [`StoreError::NoSuchOverride`] when a named one is not
    /// open.
    pub async fn clear_overrides(&self, which: Lifting, lift: &Lift<'_>) -> Result<u64, StoreError> {
        // The write lock first: the clear reads the mode before it writes, and a SQLite
        // transaction that read first cannot write once another has committed.
        let mut tx = self.begin_apply().await?;
        let cleared = tx.clear(which.into(), lift).await?;
        if let (Lifting::One(id) | Lifting::WithItsGroup(id), 0) = (which, cleared) {
            return Err(StoreError::NoSuchOverride(id));
        }
        self.commit(tx).await?;
        Ok(cleared)
    }
}

/// What one clearing statement lifts.
#[derive(Debug, Clone, Copy)]
pub(in crate::store) enum Cleared<'a> {
    Every,
    One(i64),
    /// The override and, when it belongs to one, the rest of its group.
    WithItsGroup(i64),
    Group(&'a str),
}

impl From<Lifting> for Cleared<'_> {
    fn from(which: Lifting) -> Self {
        match which {
            Lifting::Every => Cleared::Every,
            Lifting::One(id) => Cleared::One(id),
            Lifting::WithItsGroup(id) => Cleared::WithItsGroup(id),
        }
    }
}

impl Tx<'_> {
    /// Records an override.
    pub(in crate::store) async fn add_override(
        &mut self,
        new: NewOverride,
        now: DateTime<Utc>,
    ) -> Result<Override, StoreError> {
        let sql = concat!(
            "INSERT INTO overrides (resource_kind, resource_key, actor, reason, group_id, created_at, \
             expires_at, git_value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
            columns!(overrides)
        );
        let row = on!(self, |c| sqlx::query_as::<_, OverrideRow>(sql)
            .bind(new.kind.as_str())
            .bind(&new.key)
            .bind(&new.actor)
            .bind(&new.reason)
            .bind(&new.group_id)
            .bind(now)
            .bind(new.expires_at)
            .bind(&new.git_value)
            .fetch_one(&mut **c)
            .await)?;
        let hold = row.parse()?;
        // One of a lockdown's overrides is told by the lockdown's one event.
        if hold.group_id.is_none() {
            self.record_events(&[Event::override_set(&hold)]).await?;
        }
        Ok(hold)
    }

    /// Overrides not cleared yet, or only those of `group` (a lockdown's).
    pub(in crate::store) async fn open_overrides_of(
        &mut self,
        group: Option<&str>,
    ) -> Result<Vec<Override>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(overrides),
            " FROM overrides WHERE cleared_at IS NULL AND ($1 IS NULL OR group_id = $1) ORDER BY id"
        );
        let rows = on!(self, |c| sqlx::query_as::<_, OverrideRow>(sql)
            .bind(group)
            .fetch_all(&mut **c)
            .await)?;
        rows.into_iter().map(OverrideRow::parse).collect()
    }

    /// Every override not cleared yet.
    pub(in crate::store) async fn open_overrides(&mut self) -> Result<Vec<Override>, StoreError> {
        self.open_overrides_of(None).await
    }

    /// Clears the open overrides `which` names in one statement and writes one audit row for
    /// each; returns how many were cleared.
    pub(in crate::store) async fn clear(
        &mut self,
        which: Cleared<'_>,
        lift: &Lift<'_>,
    ) -> Result<u64, StoreError> {
        let before = self.effective_mode(lift.now).await?;
        let (id, group, with_group) = match which {
            Cleared::Every => (None, None, false),
            Cleared::One(id) => (Some(id), None, false),
            Cleared::WithItsGroup(id) => (Some(id), None, true),
            Cleared::Group(group) => (None, Some(group), false),
        };
        // With its group: the override's own group, read in the same statement (a lone
        // override has none, and `group_id = NULL` matches nothing more).
        let sql = concat!(
            "UPDATE overrides SET cleared_at = $1, cleared_by = $2 WHERE cleared_at IS NULL \
             AND ($3 IS NULL OR id = $3 OR ($5 AND group_id = \
                 (SELECT g.group_id FROM overrides g WHERE g.id = $3 AND g.cleared_at IS NULL))) \
             AND ($4 IS NULL OR group_id = $4) RETURNING ",
            columns!(held)
        );
        let rows = on!(self, |c| sqlx::query_as::<_, HeldRow>(sql)
            .bind(lift.now)
            .bind(lift.actor)
            .bind(id)
            .bind(group)
            .bind(with_group)
            .fetch_all(&mut **c)
            .await)?;
        let held: Vec<Held> = rows.into_iter().map(HeldRow::parse).collect::<Result<_, _>>()?;
        let mut told = lifted_events(&held, lift);
        let cleared: Vec<Override> = held.into_iter().map(|h| h.hold).collect();
        if let Some(step) = writes::clear_audit(&cleared, lift) {
            self.run_step(&step).await?;
        }
        // Lifting a mode override may give the mode back (a lockdown's end tells it already).
        if let Some(mode_hold) = cleared
            .iter()
            .find(|o| o.kind == Kind::MaintenanceMode && o.group_id.is_none())
        {
            let after = self.effective_mode(lift.now).await?;
            if after != before {
                let id = format!("mode-changed:lift:{}", mode_hold.id);
                let reason = lift.reason.unwrap_or_default();
                told.push(Event::mode_changed(
                    id,
                    (before, after),
                    "lift",
                    lift.actor,
                    reason,
                    lift.now,
                ));
            }
        }
        self.record_events(&told).await?;
        Ok(cleared.len() as u64)
    }

    /// Writes one HTTP change: the row, its audit record, and its override when there is one.
    pub(in crate::store) async fn api_write<T: Row>(
        &mut self,
        current: Option<&Stored<T>>,
        target: Option<&T>,
        hold: Option<NewOverride>,
        change: &ApiChange,
    ) -> Result<Option<Override>, StoreError> {
        if let Some(step) = writes::api_step(current, target, change.now) {
            self.run_step(&step).await?;
        }
        self.api_record(current, target, hold, change).await
    }

    /// Records an HTTP change whose row is already written: its audit record and its override.
    pub(in crate::store) async fn api_record<T: Row>(
        &mut self,
        current: Option<&Stored<T>>,
        target: Option<&T>,
        hold: Option<NewOverride>,
        change: &ApiChange,
    ) -> Result<Option<Override>, StoreError> {
        let audit = writes::api_audit(current, target, &change.actor, change.now);
        self.run_step(&audit).await?;
        match hold {
            Some(new) => Ok(Some(self.add_override(new, change.now).await?)),
            None => Ok(None),
        }
    }
}

/// What lifting `cleared` tells: each override lifted alone, and each lockdown (an override
/// group) as one event.
fn lifted_events(cleared: &[Held], lift: &Lift<'_>) -> Vec<Event> {
    let reason = lift.reason.unwrap_or_default();
    let mut groups: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    let mut events = Vec::new();
    for Held { hold, git_value } in cleared {
        match &hold.group_id {
            Some(group) => *groups.entry(group).or_default() += 1,
            None => {
                // What git restores, as the status page shows it: a key's hash hidden.
                let restores = git_value.as_deref().and_then(crate::model::shown_json);
                events.push(Event::override_lifted(
                    hold, restores, lift.actor, reason, lift.now,
                ))
            }
        }
    }
    events.extend(
        groups
            .into_iter()
            .map(|(group, n)| Event::lockdown_ended(group, n, lift.actor, reason, lift.now)),
    );
    events
}

/// The override an HTTP change to a git-owned resource records (none for others); it needs a
/// reason.
pub(in crate::store) fn hold_for<T: Resource + Entry>(
    current: Option<&Stored<T>>,
    change: &ApiChange,
) -> Result<Option<NewOverride>, StoreError> {
    match current.filter(|c| c.owner == Owner::Git) {
        Some(current) => always_hold(Some(current), current.value.key(), change).map(Some),
        None => Ok(None),
    }
}

/// The override of a change that is always one (the mode, a flag, the profile); it remembers
/// git's value when git owns `current`.
pub(in crate::store) fn always_hold<T: Resource + Entry>(
    current: Option<&Stored<T>>,
    key: String,
    change: &ApiChange,
) -> Result<NewOverride, StoreError> {
    let reason = change.reason.clone().filter(|r| !r.trim().is_empty());
    let git_value = current
        .filter(|c| c.owner == Owner::Git)
        .and_then(|c| c.value.entry_json());
    Ok(NewOverride {
        kind: T::KIND,
        reason: reason.ok_or_else(|| StoreError::OverrideNeedsReason(format!("{} {key}", T::KIND)))?,
        key,
        actor: change.actor.clone(),
        expires_at: change.expires_at,
        group_id: change.group_id.clone(),
        git_value,
    })
}
