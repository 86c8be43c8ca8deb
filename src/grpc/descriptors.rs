//! What a `ShouldRateLimit` call asks, read from its descriptors: one subject (as an HTTP request
//! names one), the rules each descriptor selects, whether it writes, and how many hits it counts.

use std::net::IpAddr;
use std::num::NonZeroU32;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

use crate::domain::Scope;

/// The entry keys the rules know; any other entry is ignored.
pub mod keys {
    /// The client's address (Envoy's `remote_address` action): the most specific `ip` rule.
    pub const REMOTE_ADDRESS: &str = "remote_address";
    /// The end user (e.g. `request_headers` of `x-user-id`): the `user` rule of that id.
    pub const USER: &str = "user";
    /// A client's name: its `api_key` rule.
    pub const CLIENT: &str = "client";
    /// A client's API key as the request presented it: the client it identifies, its
    /// `api_key` rule, and whether it is an admin (for `read_only`).
    pub const API_KEY: &str = "api_key";
    /// The request's method (`request_headers` of `:method`): a write in `read_only`.
    pub const REQUEST_METHOD: &str = "request_method";
}

/// What one call asks about.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Asked<'r> {
    pub ip: Option<IpAddr>,
    pub user: Option<&'r str>,
    pub client: Option<&'r str>,
    /// An API key presented by the request (never logged, never echoed).
    pub key: Option<&'r str>,
    /// The rules each descriptor selects, in the request's order: one status each.
    pub selects: Vec<Selects>,
    /// Whether a `request_method` entry names a write (anything but GET, HEAD, OPTIONS).
    pub write: bool,
}

/// The scopes of rules one descriptor selects: `global` always, and one per entry it carries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Selects {
    pub ip: bool,
    pub client: bool,
    pub user: bool,
}

impl Selects {
    /// Whether a rule of `scope` is this descriptor's.
    pub fn includes(self, scope: Scope) -> bool {
        match scope {
            Scope::Global => true,
            Scope::Ip => self.ip,
            Scope::ApiKey => self.client,
            Scope::User => self.user,
        }
    }
}

/// Why a call cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the {0} entry `{1}` is not an IP address")]
    Address(&'static str, String),
    /// A call is one request: two descriptors naming two users (or addresses, or clients) are
    /// a gateway configuration mistake, not two budgets to spend.
    #[error("the descriptors name two different values for {0}; a call is one request and names one")]
    Conflicting(&'static str),
}

/// Reads a call's descriptors.
pub fn read(descriptors: &[RateLimitDescriptor]) -> Result<Asked<'_>, Invalid> {
    let mut asked = Asked {
        selects: Vec::with_capacity(descriptors.len()),
        ..Asked::default()
    };
    for descriptor in descriptors {
        let mut selects = Selects::default();
        for entry in &descriptor.entries {
            let value = entry.value.as_str();
            match entry.key.as_str() {
                keys::REMOTE_ADDRESS => {
                    let ip = value
                        .parse::<IpAddr>()
                        .map_err(|_| Invalid::Address(keys::REMOTE_ADDRESS, crate::text::shown(value)))?;
                    one(&mut asked.ip, ip, keys::REMOTE_ADDRESS)?;
                    selects.ip = true;
                }
                keys::USER => {
                    one(&mut asked.user, value, keys::USER)?;
                    selects.user = true;
                }
                keys::CLIENT => {
                    one(&mut asked.client, value, keys::CLIENT)?;
                    selects.client = true;
                }
                keys::API_KEY => {
                    one(&mut asked.key, value, keys::API_KEY)?;
                    selects.client = true;
                }
                keys::REQUEST_METHOD => {
                    asked.write |= !matches!(value, "GET" | "HEAD" | "OPTIONS");
                }
                _ => {}
            }
        }
        asked.selects.push(selects);
    }
    Ok(asked)
}

/// Keeps `value` in `slot`, unless the slot holds another one.
fn one<T: PartialEq>(slot: &mut Option<T>, value: T, what: &'static str) -> Result<(), Invalid> {
    match slot {
        Some(held) if *held != value => Err(Invalid::Conflicting(what)),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// How many requests a call counts: its `hits_addend` (0 means 1, as Envoy says), or the
/// largest a descriptor asks for itself (Envoy's per-descriptor `hits_addend`); beyond
/// `u32::MAX`, that many (no budget is larger).
pub fn hits(request_addend: u32, descriptors: &[RateLimitDescriptor]) -> NonZeroU32 {
    let own = descriptors
        .iter()
        .filter_map(|d| d.hits_addend.as_ref())
        .map(|addend| u32::try_from(addend.value).unwrap_or(u32::MAX))
        .max();
    NonZeroU32::new(own.unwrap_or(request_addend)).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    use super::*;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(key, value)| Entry {
                    key: (*key).into(),
                    value: (*value).into(),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }
    }

    #[test]
    fn entries_select_rules_and_unknown_ones_are_ignored() {
        let descriptors = [
            descriptor(&[("remote_address", "203.0.113.9"), ("generic_key", "orders")]),
            descriptor(&[("user", "alice"), ("request_method", "GET")]),
            descriptor(&[("client", "weweb"), ("destination_cluster", "orders")]),
            descriptor(&[("header_match", "premium")]),
        ];
        let asked = read(&descriptors).unwrap();
        assert_eq!(asked.ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            (asked.user, asked.client, asked.key),
            (Some("alice"), Some("weweb"), None)
        );
        assert!(!asked.write);
        let only = |ip, client, user| Selects { ip, client, user };
        assert_eq!(
            asked.selects,
            [
                only(true, false, false),
                only(false, false, true),
                only(false, true, false),
                only(false, false, false)
            ]
        );
        // Every descriptor has the global rule; only its own entries' others.
        assert!(asked.selects[3].includes(Scope::Global));
        assert!(!asked.selects[3].includes(Scope::User));
        assert!(asked.selects[1].includes(Scope::User));
    }

    #[test]
    fn a_method_other_than_a_read_is_a_write() {
        for (method, write) in [
            ("GET", false),
            ("HEAD", false),
            ("OPTIONS", false),
            ("POST", true),
            ("DELETE", true),
            ("get", true),
        ] {
            let descriptors = [descriptor(&[("request_method", method)])];
            assert_eq!(read(&descriptors).unwrap().write, write, "{method}");
        }
        assert!(!read(&[]).unwrap().write, "no method entry: not a write");
    }

    #[test]
    fn one_call_names_one_subject() {
        let same = [
            descriptor(&[("user", "alice")]),
            descriptor(&[("user", "alice"), ("remote_address", "::1")]),
        ];
        assert_eq!(read(&same).unwrap().user, Some("alice"));
        let two = [descriptor(&[("user", "alice")]), descriptor(&[("user", "bob")])];
        assert_eq!(read(&two), Err(Invalid::Conflicting("user")));
        assert_eq!(
            read(&[descriptor(&[("remote_address", "not\nan address")])]),
            Err(Invalid::Address("remote_address", "not\\nan address".into()))
        );
    }

    #[test]
    fn hits_default_to_one_and_a_descriptor_may_ask_for_more() {
        assert_eq!(hits(0, &[]).get(), 1);
        assert_eq!(hits(5, &[descriptor(&[])]).get(), 5);
        let mut own = descriptor(&[]);
        own.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 7 });
        assert_eq!(hits(5, &[own.clone(), descriptor(&[])]).get(), 7);
        own.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: u64::MAX });
        assert_eq!(hits(0, &[own]).get(), u32::MAX);
    }
}
