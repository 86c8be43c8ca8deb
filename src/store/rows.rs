//! The tables' rows as named structs decoded by column name, each table's one column list, and
//! how a row becomes a domain value or a record (a stored value that does not parse is
//! [`StoreError::Corrupt`], naming its row).

use chrono::{DateTime, Utc};

use super::error::StoreError;
use super::records::{
    AuditRecord, ClientRecord, EventRecord, FlagRecord, Held, ModeRecord, RuleRecord, RunRecord,
    SnapshotRecord, WindowRecord,
};
use crate::calendar::{Interval, Length, Recurrence, Schedule, When, Zone};
use crate::domain::{
    ClientName, FlagName, KeySha256, MaxRequests, ParseError, ProfileName, RuleKey, WindowName,
    WindowSeconds, normalize_time,
};
use crate::event::{Event, Subject};
use crate::model::{
    Client, FeatureFlag, Kind, Maintenance, Override, Profile, RateLimitRule, Sinks, Stored, Window,
};

/// The columns of a table's row struct, as a literal for `concat!`: the one place a query's
/// select list (or `RETURNING` list) is written. A resource's row is what the planner reads;
/// its `_records` row adds the bookkeeping the API shows, which a reconcile has no use for.
macro_rules! columns {
    // A budget is read as a 64-bit integer: SQLite once stored budgets past the 32-bit column
    // type (an earlier release let 4294967295 through), and such a row must not stop every read.
    (rules) => {
        "id, scope, key, window_seconds, CAST(max_requests AS BIGINT) AS max_requests, enabled, shadow, \
         on_outage, description, owner"
    };
    (rule_records) => {
        concat!(columns!(rules), ", created_at, updated_at")
    };
    (clients) => {
        "id, name, client_type, role, key_sha256, active, description, owner"
    };
    (client_records) => {
        concat!(columns!(clients), ", key_prefix, created_at, updated_at")
    };
    (windows) => {
        "id, name, starts_at, ends_at, schedule, duration_minutes, timezone, mode, active, description, owner"
    };
    (window_records) => {
        concat!(columns!(windows), ", created_at, updated_at")
    };
    (flags) => {
        "id, name, enabled, description, owner"
    };
    (flag_records) => {
        concat!(columns!(flags), ", created_at, updated_at")
    };
    (mode) => {
        "id, mode, reason, owner, updated_at, git_mode, git_reason"
    };
    (setting) => {
        "id, value, owner"
    };
    (overrides) => {
        "id, resource_kind, resource_key, actor, reason, created_at, expires_at, group_id"
    };
    (held) => {
        concat!(columns!(overrides), ", git_value")
    };
    (events) => {
        "seq, id, type, severity, occurred_at, actor, reason, resource_kind, resource_key, data"
    };
    (runs) => {
        "id, started_at, finished_at, actor, source, created, updated, deleted, deactivated, \
         held, unmanaged, refusal, drift, during_freeze"
    };
    (audit) => {
        "id, run_id, at, actor, source, resource_kind, resource_key, action, before, after, reason"
    };
    (snapshots) => {
        "id, scope, key, rule_key, shadow, replica, counter, window_seconds, max_requests, \
         current_count, window_started_at, updated_at"
    };
}
pub(super) use columns;

/// Turns a parse failure of a stored value into an error naming the row.
fn corrupt(table: &'static str, id: i64) -> impl Fn(ParseError) -> StoreError {
    move |e| StoreError::Corrupt {
        table,
        id,
        message: e.0,
    }
}

/// `rows` as values, each row that does not decode ([`StoreError::Corrupt`]) left out with a
/// warning naming it. For what a replica serves: one row edited by hand into something no
/// longer valid (a client name with a space, a rule key that is no address) must not stop the
/// server from authenticating and limiting everyone else. A reconcile still refuses such a row,
/// naming it, since planning around a row it cannot read could write a second one.
pub(super) fn readable<R, T>(
    rows: Vec<R>,
    decode: impl Fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    lenient(rows, decode, &mut Vec::new())
}

/// [`readable`], adding the id of each row left out to `unreadable`: for a cache that must know
/// what it lacks (a planner reading it could write such a row twice).
pub(super) fn lenient<R, T>(
    rows: Vec<R>,
    decode: impl Fn(R) -> Result<T, StoreError>,
    unreadable: &mut Vec<i64>,
) -> Result<Vec<T>, StoreError> {
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        match decode(row) {
            Ok(value) => values.push(value),
            Err(e @ StoreError::Corrupt { id, .. }) => {
                tracing::warn!("{e}; the server leaves it out of what it serves");
                unreadable.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(values)
}

/// A row of `rate_limit_rules`, as the planner reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RuleRow {
    id: i64,
    scope: String,
    key: String,
    window_seconds: i32,
    max_requests: i64,
    enabled: bool,
    shadow: bool,
    on_outage: String,
    description: String,
    owner: String,
}

impl RuleRow {
    pub(super) fn stored(self) -> Result<Stored<RateLimitRule>, StoreError> {
        let bad = corrupt("rate_limit_rules", self.id);
        let scope = self.scope.parse().map_err(&bad)?;
        let max_requests = match MaxRequests::new(self.max_requests) {
            Ok(max) => max,
            // Past the bound (written before it was enforced): read as the largest budget, so
            // the rest of the store still reads and the next reconcile writes git's value.
            Err(e) if self.max_requests > 0 => {
                tracing::warn!(
                    "rate_limit_rules row {}: {}; read as {} until a reconcile or an update writes it again",
                    self.id,
                    e.0,
                    MaxRequests::MAX
                );
                MaxRequests::LARGEST
            }
            Err(e) => return Err(bad(e)),
        };
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: RateLimitRule {
                key: RuleKey::parse(scope, &self.key).map_err(&bad)?,
                scope,
                window_seconds: WindowSeconds::new(self.window_seconds.into()).map_err(&bad)?,
                max_requests,
                enabled: self.enabled,
                shadow: self.shadow,
                on_outage: self.on_outage.parse().map_err(&bad)?,
                description: self.description,
            },
        })
    }
}

/// A row of `rate_limit_rules` with its bookkeeping, as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RuleRecordRow {
    #[sqlx(flatten)]
    row: RuleRow,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RuleRecordRow {
    pub(super) fn record(self) -> Result<RuleRecord, StoreError> {
        let stored = self.row.stored()?;
        Ok(RuleRecord {
            id: stored.id,
            rule: stored.value,
            owner: stored.owner,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A row of `api_clients`, as the planner and authentication read it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ClientRow {
    id: i64,
    name: String,
    client_type: String,
    role: String,
    key_sha256: String,
    active: bool,
    description: String,
    owner: String,
}

impl ClientRow {
    pub(super) fn stored(self) -> Result<Stored<Client>, StoreError> {
        let bad = corrupt("api_clients", self.id);
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: Client {
                name: ClientName::parse(self.name).map_err(&bad)?,
                client_type: self.client_type.parse().map_err(&bad)?,
                role: self.role.parse().map_err(&bad)?,
                key_sha256: KeySha256::parse(&self.key_sha256).map_err(&bad)?,
                active: self.active,
                description: self.description,
            },
        })
    }
}

/// A row of `api_clients` with the key's display prefix and the bookkeeping, as the API shows
/// it (without the key's hash).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ClientRecordRow {
    #[sqlx(flatten)]
    row: ClientRow,
    key_prefix: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl ClientRecordRow {
    pub(super) fn stored(self) -> Result<Stored<Client>, StoreError> {
        self.row.stored()
    }

    pub(super) fn record(self) -> Result<ClientRecord, StoreError> {
        let Stored { id, owner, value } = self.row.stored()?;
        Ok(ClientRecord {
            id,
            name: value.name,
            client_type: value.client_type,
            role: value.role,
            active: value.active,
            description: value.description,
            key_prefix: self.key_prefix,
            owner,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A row of `maintenance_windows`, as the planner reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct WindowRow {
    id: i64,
    name: String,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    schedule: Option<String>,
    duration_minutes: Option<i64>,
    timezone: Option<String>,
    mode: String,
    active: bool,
    description: String,
    owner: String,
}

impl WindowRow {
    pub(super) fn stored(self) -> Result<Stored<Window>, StoreError> {
        let bad = corrupt("maintenance_windows", self.id);
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: Window {
                name: WindowName::parse(self.name).map_err(&bad)?,
                when: match (self.starts_at, self.ends_at, self.schedule, self.duration_minutes) {
                    (Some(starts_at), Some(ends_at), None, None) => When::Once(Interval {
                        starts_at: normalize_time(starts_at),
                        ends_at: normalize_time(ends_at),
                    }),
                    (None, None, Some(schedule), Some(minutes)) => When::Every(Recurrence {
                        schedule: Schedule::parse(&schedule).map_err(&bad)?,
                        duration: u64::try_from(minutes)
                            .ok()
                            .and_then(Length::from_minutes)
                            .ok_or_else(|| bad(ParseError(format!("duration of {minutes} minutes"))))?,
                        timezone: Zone::parse(self.timezone.as_deref().unwrap_or("UTC")).map_err(&bad)?,
                    }),
                    _ => return Err(bad(ParseError("neither a one-off nor a recurring window".into()))),
                },
                mode: self.mode.parse().map_err(&bad)?,
                active: self.active,
                description: self.description,
            },
        })
    }
}

/// A row of `maintenance_windows` with its bookkeeping, as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct WindowRecordRow {
    #[sqlx(flatten)]
    row: WindowRow,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl WindowRecordRow {
    pub(super) fn record(self) -> Result<WindowRecord, StoreError> {
        let stored = self.row.stored()?;
        Ok(WindowRecord {
            id: stored.id,
            window: stored.value,
            owner: stored.owner,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A row of `feature_flags`, as the planner reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct FlagRow {
    id: i64,
    name: String,
    enabled: bool,
    description: String,
    owner: String,
}

impl FlagRow {
    pub(super) fn stored(self) -> Result<Stored<FeatureFlag>, StoreError> {
        let bad = corrupt("feature_flags", self.id);
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: FeatureFlag {
                name: FlagName::parse(self.name).map_err(&bad)?,
                enabled: self.enabled,
                description: self.description,
            },
        })
    }
}

/// A row of `feature_flags` with its bookkeeping, as the API shows it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct FlagRecordRow {
    #[sqlx(flatten)]
    row: FlagRow,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl FlagRecordRow {
    pub(super) fn record(self) -> Result<FlagRecord, StoreError> {
        let stored = self.row.stored()?;
        Ok(FlagRecord {
            id: stored.id,
            flag: stored.value,
            owner: stored.owner,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The one row of `maintenance_state`: the mode in force and the mode git declared.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ModeRow {
    id: i64,
    mode: String,
    reason: String,
    owner: String,
    pub(super) updated_at: DateTime<Utc>,
    git_mode: String,
    git_reason: String,
}

impl ModeRow {
    /// The mode in force.
    pub(super) fn stored(&self) -> Result<Stored<Maintenance>, StoreError> {
        self.parse(&self.mode, &self.reason)
    }

    /// The row as the caches hold it.
    pub(super) fn record(self) -> Result<ModeRecord, StoreError> {
        Ok(ModeRecord {
            stored: self.stored()?,
            git: self.git()?,
            updated_at: self.updated_at,
        })
    }

    /// The mode git declared, which an override does not change.
    pub(super) fn git(&self) -> Result<Maintenance, StoreError> {
        Ok(self.parse(&self.git_mode, &self.git_reason)?.value)
    }

    fn parse(&self, mode: &str, reason: &str) -> Result<Stored<Maintenance>, StoreError> {
        let bad = corrupt("maintenance_state", self.id);
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: Maintenance {
                mode: mode.parse().map_err(&bad)?,
                reason: reason.to_owned(),
            },
        })
    }
}

/// A row of `settings`: the deployment profile's name, or the notification sinks as a JSON
/// array, by the row's name.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SettingRow {
    id: i64,
    value: String,
    owner: String,
}

impl SettingRow {
    /// The row with its value read by `parse`.
    fn stored<T>(self, parse: impl FnOnce(String) -> Result<T, ParseError>) -> Result<Stored<T>, StoreError> {
        let bad = corrupt("settings", self.id);
        Ok(Stored {
            id: self.id,
            owner: self.owner.parse().map_err(&bad)?,
            value: parse(self.value).map_err(&bad)?,
        })
    }

    pub(super) fn profile(self) -> Result<Stored<Profile>, StoreError> {
        self.stored(|v| {
            Ok(Profile {
                name: ProfileName::parse(v)?,
            })
        })
    }

    pub(super) fn sinks(self) -> Result<Stored<Sinks>, StoreError> {
        self.stored(|v| {
            serde_json::from_str(&v)
                .map(Sinks)
                .map_err(|e| ParseError(e.to_string()))
        })
    }
}

/// A row of `overrides` (the clearing columns are not read back).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OverrideRow {
    id: i64,
    resource_kind: String,
    resource_key: String,
    actor: String,
    reason: String,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    group_id: Option<String>,
}

impl OverrideRow {
    pub(super) fn parse(self) -> Result<Override, StoreError> {
        let kind = Kind::parse(&self.resource_kind).ok_or_else(|| {
            let unknown = format!("unknown resource kind `{}`", self.resource_kind);
            corrupt("overrides", self.id)(ParseError(unknown))
        })?;
        Ok(Override {
            id: self.id,
            kind,
            key: self.resource_key,
            actor: self.actor,
            reason: self.reason,
            created_at: self.created_at,
            expires_at: self.expires_at,
            group_id: self.group_id,
        })
    }
}

/// A row of `overrides` with what git declared for its resource.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct HeldRow {
    #[sqlx(flatten)]
    row: OverrideRow,
    git_value: Option<String>,
}

impl HeldRow {
    pub(super) fn parse(self) -> Result<Held, StoreError> {
        Ok(Held {
            hold: self.row.parse()?,
            git_value: self.git_value,
        })
    }
}

/// A row of `reconcile_runs` (the fingerprints are not read back).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct RunRow {
    id: i64,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    actor: String,
    source: String,
    created: i32,
    updated: i32,
    deleted: i32,
    deactivated: i32,
    held: i32,
    unmanaged: i32,
    refusal: Option<String>,
    drift: bool,
    during_freeze: Option<String>,
}

impl From<RunRow> for RunRecord {
    fn from(r: RunRow) -> RunRecord {
        RunRecord {
            id: r.id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            actor: r.actor,
            source: r.source,
            created: r.created.into(),
            updated: r.updated.into(),
            deleted: r.deleted.into(),
            deactivated: r.deactivated.into(),
            held: r.held.into(),
            unmanaged: r.unmanaged.into(),
            refusal: r.refusal,
            drift: r.drift,
            during_freeze: r.during_freeze,
        }
    }
}

/// A row of `audit_log`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    id: i64,
    run_id: Option<i64>,
    at: DateTime<Utc>,
    actor: String,
    source: String,
    resource_kind: String,
    resource_key: String,
    action: String,
    before: Option<String>,
    after: Option<String>,
    reason: Option<String>,
}

/// Stored audit JSON as it may be shown ([`crate::model::shown_json`]); text that is not JSON
/// is shown as it is, which cannot carry a field.
fn shown(stored: &str) -> String {
    crate::model::shown_json(stored).map_or_else(|| stored.to_owned(), |v| v.to_string())
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> AuditRecord {
        AuditRecord {
            id: r.id,
            run_id: r.run_id,
            at: r.at,
            actor: r.actor,
            source: r.source,
            kind: r.resource_kind,
            key: r.resource_key,
            action: r.action,
            // Rows written before the one rule for secrets kept a hash's first digits.
            before: r.before.as_deref().map(shown),
            after: r.after.as_deref().map(shown),
            reason: r.reason,
        }
    }
}

/// A row of `rate_limit_snapshots`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SnapshotRow {
    id: i64,
    scope: String,
    key: String,
    rule_key: String,
    shadow: bool,
    replica: String,
    counter: String,
    window_seconds: i32,
    max_requests: i32,
    current_count: i32,
    window_started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SnapshotRow {
    pub(super) fn record(self) -> Result<SnapshotRecord, StoreError> {
        let r = self;
        let counter = r.counter.parse().map_err(corrupt("rate_limit_snapshots", r.id))?;
        Ok(SnapshotRecord {
            id: r.id,
            scope: r.scope,
            key: r.key,
            rule_key: r.rule_key,
            shadow: r.shadow,
            replica: r.replica,
            counter,
            window_seconds: r.window_seconds.into(),
            max_requests: r.max_requests.into(),
            current_count: r.current_count.into(),
            window_started_at: r.window_started_at,
            updated_at: r.updated_at,
        })
    }
}

/// A row of `notification_events`.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRow {
    seq: i64,
    id: String,
    #[sqlx(rename = "type")]
    kind: String,
    severity: String,
    occurred_at: DateTime<Utc>,
    actor: String,
    reason: String,
    resource_kind: Option<String>,
    resource_key: Option<String>,
    data: String,
}

impl EventRow {
    pub(super) fn record(self) -> Result<EventRecord, StoreError> {
        let bad = |e: String| StoreError::Corrupt {
            table: "notification_events",
            id: self.seq,
            message: e,
        };
        let kind = self.kind.parse().map_err(|e: ParseError| bad(e.0))?;
        let severity = self.severity.parse().map_err(|e: ParseError| bad(e.0))?;
        let data = serde_json::from_str(&self.data).map_err(|e| bad(format!("data is not JSON: {e}")))?;
        let resource = match (self.resource_kind, self.resource_key) {
            (Some(kind), Some(key)) => Some(Subject { kind, key }),
            _ => None,
        };
        Ok(EventRecord {
            seq: self.seq,
            event: Event {
                id: self.id,
                kind,
                severity,
                at: self.occurred_at,
                actor: self.actor,
                reason: self.reason,
                resource,
                data,
            },
        })
    }
}
