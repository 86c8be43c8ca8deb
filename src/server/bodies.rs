//! What the API's responses carry: the store's records as JSON, with their OpenAPI schemas (the
//! store's own types know nothing of HTTP). Schema names are the records' names, as published.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{ClientName, ClientType, CounterStore, Owner, Role};
use crate::model::{FeatureFlag, Override, RateLimitRule, Window};
use crate::store::{
    ClientRecord, FlagRecord, RuleRecord, RuleWritten, RunRecord, SnapshotRecord, WindowRecord,
};

/// A recorded reconcile run.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RunRecord)]
pub struct Run {
    pub id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub actor: String,
    pub source: String,
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
}

impl From<RunRecord> for Run {
    fn from(r: RunRecord) -> Run {
        let RunRecord {
            id,
            started_at,
            finished_at,
            actor,
            source,
            created,
            updated,
            deleted,
            deactivated,
            held,
            unmanaged,
            refusal,
            drift,
        } = r;
        Run {
            id,
            started_at,
            finished_at,
            actor,
            source,
            created,
            updated,
            deleted,
            deactivated,
            held,
            unmanaged,
            refusal,
            drift,
        }
    }
}

/// A stored rule with its bookkeeping, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = RuleRecord)]
pub struct Rule {
    pub id: i64,
    #[serde(flatten)]
    pub rule: RateLimitRule,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RuleRecord> for Rule {
    fn from(r: RuleRecord) -> Rule {
        Rule {
            id: r.id,
            rule: r.rule,
            owner: r.owner,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A rule written over HTTP.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RuleWritten)]
pub struct RuleSaved {
    #[serde(flatten)]
    pub rule: Rule,
    /// The override recorded because the rule is git-owned.
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub hold: Option<Override>,
}

impl From<RuleWritten> for RuleSaved {
    fn from(w: RuleWritten) -> RuleSaved {
        RuleSaved {
            rule: w.rule.into(),
            hold: w.hold,
        }
    }
}

/// A client as the API shows it: no key and no hash, only the key's display prefix (for keys the
/// server issued).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ClientRecord)]
pub struct ApiClient {
    pub id: i64,
    pub name: ClientName,
    pub client_type: ClientType,
    pub role: Role,
    pub active: bool,
    pub description: String,
    pub key_prefix: Option<String>,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ClientRecord> for ApiClient {
    fn from(c: ClientRecord) -> ApiClient {
        let ClientRecord {
            id,
            name,
            client_type,
            role,
            active,
            description,
            key_prefix,
            owner,
            created_at,
            updated_at,
        } = c;
        ApiClient {
            id,
            name,
            client_type,
            role,
            active,
            description,
            key_prefix,
            owner,
            created_at,
            updated_at,
        }
    }
}

/// A stored window with its bookkeeping, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = WindowRecord)]
pub struct MaintenanceWindow {
    pub id: i64,
    #[serde(flatten)]
    pub window: Window,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WindowRecord> for MaintenanceWindow {
    fn from(w: WindowRecord) -> MaintenanceWindow {
        MaintenanceWindow {
            id: w.id,
            window: w.window,
            owner: w.owner,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A stored feature flag with its bookkeeping, as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = FlagRecord)]
pub struct Flag {
    pub id: i64,
    #[serde(flatten)]
    pub flag: FeatureFlag,
    pub owner: Owner,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<FlagRecord> for Flag {
    fn from(f: FlagRecord) -> Flag {
        Flag {
            id: f.id,
            flag: f.flag,
            owner: f.owner,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// A counter snapshot written by enforcement (an audit of usage).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SnapshotRecord)]
pub struct Snapshot {
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

impl From<SnapshotRecord> for Snapshot {
    fn from(s: SnapshotRecord) -> Snapshot {
        let SnapshotRecord {
            id,
            scope,
            key,
            rule_key,
            shadow,
            replica,
            counter,
            window_seconds,
            max_requests,
            current_count,
            window_started_at,
            updated_at,
        } = s;
        Snapshot {
            id,
            scope,
            key,
            rule_key,
            shadow,
            replica,
            counter,
            window_seconds,
            max_requests,
            current_count,
            window_started_at,
            updated_at,
        }
    }
}

/// Maps every record of a listing to its body.
pub fn all<R, B: From<R>>(records: Vec<R>) -> Vec<B> {
    records.into_iter().map(B::from).collect()
}
