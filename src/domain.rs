//! Domain newtypes and enums shared by every layer: parsed once at the edge, valid everywhere after.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value could not become a domain type; the message is written for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Text, and only text: a YAML scalar that reads as a number, a boolean or null is refused rather
/// than taken as its characters. Read through the YAML library's tree (the loader's way with a
/// file that has an error), `String` already refuses them; read straight from the file, `String`
/// would take an unquoted `1234` as text. Every text field of a state file goes through this, so
/// both ways of reading agree.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        // A value with a custom YAML tag (`!team platform`) is its text, the tag ignored.
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<String, A::Error> {
            use serde::de::VariantAccess as _;
            let (serde::de::IgnoredAny, value) = data.variant()?;
            value.newtype_variant_seed(Strict)
        }
    }
    /// [`text`] as a seed, for the value under a tag.
    struct Strict;
    impl<'de> serde::de::DeserializeSeed<'de> for Strict {
        type Value = String;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            text(d)
        }
    }
    d.deserialize_any(Text)
}

/// [`text`] that may be null or absent.
pub fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Strict(#[serde(deserialize_with = "text")] String);
    Ok(Option::<Strict>::deserialize(d)?.map(|s| s.0))
}

/// Declares a closed set of lowercase names that (de)serialize as strings and list the valid
/// choices when parsing fails.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in YAML, JSON and the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseError(format!(
                        concat!("unknown ", $what, " `{}`, expected one of: {}"),
                        crate::text::shown(s),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = text(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                string_schema(concat!("A ", $what, "."))
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "enum": [$($text),+],
                    "description": concat!("A ", $what, ".")
                })
            }
        }
    };
}

/// The OpenAPI schema of a string with a description.
pub(crate) fn string_schema(description: &str) -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(description))
}

string_enum!(
    /// What a rate-limit rule counts requests by.
    Scope, "scope" { Ip => "ip", User => "user", ApiKey => "api_key", Global => "global" }
);
string_enum!(
    /// What a rate-limit rule does while the shared counter store (Redis) is unreachable:
    /// `open` admits, `closed` refuses with 503, `local` counts in this replica's memory.
    OnOutage, "failure policy" { Open => "open", Closed => "closed", Local => "local" }
);

string_enum!(
    /// Where rate-limit counts are kept: each replica's memory, or one Redis for every replica.
    CounterStore, "counter store" { Memory => "memory", Redis => "redis" }
);

impl OnOutage {
    /// The policy of a rule that does not declare one: keep limiting, per replica, as without
    /// shared counters (neither a wide-open platform nor a refused one).
    pub const DEFAULT: OnOutage = OnOutage::Local;
}

string_enum!(
    /// The kind of software a client is. A `gateway` (Envoy and the like) may count requests over
    /// gRPC whatever its role.
    ClientType, "client type" {
        Weweb => "weweb", Heimdall => "heimdall", Tyr => "tyr", Script => "script", Integration => "integration",
        Gateway => "gateway",
    }
);
string_enum!(
    /// What a client may do: reader (GET), operator (+ writes under /system/), admin (+ /admin/ops/).
    Role, "role" { Reader => "reader", Operator => "operator", Admin => "admin" }
);
string_enum!(
    /// The platform's maintenance mode.
    Mode, "mode" { Normal => "normal", Maintenance => "maintenance", ReadOnly => "read_only" }
);
string_enum!(
    /// The mode a maintenance window puts the platform in while it is open.
    WindowMode, "window mode" {
        Maintenance => "maintenance",
        ReadOnly => "read_only",
        FreezeChanges => "freeze_changes",
    }
);
string_enum!(
    /// Who owns a stored resource: the reconciler (declared in git) or the HTTP API.
    Owner, "owner" { Git => "git", Api => "api" }
);
string_enum!(
    /// What an event says happened; its CloudEvents `type` is `valhalla.ops.<name>`.
    EventType, "event type" {
        OverrideSet => "override.set",
        OverrideLifted => "override.lifted",
        OverrideExpired => "override.expired",
        OverrideExpiring => "override.expiring",
        ModeChanged => "mode.changed",
        LockdownStarted => "lockdown.started",
        LockdownEnded => "lockdown.ended",
        ReconcileApplied => "reconcile.applied",
        ReconcileRefused => "reconcile.refused",
        ReconcileDriftCorrected => "reconcile.drift_corrected",
        CountersUnreachable => "counters.unreachable",
        CountersReachable => "counters.reachable",
        ClientDeactivated => "client.deactivated",
        ClientKeyChanged => "client.key_changed",
        NotifyTest => "notify.test",
    }
);
string_enum!(
    /// How urgently an event wants someone, in increasing order: a sink takes the events at or
    /// above its `min_severity`.
    Severity, "severity" { Info => "info", Warning => "warning", Critical => "critical" }
);

string_enum!(
    /// What a notification sink speaks: CloudEvents to a webhook, a Slack incoming webhook's
    /// message, or a PagerDuty Events v2 alert.
    SinkType, "sink type" { Webhook => "webhook", Slack => "slack", Pagerduty => "pagerduty" }
);

/// Which events a sink takes: every one (`*`), a family (`override.*`) or one type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventPattern {
    All,
    /// The family's name, without the `.*`.
    Family(String),
    One(EventType),
}

impl EventPattern {
    /// Parses a pattern, refusing one that matches no event type (a typo would silence a sink).
    pub fn parse(s: &str) -> Result<EventPattern, ParseError> {
        let pattern = match s {
            "*" => EventPattern::All,
            _ => match s.strip_suffix(".*") {
                Some(family) => EventPattern::Family(family.to_owned()),
                None => match s.parse::<EventType>() {
                    Ok(one) => EventPattern::One(one),
                    Err(_) => EventPattern::Family(String::new()),
                },
            },
        };
        if EventType::ALL.iter().any(|t| pattern.matches(*t)) {
            return Ok(pattern);
        }
        let families: std::collections::BTreeSet<&str> = EventType::ALL
            .iter()
            .filter_map(|t| t.as_str().split_once('.').map(|(f, _)| f))
            .collect();
        Err(ParseError(format!(
            "event pattern `{}` matches no event: write `*`, a family ({}) or a type such as `mode.changed`",
            crate::text::shown(s),
            families
                .iter()
                .map(|f| format!("{f}.*"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// Whether events of type `t` match.
    pub fn matches(&self, t: EventType) -> bool {
        match self {
            EventPattern::All => true,
            EventPattern::Family(family) => t
                .as_str()
                .split_once('.')
                .is_some_and(|(f, _)| !family.is_empty() && f == family),
            EventPattern::One(one) => *one == t,
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventPattern::All => f.write_str("*"),
            EventPattern::Family(family) => write!(f, "{family}.*"),
            EventPattern::One(one) => f.write_str(one.as_str()),
        }
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EventPattern::parse(&text(d)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for EventPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventPattern".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(\\*|[a-z_]+\\.\\*|[a-z_]+\\.[a-z_]+)$",
            "description": "An event type (mode.changed), a family (override.*) or every event (*)."
        })
    }
}

/// The name of an environment variable a sink reads its URL or secret from: the value never
/// is in git. `[A-Z_][A-Z0-9_]*`, at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    /// Parses a variable's name.
    pub fn parse(s: impl Into<String>) -> Result<EnvName, ParseError> {
        let s = s.into();
        let mut chars = s.chars();
        let first = chars.next().is_some_and(|c| c.is_ascii_uppercase() || c == '_');
        let rest = chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if first && rest && s.len() <= 128 {
            Ok(EnvName(s))
        } else {
            Err(ParseError(format!(
                "invalid environment variable name `{}`: use A-Z, 0-9 and `_`, not starting with a digit (the value itself never belongs in git)",
                crate::text::shown(&s)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        EnvName::parse(text(d)?).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for EnvName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[A-Z_][A-Z0-9_]{0,127}$",
            "description": "The name of an environment variable that holds the value."
        })
    }
}

impl WindowMode {
    /// The platform's mode while such a window is open; a freeze of changes leaves it alone.
    pub fn platform_mode(self) -> Option<Mode> {
        match self {
            WindowMode::Maintenance => Some(Mode::Maintenance),
            WindowMode::ReadOnly => Some(Mode::ReadOnly),
            WindowMode::FreezeChanges => None,
        }
    }
}

/// Checks the name pattern shared by clients, windows and flags: `[a-z0-9][a-z0-9_-]{0,63}`.
fn check_name(what: &str, s: &str) -> Result<(), ParseError> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && s.len() <= 64 {
        Ok(())
    } else {
        Err(ParseError(format!(
            "invalid {what} `{}`: use 1 to 64 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit",
            crate::text::shown(s)
        )))
    }
}

/// What [`check_name`] accepts, as a regular expression for schemas.
const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,63}$";

/// Declares a validated name newtype over `String`.
macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a name, rejecting anything outside the documented pattern.
            pub fn parse(s: impl Into<String>) -> Result<Self, ParseError> {
                let s = s.into();
                check_name($what, &s)?;
                Ok(Self(s))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::parse(text(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                string_schema(concat!("A ", $what, "."))
                    .pattern(Some(NAME_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(64))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": NAME_PATTERN,
                    "description": concat!("A ", $what, ".")
                })
            }
        }
    };
}

name_type!(
    /// A client's unique name; also the key of `api_key` rate-limit rules.
    ClientName, "client name"
);
name_type!(
    /// A maintenance window's unique name.
    WindowName, "window name"
);
name_type!(
    /// A feature flag's unique name.
    FlagName, "feature flag name"
);
name_type!(
    /// A notification sink's unique name.
    SinkName, "sink name"
);
name_type!(
    /// The deployment profile, a free-form name such as `production`.
    ProfileName, "deployment profile"
);

/// The key of a rate-limit rule, canonical for its scope so that equal keys compare equal:
/// an IP address or CIDR network, a user id, a client name, or `*` for the global scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RuleKey(String);

impl RuleKey {
    /// The only key a global rule may have.
    pub const GLOBAL: &'static str = "*";

    /// Parses `raw` as a key of `scope`, normalising addresses (`10.0.0.1/32` is `10.0.0.1`,
    /// IPv6 in its compressed lowercase form).
    pub fn parse(scope: Scope, raw: &str) -> Result<Self, ParseError> {
        match scope {
            Scope::Global if raw == Self::GLOBAL => Ok(Self(raw.to_owned())),
            Scope::Global => Err(ParseError(format!(
                "a global rule's key must be `*`, not `{}`",
                crate::text::shown(raw)
            ))),
            Scope::Ip => parse_ip_key(raw).map(Self),
            Scope::ApiKey => ClientName::parse(raw)
                .map(|n| Self(n.0))
                .map_err(|e| ParseError(format!("an api_key rule's key must be a client name: {e}"))),
            Scope::User => {
                let ok = !raw.is_empty()
                    && raw.len() <= 256
                    && raw.trim() == raw
                    && !raw.chars().any(char::is_control);
                if ok {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(ParseError(format!(
                        "invalid user id `{}`: use 1 to 256 characters, no control characters or surrounding spaces",
                        crate::text::shown(raw)
                    )))
                }
            }
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a key that may be omitted: only a global rule may omit it (it is `*`).
    pub fn parse_for(scope: Scope, raw: Option<&str>) -> Result<Self, ParseError> {
        match (raw, scope) {
            (None, Scope::Global) => Self::parse(Scope::Global, Self::GLOBAL),
            (None, scope) => Err(ParseError(format!("a rule of scope {scope} needs a key"))),
            (Some(k), scope) => Self::parse(scope, k),
        }
    }
}

fn parse_ip_key(raw: &str) -> Result<String, ParseError> {
    if let Ok(addr) = raw.parse::<IpAddr>() {
        return Ok(addr.to_string());
    }
    let net: IpNet = raw.parse().map_err(|_| {
        ParseError(format!(
            "invalid ip key `{}`: expected an address (203.0.113.7) or a CIDR network (203.0.113.0/24)",
            crate::text::shown(raw)
        ))
    })?;
    if net.trunc() != net {
        return Err(ParseError(format!(
            "invalid ip key `{raw}`: host bits are set; did you mean `{}`?",
            net.trunc()
        )));
    }
    if net.prefix_len() == net.max_prefix_len() {
        Ok(net.addr().to_string())
    } else {
        Ok(net.to_string())
    }
}

impl utoipa::PartialSchema for RuleKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema("ip: an address or CIDR network; user: a user id; api_key: a client name; global: `*`.")
            .into()
    }
}

impl utoipa::ToSchema for RuleKey {}

impl fmt::Display for RuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The length of a rate-limit window in seconds, `1..=86400`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WindowSeconds(u32);

impl WindowSeconds {
    /// The default window of the documented schema.
    pub const DEFAULT: WindowSeconds = WindowSeconds(60);

    /// Accepts `1..=86400` (one second to one day).
    pub fn new(secs: i64) -> Result<Self, ParseError> {
        match u32::try_from(secs) {
            Ok(s @ 1..=86_400) => Ok(Self(s)),
            _ => Err(ParseError(format!(
                "window_seconds must be between 1 and 86400, not {secs}"
            ))),
        }
    }

    /// The number of seconds.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl utoipa::PartialSchema for WindowSeconds {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(1))
            .maximum(Some(86_400))
            .description(Some("The length of a rate-limit window in seconds."))
            .into()
    }
}

impl utoipa::ToSchema for WindowSeconds {}

/// Why a change over HTTP was made, as its author wrote it: at most [`Reason::MAX_CHARS`]
/// characters, so that one reason cannot fill the status page, a plan or a log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Reason(String);

impl Reason {
    /// The longest reason, in characters.
    pub const MAX_CHARS: usize = 500;

    /// Accepts any text of at most [`Reason::MAX_CHARS`] characters.
    pub fn parse(text: String) -> Result<Self, ParseError> {
        let chars = text.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(ParseError(format!(
                "a reason is at most {} characters, not {chars}",
                Self::MAX_CHARS
            )));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The text, borrowed.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Reason {
    type Error = ParseError;
    fn try_from(text: String) -> Result<Self, ParseError> {
        Reason::parse(text)
    }
}

impl utoipa::PartialSchema for Reason {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(Self::MAX_CHARS))
            .description(Some("Why: recorded with the change and any override it makes."))
            .into()
    }
}

impl utoipa::ToSchema for Reason {}

/// Requests a rule allows per window, `0..=2147483647`; 0 blocks the key entirely. The bound is
/// the store's (a 32-bit signed column on both backends): a value that passes validation can
/// always be written and read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MaxRequests(u32);

impl MaxRequests {
    /// The largest budget the store holds.
    pub const MAX: u32 = i32::MAX as u32;
    /// The default budget of the documented schema.
    pub const DEFAULT: MaxRequests = MaxRequests(60);
    /// No request passes.
    pub const BLOCKED: MaxRequests = MaxRequests(0);
    /// The largest budget.
    pub const LARGEST: MaxRequests = MaxRequests(Self::MAX);

    /// Accepts `0..=`[`MaxRequests::MAX`].
    pub fn new(n: i64) -> Result<Self, ParseError> {
        match u32::try_from(n) {
            Ok(n) if n <= Self::MAX => Ok(Self(n)),
            _ => Err(ParseError(format!(
                "max_requests must be between 0 and {}, not {n}",
                Self::MAX
            ))),
        }
    }

    /// The number of requests.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for MaxRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl utoipa::PartialSchema for MaxRequests {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(0))
            .maximum(Some(Self::MAX))
            .description(Some("Requests allowed per window; 0 blocks the key entirely."))
            .into()
    }
}

impl utoipa::ToSchema for MaxRequests {}

/// The SHA-256 of a client's API key as 64 lowercase hex digits. The key itself is never held;
/// `Debug` shows no part of the hash, so it does not spread through logs either.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct KeySha256(String);

impl KeySha256 {
    /// Parses 64 hex digits (either case; stored lowercase).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(ParseError(
                "key_sha256 must be the 64 hex digits of the key's SHA-256 (see `valhalla-ops keys generate`)"
                    .into(),
            ))
        }
    }

    /// Whether a presented key is long enough to carry 128 bits: at least [`MIN_KEY_CHARS`]
    /// characters besides the `vk_` prefix. Shorter keys are refused without being looked up,
    /// so a short hash that git declares by mistake (or malice) opens nothing.
    pub fn long_enough(key: &str) -> bool {
        key.strip_prefix("vk_").unwrap_or(key).chars().count() >= MIN_KEY_CHARS
    }

    /// The hash of `key`.
    pub fn of_key(key: &str) -> Self {
        use sha2::{Digest, Sha256};
        Self(format!("{:x}", Sha256::digest(key.as_bytes())))
    }

    /// The full hex digest, for storage and export only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeySha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySha256(…)")
    }
}

impl schemars::JsonSchema for KeySha256 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KeySha256".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-fA-F]{64}$",
            "description": "The SHA-256 (hex) of the client's API key; the key itself is never in git (see `valhalla-ops keys generate`)."
        })
    }
}

impl<'de> Deserialize<'de> for KeySha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&text(d)?).map_err(serde::de::Error::custom)
    }
}

/// The fewest characters (besides `vk_`) a presented key may have: 128 bits in base64, the
/// densest encoding keys are written in. Generated keys have 64 hex digits (256 bits).
pub const MIN_KEY_CHARS: usize = 22;

/// A freshly generated API key: `vk_` and 256 random bits in hex. Shown once, never stored.
pub struct NewKey {
    /// The key itself, shown once and never stored.
    pub key: String,
    /// What the store keeps.
    pub sha256: KeySha256,
}

impl NewKey {
    /// Draws a key from the operating system's random source.
    pub fn generate() -> Result<NewKey, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let key = format!("vk_{hex}");
        let sha256 = KeySha256::of_key(&key);
        Ok(NewKey { key, sha256 })
    }

    /// The part of the key that may be displayed to tell keys apart.
    pub fn prefix(&self) -> &str {
        &self.key[..10]
    }
}

/// Truncates a time to microseconds, the precision Postgres keeps, so a time read back from
/// either database compares equal to the one written.
pub fn normalize_time(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Parses an RFC 3339 time that carries an offset; a naive time is ambiguous and refused.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, ParseError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| normalize_time(t.with_timezone(&Utc)))
        .map_err(|_| {
            ParseError(format!(
                "invalid time `{}`: use RFC 3339 with an offset, e.g. 2031-01-10T02:00:00Z",
                crate::text::shown(s)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_pattern() {
        assert!(ClientName::parse("heimdall").is_ok());
        assert!(ClientName::parse("0ps_bot-2").is_ok());
        assert!(ClientName::parse("a".repeat(64)).is_ok());
        for bad in ["", "Heimdall", "-x", "_x", "a b", "é", &"a".repeat(65)] {
            assert!(ClientName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn enums_round_trip_and_list_choices() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), *s);
        }
        let err = "ipp".parse::<Scope>().unwrap_err().0;
        assert_eq!(
            err,
            "unknown scope `ipp`, expected one of: ip, user, api_key, global"
        );
        assert_eq!(WindowMode::ReadOnly.platform_mode(), Some(Mode::ReadOnly));
        assert_eq!(WindowMode::FreezeChanges.platform_mode(), None);
    }

    #[test]
    fn ip_keys_are_canonical() {
        let k = |s| RuleKey::parse(Scope::Ip, s).map(|k| k.0);
        assert_eq!(k("203.0.113.0/24").unwrap(), "203.0.113.0/24");
        assert_eq!(k("10.0.0.1/32").unwrap(), "10.0.0.1");
        assert_eq!(k("2001:DB8:0:0::1").unwrap(), "2001:db8::1");
        assert_eq!(k("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert!(k("203.0.113.5/24").unwrap_err().0.contains("203.0.113.0/24"));
        assert!(k("not-an-ip").is_err());
        assert!(k("10.0.0.0/33").is_err());
    }

    #[test]
    fn other_scopes_check_their_keys() {
        assert!(RuleKey::parse(Scope::Global, "*").is_ok());
        assert!(RuleKey::parse(Scope::Global, "all").is_err());
        assert!(RuleKey::parse(Scope::ApiKey, "heimdall").is_ok());
        assert!(RuleKey::parse(Scope::ApiKey, "Heimdall").is_err());
        assert!(RuleKey::parse(Scope::User, "user-42").is_ok());
        assert!(RuleKey::parse(Scope::User, " padded").is_err());
        assert!(RuleKey::parse(Scope::User, "").is_err());
    }

    #[test]
    fn window_seconds_bounds() {
        assert!(WindowSeconds::new(0).is_err());
        assert_eq!(WindowSeconds::new(1).unwrap().get(), 1);
        assert_eq!(WindowSeconds::new(86_400).unwrap().get(), 86_400);
        assert!(WindowSeconds::new(86_401).is_err());
        assert!(WindowSeconds::new(-1).is_err());
    }

    #[test]
    fn max_requests_fit_the_store() {
        assert_eq!(MaxRequests::new(0).unwrap(), MaxRequests::BLOCKED);
        assert_eq!(MaxRequests::new(2_147_483_647).unwrap().get(), 2_147_483_647);
        assert!(MaxRequests::new(2_147_483_648).is_err());
        assert!(MaxRequests::new(4_294_967_295).is_err());
        assert!(MaxRequests::new(-1).is_err());
    }

    #[test]
    fn key_hash_is_lowercase_hex_and_debug_shows_none_of_it() {
        let k = KeySha256::parse(&"AB".repeat(32)).unwrap();
        assert_eq!(k.as_str(), "ab".repeat(32));
        assert_eq!(format!("{k:?}"), "KeySha256(…)");
        assert!(KeySha256::parse("abc").is_err());
        assert!(KeySha256::parse(&"zz".repeat(32)).is_err());
        // The SHA-256 of "test", a published vector.
        assert_eq!(
            KeySha256::of_key("test").as_str(),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn generated_keys_are_random_and_hash_to_their_sha256() {
        let a = NewKey::generate().unwrap();
        let b = NewKey::generate().unwrap();
        assert_ne!(a.key, b.key);
        assert!(a.key.starts_with("vk_") && a.key.len() == 67);
        assert_eq!(a.sha256, KeySha256::of_key(&a.key));
        assert_eq!(a.prefix(), &a.key[..10]);
    }

    #[test]
    fn times_need_an_offset_and_keep_microseconds() {
        let t = parse_time("2026-12-01T02:00:00.123456789+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-01T01:00:00.123456+00:00");
        assert!(parse_time("2026-12-01T02:00:00").is_err());
        assert!(parse_time("2026-12-01").is_err());
    }
}
