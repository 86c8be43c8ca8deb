//! Continuous reconciliation: the state directory watched with notify, and reconcile passes on
//! every change after a short debounce, every interval, and at the moment the next override
//! expires. What a pass applies never depends on which event woke it; only its cost does (see
//! `pass::Passes::pass`).

mod files;
mod pass;
#[cfg(test)]
mod tests;
mod tracked;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::desired::StateDir;
use crate::store::Db;
use files::{debounce, rewatch, watch_dir};
use pass::{Action, Passes, Trigger, error_policy};

/// The `source` of the runs a watch loop records.
pub const SOURCE: &str = "watch";

/// How a watch loop runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// A full pass at least this often: drift is healed within it.
    pub interval: Duration,
    /// Quiet time after a file event before the pass: an editor's or git's burst is one pass.
    pub debounce: Duration,
    /// Recorded with each run.
    pub actor: String,
    /// Remove API-owned resources git does not declare.
    pub prune: bool,
    /// Apply plans the mass-removal guard would refuse.
    pub allow_mass_removal: bool,
    /// Runs that changed nothing are forgotten after this long.
    pub idle_run_retention: chrono::Duration,
    /// Apply although a freeze of changes is open, for this reason.
    pub during_freeze: Option<String>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            interval: Duration::from_secs(60),
            debounce: Duration::from_millis(100),
            actor: "watch".into(),
            prune: false,
            allow_mass_removal: false,
            idle_run_retention: chrono::Duration::days(7),
            during_freeze: None,
        }
    }
}

/// How often a waiting loop reads the next override expiry again, for overrides set by other
/// processes it hears nothing from.
const EXPIRY_REFRESH: Duration = Duration::from_secs(5);

/// The loop's counters, exposed in `/metrics` by `serve --watch`.
#[derive(Debug, Clone, Default)]
pub struct WatchMetrics {
    pub passes: Counter,
    pub changes: Counter,
    /// Passes that applied nothing, or applied the last good state because the files were invalid.
    pub failures: Counter,
    /// Changes applied although the files had not changed.
    pub drift: Counter,
    /// Passes that followed the changes instead of reconciling everything.
    pub followed: Counter,
}

impl WatchMetrics {
    /// Registers the counters as `valhalla_ops_watch_*_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "watch_passes",
            "Reconcile passes of the watch loop",
            self.passes.clone(),
        );
        registry.register(
            "watch_changes",
            "Changes applied by the watch loop",
            self.changes.clone(),
        );
        registry.register(
            "watch_failures",
            "Watch passes that applied nothing: invalid state, refused plan, or database error",
            self.failures.clone(),
        );
        registry.register(
            "watch_followed_passes",
            "Watch passes that planned only what changed in the files or the store since the last",
            self.followed.clone(),
        );
        registry.register(
            "watch_drift_corrected",
            "Changes applied although the state files had not changed: the database had drifted",
            self.drift.clone(),
        );
    }
}

/// Watches `dir` and reconciles it into `db` until `shutdown` resolves. A pass in progress
/// finishes (its transaction commits or rolls back whole) before the loop returns.
pub async fn run(
    db: Db,
    state_dir: StateDir,
    options: WatchOptions,
    metrics: WatchMetrics,
    clock: crate::clock::Clock,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), notify::Error> {
    let dir = state_dir.path.clone();
    let dir = dir.as_path();
    let changed = Arc::new(Notify::new());
    let lost = Arc::new(AtomicBool::new(false));
    let mut _watcher = watch_dir(dir, Arc::clone(&changed), Arc::clone(&lost))?;
    tracing::info!(
        dir = %dir.display(),
        interval = ?options.interval,
        "watching the state directory"
    );
    let mut state = Passes::new(db, state_dir, options, metrics, clock);
    tokio::pin!(shutdown);
    let mut trigger = Trigger::Start;
    let mut failures: u32 = 0;
    loop {
        if lost.load(Ordering::Acquire) && dir.is_dir() {
            // A directory deleted and created again (or swapped by a deploy) took its watch
            // with it: watch the new one before the pass reads it, so that a file written
            // after that read still wakes the loop (watching after the pass lost such a write
            // until the interval).
            if let Some(fresh) = rewatch(dir, &changed, &lost) {
                _watcher = fresh;
            }
        }
        let passed = state.pass(trigger).await;
        let interval = state.options.interval;
        let (action, expiry) = match passed {
            Ok(passed) => (Action::AwaitInterval, passed.next_expiry),
            Err(e) => (error_policy(&e, failures.saturating_add(1), interval), None),
        };
        let wait = match action {
            Action::AwaitInterval => {
                failures = 0;
                interval
            }
            Action::Retry(after) => {
                failures = failures.saturating_add(1);
                after
            }
        };
        let retrying = failures > 0;
        // While the directory is gone, look for it again every second.
        let wait = if lost.load(Ordering::Acquire) {
            wait.min(Duration::from_secs(1))
        } else {
            wait
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut expiry = expiry;
        // Wait for the next trigger. Meanwhile an override may be set (over HTTP, in this
        // process or another): the next expiry is read again on every change this process
        // hears of, and every few seconds.
        trigger = loop {
            let expiry_in = expiry.map(|at| {
                let now = (state.clock)();
                // Just after the instant, so the override counts as expired.
                (at - now).to_std().unwrap_or_default() + Duration::from_millis(10)
            });
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("watch loop stopped");
                    return Ok(());
                }
                () = changed.notified() => {
                    debounce(&changed, state.options.debounce).await;
                    break Trigger::Files;
                }
                () = tokio::time::sleep_until(deadline) => {
                    break if retrying { Trigger::Retry } else { Trigger::Interval };
                }
                () = sleep_for(expiry_in) => break Trigger::Expiry,
                () = state.db.changes().changed(), if !retrying => {}
                () = tokio::time::sleep(EXPIRY_REFRESH), if !retrying => {}
            }
            // Expiries since the last pass, not since now: an override that expired while the
            // loop had not heard of it (set by another process, read here only every few
            // seconds) is acted on at once instead of being passed over until the interval.
            expiry = state.next_expiry(state.last_pass).await;
        };
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
