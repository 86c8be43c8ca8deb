//! The resources valhalla-ops manages, as both the desired state and the store hold them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::{Interval, Openings, When};

use crate::domain::{
    ClientName, ClientType, EnvName, EventPattern, EventType, FlagName, KeySha256, MaxRequests, Mode,
    OnOutage, Owner, ProfileName, Role, RuleKey, Scope, Severity, SinkName, SinkType, WindowMode, WindowName,
    WindowSeconds,
};

/// The kinds of resource, in the order plans list them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RateLimitRule,
    Client,
    MaintenanceWindow,
    FeatureFlag,
    MaintenanceMode,
    DeploymentProfile,
    Notifications,
}

impl Kind {
    /// Every kind, in plan order.
    pub const ALL: [Kind; 7] = [
        Kind::RateLimitRule,
        Kind::Client,
        Kind::MaintenanceWindow,
        Kind::FeatureFlag,
        Kind::MaintenanceMode,
        Kind::DeploymentProfile,
        Kind::Notifications,
    ];

    /// The stable identifier used in JSON plans, the overrides table and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RateLimitRule => "rate_limit_rule",
            Kind::Client => "client",
            Kind::MaintenanceWindow => "maintenance_window",
            Kind::FeatureFlag => "feature_flag",
            Kind::MaintenanceMode => "maintenance_mode",
            Kind::DeploymentProfile => "deployment_profile",
            Kind::Notifications => "notifications",
        }
    }

    /// A heading for people.
    pub fn title(self) -> &'static str {
        match self {
            Kind::RateLimitRule => "Rate-limit rules",
            Kind::Client => "Clients",
            Kind::MaintenanceWindow => "Maintenance windows",
            Kind::FeatureFlag => "Feature flags",
            Kind::MaintenanceMode => "Maintenance mode",
            Kind::DeploymentProfile => "Deployment profile",
            Kind::Notifications => "Notification sinks",
        }
    }

    /// Parses [`Kind::as_str`] back.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fields whose values are secrets: a key's hash (SPEC §7). The one rule: their values
/// appear only in state files and in `export`; everything else that shows a resource (a plan, an
/// audit record, an override's git value on the status page) says only that one is set or
/// changed, never the value or any part of it.
const SECRET_FIELDS: [&str; 1] = ["key_sha256"];

/// What a secret field shows in place of its value.
pub const SECRET_HIDDEN: &str = "(hidden)";
/// What a secret field shows when a change sets it where it was unset.
pub const SECRET_SET: &str = "(set)";
/// What a secret field shows when a change gives it another value.
pub const SECRET_CHANGED: &str = "(changed)";

/// Whether the field `name` holds a secret (`SECRET_FIELDS`).
pub fn is_secret(name: &str) -> bool {
    SECRET_FIELDS.contains(&name)
}

/// A stored resource's JSON (an audit record's before or after, an override's git value) as it
/// may be shown: every secret field's value, at any depth, replaced by [`SECRET_HIDDEN`]
/// unless it already is one of the markers. Text that is not JSON is dropped (`None`): what
/// cannot be read cannot be checked.
pub fn shown_json(stored: &str) -> Option<serde_json::Value> {
    fn hide(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (name, v) in map.iter_mut() {
                    let marker = matches!(v.as_str(), Some(SECRET_HIDDEN | SECRET_SET | SECRET_CHANGED));
                    if is_secret(name) && !marker {
                        *v = serde_json::Value::String(SECRET_HIDDEN.to_owned());
                    } else {
                        hide(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(hide),
            _ => {}
        }
    }
    let mut value = serde_json::from_str(stored).ok()?;
    hide(&mut value);
    Some(value)
}

/// One field of a resource as people read it; `secret` fields never show their value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field as YAML spells it; a notification sink's is the sink's name.
    pub name: std::borrow::Cow<'static, str>,
    /// The value as plans print it (a secret's is the hash, which they never show).
    pub value: String,
    /// Key material ([`is_secret`]): plans say that it changes, never what it is.
    pub secret: bool,
}

impl Field {
    fn new(name: &'static str, value: impl ToString) -> Field {
        Field {
            name: name.into(),
            value: value.to_string(),
            secret: is_secret(name),
        }
    }
}

/// What the planner needs from every kind of resource.
pub trait Resource: Clone + PartialEq + fmt::Debug {
    /// The kind, for plans and overrides.
    const KIND: Kind;
    /// The identity within the kind, unique in the store.
    fn key(&self) -> String;
    /// The fields a plan compares and shows, in display order.
    fn fields(&self) -> Vec<Field>;
}

/// A rate-limit rule, identified by (scope, key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RateLimitRule {
    /// What the rule counts by: every request (`global`), the client's address (`ip`), its
    /// API client (`api_key`) or its `X-User-Id` (`user`).
    pub scope: Scope,
    /// Whom in its scope it counts: `*` for `global`, an address or network for `ip`, a
    /// client's name for `api_key`, a user id for `user`.
    pub key: RuleKey,
    /// The sliding window's length, in seconds.
    pub window_seconds: WindowSeconds,
    /// Requests allowed per window; 0 blocks the key entirely.
    pub max_requests: MaxRequests,
    /// A disabled rule is kept but counts nothing.
    pub enabled: bool,
    /// Counted and reported, never enforced.
    pub shadow: bool,
    /// What the rule does while shared counters are unreachable.
    pub on_outage: OnOutage,
    pub description: String,
}

impl Resource for RateLimitRule {
    const KIND: Kind = Kind::RateLimitRule;
    fn key(&self) -> String {
        format!("{}:{}", self.scope, self.key)
    }
    fn fields(&self) -> Vec<Field> {
        vec![
            Field::new("window_seconds", self.window_seconds.get()),
            Field::new("max_requests", self.max_requests),
            Field::new("enabled", self.enabled),
            Field::new("shadow", self.shadow),
            Field::new("on_outage", self.on_outage),
            Field::new("description", &self.description),
        ]
    }
}

/// An API client, identified by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Client {
    pub name: ClientName,
    /// What kind of caller it is (a gateway's calls may count over gRPC).
    pub client_type: ClientType,
    /// What its key may do: read, operate (`/system/` writes) or administer (`/admin/`).
    pub role: Role,
    /// The SHA-256 of its key, in hex: the only trace of the key that is stored.
    pub key_sha256: KeySha256,
    /// An inactive client's key is refused; its row and history stay (a soft delete).
    pub active: bool,
    pub description: String,
}

impl Resource for Client {
    const KIND: Kind = Kind::Client;
    fn key(&self) -> String {
        self.name.to_string()
    }
    fn fields(&self) -> Vec<Field> {
        vec![
            Field::new("type", self.client_type),
            Field::new("role", self.role),
            Field::new("key_sha256", self.key_sha256.as_str()),
            Field::new("active", self.active),
            Field::new("description", &self.description),
        ]
    }
}

/// A maintenance window, identified by name: once, or each time a rule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub name: WindowName,
    /// When it holds: `starts_at` and `ends_at` (the first instant it no longer holds), or
    /// `schedule`, `duration` and `timezone`.
    #[serde(flatten)]
    pub when: When,
    /// The mode in force while it is open; `freeze_changes` leaves the mode alone and stops the
    /// reconciler from applying git.
    pub mode: WindowMode,
    /// Windows removed from git are deactivated, not deleted, to keep their history.
    pub active: bool,
    pub description: String,
}

impl Resource for Window {
    const KIND: Kind = Kind::MaintenanceWindow;
    fn key(&self) -> String {
        self.name.to_string()
    }
    fn fields(&self) -> Vec<Field> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let mut fields = match &self.when {
            When::Once(i) => vec![
                Field::new("starts_at", time(&i.starts_at)),
                Field::new("ends_at", time(&i.ends_at)),
            ],
            When::Every(r) => vec![
                Field::new("schedule", r.schedule.as_str()),
                Field::new("duration", r.duration.to_string()),
                Field::new("timezone", r.timezone.name()),
            ],
        };
        fields.extend([
            Field::new("mode", self.mode),
            Field::new("active", self.active),
            Field::new("description", &self.description),
        ]);
        fields
    }
}

/// A feature flag, identified by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FeatureFlag {
    pub name: FlagName,
    pub enabled: bool,
    pub description: String,
}

impl Resource for FeatureFlag {
    const KIND: Kind = Kind::FeatureFlag;
    fn key(&self) -> String {
        self.name.to_string()
    }
    fn fields(&self) -> Vec<Field> {
        vec![
            Field::new("enabled", self.enabled),
            Field::new("description", &self.description),
        ]
    }
}

/// The steady maintenance mode (a single row in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Maintenance {
    /// `normal`, `read_only` (writes refused) or `maintenance` (everything but the way out).
    pub mode: Mode,
    /// Why, as the freeze's answers and the status page say it.
    pub reason: String,
}

impl Resource for Maintenance {
    const KIND: Kind = Kind::MaintenanceMode;
    fn key(&self) -> String {
        "mode".into()
    }
    fn fields(&self) -> Vec<Field> {
        vec![Field::new("mode", self.mode), Field::new("reason", &self.reason)]
    }
}

/// The deployment profile setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: ProfileName,
}

impl Resource for Profile {
    const KIND: Kind = Kind::DeploymentProfile;
    fn key(&self) -> String {
        "profile".into()
    }
    fn fields(&self) -> Vec<Field> {
        vec![Field::new("name", &self.name)]
    }
}

/// One place the people on call are told: where its URL and secret come from (environment
/// variables, never git) and which events it takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub name: SinkName,
    /// `webhook` (a signed CloudEvent), `slack` (an incoming webhook) or `pagerduty` (Events
    /// API v2, critical events only).
    #[serde(rename = "type")]
    pub sink_type: SinkType,
    /// The environment variable that holds the URL (for `pagerduty`, where to send the events
    /// API's calls, e.g. https://events.pagerduty.com/v2/enqueue).
    #[schema(value_type = String)]
    pub url_env: EnvName,
    /// The environment variable that holds the secret: a `webhook`'s HMAC-SHA256 key, a
    /// `pagerduty` integration's routing key; `slack` takes none (its URL is the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub secret_env: Option<EnvName>,
    /// The events it takes: types (`mode.changed`), families (`override.*`) or `*`; every
    /// event when omitted.
    #[serde(default = "every_event")]
    #[schema(value_type = Vec<String>)]
    pub events: Vec<EventPattern>,
    /// The least severe events it takes.
    #[serde(default = "info")]
    pub min_severity: Severity,
    /// Whether it may send to a link-local address (169.254.0.0/16, fe80::/10), where the
    /// cloud metadata service answers; refused unless set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_link_local: bool,
}

fn every_event() -> Vec<EventPattern> {
    vec![EventPattern::All]
}

fn info() -> Severity {
    Severity::Info
}

impl Sink {
    /// Whether the sink takes events of type `t` at severity `severity`.
    pub fn takes(&self, t: EventType, severity: Severity) -> bool {
        severity >= self.min_severity && self.events.iter().any(|p| p.matches(t))
    }

    /// What the fields cannot say alone: the secret each type needs, PagerDuty's severity.
    pub fn check(&self) -> Result<(), String> {
        match (self.sink_type, &self.secret_env) {
            (SinkType::Webhook, None) => Err(format!(
                "sink {} is a webhook and needs secret_env: the variable that holds the key its events are signed with",
                self.name
            )),
            (SinkType::Pagerduty, None) => Err(format!(
                "sink {} is a pagerduty sink and needs secret_env: the variable that holds the integration's routing key",
                self.name
            )),
            (SinkType::Slack, Some(_)) => Err(format!(
                "sink {} is a slack sink and takes no secret_env: its URL is the secret",
                self.name
            )),
            (SinkType::Pagerduty, _) if self.min_severity != Severity::Critical => Err(format!(
                "sink {} is a pagerduty sink, which pages for critical events only: write min_severity: critical",
                self.name
            )),
            _ => Ok(()),
        }
    }
}

/// The notification sinks, a setting declared as a whole (`notifications:`), by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sinks(pub Vec<Sink>);

impl Resource for Sinks {
    const KIND: Kind = Kind::Notifications;
    fn key(&self) -> String {
        "notifications".into()
    }
    /// One field per sink, its whole declaration on one line (a plan shows which sink changes).
    fn fields(&self) -> Vec<Field> {
        self.0
            .iter()
            .map(|sink| {
                let events: Vec<String> = sink.events.iter().map(ToString::to_string).collect();
                let mut line = format!("{} url_env={}", sink.sink_type, sink.url_env);
                if let Some(secret) = &sink.secret_env {
                    line.push_str(&format!(" secret_env={secret}"));
                }
                line.push_str(&format!(
                    " events={} min_severity={}",
                    events.join(","),
                    sink.min_severity
                ));
                if sink.allow_link_local {
                    line.push_str(" allow_link_local");
                }
                Field {
                    name: format!("sink {}", sink.name).into(),
                    value: line,
                    secret: false,
                }
            })
            .collect()
    }
}

/// A resource as stored: its row id and owner around the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored<T> {
    pub id: i64,
    /// Who manages the row: git (the reconciler) or the API.
    pub owner: Owner,
    /// The resource as the row holds it.
    pub value: T,
}

/// An emergency change made over HTTP that the reconciler must leave alone while it lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Override {
    pub id: i64,
    /// The kind of resource it holds.
    pub kind: Kind,
    /// The resource's key, as [`Resource::key`] gives it.
    pub key: String,
    /// The client that made the change.
    pub actor: String,
    /// Why, as its author gave it.
    pub reason: String,
    pub created_at: DateTime<Utc>,
    /// `None` lasts until cleared.
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides made together (a lockdown) share a group and are cleared together.
    pub group_id: Option<String>,
}

impl Override {
    /// Whether the override still holds at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// What an override to be recorded says; the store assigns id and creation time.
#[derive(Debug, Clone)]
pub struct NewOverride {
    /// The kind of resource it holds.
    pub kind: Kind,
    /// The resource's key, as [`Resource::key`] gives it.
    pub key: String,
    /// The client that made the change.
    pub actor: String,
    /// Why, as its author gave it.
    pub reason: String,
    /// `None` lasts until cleared.
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides made together (a lockdown) share a group.
    pub group_id: Option<String>,
    /// What git declared for the resource when the override took it over, as a state-file
    /// entry (JSON), for `export`; `None` when git declared nothing for it.
    pub git_value: Option<String>,
}

/// Everything the store holds that a plan depends on, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Actual {
    /// Every rule row, enabled or not, whoever owns it; as are the next three.
    pub rules: Vec<Stored<RateLimitRule>>,
    /// Every client row, active or not.
    pub clients: Vec<Stored<Client>>,
    /// Every window row, active or not.
    pub windows: Vec<Stored<Window>>,
    pub flags: Vec<Stored<FeatureFlag>>,
    /// The single maintenance_state row (the migration creates it).
    pub maintenance: Option<Stored<Maintenance>>,
    pub profile: Option<Stored<Profile>>,
    pub notifications: Option<Stored<Sinks>>,
    /// Overrides not cleared yet; whether each still holds depends on the time of the plan.
    pub overrides: Vec<Override>,
}

impl Actual {
    /// A digest of the snapshot, overrides included, that changes whenever the store does:
    /// a saved plan is applied only to the store it was computed against. A [`SetDigest`] of
    /// every row, so that a cache of the snapshot keeps it up to date row by row.
    pub fn fingerprint(&self) -> String {
        self.set_digest().hex()
    }

    /// The digest [`Actual::fingerprint`] shows.
    pub fn set_digest(&self) -> SetDigest {
        let mut sum = SetDigest::default();
        sum.add_all(self.rules.iter());
        sum.add_all(self.clients.iter());
        sum.add_all(self.windows.iter());
        sum.add_all(self.flags.iter());
        sum.add_all(self.maintenance.iter());
        sum.add_all(self.profile.iter());
        sum.add_all(self.notifications.iter());
        sum.add_all(self.overrides.iter());
        sum
    }
}

/// The SHA-256 of a value's JSON form, streamed into the hasher.
pub fn digest<T: Serialize>(value: &T) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    // Plain data with string keys always serializes, and the hasher's writer never fails.
    serde_json::to_writer(&mut hasher, value).expect("plain data serializes to JSON");
    format!("{:x}", hasher.finalize())
}

/// A digest of a set of items that adding or taking out one item updates at the cost of that
/// item: the sum, lane by lane of four 64-bit lanes, of each item's SHA-256 (the items' order
/// does not matter, and the same item twice counts twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetDigest([u64; 4]);

impl SetDigest {
    /// The digest of one item: the SHA-256 of its JSON form (each kind's fields tell it apart).
    pub fn of<T: Serialize>(item: &T) -> SetDigest {
        SetDigest::of_with(item, &mut Vec::new())
    }

    /// [`SetDigest::of`] with `json` as the buffer the item is written to: the digest takes the
    /// whole JSON at once (serializing straight into the hasher feeds it token by token, twice
    /// as slow), and a buffer reused over many items is allocated once.
    fn of_with<T: Serialize>(item: &T, json: &mut Vec<u8>) -> SetDigest {
        use sha2::{Digest, Sha256};
        json.clear();
        // Plain data with string keys always serializes, and a Vec never fails to be written.
        serde_json::to_writer(&mut *json, item).expect("plain data serializes to JSON");
        let bytes = Sha256::digest(json.as_slice());
        let mut lanes = [0u64; 4];
        for (lane, chunk) in lanes.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *lane = u64::from_le_bytes(word);
        }
        SetDigest(lanes)
    }

    pub fn add(&mut self, other: SetDigest) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
    }

    pub fn sub(&mut self, other: SetDigest) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_sub(b);
        }
    }

    /// Adds each of `items`.
    pub fn add_all<'a, T: Serialize + 'a>(&mut self, items: impl Iterator<Item = &'a T>) {
        let mut json = Vec::with_capacity(256);
        for item in items {
            self.add(SetDigest::of_with(item, &mut json));
        }
    }

    /// Takes out each of `items`.
    pub fn sub_all<'a, T: Serialize + 'a>(&mut self, items: impl Iterator<Item = &'a T>) {
        let mut json = Vec::with_capacity(256);
        for item in items {
            self.sub(SetDigest::of_with(item, &mut json));
        }
    }

    /// 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|lane| format!("{lane:016x}")).collect()
    }
}

/// What the effective maintenance mode is computed from: the stored steady mode, the active
/// windows and the open mode overrides, as the store holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct MaintenanceInputs {
    /// The mode in force in the store (an override writes it).
    pub state: Maintenance,
    /// The mode git declares (only the reconciler writes it).
    pub git: Maintenance,
    /// When the stored mode last changed.
    pub updated_at: DateTime<Utc>,
    /// Active windows (past, present and future), with what is open around now worked out once.
    windows: Vec<Window>,
    openings: Openings,
    /// Mode overrides not cleared yet (some may have expired).
    pub overrides: Vec<Override>,
}

impl MaintenanceInputs {
    pub fn new(
        state: Maintenance,
        git: Maintenance,
        updated_at: DateTime<Utc>,
        windows: Vec<Window>,
        overrides: Vec<Override>,
    ) -> MaintenanceInputs {
        MaintenanceInputs {
            state,
            git,
            updated_at,
            windows,
            openings: Openings::default(),
            overrides,
        }
    }

    /// The active windows.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// The windows open at `now`, each with the merged interval that holds `now`.
    pub fn open_windows(&self, now: DateTime<Utc>) -> Vec<(&Window, Interval)> {
        let whens = self.windows.iter().map(|w| w.active.then_some(&w.when));
        let open = self.openings.open_at(now, whens);
        open.into_iter().map(|(i, iv)| (&self.windows[i], iv)).collect()
    }
}
