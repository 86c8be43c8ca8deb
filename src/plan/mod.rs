//! The planner: a pure function from (desired, actual, now) to the plan that makes them match.

pub mod render;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::{Interval, When};
use crate::desired::DesiredState;
use crate::domain::{Owner, WindowMode};
use crate::mode::ChangeFreeze;
use crate::model::{
    Actual, Client, FeatureFlag, Kind, Maintenance, Override, Profile, RateLimitRule, Resource, Sinks,
    Stored, Window,
};

/// What a plan does to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Declared in git, not in the store.
    Create,
    /// Declared in git and stored with other values, or owned by the API (adopted into git).
    Update,
    /// Removed from git (rules, flags), or api-owned and pruned.
    Delete,
    /// Removed from git (clients, windows): soft-deleted, history kept.
    Deactivate,
    /// An active override holds the resource; nothing is written.
    Held,
    /// Owned by the API and not in git: left alone unless `--prune`.
    Unmanaged,
}

impl Action {
    /// Whether applying the action writes to the store.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Action::Create | Action::Update | Action::Delete | Action::Deactivate
        )
    }

    /// Whether the action takes a resource away.
    pub fn removes(self) -> bool {
        matches!(self, Action::Delete | Action::Deactivate)
    }

    /// The verb people read.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Deactivate => "deactivate",
            Action::Held => "held",
            Action::Unmanaged => "unmanaged",
        }
    }
}

/// Options that change what a plan may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    /// Remove api-owned resources that git does not declare.
    pub prune: bool,
}

/// A planned operation on one resource of kind `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct Op<T> {
    /// What the apply does to the resource.
    pub action: Action,
    /// The resource's identity within its kind.
    pub key: String,
    /// The stored row, if any.
    pub current: Option<Stored<T>>,
    /// The value the store will hold afterwards (git's value for create and update, the
    /// deactivated value for deactivate); for held, what git would set once the hold ends.
    pub target: Option<T>,
    /// The override that holds the resource.
    pub hold: Option<Override>,
}

/// A kind whose removal from git takes the resource away by deleting or deactivating it.
pub trait Removable: Resource {
    /// Whether removal deletes the row (or only deactivates it).
    const DELETES: bool;
    /// Whether the resource currently counts (a deactivated row is history).
    fn is_active(&self) -> bool {
        true
    }
    /// The value after a soft delete.
    fn deactivated(&self) -> Self {
        self.clone()
    }
}

impl Removable for RateLimitRule {
    const DELETES: bool = true;
}
impl Removable for FeatureFlag {
    const DELETES: bool = true;
}
impl Removable for Client {
    const DELETES: bool = false;
    fn is_active(&self) -> bool {
        self.active
    }
    fn deactivated(&self) -> Self {
        Client {
            active: false,
            ..self.clone()
        }
    }
}
impl Removable for Window {
    const DELETES: bool = false;
    fn is_active(&self) -> bool {
        self.active
    }
    fn deactivated(&self) -> Self {
        Window {
            active: false,
            ..self.clone()
        }
    }
}

/// A kind of which too much would be removed at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MassRemoval {
    pub kind: Kind,
    /// How many the plan deletes or deactivates.
    pub removing: usize,
    /// Git-owned, active resources of the kind in the store.
    pub total: usize,
}

/// The plan: every operation, per kind, sorted by key.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub rules: Vec<Op<RateLimitRule>>,
    pub clients: Vec<Op<Client>>,
    pub windows: Vec<Op<Window>>,
    pub flags: Vec<Op<FeatureFlag>>,
    pub maintenance: Vec<Op<Maintenance>>,
    pub profile: Vec<Op<Profile>>,
    pub notifications: Vec<Op<Sinks>>,
    /// Kinds the mass-removal guard refuses unless explicitly allowed.
    pub mass_removals: Vec<MassRemoval>,
    /// The fingerprint of the snapshot the plan was computed against.
    pub store_fingerprint: String,
    /// The options it was planned with.
    pub options: PlanOptions,
    /// The freeze of changes that refuses this plan: see [`Plan::freeze_at`].
    pub frozen_by: Option<ChangeFreeze>,
    /// The next occurrences of each recurring window the plan creates or changes.
    pub upcoming: Vec<Upcoming>,
}

/// How many occurrences of a recurring window a plan shows.
const UPCOMING: usize = 3;

/// The next occurrences of a recurring window a plan creates or changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upcoming {
    pub window: String,
    pub next: Vec<Interval>,
}

/// Counts of a plan's operations by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub deactivate: usize,
    /// Operations an override holds: nothing is written.
    pub held: usize,
    /// API-owned resources git does not declare, left alone without `--prune`.
    pub unmanaged: usize,
}

impl Summary {
    /// How many operations write.
    pub fn changes(&self) -> usize {
        self.create + self.update + self.delete + self.deactivate
    }

    fn add(&mut self, action: Action) {
        let slot = match action {
            Action::Create => &mut self.create,
            Action::Update => &mut self.update,
            Action::Delete => &mut self.delete,
            Action::Deactivate => &mut self.deactivate,
            Action::Held => &mut self.held,
            Action::Unmanaged => &mut self.unmanaged,
        };
        *slot += 1;
    }
}

/// The smallest removal the guard cares about, whatever the share.
const MASS_REMOVAL_MIN: usize = 5;

/// Computes the plan that makes `actual` match `desired` at time `now`. Pure and total.
pub fn plan(desired: &DesiredState, actual: &Actual, now: DateTime<Utc>, options: PlanOptions) -> Plan {
    plan_part(
        desired,
        actual,
        Totals::of(actual),
        actual.fingerprint(),
        now,
        options,
    )
}

/// How many git-owned, active resources of each kind the store holds: what the mass-removal
/// guard weighs a removal against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub rules: usize,
    pub clients: usize,
    pub windows: usize,
    pub flags: usize,
}

impl Totals {
    /// The totals of a whole snapshot.
    pub fn of(actual: &Actual) -> Totals {
        fn count<T: Removable>(rows: &[Stored<T>]) -> usize {
            rows.iter().filter(|s| counts(s)).count()
        }
        Totals {
            rules: count(&actual.rules),
            clients: count(&actual.clients),
            windows: count(&actual.windows),
            flags: count(&actual.flags),
        }
    }
}

/// Whether a stored row counts in [`Totals`].
pub fn counts<T: Removable>(row: &Stored<T>) -> bool {
    row.owner == Owner::Git && row.value.is_active()
}

/// [`plan`] of a part of the resources: `desired` and `actual` hold the same keys' entries
/// (whatever else either holds plans to nothing), `totals` and `store_fingerprint` are the
/// whole store's. The plan of every key is computed from that key's entries alone, so the part
/// gives exactly the whole plan's operations on its keys; a caller that knows every other key
/// to be in sync gets the whole plan.
pub fn plan_part(
    desired: &DesiredState,
    actual: &Actual,
    totals: Totals,
    store_fingerprint: String,
    now: DateTime<Utc>,
    options: PlanOptions,
) -> Plan {
    let holds: HashMap<(Kind, &str), &Override> = actual
        .overrides
        .iter()
        .filter(|o| o.is_active(now))
        .map(|o| ((o.kind, o.key.as_str()), o))
        .collect();
    let mut plan = Plan {
        rules: diff(&desired.rules, &actual.rules, &holds, options),
        clients: diff(&desired.clients, &actual.clients, &holds, options),
        windows: diff(&desired.windows, &actual.windows, &holds, options),
        flags: diff(&desired.flags, &actual.flags, &holds, options),
        maintenance: diff_setting(desired.maintenance.as_ref(), actual.maintenance.as_ref(), &holds),
        profile: diff_setting(desired.profile.as_ref(), actual.profile.as_ref(), &holds),
        notifications: diff_setting(
            desired.notifications.as_ref(),
            actual.notifications.as_ref(),
            &holds,
        ),
        mass_removals: Vec::new(),
        store_fingerprint,
        options,
        frozen_by: None,
        upcoming: Vec::new(),
    };
    plan.upcoming = plan.upcoming_at(now);
    plan.freeze_at(
        crate::mode::freeze_among(actual.windows.iter().map(|w| &w.value), now),
        now,
    );
    plan.mass_removals = [
        mass_removal(&plan.rules, totals.rules),
        mass_removal(&plan.clients, totals.clients),
        mass_removal(&plan.windows, totals.windows),
        mass_removal(&plan.flags, totals.flags),
    ]
    .into_iter()
    .flatten()
    .collect();
    plan
}

/// Plans one kind of collection.
fn diff<T: Removable>(
    desired: &[T],
    actual: &[Stored<T>],
    holds: &HashMap<(Kind, &str), &Override>,
    options: PlanOptions,
) -> Vec<Op<T>> {
    let mut stored: BTreeMap<String, &Stored<T>> = actual.iter().map(|s| (s.value.key(), s)).collect();
    let mut ops = Vec::new();
    for want in desired {
        let key = want.key();
        let current = stored.remove(&key);
        let hold = holds.get(&(T::KIND, key.as_str())).map(|o| (*o).clone());
        let action = match current {
            _ if hold.is_some() => Action::Held,
            None => Action::Create,
            Some(c) if c.value != *want || c.owner != Owner::Git => Action::Update,
            Some(_) => continue,
        };
        ops.push(Op {
            action,
            key,
            current: current.cloned(),
            target: Some(want.clone()),
            hold,
        });
    }
    for (key, current) in stored {
        let hold = holds.get(&(T::KIND, key.as_str())).map(|o| (*o).clone());
        let action = if hold.is_some() {
            Action::Held
        } else if !current.value.is_active() && current.owner == Owner::Git {
            continue; // Retired by a reconcile: history, not a resource to act on.
        } else if current.owner == Owner::Api && !options.prune {
            // Inactive too (deactivated over HTTP): it exists, and only `--prune` retires it.
            Action::Unmanaged
        } else if T::DELETES {
            Action::Delete
        } else {
            Action::Deactivate
        };
        let target = (action == Action::Deactivate).then(|| current.value.deactivated());
        ops.push(Op {
            action,
            key,
            current: Some(current.clone()),
            target,
            hold,
        });
    }
    ops.sort_by(|a, b| a.key.cmp(&b.key));
    ops
}

/// Plans a single-valued setting: only managed while git declares it, never removed.
fn diff_setting<T: Resource>(
    desired: Option<&T>,
    actual: Option<&Stored<T>>,
    holds: &HashMap<(Kind, &str), &Override>,
) -> Vec<Op<T>> {
    let key = desired.map(|d| d.key()).or_else(|| actual.map(|a| a.value.key()));
    let Some(key) = key else { return Vec::new() };
    let hold = holds.get(&(T::KIND, key.as_str())).map(|o| (*o).clone());
    let action = match (desired, actual) {
        _ if hold.is_some() => Action::Held,
        (None, _) => return Vec::new(),
        (Some(_), None) => Action::Create,
        (Some(d), Some(a)) if a.value != *d || a.owner != Owner::Git => Action::Update,
        (Some(_), Some(_)) => return Vec::new(),
    };
    vec![Op {
        action,
        key,
        current: actual.cloned(),
        target: desired.cloned(),
        hold,
    }]
}

fn mass_removal<T: Removable>(ops: &[Op<T>], total: usize) -> Option<MassRemoval> {
    let removing = ops
        .iter()
        .filter(|op| op.action.removes() && op.current.as_ref().is_some_and(|c| c.owner == Owner::Git))
        .count();
    (removing > MASS_REMOVAL_MIN && removing * 2 > total).then_some(MassRemoval {
        kind: T::KIND,
        removing,
        total,
    })
}

/// One changed field, as plans show it. Secret fields carry no values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// The field as YAML spells it.
    pub field: String,
    /// The stored value; `None` when the operation creates the resource.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old: Option<String>,
    /// The value afterwards; `None` when the field goes away.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new: Option<String>,
    /// Key material: `old` and `new` are left out.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub secret: bool,
}

/// The override holding a resource, as plans show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInfo {
    pub override_id: i64,
    /// Who set the override.
    pub actor: String,
    /// Why, as they gave it.
    pub reason: String,
    /// When the override ends; `None`: until it is cleared.
    pub until: Option<DateTime<Utc>>,
}

/// One operation, flattened for rendering and for saved plans: no secrets in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: Kind,
    /// The resource's identity within its kind (`ip:10.0.0.1`, a client's name).
    pub key: String,
    pub action: Action,
    /// The owner of the stored row, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<Owner>,
    /// Fields the operation sets (create), changes (update, deactivate), or would change once
    /// the hold ends (held).
    pub fields: Vec<FieldChange>,
    /// The override that holds the resource, for a held operation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub hold: Option<HoldInfo>,
}

impl<T: Resource> Op<T> {
    /// The operation as people read it.
    pub fn change(&self) -> Change {
        let mut fields = Vec::new();
        let current = self.current.as_ref();
        if let Some(target) = &self.target {
            if let Some(c) = current.filter(|c| c.owner != Owner::Git && self.action == Action::Update) {
                fields.push(FieldChange {
                    field: "owner".into(),
                    old: Some(c.owner.to_string()),
                    new: Some(Owner::Git.to_string()),
                    secret: false,
                });
            }
            let mut old: HashMap<String, crate::model::Field> = current
                .map(|c| c.value.fields())
                .unwrap_or_default()
                .into_iter()
                .map(|f| (f.name.to_string(), f))
                .collect();
            for f in target.fields() {
                let before = old.remove(f.name.as_ref());
                if before.as_ref().is_some_and(|b| b.value == f.value) {
                    continue;
                }
                let shown = |v: &str| (!f.secret).then(|| v.to_owned());
                fields.push(FieldChange {
                    field: f.name.to_string(),
                    old: before.and_then(|b| shown(&b.value)),
                    new: shown(&f.value),
                    secret: f.secret,
                });
            }
            // Fields that go away (a notification sink taken out), in their order.
            let mut gone: Vec<crate::model::Field> = old.into_values().collect();
            gone.sort_by(|a, b| a.name.cmp(&b.name));
            fields.extend(gone.into_iter().map(|f| FieldChange {
                field: f.name.to_string(),
                old: (!f.secret).then_some(f.value),
                new: None,
                secret: f.secret,
            }));
        }
        Change {
            kind: T::KIND,
            key: self.key.clone(),
            action: self.action,
            owner: current.map(|c| c.owner),
            fields,
            hold: self.hold.as_ref().map(|o| HoldInfo {
                override_id: o.id,
                actor: o.actor.clone(),
                reason: o.reason.clone(),
                until: o.expires_at,
            }),
        }
    }
}

impl Plan {
    /// Every operation as people read it, in plan order (kind, then key).
    pub fn changes(&self) -> Vec<Change> {
        fn all<T: Resource>(ops: &[Op<T>]) -> impl Iterator<Item = Change> + '_ {
            ops.iter().map(Op::change)
        }
        all(&self.rules)
            .chain(all(&self.clients))
            .chain(all(&self.windows))
            .chain(all(&self.flags))
            .chain(all(&self.maintenance))
            .chain(all(&self.profile))
            .chain(all(&self.notifications))
            .collect()
    }

    /// Counts by action.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        let actions = self
            .rules
            .iter()
            .map(|o| o.action)
            .chain(self.clients.iter().map(|o| o.action))
            .chain(self.windows.iter().map(|o| o.action))
            .chain(self.flags.iter().map(|o| o.action))
            .chain(self.maintenance.iter().map(|o| o.action))
            .chain(self.profile.iter().map(|o| o.action))
            .chain(self.notifications.iter().map(|o| o.action));
        for a in actions {
            s.add(a);
        }
        s
    }

    /// Whether applying the plan writes anything.
    pub fn has_changes(&self) -> bool {
        self.summary().changes() > 0
    }

    /// The next occurrences of each recurring window the plan creates or changes.
    fn upcoming_at(&self, now: DateTime<Utc>) -> Vec<Upcoming> {
        (self.windows.iter().filter(|op| op.action.writes()))
            .filter_map(|op| op.target.as_ref().filter(|w| w.active))
            .filter(|w| matches!(w.when, When::Every(_)))
            .map(|w| Upcoming {
                window: w.name.to_string(),
                next: w.when.next(now, UPCOMING),
            })
            .collect()
    }

    /// Sets what refuses this plan: `freeze` (the stored windows' at `now`), unless the plan
    /// changes nothing, or its only changes end or shorten open freezes (a freeze never locks
    /// itself in).
    pub fn freeze_at(&mut self, freeze: Option<ChangeFreeze>, now: DateTime<Utc>) {
        self.frozen_by = freeze.filter(|_| self.has_changes() && !self.only_ends_freezes(now));
    }

    fn only_ends_freezes(&self, now: DateTime<Utc>) -> bool {
        let only_windows = [
            self.rules.iter().any(|o| o.action.writes()),
            self.clients.iter().any(|o| o.action.writes()),
            self.flags.iter().any(|o| o.action.writes()),
            self.maintenance.iter().any(|o| o.action.writes()),
            self.profile.iter().any(|o| o.action.writes()),
            self.notifications.iter().any(|o| o.action.writes()),
        ] == [false; 6];
        // The end of the freeze `w` holds at `now`, if it holds one.
        let open_end = |w: &Window| {
            (w.active && w.mode == WindowMode::FreezeChanges)
                .then(|| w.when.holding(now))
                .flatten()
                .map(|i| i.ends_at)
        };
        let ends_or_shortens = |op: &Op<Window>| {
            let Some(before) = op.current.as_ref().and_then(|c| open_end(&c.value)) else {
                return false;
            };
            match op.target.as_ref().filter(|t| t.active) {
                None => true,
                Some(t) => t.mode == WindowMode::FreezeChanges && open_end(t).is_none_or(|end| end <= before),
            }
        };
        only_windows && (self.windows.iter().filter(|o| o.action.writes())).all(ends_or_shortens)
    }
}

#[cfg(test)]
mod tests;
