//! A server's part in the notifications outbox: noticing what time tells (an override expired,
//! or about to), once a second, written once whichever replica notices first.

use std::time::Duration;

use crate::clock::Clock;
use crate::shutdown::TaskGuard;
use crate::store::Db;

/// How often the store is asked what time has told.
const NOTICE_EVERY: Duration = Duration::from_secs(1);

/// Notices expiries until the guard is dropped: `reminder` before an override expires (zero: no
/// reminders), and as it expires.
pub fn spawn(db: Db, clock: Clock, reminder: Duration) -> TaskGuard {
    let lead = chrono::TimeDelta::from_std(reminder).unwrap_or(chrono::TimeDelta::zero());
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(NOTICE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match db.notice_expiries(clock(), lead).await {
                Ok(_) => failing = false,
                // Said once per outage, not once a second.
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot write the events of expiring overrides");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    });
    TaskGuard::new(vec![task])
}
