//! A server's part in the notifications outbox: noticing what time tells, and delivering
//! every event to the sinks that take it.

mod deliver;
mod notice;

pub use deliver::{Delivering, GIVE_UP_AFTER, NotifyMetrics, RETRY, judge};
pub use notice::{EVENT_RETENTION, mode_changes};

use std::sync::Arc;
use std::time::Duration;

use crate::replica::Replica;
use crate::shutdown::TaskGuard;

/// Notices what time tells (`reminder` before an override expires; zero: no reminders) and
/// the shared counters' outages, and delivers, until the guard is dropped.
pub fn spawn(replica: Arc<Replica>, reminder: Duration, delivering: Delivering) -> TaskGuard {
    let notices = notice::spawn(Arc::clone(&replica), reminder);
    let counters = notice::spawn_counters(Arc::clone(&replica));
    let deliveries = deliver::spawn(replica, delivering);
    TaskGuard::new(vec![notices, counters, deliveries])
}
