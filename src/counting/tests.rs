//! The outage policies, decided without Redis.

use super::*;
use crate::domain::Scope;
use crate::limit::Subject;
use crate::limit::table::tests::{record, table};

fn rule(
    id: i64,
    scope: Scope,
    key: &str,
    max: u32,
    policy: OnOutage,
    shadow: bool,
) -> (i64, crate::model::RateLimitRule) {
    let mut r = record(id, scope, key, max);
    r.1.on_outage = policy;
    r.1.shadow = shadow;
    r
}

fn subject(user: &str) -> Subject<'_> {
    Subject {
        global: true,
        user: Some(user),
        ..Subject::default()
    }
}

#[test]
fn open_rules_admit_closed_ones_refuse_and_local_ones_count_here() {
    let counting = Counting::memory(100);
    let rules = table(&[
        rule(1, Scope::Global, "*", 1, OnOutage::Open, false),
        rule(2, Scope::User, "counted", 2, OnOutage::Local, false),
    ]);
    let matched = rules.matching(&subject("counted"));
    // The global rule allows one request; open, it is left out: the local rule decides alone.
    let decisions: Vec<Decision> = (0..3).map(|_| counting.outage(&matched, 0, 1)).collect();
    assert_eq!(
        decisions.iter().map(|d| d.allowed).collect::<Vec<_>>(),
        [true, true, false]
    );
    let refused = &decisions[2];
    assert_eq!(refused.verdicts.len(), 1, "{refused:?}");
    assert!(refused.verdicts[0].outage && refused.verdicts[0].rule.id == 2);
    assert!(!refused.unavailable(), "a local refusal is a 429");

    let closed = table(&[
        rule(1, Scope::Global, "*", 1_000, OnOutage::Local, false),
        rule(2, Scope::User, "frozen", 1_000, OnOutage::Closed, false),
    ]);
    let matched = closed.matching(&subject("frozen"));
    let decision = counting.outage(&matched, 0, 1);
    assert!(!decision.allowed && decision.unavailable());
    assert_eq!(
        decision.binding().map(|v| (v.rule.id, v.reset_seconds())),
        Some((2, 1))
    );
    // Refused by the closed rule, the request was counted by no local rule either.
    let global_only = closed.matching(&Subject {
        global: true,
        ..Subject::default()
    });
    assert_eq!(counting.outage(&global_only, 0, 1).verdicts[0].remaining, 999);
}

#[test]
fn a_closed_shadow_rule_reports_and_never_refuses() {
    let counting = Counting::memory(100);
    let rules = table(&[rule(1, Scope::User, "u", 10, OnOutage::Closed, true)]);
    let decision = counting.outage(&rules.matching(&subject("u")), 0, 1);
    assert!(decision.allowed && !decision.unavailable());
    assert_eq!(decision.shadow_refusals().count(), 1);
}

#[test]
fn memory_counting_is_the_limiter_itself() {
    let counting = Counting::memory(100);
    assert_eq!(
        counting.health(),
        Health {
            store: CounterStore::Memory,
            reachable: true,
            unreachable_seconds: None,
        }
    );
    let rules = table(&[rule(1, Scope::User, "u", 1, OnOutage::Closed, false)]);
    let matched = rules.matching(&subject("u"));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(counting.check(&matched, 0)).allowed);
    let refused = rt.block_on(counting.check(&matched, 0));
    assert!(
        !refused.allowed && !refused.unavailable(),
        "without Redis there is no outage"
    );
    let readings = counting.take_readings(0);
    assert_eq!(readings.len(), 1);
    assert_eq!((readings[0].0, readings[0].1.count), (CounterStore::Memory, 1));
}
