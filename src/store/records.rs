//! What the store's reads and writes return: stored resources with their bookkeeping, runs,
//! audit records, usage snapshots, the outcome of a write. The ones the HTTP API answers with
//! are its bodies as they are, with their OpenAPI schemas.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ClientName, ClientType, CounterStore, Owner, Role};
use crate::event::Event;
use crate::model::{FeatureFlag, Maintenance, Override, RateLimitRule, Stored, Window};
use crate::plan::Plan;

/// What an apply did.
#[derive(Debug)]
pub struct Applied {
    /// The plan that was written.
    pub plan: Plan,
    /// The run recorded with it.
    pub run_id: i64,
    /// The store's revision when the snapshot planned from was read (the snapshot is at least
    /// that new); the plan's own writes come after it in the change log.
    pub revision: i64,
    /// The store's revision once the plan was written, before the commit: with nobody else
    /// writing since, the store is exactly the snapshot with the plan applied.
    pub written: i64,
}

/// A recorded reconcile run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RunRecord {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub actor: String,
    /// Where the run came from: `cli`, `watch`, `api`.
    pub source: String,
    /// Resources the run created; the next five count the other actions of its plan.
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub deactivated: i64,
    pub held: i64,
    pub unmanaged: i64,
    /// Why the plan was refused and nothing applied (a mass removal, a stale saved plan);
    /// null for an applied plan.
    pub refusal: Option<String>,
    /// The run undid changes made behind git's back (a watch pass on unchanged files).
    pub drift: bool,
    /// Why it applied although a freeze of changes was open (`--during-freeze`).
    pub during_freeze: Option<String>,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub id: i64,
    /// The reconcile run that made the change; `None` for a change over HTTP.
    pub run_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub source: String,
    /// The resource kind, as [`crate::model::Kind::as_str`] names it.
    pub kind: String,
    pub key: String,
    /// What happened: a plan action (`create`, `update`, …) or `clear_override`.
    pub action: String,
    /// The resource as JSON before the change; `None` when it was created.
    pub before: Option<String>,
    /// The resource as JSON after the change; `None` when it was deleted.
    pub after: Option<String>,
    /// Why the change was made during a freeze of changes (`--during-freeze`).
    pub reason: Option<String>,
}

/// A stored rule with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuleRecord {
    pub id: i64,
    #[serde(flatten)]
    pub rule: RateLimitRule,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RuleRecord {
    /// The rule as the planner and the writers see it.
    pub fn stored(self) -> Stored<RateLimitRule> {
        Stored {
            id: self.id,
            owner: self.owner,
            value: self.rule,
        }
    }
}

/// A rule written over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuleWritten {
    #[serde(flatten)]
    pub rule: RuleRecord,
    /// Whether the rule is new (the answer's status says it: 201 or 200).
    #[serde(skip)]
    pub created: bool,
    /// The override recorded because the rule is git-owned.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub hold: Option<Override>,
}

/// A client as the API shows it: no key and no hash, only the key's display prefix (for keys the
/// server issued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ClientRecord {
    pub id: i64,
    pub name: ClientName,
    pub client_type: ClientType,
    pub role: Role,
    pub active: bool,
    pub description: String,
    /// The display prefix of a key the server issued; null for keys declared in git.
    pub key_prefix: Option<String>,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored window with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WindowRecord {
    pub id: i64,
    #[serde(flatten)]
    pub window: Window,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored feature flag with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FlagRecord {
    pub id: i64,
    #[serde(flatten)]
    pub flag: FeatureFlag,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A counter snapshot written by enforcement (an audit of usage).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SnapshotRecord {
    pub id: i64,
    pub scope: String,
    /// The counted subject: the rule's key, or for a network rule the address counted.
    pub key: String,
    /// The key of the rule that counted (the network, for a network rule).
    pub rule_key: String,
    pub shadow: bool,
    /// The replica whose count this is; empty for a shared count, which every replica writes.
    pub replica: String,
    /// Where the count is kept: `memory` (one replica's own count) or `redis` (the count every
    /// replica shares).
    pub counter: CounterStore,
    pub window_seconds: i64,
    pub max_requests: i64,
    pub current_count: i64,
    pub window_started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Counts of clients and rules for the security snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecurityCounts {
    /// (role, active, count) for every combination present.
    pub clients: Vec<(Role, bool, i64)>,
    /// Active clients, the longest unchanged first: (name, role, last changed).
    pub oldest_keys: Vec<(String, Role, DateTime<Utc>)>,
    pub rules: i64,
    pub disabled_rules: i64,
    pub shadow_rules: i64,
}

/// What a lockdown did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lockdown {
    /// The override group; `clear_overrides` with it lifts the lockdown.
    pub group_id: String,
    /// The clients deactivated, by name.
    pub deactivated: Vec<String>,
    pub overrides: Vec<Override>,
}

/// What one write of a batch did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteDone {
    Override(Override),
    Cleared(u64),
}

/// The row of `maintenance_state`: the mode in force, the mode git declared, and when the mode
/// in force last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeRecord {
    /// The mode in force (an override writes it), as the planner sees it.
    pub stored: Stored<Maintenance>,
    /// The mode git declares (only the reconciler writes it).
    pub git: Maintenance,
    pub updated_at: DateTime<Utc>,
}

/// An event of the notifications outbox, with its place in the order of events.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventRecord {
    /// The order events were written in.
    pub seq: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// An open override with what git declared for the resource it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub hold: Override,
    /// Git's entry for the resource as JSON, when git owned it as the override took it over.
    pub git_value: Option<String>,
}

/// A delivery claimed for sending: the event, the sink to tell, and how many tries this one
/// makes (the first is 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub sink: String,
    pub attempt: i64,
    pub event: EventRecord,
}

/// How a delivery ended, or when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it (a 2xx).
    Sent { status: u16 },
    /// Tried again at `due_at`.
    Retry {
        status: Option<u16>,
        error: String,
        due_at: DateTime<Utc>,
    },
    /// Given up: kept with its last error.
    Dead { status: Option<u16>, error: String },
}

/// One delivery of an event, as `GET /system/notifications` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryRecord {
    /// The sink's name.
    pub sink: String,
    /// `pending` (due at `due_at`), `sent` or `dead` (given up).
    pub state: String,
    /// How many calls were made.
    pub attempts: i64,
    /// When it is tried next, while pending.
    pub due_at: DateTime<Utc>,
    /// The receiver's last HTTP status, if it answered.
    pub last_status: Option<i64>,
    /// Why the last call failed, on one line; never the URL's path or a secret.
    pub last_error: Option<String>,
    /// When it was sent or given up.
    pub done_at: Option<DateTime<Utc>>,
}

/// The deliveries not done yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub pending: i64,
    /// When the oldest event still to be delivered happened.
    pub oldest: Option<DateTime<Utc>>,
}

/// A sink's deliveries by state, and its last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SinkHealth {
    pub sink: String,
    /// Deliveries not sent yet.
    pub pending: i64,
    /// Of those, how many failed at least once.
    pub retrying: i64,
    /// Deliveries given up, within the events kept.
    pub dead: i64,
    /// The error of its newest delivery that failed and is not sent, on one line.
    pub last_error: Option<String>,
}
