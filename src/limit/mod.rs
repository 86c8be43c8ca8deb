//! Rate limiting, free of I/O: the rule table, the sliding-window counters, and the decision for
//! one request against every rule that applies to it.

pub mod counters;
pub mod table;
pub mod window;

use std::num::NonZeroU32;
use std::sync::Arc;

pub use counters::{Counters, Reading};
pub use table::{CounterKey, Rule, RuleTable, Subject};
pub use window::{Outcome, Quota, Window};

/// How many counters a replica keeps by default (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 200_000;

/// One rule's answer about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Arc<Rule>,
    /// Whether this rule admits the request (a shadow rule's refusal is only reported).
    pub allowed: bool,
    /// Requests the rule still admits now, after this one.
    pub remaining: u32,
    /// Milliseconds until the rule admits again (the Retry-After when refused).
    pub reset_ms: u64,
    /// Decided by the rule's `on_outage` policy because the shared counter store was
    /// unreachable: refused by `closed`, or counted in this replica's memory by `local`.
    pub outage: bool,
}

impl Verdict {
    /// Seconds until the quota comes back, rounded up: what `Retry-After` and `t=` carry.
    pub fn reset_seconds(&self) -> u64 {
        self.reset_ms.div_ceil(1000).max(u64::from(!self.allowed))
    }
}

/// The answer for one request: refused if any enforced rule refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether every enforced rule admits the request.
    pub allowed: bool,
    /// One verdict per matching rule: global, ip, api_key, user, in that order.
    pub verdicts: Vec<Verdict>,
}

impl Decision {
    /// The verdict to report: a refusing enforced rule, else the enforced rule with the least
    /// left, else the shadow rule with the least left; none when no rule applies.
    pub fn binding(&self) -> Option<&Verdict> {
        binding(self.verdicts.iter())
    }

    /// Whether the request is refused because a `closed` rule cannot reach the shared
    /// counters (a 503, not a 429: the subject did nothing wrong).
    pub fn unavailable(&self) -> bool {
        !self.allowed
            && self
                .binding()
                .is_some_and(|v| v.outage && v.rule.on_outage == crate::domain::OnOutage::Closed)
    }

    /// Shadow rules that would have refused this request.
    pub fn shadow_refusals(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.rule.shadow && !v.allowed)
    }
}

/// The verdict to report among `verdicts`, as [`Decision::binding`] chooses it.
pub fn binding<'v>(verdicts: impl Iterator<Item = &'v Verdict> + Clone) -> Option<&'v Verdict> {
    let enforced = || verdicts.clone().filter(|v| !v.rule.shadow);
    enforced()
        .find(|v| !v.allowed)
        .or_else(|| enforced().min_by_key(|v| v.remaining))
        .or_else(|| verdicts.clone().min_by_key(|v| v.remaining))
}

/// The counters of one replica and the decision logic over them.
#[derive(Debug)]
pub struct Limiter {
    counters: Counters,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(DEFAULT_CAPACITY)
    }
}

impl Limiter {
    /// A limiter holding at most about `capacity` counters.
    pub fn new(capacity: usize) -> Limiter {
        Limiter {
            counters: Counters::new(capacity),
        }
    }

    /// Decides about one request of `subject` at `now_ms` and counts it. An admitted request is
    /// counted by every rule; a refused one by none of the enforced rules (their counts are
    /// taken back), so retrying does not extend a block. Shadow rules count as if they were
    /// enforced alone, so what they report is what enforcing them would do.
    pub fn check(&self, table: &RuleTable, subject: &Subject<'_>, now_ms: u64) -> Decision {
        self.check_matched(&table.matching(subject), now_ms)
    }

    /// [`check`](Self::check) for rules already matched to a subject, each with its counter.
    pub fn check_matched(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64) -> Decision {
        self.check_hits(matched, now_ms, NonZeroU32::MIN)
    }

    /// [`check_matched`](Self::check_matched) for `hits` requests at once (a gateway's
    /// `hits_addend`): admitted only if all of them fit every enforced rule, and then counted
    /// `hits` times; refused, counted by none of those.
    pub fn check_hits(
        &self,
        matched: &[(&Arc<Rule>, CounterKey)],
        now_ms: u64,
        hits: NonZeroU32,
    ) -> Decision {
        let hits = hits.get();
        let mut verdicts = Vec::with_capacity(matched.len());
        let mut taken: Vec<(CounterKey, u64)> = Vec::with_capacity(matched.len());
        let mut allowed = true;
        for &(rule, key) in matched {
            let count = rule.shadow || allowed;
            let (outcome, start) = self.counters.with(key, now_ms, |w| {
                let o = if count {
                    w.acquire_hits(rule.quota, now_ms, hits)
                } else {
                    w.peek_hits(rule.quota, now_ms, hits)
                };
                let counted = count && o.allowed;
                ((o, w.current().0), counted)
            });
            if !rule.shadow {
                if outcome.allowed && count {
                    taken.push((key, start));
                } else if !outcome.allowed {
                    allowed = false;
                }
            }
            verdicts.push(Verdict {
                rule: Arc::clone(rule),
                allowed: outcome.allowed,
                remaining: outcome.remaining,
                reset_ms: outcome.reset_ms,
                outage: false,
            });
        }
        if !allowed {
            for (key, start) in taken {
                self.counters.existing(&key, |w| w.release(start, hits));
            }
        }
        Decision { allowed, verdicts }
    }

    /// What [`check_matched`](Self::check_matched) would decide, counting nothing and keeping no
    /// new counter: for a caller who may ask but not count.
    pub fn peek_matched(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64) -> Decision {
        let verdicts: Vec<Verdict> = matched
            .iter()
            .map(|&(rule, key)| {
                let peek = |w: &mut Window| w.peek(rule.quota, now_ms);
                let outcome = self
                    .counters
                    .existing(&key, peek)
                    .unwrap_or_else(|| peek(&mut Window::default()));
                Verdict {
                    rule: Arc::clone(rule),
                    allowed: outcome.allowed,
                    remaining: outcome.remaining,
                    reset_ms: outcome.reset_ms,
                    outage: false,
                }
            })
            .collect();
        let allowed = verdicts.iter().all(|v| v.allowed || v.rule.shadow);
        Decision { allowed, verdicts }
    }

    /// Counters counted since the last call, for the snapshot writer.
    pub fn take_dirty(&self) -> Vec<Reading> {
        self.counters.take_dirty()
    }

    /// Forgets counters that no longer weigh on any decision.
    pub fn sweep(&self, now_ms: u64) {
        self.counters.sweep(now_ms);
    }

    /// How many counters are held now.
    pub fn counters(&self) -> usize {
        self.counters.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::table::tests::{record, table as rules};
    use super::*;
    use crate::domain::Scope;

    fn subject<'a>(ip: &str, user: Option<&'a str>) -> Subject<'a> {
        Subject {
            global: true,
            ip: Some(ip.parse::<IpAddr>().unwrap()),
            client: None,
            user,
        }
    }

    #[test]
    fn a_refusal_by_one_rule_is_not_counted_by_the_others() {
        let table = rules(&[record(1, Scope::Global, "*", 100), record(2, Scope::User, "u", 2)]);
        let limiter = Limiter::new(100);
        let s = subject("192.0.2.1", Some("u"));
        assert!(limiter.check(&table, &s, 0).allowed);
        assert!(limiter.check(&table, &s, 0).allowed);
        let refused = limiter.check(&table, &s, 0);
        assert!(!refused.allowed);
        assert_eq!(refused.binding().unwrap().rule.id, 2);
        // The global rule counted only the two admitted requests.
        let other = limiter.check(&table, &subject("192.0.2.2", None), 0);
        assert_eq!(other.verdicts[0].remaining, 97);
    }

    #[test]
    fn a_shadow_rule_never_refuses_but_reports() {
        let mut shadow = record(1, Scope::Ip, "198.51.100.0/24", 1);
        shadow.1.shadow = true;
        let table = rules(&[shadow]);
        let limiter = Limiter::new(100);
        let s = subject("198.51.100.7", None);
        let first = limiter.check(&table, &s, 0);
        assert!(first.allowed && first.shadow_refusals().count() == 0);
        for _ in 0..5 {
            let d = limiter.check(&table, &s, 0);
            assert!(d.allowed);
            assert_eq!(d.shadow_refusals().count(), 1);
            assert_eq!(d.binding().unwrap().remaining, 0);
        }
    }

    #[test]
    fn lowering_a_limit_keeps_the_count_and_a_new_window_starts_afresh() {
        let limiter = Limiter::new(100);
        let s = subject("192.0.2.1", Some("u"));
        let table = rules(&[record(1, Scope::User, "u", 5)]);
        for _ in 0..3 {
            assert!(limiter.check(&table, &s, 0).allowed);
        }
        // During an incident the limit drops to 3: the three already counted still count.
        let lowered = rules(&[record(1, Scope::User, "u", 3)]);
        assert!(!limiter.check(&lowered, &s, 0).allowed);
        // A different window length makes the old counts meaningless: a fresh counter.
        let mut longer = record(1, Scope::User, "u", 3);
        longer.1.window_seconds = crate::domain::WindowSeconds::new(120).unwrap();
        assert!(limiter.check(&rules(&[longer]), &s, 0).allowed);
    }

    #[test]
    fn concurrent_requests_never_get_past_the_limit() {
        let table = rules(&[
            record(1, Scope::Global, "*", 1000),
            record(2, Scope::User, "u", 100),
        ]);
        let limiter = Limiter::new(100);
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if limiter.check(&table, &subject("192.0.2.1", Some("u")), 5).allowed {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), 100);
        // The refused 3,900 were handed back by the global rule: it counted exactly 100.
        let global = limiter.check(&table, &subject("192.0.2.2", None), 5);
        assert_eq!(global.verdicts[0].remaining, 1000 - 101);
    }

    #[test]
    fn the_binding_verdict_is_the_tightest_enforced_one() {
        let table = rules(&[
            record(1, Scope::Global, "*", 100),
            record(2, Scope::Ip, "192.0.2.0/24", 5),
        ]);
        let limiter = Limiter::new(100);
        let d = limiter.check(&table, &subject("192.0.2.1", None), 0);
        assert_eq!(d.binding().unwrap().rule.id, 2);
        assert_eq!(d.binding().unwrap().remaining, 4);
        let none = limiter.check(&RuleTable::default(), &subject("192.0.2.1", None), 0);
        assert!(none.allowed && none.binding().is_none());
    }
}
