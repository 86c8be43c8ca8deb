//! What callers hand the store: who is changing what and why, listing filters, batch writes,
//! a replica's counts.

use chrono::{DateTime, Utc};

use crate::domain::{ClientType, CounterStore, FlagName, Mode, ProfileName, Scope};

/// Who runs a reconcile and against which desired state; recorded with the run.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Who ran it: `--actor` (a person, `ci:…`), or the watch loop's name.
    pub actor: String,
    /// Where the run came from: `cli`, `watch`, `api`.
    pub source: String,
    pub started_at: DateTime<Utc>,
    /// The fingerprint of the desired state planned from.
    pub state_fingerprint: String,
    /// Why it applies although a freeze of changes is open (`--during-freeze`).
    pub during_freeze: Option<String>,
}

/// Who changes something over HTTP, and why: recorded in the audit log and in an override when
/// the change touches a git-owned resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiChange {
    /// The calling client's name.
    pub actor: String,
    /// Why; required when the change makes an override.
    pub reason: Option<String>,
    /// When an override made by this change ends (`None`: until cleared).
    pub expires_at: Option<DateTime<Utc>>,
    /// When the change is made: the audit record's time and an override's start.
    pub now: DateTime<Utc>,
    /// Overrides made together (a lockdown) share a group, lifted together.
    pub group_id: Option<String>,
}

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// At most this many rows.
    pub limit: i64,
    /// Rows skipped before the first.
    pub offset: i64,
}

/// Which rules to list: each `Some` keeps the rows with that value (`key` exactly), `None`
/// keeps all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFilter {
    pub scope: Option<Scope>,
    pub key: Option<String>,
    pub enabled: Option<bool>,
    pub page: Page,
}

/// Which usage snapshots to list: each `Some` keeps the rows with that value, `None` keeps all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFilter {
    pub scope: Option<Scope>,
    pub key: Option<String>,
    pub page: Page,
}

/// Which clients to list: each `Some` keeps the rows with that value, `None` keeps all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFilter {
    pub active: Option<bool>,
    pub client_type: Option<ClientType>,
    pub page: Page,
}

/// Which maintenance windows to list: each `Some` keeps the rows that match, `None` keeps all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowFilter {
    pub active: Option<bool>,
    /// Only windows that start after this time.
    pub starts_after: Option<DateTime<Utc>>,
    pub page: Page,
}

/// Which audit records to list: each `Some` keeps the records that match (`kind` as
/// [`crate::model::Kind::as_str`] names it), `None` keeps all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub key: Option<String>,
    pub actor: Option<String>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many records.
    pub limit: i64,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    SetMode {
        mode: Mode,
        change: ApiChange,
    },
    SetFlag {
        name: FlagName,
        enabled: bool,
        change: ApiChange,
    },
    SetProfile {
        name: ProfileName,
        change: ApiChange,
    },
    ClearOverrides {
        group_id: Option<String>,
        actor: String,
        now: DateTime<Utc>,
    },
}

/// One counter's count in one window, as a replica records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub scope: Scope,
    /// The key of the rule that counted (the network, for a network rule).
    pub rule_key: String,
    /// The counted subject: the rule's key, or for a network rule the address.
    pub key: String,
    /// The rule only reports: it never refuses.
    pub shadow: bool,
    /// Whose count it is: this replica's (`memory`) or every replica's (`redis`).
    pub counter: CounterStore,
    pub window_seconds: i64,
    pub max_requests: i64,
    /// Requests counted in the window so far.
    pub current_count: i64,
    pub window_started_at: DateTime<Utc>,
}

/// A replica's counts since its last write, ready to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    pub usage: Vec<Usage>,
    /// When the counts were taken: the rows' `updated_at`.
    pub now: DateTime<Utc>,
    /// Snapshot rows last updated before this are forgotten.
    pub keep_after: DateTime<Utc>,
}

/// Which overrides to lift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifting {
    /// Every open override.
    Every,
    /// This one.
    One(i64),
    /// This one, and the rest of its group (a lockdown) when it belongs to one.
    WithItsGroup(i64),
}

/// Who lifts overrides, from where, why, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lift<'a> {
    pub actor: &'a str,
    /// `api` or `cli`.
    pub source: &'a str,
    /// Why, when the lifter said; recorded in the audit log.
    pub reason: Option<&'a str>,
    pub now: DateTime<Utc>,
}
