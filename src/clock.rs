//! The one clock: the system's, at the precision the store keeps, or one a test sets.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The time as the process sees it; tests inject their own to move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The current time at the precision the store keeps (microseconds), so a time written and read
/// back compares equal.
pub fn now() -> DateTime<Utc> {
    crate::domain::normalize_time(Utc::now())
}

/// The system clock.
pub fn system() -> Clock {
    Arc::new(now)
}
