//! The circuit breaker in front of the shared counters: after a few failed calls in a row it
//! opens, and no request waits on a dead Redis until a probe finds it answering again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Failed calls in a row that open the circuit: one slow answer is not an outage, three are.
const FAILURES_TO_OPEN: u32 = 3;

/// The breaker's state, shared by every request of a replica.
#[derive(Debug, Default)]
pub struct Circuit {
    /// Failed calls in a row while closed.
    failures: AtomicU32,
    /// Whether calls are stopped (read on every request, so a plain flag).
    open: AtomicBool,
    /// When the circuit opened, for the log line that closes it.
    opened_at: Mutex<Option<Instant>>,
    /// How many times it opened: an outage that began and ended between two looks is seen.
    openings: AtomicU64,
    /// Told of each opening and closing (a permit is kept when nobody waits).
    changed: tokio::sync::Notify,
}

impl Circuit {
    /// Whether calls go through.
    pub fn is_closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// A call succeeded.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// A call failed; true when this failure opened the circuit (the caller logs the outage
    /// once, and starts probing).
    pub fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        failures >= FAILURES_TO_OPEN && self.open()
    }

    /// Stops calls; true when this call opened the circuit.
    pub fn open(&self) -> bool {
        let mut opened_at = self.opened_at.lock().unwrap_or_else(|e| e.into_inner());
        if self.open.swap(true, Ordering::AcqRel) {
            return false;
        }
        *opened_at = Some(Instant::now());
        self.openings.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_one();
        true
    }

    /// Completes after the circuit next opens or closes (at once if it did since the last call
    /// returned).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// How many times the circuit has opened.
    pub fn openings(&self) -> u64 {
        self.openings.load(Ordering::Acquire)
    }

    /// A probe found the store answering: calls go through again. Returns how long the
    /// circuit was open, when this call closed it.
    pub fn close(&self) -> Option<Duration> {
        let mut opened_at = self.opened_at.lock().unwrap_or_else(|e| e.into_inner());
        self.failures.store(0, Ordering::Relaxed);
        if !self.open.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.changed.notify_one();
        opened_at.take().map(|at| at.elapsed())
    }

    /// How long the circuit has been open, if it is.
    pub fn open_for(&self) -> Option<Duration> {
        if self.is_closed() {
            return None;
        }
        let opened_at = self.opened_at.lock().unwrap_or_else(|e| e.into_inner());
        opened_at.map(|at| at.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_once_and_closes_once() {
        let circuit = Circuit::default();
        assert!(!circuit.failed() && !circuit.failed());
        circuit.succeeded();
        assert!(!circuit.failed() && !circuit.failed());
        assert!(circuit.is_closed(), "a success in between resets the run");
        assert!(circuit.failed(), "the third failure in a row opens it");
        assert!(!circuit.is_closed());
        assert!(!circuit.failed(), "already open: the outage is reported once");
        assert!(circuit.open_for().is_some());
        assert!(circuit.close().is_some());
        assert!(circuit.close().is_none(), "already closed");
        assert!(circuit.is_closed() && circuit.open_for().is_none());
    }
}
