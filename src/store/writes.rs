//! A plan as bulk write steps, one per table and action, that each backend runs in its dialect.

use chrono::{DateTime, Utc};

use super::inputs::{Lift, RunMeta, Usage};

/// The setting that holds the deployment profile.
pub(super) const PROFILE_SETTING: &str = "deployment_profile";
/// The setting that holds the notification sinks, as a JSON array.
pub(super) const NOTIFICATIONS_SETTING: &str = "notifications";
use crate::domain::{CounterStore, Owner};
use crate::model::{
    Client, FeatureFlag, Field, Maintenance, Profile, RateLimitRule, Resource, SECRET_CHANGED, SECRET_HIDDEN,
    SECRET_SET, Sinks, Stored, Window,
};
use crate::plan::{Action, Op, Plan};

/// The SQL type of a column, for binding arrays (Postgres) or values (SQLite).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Text,
    Int,
    Bool,
    Time,
}

/// One value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL, in a column of any type.
    Null,
    Text(Option<String>),
    Int(i64),
    Bool(bool),
    Time(DateTime<Utc>),
}

/// A column name and type.
pub type Column = (&'static str, ColType);

/// One bulk statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Delete {
        table: &'static str,
        ids: Vec<i64>,
    },
    /// Sets `columns` of each row by id.
    Update {
        table: &'static str,
        columns: Vec<Column>,
        rows: Vec<(i64, Vec<Value>)>,
    },
    Insert {
        table: &'static str,
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
    },
    /// Inserts rows; a row that hits the unique index `conflict` names updates `update` instead,
    /// and `grow` where the new value is larger.
    Upsert {
        table: &'static str,
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
        conflict: &'static [&'static str],
        update: &'static [&'static str],
        grow: &'static [&'static str],
    },
}

impl Step {
    /// The `ON CONFLICT` clause of an upsert (the same text on both backends).
    pub fn on_conflict(table: &str, conflict: &[&str], update: &[&str], grow: &[&str]) -> String {
        let sets: Vec<String> = update
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .chain(grow.iter().map(|c| {
                format!("{c} = CASE WHEN excluded.{c} > {table}.{c} THEN excluded.{c} ELSE {table}.{c} END")
            }))
            .collect();
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            conflict.join(", "),
            sets.join(", ")
        )
    }
}

/// How a resource kind is stored.
pub trait Row: Resource {
    const TABLE: &'static str;
    /// The columns the reconciler writes, besides owner and timestamps.
    const COLUMNS: &'static [Column];
    /// Whether the table has a created_at column.
    const CREATED_AT: bool = true;
    /// Values for [`Row::COLUMNS`], in order.
    fn values(&self) -> Vec<Value>;
}

fn text(s: impl Into<String>) -> Value {
    Value::Text(Some(s.into()))
}

impl Row for RateLimitRule {
    const TABLE: &'static str = "rate_limit_rules";
    const COLUMNS: &'static [Column] = &[
        ("scope", ColType::Text),
        ("key", ColType::Text),
        ("window_seconds", ColType::Int),
        ("max_requests", ColType::Int),
        ("enabled", ColType::Bool),
        ("shadow", ColType::Bool),
        ("on_outage", ColType::Text),
        ("description", ColType::Text),
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            text(self.scope.as_str()),
            text(self.key.as_str()),
            Value::Int(self.window_seconds.get().into()),
            Value::Int(self.max_requests.get().into()),
            Value::Bool(self.enabled),
            Value::Bool(self.shadow),
            text(self.on_outage.as_str()),
            text(&self.description),
        ]
    }
}

impl Row for Client {
    const TABLE: &'static str = "api_clients";
    const COLUMNS: &'static [Column] = &[
        ("name", ColType::Text),
        ("client_type", ColType::Text),
        ("role", ColType::Text),
        ("key_sha256", ColType::Text),
        ("active", ColType::Bool),
        ("description", ColType::Text),
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            text(self.name.as_str()),
            text(self.client_type.as_str()),
            text(self.role.as_str()),
            text(self.key_sha256.as_str()),
            Value::Bool(self.active),
            text(&self.description),
        ]
    }
}

impl Row for Window {
    const TABLE: &'static str = "maintenance_windows";
    const COLUMNS: &'static [Column] = &[
        ("name", ColType::Text),
        ("starts_at", ColType::Time),
        ("ends_at", ColType::Time),
        ("schedule", ColType::Text),
        ("duration_minutes", ColType::Int),
        ("timezone", ColType::Text),
        ("mode", ColType::Text),
        ("active", ColType::Bool),
        ("description", ColType::Text),
    ];
    fn values(&self) -> Vec<Value> {
        let (once, rule) = (self.when.interval(), self.when.rule());
        vec![
            text(self.name.as_str()),
            once.map_or(Value::Null, |i| Value::Time(i.starts_at)),
            once.map_or(Value::Null, |i| Value::Time(i.ends_at)),
            rule.map_or(Value::Null, |r| text(r.schedule.as_str())),
            rule.map_or(Value::Null, |r| Value::Int(r.duration.minutes().into())),
            rule.map_or(Value::Null, |r| text(r.timezone.name())),
            text(self.mode.as_str()),
            Value::Bool(self.active),
            text(&self.description),
        ]
    }
}

impl Row for FeatureFlag {
    const TABLE: &'static str = "feature_flags";
    const COLUMNS: &'static [Column] = &[
        ("name", ColType::Text),
        ("enabled", ColType::Bool),
        ("description", ColType::Text),
    ];
    fn values(&self) -> Vec<Value> {
        vec![
            text(self.name.as_str()),
            Value::Bool(self.enabled),
            text(&self.description),
        ]
    }
}

impl Row for Maintenance {
    const TABLE: &'static str = "maintenance_state";
    /// The reconciler writes git's mode both as the mode in force and as git's own (which an
    /// HTTP override leaves alone).
    const COLUMNS: &'static [Column] = &[
        ("mode", ColType::Text),
        ("reason", ColType::Text),
        ("git_mode", ColType::Text),
        ("git_reason", ColType::Text),
    ];
    const CREATED_AT: bool = false;
    fn values(&self) -> Vec<Value> {
        vec![
            text(self.mode.as_str()),
            text(&self.reason),
            text(self.mode.as_str()),
            text(&self.reason),
        ]
    }
}

impl Row for Profile {
    const TABLE: &'static str = "settings";
    const COLUMNS: &'static [Column] = &[("name", ColType::Text), ("value", ColType::Text)];
    const CREATED_AT: bool = false;
    fn values(&self) -> Vec<Value> {
        vec![text(PROFILE_SETTING), text(self.name.as_str())]
    }
}

impl Row for Sinks {
    const TABLE: &'static str = "settings";
    const COLUMNS: &'static [Column] = &[("name", ColType::Text), ("value", ColType::Text)];
    const CREATED_AT: bool = false;
    fn values(&self) -> Vec<Value> {
        // A list of plain fields serializes.
        let json = serde_json::to_string(&self.0).unwrap_or_default();
        vec![text(NOTIFICATIONS_SETTING), text(&json)]
    }
}

/// The columns of an audit row, `run_id` aside (set for reconcile runs only).
const AUDIT_COLUMNS: &[Column] = &[
    ("at", ColType::Time),
    ("actor", ColType::Text),
    ("source", ColType::Text),
    ("resource_kind", ColType::Text),
    ("resource_key", ColType::Text),
    ("action", ColType::Text),
    ("before", ColType::Text),
    ("after", ColType::Text),
];

/// The steps of one plan, grouped so that removals run first (a rename never trips a unique
/// key), then updates, then inserts.
#[derive(Default)]
struct Steps {
    removals: Vec<Step>,
    updates: Vec<Step>,
    inserts: Vec<Step>,
}

impl Steps {
    fn add<T: Row>(&mut self, ops: &[Op<T>], now: DateTime<Utc>) {
        let mut deletes = Vec::new();
        let mut deactivations = Vec::new();
        let mut updates = Vec::new();
        let mut inserts = Vec::new();
        for op in ops {
            let current = op.current.as_ref();
            match (op.action, current, &op.target) {
                (Action::Delete, Some(c), _) => deletes.push(c.id),
                // A retired row belongs to the reconciler, so an inactive api-owned row is one
                // deactivated over HTTP and still the API's, not history.
                (Action::Deactivate, Some(c), Some(t)) => {
                    deactivations.push((c.id, row(t, Owner::Git, None, now)))
                }
                (Action::Update, Some(c), Some(t)) => updates.push((c.id, row(t, Owner::Git, None, now))),
                (Action::Create, None, Some(t)) => {
                    inserts.push(row(t, Owner::Git, T::CREATED_AT.then_some(now), now))
                }
                _ => {}
            }
        }
        let mut update_columns = T::COLUMNS.to_vec();
        update_columns.extend([("owner", ColType::Text), ("updated_at", ColType::Time)]);
        if !deletes.is_empty() {
            self.removals.push(Step::Delete {
                table: T::TABLE,
                ids: deletes,
            });
        }
        if !deactivations.is_empty() {
            self.removals.push(Step::Update {
                table: T::TABLE,
                columns: update_columns.clone(),
                rows: deactivations,
            });
        }
        if !updates.is_empty() {
            self.updates.push(Step::Update {
                table: T::TABLE,
                columns: update_columns.clone(),
                rows: updates,
            });
        }
        if !inserts.is_empty() {
            let mut columns = update_columns;
            if T::CREATED_AT {
                columns.push(("created_at", ColType::Time));
            }
            self.inserts.push(Step::Insert {
                table: T::TABLE,
                columns,
                rows: inserts,
            });
        }
    }
}

fn row<T: Row>(value: &T, owner: Owner, created_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<Value> {
    let mut values = value.values();
    values.extend([text(owner.as_str()), Value::Time(now)]);
    values.extend(created_at.map(Value::Time));
    values
}

/// The write steps of `plan`, in the order they must run.
pub fn plan_steps(plan: &Plan, now: DateTime<Utc>) -> Vec<Step> {
    let mut steps = Steps::default();
    steps.add(&plan.rules, now);
    steps.add(&plan.clients, now);
    steps.add(&plan.windows, now);
    steps.add(&plan.flags, now);
    steps.add(&plan.maintenance, now);
    steps.add(&plan.profile, now);
    steps.add(&plan.notifications, now);
    steps
        .removals
        .into_iter()
        .chain(steps.updates)
        .chain(steps.inserts)
        .collect()
}

/// The fields of a resource as an audit JSON object, a secret field ([`Field::secret`]) as
/// `secret` shows it: no part of its value is ever recorded.
fn audit_json<T: Resource>(value: &T, secret: impl Fn(&Field) -> &'static str) -> String {
    let map: serde_json::Map<String, serde_json::Value> = value
        .fields()
        .into_iter()
        .map(|f| {
            let v = if f.secret { secret(&f).to_owned() } else { f.value };
            (f.name.into_owned(), serde_json::Value::String(v))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A resource before a change, for the audit: its secrets read `(hidden)`.
fn audit_before<T: Resource>(value: &T) -> String {
    audit_json(value, |_| SECRET_HIDDEN)
}

/// A resource after a change from `before`, for the audit: a secret reads `(set)` when the
/// resource is new, `(changed)` when its value differs, `(hidden)` when it does not.
fn audit_after<T: Resource>(value: &T, before: Option<&T>) -> String {
    let earlier = before.map(Resource::fields);
    audit_json(value, |f| match &earlier {
        None => SECRET_SET,
        Some(earlier) if earlier.iter().any(|e| e.name == f.name && e.value != f.value) => SECRET_CHANGED,
        Some(_) => SECRET_HIDDEN,
    })
}

fn audit_rows<T: Resource>(ops: &[Op<T>], meta: &RunMeta, now: DateTime<Utc>, out: &mut Vec<Vec<Value>>) {
    for op in ops.iter().filter(|op| op.action.writes()) {
        let after = match op.action {
            Action::Delete => None,
            _ => op
                .target
                .as_ref()
                .map(|t| audit_after(t, op.current.as_ref().map(|c| &c.value))),
        };
        // Room for the run's id, added last by `AuditRows::step`.
        let mut row = Vec::with_capacity(AUDIT_COLUMNS.len() + 2);
        row.extend([
            Value::Time(now),
            text(&meta.actor),
            text(&meta.source),
            text(T::KIND.as_str()),
            text(&op.key),
            text(op.action.as_str()),
            Value::Text(op.current.as_ref().map(|c| audit_before(&c.value))),
            Value::Text(after),
            Value::Text(meta.during_freeze.clone()),
        ]);
        out.push(row);
    }
}

/// One audit row per written change of a plan, made before its run is recorded (so that they
/// can be made beside the plan's own rows); [`AuditRows::step`] adds the run's id.
pub struct AuditRows(Vec<Vec<Value>>);

impl AuditRows {
    /// The audit rows of `plan`'s written changes.
    pub fn of(plan: &Plan, meta: &RunMeta, now: DateTime<Utc>) -> AuditRows {
        let mut rows = Vec::new();
        audit_rows(&plan.rules, meta, now, &mut rows);
        audit_rows(&plan.clients, meta, now, &mut rows);
        audit_rows(&plan.windows, meta, now, &mut rows);
        audit_rows(&plan.flags, meta, now, &mut rows);
        audit_rows(&plan.maintenance, meta, now, &mut rows);
        audit_rows(&plan.profile, meta, now, &mut rows);
        audit_rows(&plan.notifications, meta, now, &mut rows);
        AuditRows(rows)
    }

    /// The rows of run `run_id` as a single insert (none when nothing changed).
    pub fn step(self, run_id: i64) -> Option<Step> {
        let mut rows = self.0;
        for row in &mut rows {
            row.push(Value::Int(run_id));
        }
        let mut columns = AUDIT_COLUMNS.to_vec();
        columns.extend([("reason", ColType::Text), ("run_id", ColType::Int)]);
        (!rows.is_empty()).then_some(Step::Insert {
            table: "audit_log",
            columns,
            rows,
        })
    }
}

/// The row write of one change made over HTTP: an insert owned by the API, an update that keeps
/// the owner (a git-owned resource stays git's, held by an override), or a delete.
pub fn api_step<T: Row>(current: Option<&Stored<T>>, target: Option<&T>, now: DateTime<Utc>) -> Option<Step> {
    let mut update_columns = T::COLUMNS.to_vec();
    update_columns.extend([("owner", ColType::Text), ("updated_at", ColType::Time)]);
    match (current, target) {
        (None, Some(t)) => {
            let mut columns = update_columns;
            if T::CREATED_AT {
                columns.push(("created_at", ColType::Time));
            }
            let values = row(t, Owner::Api, T::CREATED_AT.then_some(now), now);
            Some(Step::Insert {
                table: T::TABLE,
                columns,
                rows: vec![values],
            })
        }
        (Some(c), Some(t)) => {
            let values = row(t, c.owner, None, now);
            Some(Step::Update {
                table: T::TABLE,
                columns: update_columns,
                rows: vec![(c.id, values)],
            })
        }
        (Some(c), None) => Some(Step::Delete {
            table: T::TABLE,
            ids: vec![c.id],
        }),
        (None, None) => None,
    }
}

/// The audit row of one change made over HTTP by `actor`.
pub fn api_audit<T: Row>(
    current: Option<&Stored<T>>,
    target: Option<&T>,
    actor: &str,
    now: DateTime<Utc>,
) -> Step {
    let rows = vec![api_audit_row(current, target, actor, now)];
    Step::Insert {
        table: "audit_log",
        columns: AUDIT_COLUMNS.to_vec(),
        rows,
    }
}

/// The audit rows of many changes made over HTTP by `actor`, as one insert.
pub fn api_audit_many<T: Row>(changes: &[(Stored<T>, T)], actor: &str, now: DateTime<Utc>) -> Option<Step> {
    let rows: Vec<Vec<Value>> = changes
        .iter()
        .map(|(c, t)| api_audit_row(Some(c), Some(t), actor, now))
        .collect();
    (!rows.is_empty()).then(|| Step::Insert {
        table: "audit_log",
        columns: AUDIT_COLUMNS.to_vec(),
        rows,
    })
}

fn api_audit_row<T: Row>(
    current: Option<&Stored<T>>,
    target: Option<&T>,
    actor: &str,
    now: DateTime<Utc>,
) -> Vec<Value> {
    let action = match (current, target) {
        (None, _) => "create",
        (Some(_), Some(_)) => "update",
        (Some(_), None) => "delete",
    };
    let key = target
        .map(Resource::key)
        .or_else(|| current.map(|c| c.value.key()))
        .unwrap_or_default();
    vec![
        Value::Time(now),
        text(actor),
        text("api"),
        text(T::KIND.as_str()),
        text(key),
        text(action),
        Value::Text(current.map(|c| audit_before(&c.value))),
        Value::Text(target.map(|t| audit_after(t, current.map(|c| &c.value)))),
    ]
}

/// New overrides as one insert.
pub fn overrides_step(new: &[crate::model::NewOverride], now: DateTime<Utc>) -> Option<Step> {
    let rows: Vec<Vec<Value>> = new
        .iter()
        .map(|o| {
            vec![
                text(o.kind.as_str()),
                text(&o.key),
                text(&o.actor),
                text(&o.reason),
                Value::Text(o.group_id.clone()),
                Value::Time(now),
                o.expires_at.map_or(Value::Text(None), Value::Time),
                Value::Text(o.git_value.clone()),
            ]
        })
        .collect();
    let columns = vec![
        ("resource_kind", ColType::Text),
        ("resource_key", ColType::Text),
        ("actor", ColType::Text),
        ("reason", ColType::Text),
        ("group_id", ColType::Text),
        ("created_at", ColType::Time),
        ("expires_at", ColType::Time),
        ("git_value", ColType::Text),
    ];
    (!rows.is_empty()).then_some(Step::Insert {
        table: "overrides",
        columns,
        rows,
    })
}

/// The audit rows of overrides lifted: what each held, and that it no longer does (with why,
/// when the lifter said).
pub fn clear_audit(cleared: &[crate::model::Override], lift: &Lift<'_>) -> Option<Step> {
    let Lift {
        actor,
        source,
        reason,
        now,
    } = *lift;
    let after = reason.map(|r| serde_json::json!({ "lifted_because": r }).to_string());
    let rows: Vec<Vec<Value>> = cleared
        .iter()
        .map(|o| {
            let before =
                serde_json::json!({ "override": o.id, "actor": o.actor, "reason": o.reason }).to_string();
            vec![
                Value::Time(now),
                text(actor),
                text(source),
                text(o.kind.as_str()),
                text(&o.key),
                text("clear_override"),
                Value::Text(Some(before)),
                Value::Text(after.clone()),
            ]
        })
        .collect();
    let columns = AUDIT_COLUMNS.to_vec();
    (!rows.is_empty()).then_some(Step::Insert {
        table: "audit_log",
        columns,
        rows,
    })
}

/// The upsert of a replica's counters into `rate_limit_snapshots`. A shared count is one row
/// whichever replica writes it (its `replica` is empty), and a row keeps the largest count
/// written for its window, so a replica that read the count earlier cannot lower it.
pub fn usage_step(replica: &str, usage: &[Usage], now: DateTime<Utc>) -> Step {
    const COLUMNS: &[Column] = &[
        ("replica", ColType::Text),
        ("counter", ColType::Text),
        ("scope", ColType::Text),
        ("rule_key", ColType::Text),
        ("key", ColType::Text),
        ("shadow", ColType::Bool),
        ("window_seconds", ColType::Int),
        ("max_requests", ColType::Int),
        ("current_count", ColType::Int),
        ("window_started_at", ColType::Time),
        ("updated_at", ColType::Time),
    ];
    let rows = usage
        .iter()
        .map(|u| {
            vec![
                text(match u.counter {
                    CounterStore::Memory => replica,
                    CounterStore::Redis => "",
                }),
                text(u.counter.as_str()),
                text(u.scope.as_str()),
                text(&u.rule_key),
                text(&u.key),
                Value::Bool(u.shadow),
                Value::Int(u.window_seconds),
                Value::Int(u.max_requests),
                Value::Int(u.current_count),
                Value::Time(u.window_started_at),
                Value::Time(now),
            ]
        })
        .collect();
    Step::Upsert {
        table: "rate_limit_snapshots",
        columns: COLUMNS.to_vec(),
        rows,
        conflict: &["replica", "scope", "rule_key", "key", "window_started_at"],
        update: &["max_requests", "updated_at"],
        grow: &["current_count"],
    }
}
