//! Refusals remembered locally: a subject the shared counters refused until a known instant is
//! refused until then without asking Redis again (a client hammering past its limit costs no
//! round trips).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::limit::{CounterKey, Decision, Rule, Verdict};

/// The most refusals remembered; beyond, expired ones are dropped, then all (they are only a
/// shortcut: forgetting one costs a Redis call, never a wrong decision).
const CAPACITY: usize = 100_000;

/// One remembered refusal.
#[derive(Debug, Clone)]
struct Refusal {
    /// The rule as the table had it: a reload (a changed limit) makes a new `Arc`, and the
    /// refusal no longer holds.
    rule: Arc<Rule>,
    /// When the rule admits again, on the caller's clock.
    until_ms: u64,
}

/// Refusals by counter.
#[derive(Debug, Default)]
pub struct Refusals {
    refused: Mutex<HashMap<CounterKey, Refusal>>,
}

impl Refusals {
    /// The refusal of a request that matched `matched`, if an enforced rule among them is
    /// known to refuse at `now_ms`: the answer reports that rule alone.
    pub fn check(&self, matched: &[(&Arc<Rule>, CounterKey)], now_ms: u64) -> Option<Decision> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.is_empty() {
            return None;
        }
        matched.iter().find_map(|(rule, key)| {
            let r = refused.get(key)?;
            (Arc::ptr_eq(&r.rule, rule) && now_ms < r.until_ms).then(|| Decision {
                allowed: false,
                verdicts: vec![Verdict {
                    rule: Arc::clone(rule),
                    allowed: false,
                    remaining: 0,
                    // A blocking rule tells a client to come back in a window, however often
                    // it asks, as the counters themselves do.
                    reset_ms: if rule.quota.max == 0 {
                        rule.quota.window_ms.max(1)
                    } else {
                        r.until_ms - now_ms
                    },
                    outage: false,
                }],
            })
        })
    }

    /// Remembers the enforced rules of a refused decision until each admits again.
    pub fn remember(&self, matched: &[(&Arc<Rule>, CounterKey)], decision: &Decision, now_ms: u64) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.len() >= CAPACITY {
            refused.retain(|_, r| r.until_ms > now_ms);
            if refused.len() >= CAPACITY {
                refused.clear();
            }
        }
        for ((rule, key), verdict) in matched.iter().zip(&decision.verdicts) {
            // A refusal with room left refused more hits than fit at once (a gateway's
            // `hits_addend`): fewer may still pass, so it says nothing about the next request.
            if !verdict.allowed && !rule.shadow && verdict.remaining == 0 {
                // A blocking rule refuses until a reload changes it.
                let until_ms = if rule.quota.max == 0 {
                    u64::MAX
                } else {
                    now_ms + verdict.reset_ms
                };
                refused.insert(
                    *key,
                    Refusal {
                        rule: Arc::clone(rule),
                        until_ms,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;
    use crate::limit::table::tests::{record, table};
    use crate::limit::{Limiter, Subject};

    #[test]
    fn a_refusal_holds_until_its_reset_and_not_past_a_reload() {
        let rules = table(&[record(1, Scope::Global, "*", 100), record(2, Scope::User, "u", 1)]);
        let subject = Subject {
            global: true,
            user: Some("u"),
            ..Subject::default()
        };
        let matched = rules.matching(&subject);
        // Room enough that no counter is evicted, whatever shard it lands in.
        let limiter = Limiter::new(1_000);
        let refusals = Refusals::default();
        assert!(limiter.check_matched(&matched, 0).allowed);
        let refused = limiter.check_matched(&matched, 1_000);
        assert!(!refused.allowed);
        refusals.remember(&matched, &refused, 1_000);
        let reset = refused.binding().unwrap().reset_ms;
        let local = refusals.check(&matched, 1_500).expect("refused locally");
        assert_eq!(local.binding().unwrap().rule.id, 2);
        assert_eq!(local.binding().unwrap().reset_ms, reset - 500);
        assert!(
            refusals.check(&matched, 1_000 + reset).is_none(),
            "admits again at its reset"
        );
        // Another subject of the same rules is not refused.
        let other = rules.matching(&Subject {
            global: true,
            user: Some("v"),
            ..Subject::default()
        });
        assert!(refusals.check(&other, 1_500).is_none());
        // A reload (say, a raised limit) compiles new rules: the old refusal no longer holds.
        let reloaded = table(&[record(1, Scope::Global, "*", 100), record(2, Scope::User, "u", 1)]);
        assert!(refusals.check(&reloaded.matching(&subject), 1_500).is_none());
    }

    #[test]
    fn a_refusal_of_more_hits_than_are_left_is_not_remembered() {
        let rules = table(&[record(1, Scope::User, "u", 5)]);
        let subject = Subject {
            user: Some("u"),
            ..Subject::default()
        };
        let matched = rules.matching(&subject);
        let limiter = Limiter::new(1_000);
        let three = std::num::NonZeroU32::new(3).unwrap();
        assert!(limiter.check_hits(&matched, 0, three).allowed);
        let refused = limiter.check_hits(&matched, 0, three);
        assert!(!refused.allowed);
        let refusals = Refusals::default();
        refusals.remember(&matched, &refused, 0);
        // Two are left: a gateway's next call of one must reach the counters.
        assert!(refusals.check(&matched, 1).is_none());
    }
}
