//! A store outage logged once per transition, with counts, rather than once per failed request.
//!
//! With 200 clients and the database gone, a line per failed request was 175 lines a second: the
//! log shipper and whoever reads it drown while nothing new is said. The first failure says the
//! store is unreachable; a reminder every `REMINDER` counts what failed since; the first
//! success after it says the store is back and how long it was gone.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a continuing outage is mentioned again.
const REMINDER: Duration = Duration::from_secs(60);

/// An outage in progress.
struct Down {
    /// When the first failure was seen.
    since: Instant,
    /// Requests failed since then.
    failures: u64,
    /// When the log last spoke of it.
    said_at: Instant,
}

/// Whether the store is down, read without the lock by every success.
static DOWN: AtomicBool = AtomicBool::new(false);
/// The outage in progress, if any. A std mutex: held for a few instructions, never across await.
static OUTAGE: Mutex<Option<Down>> = Mutex::new(None);

/// A request failed because the store did not answer (`cause`).
pub fn store_failed(cause: &dyn std::fmt::Display) {
    let mut outage = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    match outage.as_mut() {
        None => {
            tracing::error!("the store is unreachable: {cause}; what needs it answers 503 until it is back");
            *outage = Some(Down {
                since: now,
                failures: 1,
                said_at: now,
            });
            DOWN.store(true, Ordering::Release);
        }
        Some(down) => {
            down.failures += 1;
            if now.duration_since(down.said_at) >= REMINDER {
                tracing::error!(
                    "the store is still unreachable after {}s: {} requests failed; the last: {cause}",
                    down.since.elapsed().as_secs(),
                    down.failures
                );
                down.said_at = now;
            }
        }
    }
}

/// The store answered: ends an outage in progress, saying so once.
pub fn store_answered() {
    if !DOWN.load(Ordering::Acquire) {
        return;
    }
    let mut outage = OUTAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(down) = outage.take() {
        DOWN.store(false, Ordering::Release);
        tracing::warn!(
            "the store answers again after {:.1}s; {} requests failed meanwhile",
            down.since.elapsed().as_secs_f64(),
            down.failures
        );
    }
}
