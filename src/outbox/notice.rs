//! Noticing what time tells (an override expired or about to, a window opening or closing),
//! once a second, each event written once whichever replica notices first.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::event::Event;
use crate::model::{Kind, MaintenanceInputs};
use crate::replica::Replica;
use crate::store::StoreError;

/// How often the store is asked what time has told.
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// How long events are kept: the outbox is a record of the last weeks, not an archive (the
/// audit log is that).
pub const EVENT_RETENTION: TimeDelta = TimeDelta::days(30);

/// How often old events are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(10 * 60);

/// How far back a server that starts looks for mode changes it may have missed: a restart's
/// gap, not history (the inputs are today's, and an override lifted since would make an old
/// instant look like a change).
const LOOK_BACK: TimeDelta = TimeDelta::seconds(5);

/// Notices what time tells until the task is aborted: `reminder` before an override expires
/// (zero: no reminders), as it expires, and each change of the effective mode a window's
/// opening or closing (or an override's expiry) makes; and forgets events past
/// [`EVENT_RETENTION`].
pub(super) fn spawn(replica: Arc<Replica>, reminder: Duration) -> tokio::task::JoinHandle<()> {
    let lead = TimeDelta::from_std(reminder).unwrap_or(TimeDelta::zero());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(NOTICE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since = (replica.clock)() - LOOK_BACK;
        let mut failing = false;
        let mut forgot: Option<std::time::Instant> = None;
        loop {
            ticks.tick().await;
            let now = (replica.clock)();
            if forgot.is_none_or(|at| at.elapsed() >= FORGET_EVERY) {
                forgot = Some(std::time::Instant::now());
                if let Err(e) = replica.db().forget_events(now - EVENT_RETENTION).await {
                    tracing::warn!(error = %e, "cannot forget old events");
                }
            }
            match notice(&replica, since, now, lead).await {
                Ok(()) => {
                    since = now;
                    failing = false;
                }
                // Said once per outage, not once a second; the span is noticed when it ends.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot write the events time made");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}

/// Tells the store what this replica sees of the shared counters, at once when its circuit
/// opens or closes and once a second besides, until the task is aborted; nothing without shared
/// counters.
pub(super) fn spawn_counters(replica: Arc<Replica>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if replica.counting.outages().is_none() {
            return;
        }
        let mut seen = CountersSeen::default();
        loop {
            if let Err(e) = seen.look(&replica).await {
                // The next look says it again: what the store was not told stays to tell.
                tracing::debug!(error = %e, "cannot record what this replica sees of the counters");
            }
            tokio::select! {
                () = replica.counting.outage_changed() => {}
                () = tokio::time::sleep(NOTICE_EVERY) => {}
            }
        }
    })
}

/// What a replica last told the store of the shared counters.
#[derive(Debug, Default)]
struct CountersSeen {
    /// The circuit's openings when the store was last told.
    openings: u64,
    /// Whether it was last told they are down.
    down: bool,
}

impl CountersSeen {
    /// Tells the store each change since the last look, in order: an outage that ended, one
    /// that began and ended in between (shorter than a look), and the state now.
    async fn look(&mut self, replica: &Replica) -> Result<(), StoreError> {
        let Some((open, openings)) = replica.counting.outages() else {
            return Ok(());
        };
        let now = (replica.clock)();
        let open_for = replica.counting.health().unreachable_seconds.unwrap_or(0);
        let began = now - TimeDelta::seconds(i64::try_from(open_for).unwrap_or(0));
        let looks = changes(self.down, self.openings, open, openings);
        let db = replica.db();
        for down in looks {
            db.look_at_counters(&replica.options.name, down, if down { began } else { now }, now)
                .await?;
            self.down = down;
        }
        self.openings = openings;
        Ok(())
    }
}

/// What to tell, in order, of a circuit told `was_down` at `was_openings` openings that is
/// `open` at `openings` now: each `true` a look that finds the counters down, each `false` one
/// that finds them up.
fn changes(was_down: bool, was_openings: u64, open: bool, openings: u64) -> Vec<bool> {
    if openings == was_openings {
        return vec![open];
    }
    let mut looks = Vec::new();
    // The outage told ended before the new one began.
    if was_down {
        looks.push(false);
    }
    // Outages that began and ended since: told as one.
    if openings - was_openings > u64::from(open) {
        looks.extend([true, false]);
    }
    looks.push(open);
    looks.dedup();
    looks
}

/// One look at what time did in `(since, now]`.
async fn notice(
    replica: &Replica,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    lead: TimeDelta,
) -> Result<(), StoreError> {
    let db = replica.db();
    db.notice_expiries(now, lead).await?;
    let view = replica.view().await?;
    db.tell(&mode_changes(&view.maintenance, since, now)).await
}

/// The changes of the effective mode that time made in `(since, now]`: at each instant a
/// window opens or closes or a mode override expires, the mode just before and at it; one event
/// for each instant where they differ, its id made from the instant.
pub fn mode_changes(inputs: &MaintenanceInputs, since: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Event> {
    // Each window's openings and closings from a little before `since`: an interval that began
    // earlier may close within the span.
    let windows = inputs
        .windows()
        .iter()
        .filter(|w| w.active)
        .flat_map(|w| w.when.intervals(since).take_while(|i| i.starts_at <= now))
        .flat_map(|i| [(i.starts_at, "window"), (i.ends_at, "window")]);
    let expiries = inputs
        .overrides
        .iter()
        .filter(|o| o.kind == Kind::MaintenanceMode)
        .filter_map(|o| o.expires_at.map(|at| (at, "expiry")));
    let mut instants: Vec<(DateTime<Utc>, &str)> = windows
        .chain(expiries)
        .filter(|(at, _)| since < *at && *at <= now)
        .collect();
    instants.sort();
    instants.dedup_by_key(|(at, _)| *at);
    instants
        .into_iter()
        .filter_map(|(at, cause)| {
            let before = crate::mode::effective(inputs, at - TimeDelta::milliseconds(1));
            let after = crate::mode::effective(inputs, at);
            (before.mode != after.mode).then(|| {
                let id = format!("mode-changed:at:{}", at.timestamp_millis());
                Event::mode_changed(
                    id,
                    (before.mode, after.mode),
                    cause,
                    "valhalla-ops",
                    &after.reason,
                    at,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[test]
    fn each_outage_is_told_in_order_however_short() {
        use super::changes;
        // Nothing new: the state now.
        assert_eq!(changes(false, 0, false, 0), [false]);
        assert_eq!(changes(true, 1, true, 1), [true]);
        // It opened; it closed.
        assert_eq!(changes(false, 0, true, 1), [true]);
        assert_eq!(changes(true, 1, false, 1), [false]);
        // It closed and opened again between two looks: the end, then the new outage.
        assert_eq!(changes(true, 1, true, 2), [false, true]);
        // One began and ended between two looks: told as down, then up.
        assert_eq!(changes(false, 0, false, 1), [true, false]);
        // The told one ended, another began and ended, a third is open.
        assert_eq!(changes(true, 1, true, 3), [false, true, false, true]);
    }

    use super::*;
    use crate::calendar::{Interval, Length, Recurrence, Schedule, When, Zone};
    use crate::domain::{Mode, WindowMode, WindowName};
    use crate::model::{Maintenance, Window};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, minute, 0).unwrap()
    }

    fn inputs(windows: Vec<Window>) -> MaintenanceInputs {
        let normal = Maintenance {
            mode: Mode::Normal,
            reason: String::new(),
        };
        MaintenanceInputs::new(normal.clone(), normal, at(0), windows, Vec::new())
    }

    fn window(name: &str, from: u32, to: u32, mode: WindowMode) -> Window {
        Window {
            name: WindowName::parse(name).unwrap(),
            when: When::Once(Interval {
                starts_at: at(from),
                ends_at: at(to),
            }),
            mode,
            active: true,
            description: String::new(),
        }
    }

    #[test]
    fn a_window_tells_its_opening_and_closing_once_each() {
        let i = inputs(vec![window("nightly", 10, 20, WindowMode::ReadOnly)]);
        let told = mode_changes(&i, at(0), at(30));
        let seen: Vec<(String, &str)> = told
            .iter()
            .map(|e| (e.id.clone(), e.data["to"].as_str().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                (
                    format!("mode-changed:at:{}", at(10).timestamp_millis()),
                    "read_only"
                ),
                (format!("mode-changed:at:{}", at(20).timestamp_millis()), "normal"),
            ]
        );
        // Looked at in two halves, the same two events, with the same ids.
        let halves: Vec<String> = [mode_changes(&i, at(0), at(15)), mode_changes(&i, at(15), at(30))]
            .concat()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(halves, told.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    }

    #[test]
    fn a_window_inside_a_stricter_one_changes_nothing() {
        let i = inputs(vec![
            window("outer", 10, 40, WindowMode::Maintenance),
            window("inner", 20, 30, WindowMode::ReadOnly),
        ]);
        let told: Vec<String> = mode_changes(&i, at(0), at(50))
            .iter()
            .map(|e| e.data["to"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(told, ["maintenance", "normal"]);
    }

    #[test]
    fn a_recurring_window_tells_each_occurrence_and_a_freeze_tells_nothing() {
        // Every ten minutes for five, from 03:05: opens at :05, :15, :25; closes at :10, :20, :30.
        let rule = |mode| Window {
            when: When::Every(Recurrence {
                schedule: Schedule::parse("5-59/10 3 * * *").unwrap(),
                duration: Length::parse("5m").unwrap(),
                timezone: Zone::default(),
            }),
            ..window("often", 0, 1, mode)
        };
        let i = inputs(vec![rule(WindowMode::Maintenance)]);
        let told: Vec<(i64, String)> = mode_changes(&i, at(0), at(30))
            .iter()
            .map(|e| (e.at.timestamp(), e.data["to"].as_str().unwrap().to_owned()))
            .collect();
        let expected: Vec<(i64, String)> = [5, 10, 15, 20, 25, 30]
            .iter()
            .zip(["maintenance", "normal"].iter().cycle())
            .map(|(m, to)| (at(*m).timestamp(), (*to).to_owned()))
            .collect();
        assert_eq!(told, expected);
        let i = inputs(vec![rule(WindowMode::FreezeChanges)]);
        assert!(mode_changes(&i, at(0), at(30)).is_empty());
    }
}
