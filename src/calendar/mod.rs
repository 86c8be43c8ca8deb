//! When maintenance windows are open: a recurring rule's occurrences on the real time line.
//!
//! A schedule matches wall-clock times in its zone (croner); this module places them on the time
//! line, with the daylight-saving rules stated once:
//!
//! - a start that falls in a skipped local hour happens at the first instant after the gap;
//! - a start in a repeated local hour happens once, at its first occurrence;
//! - an occurrence lasts its duration in real time, whatever the clock does meanwhile;
//! - occurrences that overlap or touch merge into one interval.
//!
//! The first two are one rule: a wall-clock start happens at the first instant whose local time
//! is at or past it.

pub mod openings;
pub mod rule;

use std::fmt;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use croner::Direction;
use serde::{Deserialize, Serialize};

pub use openings::Openings;
pub use rule::{Length, Schedule, Zone};

/// One stretch of time a window holds: from `starts_at` up to, not including, `ends_at`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Interval {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl Interval {
    pub fn holds(&self, at: DateTime<Utc>) -> bool {
        self.starts_at <= at && at < self.ends_at
    }
}

/// `2026-12-06 01:00Z → 2026-12-06 03:00Z`, as plans and `validate` list occurrences.
impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const AT: &str = "%Y-%m-%d %H:%MZ";
        write!(f, "{} → {}", self.starts_at.format(AT), self.ends_at.format(AT))
    }
}

/// A recurring window's rule: each time `schedule` matches the wall clock of `timezone`, the
/// window opens for `duration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Recurrence {
    pub schedule: Schedule,
    pub duration: Length,
    pub timezone: Zone,
}

/// `0 2 * * SUN for 2h, Europe/Berlin`.
impl fmt::Display for Recurrence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} for {}, {}", self.schedule, self.duration, self.timezone)
    }
}

/// Why given fields make no window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("give either starts_at and ends_at, or schedule and duration (and timezone, UTC by default)")]
    Neither,
    #[error("ends_at must be after starts_at")]
    EndsFirst,
    #[error("schedule `{0}` never fires")]
    NeverFires(Schedule),
}

/// The form a window's fields take, its times still as written (`T`): the one check of "exactly
/// one of the two forms", for the state files and the API alike.
pub enum Form<T> {
    Once(T, T),
    Every(Recurrence),
}

impl<T> Form<T> {
    pub fn of(
        (starts_at, ends_at): (Option<T>, Option<T>),
        (schedule, duration, timezone): (Option<Schedule>, Option<Length>, Option<Zone>),
    ) -> Result<Form<T>, FormError> {
        match ((starts_at, ends_at), (schedule, duration, timezone)) {
            ((Some(s), Some(e)), (None, None, None)) => Ok(Form::Once(s, e)),
            ((None, None), (Some(schedule), Some(duration), timezone)) => Ok(Form::Every(Recurrence {
                schedule,
                duration,
                timezone: timezone.unwrap_or_default(),
            })),
            _ => Err(FormError::Neither),
        }
    }
}

impl When {
    /// A one-off window's interval, checked.
    pub fn once(starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Result<When, FormError> {
        (ends_at > starts_at)
            .then_some(When::Once(Interval { starts_at, ends_at }))
            .ok_or(FormError::EndsFirst)
    }

    /// A recurring window's rule, checked to fire (from `now`).
    pub fn every(rule: Recurrence, now: DateTime<Utc>) -> Result<When, FormError> {
        match rule.fires(now) {
            true => Ok(When::Every(rule)),
            false => Err(FormError::NeverFires(rule.schedule)),
        }
    }

    /// The interval, for a one-off window.
    pub fn interval(&self) -> Option<&Interval> {
        match self {
            When::Once(i) => Some(i),
            When::Every(_) => None,
        }
    }

    /// The rule, for a recurring window.
    pub fn rule(&self) -> Option<&Recurrence> {
        match self {
            When::Once(_) => None,
            When::Every(r) => Some(r),
        }
    }
}

/// When a window holds: once, or by a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum When {
    Once(Interval),
    Every(Recurrence),
}

/// How far back the start of a merged run of occurrences is looked for: a rule whose
/// occurrences never stop overlapping (`* * * * *` for an hour) has no start to find.
const MAX_STEPS_BACK: usize = 64;
/// How many occurrences one merged interval takes at most, for the same reason.
const MAX_MERGED: usize = 10_000;
/// How many occurrences [`Recurrence::fires_more_than_hourly`] looks at.
const HOURLY_SAMPLE: usize = 50;
/// How far ahead a rule must fire to fire at all: two leap-year cycles, so a rule for
/// 29 February fires within it whichever year it is (2100 is not a leap year).
const FIRES_WITHIN_YEARS: i64 = 9;

impl Recurrence {
    /// Starts of occurrences at or after `from`, in order, each once.
    pub fn starts(&self, from: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let tz = self.timezone.0;
        // Three hours of wall clock before `from` covers any offset change (real ones move the
        // clock by an hour at most; the map from wall clock to instants keeps order).
        let local_from = from.with_timezone(&tz).naive_local() - TimeDelta::hours(3);
        let mut last = None;
        self.schedule
            .cron()
            .iter_from(local_from, Direction::Forward)
            .map(move |local| instant_of(local, tz))
            // Several starts in one skipped hour all move to its end: one occurrence.
            .filter(move |t| *t >= from && last.replace(*t) != Some(*t))
    }

    /// Occurrences that end after `from`, in order, not merged.
    pub fn occurrences(&self, from: DateTime<Utc>) -> impl Iterator<Item = Interval> + '_ {
        let d = self.duration.as_delta();
        self.starts(from - d)
            .map(move |s| Interval {
                starts_at: s,
                ends_at: s + d,
            })
            .filter(move |i| i.ends_at > from)
    }

    /// Merged intervals that end after `from`, in order: the first may have begun before it.
    pub fn merged(&self, from: DateTime<Utc>) -> impl Iterator<Item = Interval> + '_ {
        let d = self.duration.as_delta();
        // The first occurrence that could touch `from`, then earlier ones as long as each
        // reaches the one after it.
        let mut first = self.starts(from - d).next();
        for _ in 0..MAX_STEPS_BACK {
            match first.and_then(|s| self.starts(s - d).next().filter(|e| *e < s)) {
                Some(earlier) => first = Some(earlier),
                None => break,
            }
        }
        let mut starts = first.into_iter().flat_map(move |s| self.starts(s)).peekable();
        std::iter::from_fn(move || {
            let s = starts.next()?;
            let mut merged = Interval {
                starts_at: s,
                ends_at: s + d,
            };
            for _ in 0..MAX_MERGED {
                match starts.next_if(|next| *next <= merged.ends_at) {
                    Some(next) => merged.ends_at = next + d,
                    None => break,
                }
            }
            Some(merged)
        })
        .filter(move |i| i.ends_at > from)
    }

    /// Whether the rule fires at all: a rule such as `0 0 30 2 *` never does.
    pub fn fires(&self, from: DateTime<Utc>) -> bool {
        let limit = from + TimeDelta::days(366 * FIRES_WITHIN_YEARS);
        self.starts(from).next().is_some_and(|s| s < limit)
    }

    /// Whether two starts come less than an hour apart, from `from` on.
    pub fn fires_more_than_hourly(&self, from: DateTime<Utc>) -> bool {
        let starts: Vec<_> = self.starts(from).take(HOURLY_SAMPLE).collect();
        starts.windows(2).any(|p| p[1] - p[0] < TimeDelta::hours(1))
    }
}

impl When {
    /// The merged intervals that end after `from`, in order.
    pub fn intervals(&self, from: DateTime<Utc>) -> Box<dyn Iterator<Item = Interval> + '_> {
        match self {
            When::Once(i) => Box::new(std::iter::once(*i).filter(move |i| i.ends_at > from)),
            When::Every(r) => Box::new(r.merged(from)),
        }
    }

    /// The next `n` intervals: the one open at `from`, if any, and those after it.
    pub fn next(&self, from: DateTime<Utc>, n: usize) -> Vec<Interval> {
        self.intervals(from).take(n).collect()
    }

    /// The merged interval that holds `at`, when the window is open then.
    pub fn holding(&self, at: DateTime<Utc>) -> Option<Interval> {
        self.intervals(at).next().filter(|i| i.holds(at))
    }
}

/// The instant a wall-clock time of `tz` happens at: the first instant whose local time is at or
/// past it. For most times that is the one instant showing it; for a time shown twice (the clock
/// went back), the first; for a time never shown (the clock jumped over it), the end of the gap.
pub fn instant_of(local: NaiveDateTime, tz: chrono_tz::Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.to_utc(),
        LocalResult::Ambiguous(a, b) => a.to_utc().min(b.to_utc()),
        LocalResult::None => gap_end(local, tz),
    }
}

/// The first instant after the gap that swallowed `local`: the instant the clock jumped.
fn gap_end(local: NaiveDateTime, tz: chrono_tz::Tz) -> DateTime<Utc> {
    let offset =
        |t: NaiveDateTime| TimeDelta::seconds(tz.offset_from_utc_datetime(&t).fix().local_minus_utc().into());
    let (before, after) = (
        offset(local - TimeDelta::days(1)),
        offset(local + TimeDelta::days(1)),
    );
    let shown = |u: DateTime<Utc>| u.with_timezone(&tz).naive_local();
    // Local time just before the jump is below `local`, at the jump above it: bisect between
    // `local` read with the offset after the gap and with the one before.
    let (mut lo, mut hi) = (local.and_utc() - after, local.and_utc() - before);
    while hi - lo > TimeDelta::seconds(1) {
        let mid = lo + TimeDelta::seconds((hi - lo).num_seconds() / 2);
        if shown(mid) >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if shown(lo) >= local { lo } else { hi }
}

#[cfg(test)]
mod tests;
