//! The rule table: enabled rules compiled for lookup by subject, the most specific `ip` rule first.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::window::Quota;
use crate::domain::{OnOutage, Scope};
use crate::model::RateLimitRule;

/// One enabled rule as the limiter applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's row id, which keys its counters.
    pub id: i64,
    pub scope: Scope,
    /// The rule's key as stored (`*`, an address, a network, a client name, a user id).
    pub key: String,
    pub quota: Quota,
    /// Counts and reports, never refuses.
    pub shadow: bool,
    /// What the rule does while shared counters are unreachable.
    pub on_outage: OnOutage,
    /// The rule as the `RateLimit-Policy` header lists it, written once rather than on every
    /// request: its [name](Rule::header_name), then its quota (`"ip:10.0.0.0/8";q=100;w=60`).
    pub policy: Box<str>,
    /// The length of the name at the start of `policy`.
    name_len: usize,
}

impl Rule {
    pub fn new(id: i64, scope: Scope, key: String, quota: Quota, shadow: bool, on_outage: OnOutage) -> Rule {
        let name = header_name(id, scope, &key, shadow);
        let policy = format!("{name};q={};w={}", quota.max, quota.window_ms / 1000).into_boxed_str();
        Rule {
            id,
            scope,
            key,
            quota,
            shadow,
            on_outage,
            policy,
            name_len: name.len(),
        }
    }

    fn of(id: i64, rule: &RateLimitRule) -> Rule {
        let quota = Quota {
            window_ms: u64::from(rule.window_seconds.get()) * 1000,
            max: rule.max_requests.get(),
        };
        Rule::new(
            id,
            rule.scope,
            rule.key.as_str().to_owned(),
            quota,
            rule.shadow,
            rule.on_outage,
        )
    }

    /// The rule's name in the `RateLimit` and `RateLimit-Policy` headers: a structured-field
    /// string, `"ip:203.0.113.0/24"`, with a `shadow:` prefix for a shadow rule.
    pub fn header_name(&self) -> &str {
        &self.policy[..self.name_len]
    }
}

/// A structured-field string naming the rule. A key a structured field cannot carry (outside
/// printable ASCII) is named by the rule's id.
fn header_name(id: i64, scope: Scope, key: &str, shadow: bool) -> String {
    let shadow = if shadow { "shadow:" } else { "" };
    if key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{shadow}{scope}:{escaped}\"")
    } else {
        format!("\"{shadow}rule-{id}\"")
    }
}

/// Who a request comes from, as far as the rules can tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// Whether the global rule applies (it does to every request, not to a scoped question).
    pub global: bool,
    /// The client address, for `ip` rules.
    pub ip: Option<IpAddr>,
    /// The authenticated client's name, for `api_key` rules.
    pub client: Option<&'a str>,
    /// The `X-User-Id`, for `user` rules.
    pub user: Option<&'a str>,
}

/// What a counter counts: a rule, and for a network rule, one address in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub rule: i64,
    /// The window is part of the key, so a rule whose window changes starts a fresh count
    /// (counts of another window length mean nothing); a changed limit keeps the count.
    pub window_ms: u64,
    /// For a network rule, the address counted: each has its own budget.
    pub addr: Option<IpAddr>,
}

/// The enabled rules, indexed by how requests find them. The maps are persistent (a clone
/// shares them), so a replica changes one rule of a large table without copying the rest.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RuleTable {
    global: Option<Arc<Rule>>,
    addresses: imbl::HashMap<IpAddr, Arc<Rule>>,
    /// Networks grouped by prefix length, longest first, so the first hit is the most specific.
    networks: Vec<(u8, imbl::HashMap<IpNet, Arc<Rule>>)>,
    clients: imbl::HashMap<String, Arc<Rule>>,
    users: imbl::HashMap<String, Arc<Rule>>,
}

/// Where a rule sits in the table.
enum Slot {
    Global,
    Address(IpAddr),
    Network(IpNet),
    Client,
    User,
}

impl RuleTable {
    /// Compiles the enabled ones of `rules`, each with its id; disabled ones are left out.
    pub fn new<'a>(rules: impl IntoIterator<Item = (i64, &'a RateLimitRule)>) -> RuleTable {
        let mut table = RuleTable::default();
        for (id, rule) in rules {
            table.insert(id, rule);
        }
        table
    }

    fn slot(rule: &RateLimitRule) -> Option<Slot> {
        Some(match rule.scope {
            Scope::Global => Slot::Global,
            Scope::ApiKey => Slot::Client,
            Scope::User => Slot::User,
            Scope::Ip => {
                let key = rule.key.as_str();
                if let Ok(addr) = key.parse::<IpAddr>() {
                    Slot::Address(addr)
                } else {
                    Slot::Network(key.parse::<IpNet>().ok()?)
                }
            }
        })
    }

    /// Adds rule `id` if it is enabled, in place of any rule with its key.
    pub fn insert(&mut self, id: i64, rule: &RateLimitRule) {
        if !rule.enabled {
            return;
        }
        let Some(slot) = RuleTable::slot(rule) else { return };
        let compiled = Arc::new(Rule::of(id, rule));
        match slot {
            Slot::Global => self.global = Some(compiled),
            Slot::Address(addr) => {
                self.addresses.insert(addr, compiled);
            }
            Slot::Network(net) => {
                let len = net.prefix_len();
                match self.networks.iter_mut().find(|(l, _)| *l == len) {
                    Some((_, nets)) => {
                        nets.insert(net, compiled);
                    }
                    None => {
                        self.networks.push((len, imbl::HashMap::unit(net, compiled)));
                        self.networks.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
                    }
                }
            }
            Slot::Client => {
                self.clients.insert(compiled.key.clone(), compiled);
            }
            Slot::User => {
                self.users.insert(compiled.key.clone(), compiled);
            }
        }
    }

    /// Takes out rule `id`, stored as `rule`, unless another rule has taken its key since.
    pub fn remove(&mut self, id: i64, rule: &RateLimitRule) {
        fn take<K: std::hash::Hash + Eq + Clone>(map: &mut imbl::HashMap<K, Arc<Rule>>, key: &K, id: i64) {
            if map.get(key).is_some_and(|r| r.id == id) {
                map.remove(key);
            }
        }
        let Some(slot) = RuleTable::slot(rule) else { return };
        let key = || rule.key.as_str().to_owned();
        match slot {
            Slot::Global => {
                if self.global.as_ref().is_some_and(|r| r.id == id) {
                    self.global = None;
                }
            }
            Slot::Address(addr) => take(&mut self.addresses, &addr, id),
            Slot::Network(net) => {
                for (_, nets) in self.networks.iter_mut().filter(|(l, _)| *l == net.prefix_len()) {
                    take(nets, &net, id);
                }
                self.networks.retain(|(_, nets)| !nets.is_empty());
            }
            Slot::Client => take(&mut self.clients, &key(), id),
            Slot::User => take(&mut self.users, &key(), id),
        }
    }

    /// Whether no rule is enabled (the limiter then has nothing to do).
    pub fn is_empty(&self) -> bool {
        self.global.is_none()
            && self.addresses.is_empty()
            && self.networks.is_empty()
            && self.clients.is_empty()
            && self.users.is_empty()
    }

    /// The most specific `ip` rule for `addr`: its own address, else the longest network that
    /// contains it. A network rule counts each address on its own.
    pub fn ip_rule(&self, addr: IpAddr) -> Option<(&Arc<Rule>, CounterKey)> {
        let addr = canonical(addr);
        if let Some(rule) = self.addresses.get(&addr) {
            return Some((rule, key(rule, None)));
        }
        let max_len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        self.networks
            .iter()
            .filter(|(len, _)| *len <= max_len)
            .find_map(|(len, nets)| {
                let net = IpNet::new(addr, *len).ok()?.trunc();
                nets.get(&net)
            })
            .map(|rule| (rule, key(rule, Some(addr))))
    }

    /// Every rule that applies to `subject`, each with the counter it uses.
    pub fn matching(&self, subject: &Subject<'_>) -> Vec<(&Arc<Rule>, CounterKey)> {
        let mut found = Vec::with_capacity(4);
        if subject.global
            && let Some(rule) = &self.global
        {
            found.push((rule, key(rule, None)));
        }
        if let Some(hit) = subject.ip.and_then(|ip| self.ip_rule(ip)) {
            found.push(hit);
        }
        if let Some(rule) = subject.client.and_then(|c| self.clients.get(c)) {
            found.push((rule, key(rule, None)));
        }
        if let Some(rule) = subject.user.and_then(|u| self.users.get(u)) {
            found.push((rule, key(rule, None)));
        }
        found
    }
}

fn key(rule: &Rule, addr: Option<IpAddr>) -> CounterKey {
    CounterKey {
        rule: rule.id,
        window_ms: rule.quota.window_ms,
        addr,
    }
}

/// An IPv4 address arriving as IPv4-mapped IPv6 (`::ffff:a.b.c.d`, from a dual-stack socket)
/// is matched as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{RuleKey, WindowSeconds};

    /// An enabled rule of `max` requests a minute, with its id.
    pub(crate) fn record(id: i64, scope: Scope, key: &str, max: u32) -> (i64, RateLimitRule) {
        let rule = RateLimitRule {
            scope,
            key: RuleKey::parse(scope, key).unwrap(),
            window_seconds: WindowSeconds::new(60).unwrap(),
            max_requests: crate::domain::MaxRequests::new(max.into()).unwrap(),
            enabled: true,
            shadow: false,
            on_outage: OnOutage::DEFAULT,
            description: String::new(),
        };
        (id, rule)
    }

    /// The table of `rules`.
    pub(crate) fn table(rules: &[(i64, RateLimitRule)]) -> RuleTable {
        RuleTable::new(rules.iter().map(|(id, rule)| (*id, rule)))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_ip_rule_wins() {
        let rules = [
            record(1, Scope::Ip, "10.0.0.0/8", 100),
            record(2, Scope::Ip, "10.1.0.0/16", 50),
            record(3, Scope::Ip, "10.1.2.3", 5),
            record(4, Scope::Ip, "2001:db8::/32", 7),
        ];
        let table = table(&rules);
        let id = |a: &str| table.ip_rule(ip(a)).map(|(r, _)| r.id);
        assert_eq!(id("10.1.2.3"), Some(3));
        assert_eq!(id("10.1.9.9"), Some(2));
        assert_eq!(id("10.200.0.1"), Some(1));
        assert_eq!(id("11.0.0.1"), None);
        assert_eq!(id("2001:db8:ffff::1"), Some(4));
        assert_eq!(
            id("::ffff:10.1.2.3"),
            Some(3),
            "an IPv4-mapped address is its IPv4 address"
        );
        // A network counts each address apart; an address rule has one counter.
        let (_, a) = table.ip_rule(ip("10.1.9.9")).unwrap();
        let (_, b) = table.ip_rule(ip("10.1.9.8")).unwrap();
        assert_ne!(a, b);
        assert_eq!(table.ip_rule(ip("10.1.2.3")).unwrap().1.addr, None);
    }

    #[test]
    fn matching_collects_every_scope_and_skips_disabled_rules() {
        let mut disabled = record(5, Scope::User, "u-2", 1);
        disabled.1.enabled = false;
        let rules = [
            record(1, Scope::Global, "*", 1000),
            record(2, Scope::Ip, "203.0.113.0/24", 10),
            record(3, Scope::ApiKey, "heimdall", 10),
            record(4, Scope::User, "u-1", 10),
            disabled,
        ];
        let table = table(&rules);
        let ids = |s: Subject<'_>| table.matching(&s).iter().map(|(r, _)| r.id).collect::<Vec<_>>();
        let all = Subject {
            global: true,
            ip: Some(ip("203.0.113.9")),
            client: Some("heimdall"),
            user: Some("u-1"),
        };
        assert_eq!(ids(all), [1, 2, 3, 4]);
        assert_eq!(
            ids(Subject {
                user: Some("u-2"),
                ..Subject::default()
            }),
            Vec::<i64>::new()
        );
        assert_eq!(
            ids(Subject {
                client: Some("heimdall"),
                ..Subject::default()
            }),
            [3]
        );
    }
}
