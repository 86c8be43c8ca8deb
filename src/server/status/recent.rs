//! The limiter's recent refusals on this replica, by subject, minute by minute: what the status
//! page lists as the most refused subjects and the shadow rules that would have refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::domain::Scope;
use crate::limit::{Decision, Subject, Verdict};

/// Minutes kept.
pub const MINUTES: u64 = 5;

/// Distinct subjects counted per minute; past it, a minute counts only those it has (a flood
/// of distinct addresses cannot grow the page's memory).
const SUBJECTS_PER_MINUTE: usize = 10_000;

/// Who was refused, by which rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub struct Refused {
    pub scope: Scope,
    /// The subject: the address, the client's name, the user id; `*` for the global rule.
    pub subject: String,
    /// The rule's key (a network, for a network rule).
    pub rule: String,
    /// Whether the rule only reports (it would have refused).
    pub shadow: bool,
}

/// A refused subject and how often, in the last minutes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RefusedCount {
    #[serde(flatten)]
    pub refused: Refused,
    pub count: u64,
}

/// Refusals per minute, the last `MINUTES` of them.
#[derive(Debug, Default)]
pub struct RecentRefusals {
    minutes: Mutex<VecDeque<(u64, HashMap<Refused, u64>)>>,
}

impl RecentRefusals {
    /// Counts the refusing verdicts of `decision` (enforced and shadow) at `now_ms`.
    pub fn record(&self, decision: &Decision, subject: &Subject<'_>, now_ms: u64) {
        let refusing = decision.verdicts.iter().filter(|v| !v.allowed);
        let mut refusing = refusing.peekable();
        if refusing.peek().is_none() {
            return;
        }
        let minute = now_ms / 60_000;
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if minutes.back().is_none_or(|(m, _)| *m != minute) {
            minutes.push_back((minute, HashMap::new()));
            while minutes.front().is_some_and(|(m, _)| *m + MINUTES <= minute) {
                minutes.pop_front();
            }
        }
        let Some((_, counts)) = minutes.back_mut() else {
            return;
        };
        for verdict in refusing {
            let refused = of(verdict, subject);
            if counts.len() < SUBJECTS_PER_MINUTE || counts.contains_key(&refused) {
                *counts.entry(refused).or_insert(0) += 1;
            }
        }
    }

    /// The `n` most refused subjects of the last minutes before `now_ms`, enforced and shadow
    /// apart, most refused first.
    pub fn top(&self, n: usize, now_ms: u64) -> (Vec<RefusedCount>, Vec<RefusedCount>) {
        let minute = now_ms / 60_000;
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let mut totals: HashMap<&Refused, u64> = HashMap::new();
        for (_, counts) in minutes.iter().filter(|(m, _)| *m + MINUTES > minute) {
            for (refused, count) in counts {
                *totals.entry(refused).or_insert(0) += count;
            }
        }
        let mut all: Vec<RefusedCount> = totals
            .into_iter()
            .map(|(refused, count)| RefusedCount {
                refused: refused.clone(),
                count,
            })
            .collect();
        all.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.refused.subject.cmp(&b.refused.subject))
        });
        let (shadow, enforced): (Vec<_>, Vec<_>) = all.into_iter().partition(|r| r.refused.shadow);
        (
            enforced.into_iter().take(n).collect(),
            shadow.into_iter().take(n).collect(),
        )
    }
}

/// The refused subject of one verdict.
fn of(verdict: &Verdict, subject: &Subject<'_>) -> Refused {
    let rule = &verdict.rule;
    let who = match rule.scope {
        Scope::Ip => subject.ip.map(|ip| ip.to_string()),
        Scope::ApiKey => subject.client.map(str::to_owned),
        Scope::User => subject.user.map(str::to_owned),
        Scope::Global => None,
    };
    Refused {
        scope: rule.scope,
        subject: who.unwrap_or_else(|| rule.key.clone()),
        rule: rule.key.clone(),
        shadow: rule.shadow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::Limiter;
    use crate::limit::table::tests::{record, table};

    #[test]
    fn the_most_refused_subjects_of_the_last_minutes_enforced_and_shadow_apart() {
        let mut shadow = record(2, Scope::Ip, "10.0.0.0/8", 1);
        shadow.1.shadow = true;
        let rules = table(&[record(1, Scope::User, "u", 1), shadow]);
        let limiter = Limiter::new(1_000);
        let recent = RecentRefusals::default();
        let ip = |s: &str| Some(s.parse().unwrap());
        for (user, addr, times) in [(Some("u"), "10.0.0.1", 5), (None, "10.0.0.2", 3)] {
            let subject = Subject {
                user,
                ip: ip(addr),
                ..Subject::default()
            };
            for _ in 0..times {
                let decision = limiter.check(&rules, &subject, 0);
                recent.record(&decision, &subject, 60_000);
            }
        }
        let (enforced, shadowed) = recent.top(10, 60_000);
        assert_eq!(enforced.len(), 1);
        assert_eq!(
            (enforced[0].refused.subject.as_str(), enforced[0].count),
            ("u", 4)
        );
        let shadow_counts: Vec<(&str, u64)> = shadowed
            .iter()
            .map(|r| (r.refused.subject.as_str(), r.count))
            .collect();
        assert_eq!(shadow_counts, [("10.0.0.1", 4), ("10.0.0.2", 2)]);
        // Five minutes on, they are gone.
        assert!(recent.top(10, 60_000 * 6).0.is_empty());
    }
}
