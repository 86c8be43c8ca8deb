//! Exponential backoff: how long to wait before trying again after consecutive failures.

use std::time::Duration;

/// A wait of `first` after the first failure, doubling after each further one, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Backoff {
    /// The wait after `failures` consecutive failures (1 for the first; 0 counts as 1).
    pub fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first.saturating_mul(1 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_doubles_from_the_first_wait_to_the_cap_and_never_overflows() {
        let backoff = Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (0..=8).map(|n| backoff.after(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(backoff.after(u32::MAX), Duration::from_secs(30));
    }
}
