//! The effective maintenance mode (an active override, else an open window, else git's mode) and
//! the freeze of changes, both decided from the windows' occurrences here and nowhere else.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::calendar::Interval;
use crate::domain::{Mode, WindowMode};
use crate::model::{MaintenanceInputs, Override, Window};

/// Where the effective mode comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The steady mode declared in git (or never declared: the stored default).
    Git,
    /// An emergency override made over HTTP.
    Override,
    /// A scheduled maintenance window that is open now.
    Window,
}

/// The mode in force now, as `GET /system/maintenance/state` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EffectiveMode {
    pub mode: Mode,
    pub reason: String,
    /// When the stored mode last changed.
    pub updated_at: DateTime<Utc>,
    /// What set the mode: an override, a window, or git.
    pub source: Source,
    /// When this mode ends, where known: the override's expiry or the window's end.
    pub until: Option<DateTime<Utc>>,
    /// A `freeze_changes` window open now: the reconciler refuses to apply git until it ends.
    pub freeze: Option<ChangeFreeze>,
}

/// A freeze of changes in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChangeFreeze {
    /// The window that holds it (of several open, the one that ends last).
    pub window: String,
    /// When it ends: the end of the window's merged occurrence.
    pub until: DateTime<Utc>,
    pub description: String,
}

/// The freeze of changes in force at `now`, if any.
pub fn freeze(inputs: &MaintenanceInputs, now: DateTime<Utc>) -> Option<ChangeFreeze> {
    freeze_of(&inputs.open_windows(now))
}

/// [`freeze`] among `windows` (the stored ones, as the reconciler reads them), uncached.
pub fn freeze_among<'a>(
    windows: impl Iterator<Item = &'a Window>,
    now: DateTime<Utc>,
) -> Option<ChangeFreeze> {
    let open: Vec<(&Window, Interval)> = windows
        .filter(|w| w.active && w.mode == WindowMode::FreezeChanges)
        .filter_map(|w| w.when.holding(now).map(|i| (w, i)))
        .collect();
    freeze_of(&open)
}

/// Of several open windows, the one that ends last, then (for a stable answer) the first by
/// name; compared in place, as this runs on every request.
fn later(a: &(&Window, Interval), b: &(&Window, Interval)) -> std::cmp::Ordering {
    (a.1.ends_at.cmp(&b.1.ends_at)).then_with(|| b.0.name.cmp(&a.0.name))
}

fn freeze_of(open: &[(&Window, Interval)]) -> Option<ChangeFreeze> {
    open.iter()
        .filter(|(w, _)| w.mode == WindowMode::FreezeChanges)
        .max_by(|a, b| later(a, b))
        .map(|(w, i)| ChangeFreeze {
            window: w.name.to_string(),
            until: i.ends_at,
            description: w.description.clone(),
        })
}

/// The mode override in force at `now`, if any: the newest active one.
pub fn holding_override(inputs: &MaintenanceInputs, now: DateTime<Utc>) -> Option<&Override> {
    inputs
        .overrides
        .iter()
        .filter(|o| o.is_active(now))
        .max_by_key(|o| o.created_at)
}

/// Computes the effective mode at `now`; no write is needed for a window to open or close.
pub fn effective(inputs: &MaintenanceInputs, now: DateTime<Utc>) -> EffectiveMode {
    let open = inputs.open_windows(now);
    // Without an override or an open window, git's own mode is in force, even if an override
    // that has just expired still sits in the stored row.
    let base = EffectiveMode {
        mode: inputs.git.mode,
        reason: inputs.git.reason.clone(),
        updated_at: inputs.updated_at,
        source: Source::Git,
        until: None,
        freeze: freeze_of(&open),
    };
    // An override wrote its mode into the stored row; it holds until it expires or is cleared.
    if let Some(o) = holding_override(inputs, now) {
        return EffectiveMode {
            mode: inputs.state.mode,
            reason: o.reason.clone(),
            source: Source::Override,
            until: o.expires_at,
            ..base
        };
    }
    // Of overlapping windows, the stricter mode wins, then the one that ends last.
    let strictness = |m: Mode| match m {
        Mode::Normal => 0,
        Mode::ReadOnly => 1,
        Mode::Maintenance => 2,
    };
    let holding = open
        .iter()
        .filter_map(|open| open.0.mode.platform_mode().map(|m| (m, open)))
        .max_by(|(m, a), (n, b)| strictness(*m).cmp(&strictness(*n)).then_with(|| later(a, b)));
    match holding {
        Some((mode, (w, i))) => EffectiveMode {
            mode,
            reason: if w.description.is_empty() {
                format!("maintenance window {}", w.name)
            } else {
                w.description.clone()
            },
            source: Source::Window,
            until: Some(i.ends_at),
            ..base
        },
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::calendar::{Length, Recurrence, Schedule, When, Zone};
    use crate::domain::WindowName;
    use crate::model::{Kind, Maintenance};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
    }

    fn window(name: &str, from_h: i64, to_h: i64, mode: WindowMode) -> Window {
        Window {
            name: WindowName::parse(name).unwrap(),
            when: When::Once(Interval {
                starts_at: now() + Duration::hours(from_h),
                ends_at: now() + Duration::hours(to_h),
            }),
            mode,
            active: true,
            description: String::new(),
        }
    }

    fn freeze(expires_in_min: Option<i64>) -> Override {
        Override {
            id: 1,
            kind: Kind::MaintenanceMode,
            key: "mode".into(),
            actor: "tyr".into(),
            reason: "incident 7".into(),
            created_at: now() - Duration::minutes(10),
            expires_at: expires_in_min.map(|m| now() + Duration::minutes(m)),
            group_id: None,
        }
    }

    fn inputs(mode: Mode, windows: Vec<Window>, overrides: Vec<Override>) -> MaintenanceInputs {
        MaintenanceInputs::new(
            Maintenance {
                mode,
                reason: "steady".into(),
            },
            Maintenance {
                mode: Mode::Normal,
                reason: "steady".into(),
            },
            now() - Duration::days(1),
            windows,
            overrides,
        )
    }

    fn recurring(name: &str, schedule: &str, duration: &str, zone: &str, mode: WindowMode) -> Window {
        Window {
            name: WindowName::parse(name).unwrap(),
            when: When::Every(Recurrence {
                schedule: Schedule::parse(schedule).unwrap(),
                duration: Length::parse(duration).unwrap(),
                timezone: Zone::parse(zone).unwrap(),
            }),
            mode,
            active: true,
            description: String::new(),
        }
    }

    #[test]
    fn a_freeze_leaves_the_mode_alone_and_holds_under_an_override() {
        let frozen = window("black-friday", -1, 5, WindowMode::FreezeChanges);
        let e = effective(&inputs(Mode::Normal, vec![frozen.clone()], vec![]), now());
        assert_eq!((e.mode, e.source), (Mode::Normal, Source::Git));
        let f = e.freeze.unwrap();
        assert_eq!(
            (f.window.as_str(), f.until),
            ("black-friday", now() + Duration::hours(5))
        );
        // An override decides the mode; the freeze of changes still holds.
        let input = inputs(Mode::Maintenance, vec![frozen.clone()], vec![freeze(Some(5))]);
        let e = effective(&input, now());
        assert_eq!(e.source, Source::Override);
        assert_eq!(e.freeze, super::freeze(&input, now()));
        assert!(e.freeze.is_some());
        // With a read-only window open too, the window sets the mode and the freeze holds.
        let ro = window("ro", -1, 1, WindowMode::ReadOnly);
        let e = effective(&inputs(Mode::Normal, vec![frozen, ro], vec![]), now());
        assert_eq!(
            (e.mode, e.until),
            (Mode::ReadOnly, Some(now() + Duration::hours(1)))
        );
        assert!(e.freeze.is_some());
        assert_eq!(super::freeze(&inputs(Mode::Normal, vec![], vec![]), now()), None);
    }

    #[test]
    fn a_recurring_window_opens_each_time_its_rule_fires() {
        // now() is Tuesday 2026-12-01 03:00Z, 04:00 in Berlin.
        let w = recurring(
            "nightly",
            "30 3 * * *",
            "1h",
            "Europe/Berlin",
            WindowMode::Maintenance,
        );
        let e = effective(&inputs(Mode::Normal, vec![w], vec![]), now());
        assert_eq!((e.mode, e.source), (Mode::Maintenance, Source::Window));
        assert_eq!(e.until, Some(now() + Duration::minutes(30)));
        let w = recurring(
            "nightly",
            "30 4 * * *",
            "1h",
            "Europe/Berlin",
            WindowMode::Maintenance,
        );
        let input = inputs(Mode::Normal, vec![w], vec![]);
        assert_eq!(effective(&input, now()).source, Source::Git);
        let later = effective(&input, now() + Duration::days(3) + Duration::minutes(45));
        assert_eq!(later.source, Source::Window);
    }

    #[test]
    fn precedence_override_then_window_then_git() {
        let open = window("upgrade", -1, 1, WindowMode::Maintenance);
        let cases = [
            // (stored mode, windows, overrides) -> (mode, source)
            (inputs(Mode::Normal, vec![], vec![]), (Mode::Normal, Source::Git)),
            (
                inputs(Mode::Normal, vec![open.clone()], vec![]),
                (Mode::Maintenance, Source::Window),
            ),
            (
                inputs(Mode::ReadOnly, vec![open.clone()], vec![freeze(Some(5))]),
                (Mode::ReadOnly, Source::Override),
            ),
            (
                inputs(Mode::ReadOnly, vec![], vec![freeze(None)]),
                (Mode::ReadOnly, Source::Override),
            ),
            // An expired override no longer counts: the window (or git) decides again.
            (
                inputs(Mode::ReadOnly, vec![open], vec![freeze(Some(-1))]),
                (Mode::Maintenance, Source::Window),
            ),
            (
                inputs(Mode::Normal, vec![], vec![freeze(Some(-1))]),
                (Mode::Normal, Source::Git),
            ),
        ];
        for (i, (input, (mode, source))) in cases.iter().enumerate() {
            let e = effective(input, now());
            assert_eq!((e.mode, e.source), (*mode, *source), "case {i}");
        }
    }

    #[test]
    fn an_expired_override_gives_gits_mode_at_once() {
        // The override wrote read_only into the stored row; git declares normal.
        let input = inputs(Mode::ReadOnly, vec![], vec![freeze(Some(-1))]);
        let e = effective(&input, now());
        assert_eq!(
            (e.mode, e.source, e.reason.as_str()),
            (Mode::Normal, Source::Git, "steady")
        );
    }

    #[test]
    fn windows_open_and_close_with_the_clock() {
        let input = inputs(
            Mode::Normal,
            vec![window("w", 1, 2, WindowMode::ReadOnly)],
            vec![],
        );
        assert_eq!(effective(&input, now()).source, Source::Git);
        let during = effective(&input, now() + Duration::minutes(90));
        assert_eq!(
            (during.mode, during.until),
            (Mode::ReadOnly, Some(now() + Duration::hours(2)))
        );
        assert_eq!(during.reason, "maintenance window w");
        // The end is exclusive.
        assert_eq!(effective(&input, now() + Duration::hours(2)).source, Source::Git);
    }

    #[test]
    fn overlapping_windows_take_the_stricter_mode() {
        let input = inputs(
            Mode::Normal,
            vec![
                window("ro", -1, 3, WindowMode::ReadOnly),
                window("mt", -1, 1, WindowMode::Maintenance),
            ],
            vec![],
        );
        let e = effective(&input, now());
        assert_eq!(
            (e.mode, e.until),
            (Mode::Maintenance, Some(now() + Duration::hours(1)))
        );
    }

    #[test]
    fn override_reports_its_reason_and_expiry() {
        let e = effective(&inputs(Mode::ReadOnly, vec![], vec![freeze(Some(30))]), now());
        assert_eq!(e.reason, "incident 7");
        assert_eq!(e.until, Some(now() + Duration::minutes(30)));
    }

    mod brute_force {
        use proptest::prelude::*;

        use super::*;

        const SCHEDULES: &[&str] = &[
            "30 2 * * *",
            "0 * * * *",
            "*/20 1-3 * * *",
            "0 2 * * SUN",
            "45 23 * * *",
        ];
        const ZONES: &[&str] = &["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"];
        const MODES: [WindowMode; 3] = [
            WindowMode::Maintenance,
            WindowMode::ReadOnly,
            WindowMode::FreezeChanges,
        ];

        /// Around Berlin's spring-forward night of 2027.
        fn base() -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap()
        }

        fn a_window() -> impl Strategy<Value = Window> {
            let once = (0i64..2880, 1i64..600).prop_map(|(start, length)| {
                When::Once(Interval {
                    starts_at: base() + Duration::minutes(start),
                    ends_at: base() + Duration::minutes(start + length),
                })
            });
            let every = (0..SCHEDULES.len(), 1u64..240, 0..ZONES.len()).prop_map(|(s, d, z)| {
                When::Every(Recurrence {
                    schedule: Schedule::parse(SCHEDULES[s]).unwrap(),
                    duration: Length::from_minutes(d).unwrap(),
                    timezone: Zone::parse(ZONES[z]).unwrap(),
                })
            });
            (prop_oneof![once, every], 0..3usize, any::<bool>()).prop_map(|(when, m, active)| Window {
                name: WindowName::parse("w").unwrap(),
                when,
                mode: MODES[m],
                active,
                description: String::new(),
            })
        }

        /// Whether `w` holds `t`, from its occurrences one by one, never merged.
        fn holds(w: &Window, t: DateTime<Utc>) -> bool {
            w.active
                && match &w.when {
                    When::Once(i) => i.holds(t),
                    When::Every(r) => r
                        .occurrences(base() - Duration::days(1))
                        .take_while(|i| i.starts_at <= t)
                        .any(|i| i.holds(t)),
                }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// The effective mode and the freeze, minute by minute over two days, equal what the
            /// windows' occurrences say one by one.
            #[test]
            fn the_mode_at_every_minute_is_what_the_occurrences_say(
                windows in proptest::collection::vec(a_window(), 1..4)
            ) {
                let input = inputs(Mode::Normal, windows.clone(), vec![]);
                for minute in 0..2 * 1440 {
                    let t = base() + Duration::minutes(minute);
                    let open: Vec<&Window> = windows.iter().filter(|w| holds(w, t)).collect();
                    let strictest = open
                        .iter()
                        .filter_map(|w| w.mode.platform_mode())
                        .max_by_key(|m| match m {
                            Mode::Normal => 0,
                            Mode::ReadOnly => 1,
                            Mode::Maintenance => 2,
                        });
                    let frozen = open.iter().any(|w| w.mode == WindowMode::FreezeChanges);
                    let e = effective(&input, t);
                    prop_assert_eq!(e.mode, strictest.unwrap_or(Mode::Normal), "at {}", t);
                    let source = if strictest.is_some() { Source::Window } else { Source::Git };
                    prop_assert_eq!(e.source, source, "at {}", t);
                    prop_assert_eq!(e.freeze.is_some(), frozen, "at {}", t);
                    if let Some(until) = e.until {
                        prop_assert!(until > t);
                    }
                }
            }
        }
    }
}
