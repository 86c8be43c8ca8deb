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
    let windows = inputs
        .windows
        .iter()
        .filter(|w| w.active)
        .flat_map(|w| [(w.starts_at, "window"), (w.ends_at, "window")]);
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

    use super::*;
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
        MaintenanceInputs {
            state: normal.clone(),
            git: normal,
            updated_at: at(0),
            windows,
            overrides: Vec::new(),
        }
    }

    fn window(name: &str, from: u32, to: u32, mode: WindowMode) -> Window {
        Window {
            name: WindowName::parse(name).unwrap(),
            starts_at: at(from),
            ends_at: at(to),
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
}
