//! The state files' serde model, field for field as written in YAML, before validation.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::calendar::{Length, Schedule, Zone};
use crate::domain::{
    ClientName, ClientType, FlagName, KeySha256, Mode, OnOutage, ProfileName, Role, Scope, WindowMode,
    WindowName,
};

/// One state file. Sections hold raw items so that each item is checked on its own and every
/// bad item is reported, not only the first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub version: Option<u32>,
    pub rate_limits: Option<Vec<Value>>,
    pub clients: Option<Vec<Value>>,
    pub maintenance: Option<RawMaintenance>,
    pub feature_flags: Option<Vec<Value>>,
    pub deployment_profile: Option<Value>,
    pub notifications: Option<Value>,
}

/// The `maintenance:` section: the steady mode and the scheduled windows.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub mode: Option<Mode>,
    #[serde(default, deserialize_with = "crate::domain::optional_text")]
    pub reason: Option<String>,
    pub windows: Option<Vec<Value>>,
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn sixty() -> u32 {
    60
}
fn is_sixty(n: &u32) -> bool {
    *n == 60
}
fn default_window_mode() -> WindowMode {
    WindowMode::Maintenance
}

/// A rate-limit rule as written.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub scope: Scope,
    /// Optional only for the global scope, whose key is `*`.
    #[serde(
        default,
        deserialize_with = "crate::domain::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<String>,
    /// The window length in seconds, 1 to 86400.
    #[serde(default = "sixty", skip_serializing_if = "is_sixty")]
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: u32,
    /// Requests allowed per window, 0 to 2147483647 (the store's bound); 0 blocks the key
    /// entirely.
    #[serde(default = "sixty", skip_serializing_if = "is_sixty")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub max_requests: u32,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub shadow: bool,
    /// While the shared counter store (Redis) is unreachable: `open` admits, `closed` refuses
    /// with 503, `local` (the default) counts in each replica's memory.
    #[serde(default = "local", skip_serializing_if = "is_local")]
    pub on_outage: OnOutage,
    #[serde(
        default,
        deserialize_with = "crate::domain::text",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
}

fn local() -> OnOutage {
    OnOutage::DEFAULT
}

fn is_local(policy: &OnOutage) -> bool {
    *policy == OnOutage::DEFAULT
}

/// A client as written.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub name: ClientName,
    #[serde(rename = "type")]
    pub client_type: ClientType,
    /// Least privilege when omitted.
    #[serde(default = "reader")]
    pub role: Role,
    pub key_sha256: KeySha256,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
    #[serde(
        default,
        deserialize_with = "crate::domain::text",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
}

fn reader() -> Role {
    Role::Reader
}

/// A maintenance window as written: once (`starts_at`, `ends_at`) or recurring (`schedule`,
/// `duration`, `timezone`); times stay text until checked for an offset.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("oneOf" = [
    {
        "required": ["starts_at", "ends_at"],
        "not": {"anyOf": [{"required": ["schedule"]}, {"required": ["duration"]}, {"required": ["timezone"]}]}
    },
    {
        "required": ["schedule", "duration"],
        "not": {"anyOf": [{"required": ["starts_at"]}, {"required": ["ends_at"]}]}
    }
]))]
pub struct RawWindow {
    pub name: WindowName,
    /// RFC 3339 with an offset, e.g. 2031-01-10T02:00:00Z.
    #[serde(
        default,
        deserialize_with = "crate::domain::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("format" = "date-time"))]
    pub starts_at: Option<String>,
    /// RFC 3339 with an offset; after starts_at.
    #[serde(
        default,
        deserialize_with = "crate::domain::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(extend("format" = "date-time"))]
    pub ends_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Length>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<Zone>,
    #[serde(default = "default_window_mode")]
    pub mode: WindowMode,
    #[serde(
        default,
        deserialize_with = "crate::domain::text",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
}

/// A feature flag as written; off unless enabled.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFlag {
    pub name: FlagName,
    #[serde(default)]
    pub enabled: bool,
    #[serde(
        default,
        deserialize_with = "crate::domain::text",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
}

/// A deployment profile as written.
pub type RawProfile = ProfileName;

// The typed twin of `RawFile` (which keeps items untyped to report every bad one): the JSON
// Schema editors use, and the loader's way with a file that reads without an error.
/// A valhalla-ops state file.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "valhalla-ops state file",
    description = "Every *.yaml/*.yml file under the state directory is read; resources merge across files."
)]
pub struct SchemaFile {
    /// The format version; 1.
    #[schemars(range(min = 1, max = 1))]
    pub version: Option<u32>,
    /// Rate-limit rules, identified by (scope, key).
    pub rate_limits: Option<Vec<RawRule>>,
    /// API clients, identified by name.
    pub clients: Option<Vec<RawClient>>,
    /// The steady maintenance mode and the scheduled windows.
    pub maintenance: Option<SchemaMaintenance>,
    /// Feature flags, identified by name.
    pub feature_flags: Option<Vec<RawFlag>>,
    /// The deployment profile, e.g. production.
    pub deployment_profile: Option<ProfileName>,
    /// Where the people on call are told, by name; every sink's URL and secret come from
    /// environment variables. Declared in one file; `[]` removes every sink.
    pub notifications: Option<Vec<crate::model::Sink>>,
}

/// The `maintenance:` section.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaMaintenance {
    /// The steady mode: normal, maintenance or read_only.
    pub mode: Option<Mode>,
    // Not serialized; the condition keeps schemars from writing a `"default": null`.
    #[serde(
        default,
        deserialize_with = "crate::domain::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub reason: Option<String>,
    pub windows: Option<Vec<RawWindow>>,
}

/// The JSON Schema (draft 2020-12) of a state file, pretty-printed. Only standard formats: a
/// validator in strict mode (ajv) refuses schemars' `uint32`, which `minimum`/`maximum` say.
pub fn json_schema() -> String {
    let settings = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(schemars::transform::RecursiveTransform(standard_formats));
    let schema = settings.into_generator().into_root_schema_for::<SchemaFile>();
    // A JSON Schema is plain JSON: serializing it cannot fail.
    serde_json::to_string_pretty(&schema).expect("a JSON Schema serializes") + "\n"
}

/// Replaces the integer formats schemars invents (`uint32`, …) with the bounds they stand for.
fn standard_formats(schema: &mut schemars::Schema) {
    let bound = match schema.get("format").and_then(|f| f.as_str()) {
        Some("uint8") => u64::from(u8::MAX),
        Some("uint16") => u64::from(u16::MAX),
        Some("uint32") => u64::from(u32::MAX),
        Some("uint64" | "uint" | "int32" | "int64" | "int" | "int16" | "int8") => u64::MAX,
        _ => return,
    };
    schema.remove("format");
    if bound != u64::MAX && schema.get("maximum").is_none() {
        schema.insert("maximum".into(), bound.into());
    }
}
