//! Continuous reconciliation: the state directory watched with notify, and whole reconcile
//! passes (level-triggered: a pass never depends on which event woke it) on every change after a
//! short debounce, every interval, and at the moment the next override expires.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode, Watcher as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use crate::desired::{DesiredState, LoadError, StateDir};
use crate::plan::PlanOptions;
use crate::reconcile::{ReconcileError, Request, reconcile};
use crate::store::{Db, StoreError};

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
    pub prune: bool,
    pub allow_mass_removal: bool,
    /// Runs that changed nothing are forgotten after this long.
    pub idle_run_retention: chrono::Duration,
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
        }
    }
}

/// The longest a burst of file events can postpone a pass.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);
/// How often a waiting loop reads the next override expiry again, for overrides set by other
/// processes it hears nothing from.
const EXPIRY_REFRESH: Duration = Duration::from_secs(5);
/// The longest wait before retrying after the database failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The loop's counters, exposed in `/metrics` by `serve --watch`.
#[derive(Debug, Clone, Default)]
pub struct WatchMetrics {
    pub passes: Counter,
    pub changes: Counter,
    pub failures: Counter,
    pub drift: Counter,
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
            "watch_drift_corrected",
            "Changes applied although the state files had not changed: the database had drifted",
            self.drift.clone(),
        );
    }
}

/// What woke a pass; only logged, never used to decide what the pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Start,
    Files,
    Interval,
    Expiry,
    Retry,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Files => "files changed",
            Trigger::Interval => "interval",
            Trigger::Expiry => "override expired",
            Trigger::Retry => "retry",
        }
    }
}

/// How a pass ended.
enum Passed {
    /// Applied (or in sync); wake again at the next override expiry, if any.
    Applied { next_expiry: Option<DateTime<Utc>> },
    /// Invalid state or a refused plan: wait for the next edit or interval.
    Rejected,
    /// The database failed: retry with backoff.
    Failed,
}

/// The loop's memory between passes.
struct Loop {
    db: Db,
    dir: StateDir,
    options: WatchOptions,
    metrics: WatchMetrics,
    clock: crate::replica::Clock,
    /// The last state that loaded: while the files are invalid it stays in force.
    last_good: Option<DesiredState>,
    /// The fingerprint of the last state applied, to tell drift from edits.
    last_applied: Option<String>,
    /// When the last pass started: overrides that expired before it were acted on by it.
    last_pass: DateTime<Utc>,
}

/// Watches `dir` and reconciles it into `db` until `shutdown` resolves. A pass in progress
/// finishes (its transaction commits or rolls back whole) before the loop returns.
pub async fn run(
    db: Db,
    state_dir: StateDir,
    options: WatchOptions,
    metrics: WatchMetrics,
    clock: crate::replica::Clock,
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
    let mut state = Loop {
        db,
        dir: state_dir,
        options,
        metrics,
        clock,
        last_good: None,
        last_applied: None,
        last_pass: DateTime::<Utc>::MIN_UTC,
    };
    tokio::pin!(shutdown);
    let mut trigger = Trigger::Start;
    let mut failures: u32 = 0;
    loop {
        let passed = state.pass(trigger).await;
        if lost.load(Ordering::Acquire) && dir.is_dir() {
            // A directory deleted and created again (or swapped by a deploy) took its watch
            // with it: watch the new one.
            if let Some(fresh) = rewatch(dir, &changed, &lost) {
                _watcher = fresh;
            }
        }
        let (wait, expiry) = match passed {
            Passed::Applied { next_expiry } => {
                failures = 0;
                (state.options.interval, next_expiry)
            }
            Passed::Rejected => {
                failures = 0;
                (state.options.interval, None)
            }
            Passed::Failed => {
                failures = failures.saturating_add(1);
                (BACKOFF.after(failures).min(state.options.interval), None)
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

/// 0.5 s after the first failure, doubling up to [`MAX_BACKOFF`].
const BACKOFF: crate::backoff::Backoff = crate::backoff::Backoff {
    first: Duration::from_millis(500),
    max: MAX_BACKOFF,
};

/// A new watch on a directory that was replaced; while that fails, `lost` stays set and the
/// loop keeps looking every second.
fn rewatch(dir: &Path, changed: &Arc<Notify>, lost: &Arc<AtomicBool>) -> Option<notify::RecommendedWatcher> {
    lost.store(false, Ordering::Release);
    match watch_dir(dir, Arc::clone(changed), Arc::clone(lost)) {
        Ok(watcher) => {
            tracing::info!(dir = %dir.display(), "the state directory was replaced; watching the new one");
            Some(watcher)
        }
        Err(e) => {
            lost.store(true, Ordering::Release);
            tracing::warn!(error = %e, "cannot watch the replaced state directory");
            None
        }
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Waits until no file event has arrived for `quiet`, or [`MAX_DEBOUNCE`] has passed.
async fn debounce(changed: &Notify, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(quiet) => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Watches the directory itself (not its files), recursively, so that an editor's atomic save
/// (write, then rename over), a deleted and recreated file, a `git checkout` and a Kubernetes
/// ConfigMap update (a `..data` symlink swapped) are all seen.
fn watch_dir(
    dir: &Path,
    changed: Arc<Notify>,
    lost: Arc<AtomicBool>,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let root = dir.to_owned();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        // Reads (ours included: every pass reads the files) are not changes.
        Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
        // The directory itself went away (deleted, or moved aside by a deploy): so did its watch.
        Ok(event)
            if event.paths.contains(&root)
                && matches!(
                    event.kind,
                    EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                ) =>
        {
            lost.store(true, Ordering::Release);
            changed.notify_one();
        }
        Ok(event) if !event.paths.is_empty() && event.paths.iter().all(|p| is_noise(&root, p)) => {}
        // One stored permit: an event during a pass wakes the loop right after it.
        Ok(_) => changed.notify_one(),
        Err(e) => {
            tracing::warn!(error = %e, "watching the state directory failed; the interval still applies");
            changed.notify_one();
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Git's own bookkeeping and editors' swap, backup and lock files: churn that is never state.
/// Other hidden entries are changes: a ConfigMap update shows only as a `..data` swap.
fn is_noise(root: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let in_git = relative.components().any(|c| c.as_os_str() == ".git");
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let scratch = [".swp", ".swx", ".swo", "~"]
        .iter()
        .any(|end| name.ends_with(end))
        || name.starts_with(".#")
        || name == "4913";
    in_git || scratch
}

impl Loop {
    /// One whole pass: load the directory, plan against the store, apply; one log line.
    async fn pass(&mut self, trigger: Trigger) -> Passed {
        let started = Instant::now();
        let now = (self.clock)();
        self.last_pass = now;
        self.metrics.passes.inc();
        let mut invalid = None;
        // Reading and parsing a large directory is blocking work: off the async threads, so a
        // server beside the loop keeps answering during a pass.
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || dir.load(now))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Io {
                    path: self.dir.path.clone(),
                    source: std::io::Error::other(format!("the loading task failed: {e}")),
                })
            });
        match loaded {
            Ok(loaded) => self.last_good = Some(loaded.state),
            Err(e) => {
                if let LoadError::Invalid { errors, .. } = &e {
                    for error in errors {
                        tracing::warn!("{error}");
                    }
                }
                invalid = Some(e);
            }
        }
        let took = || started.elapsed().as_millis();
        let Some(desired) = &self.last_good else {
            self.metrics.failures.inc();
            if let Some(e) = invalid {
                tracing::warn!(trigger = trigger.as_str(), "pass rejected: {e}; nothing applied");
            }
            return Passed::Rejected;
        };
        // Invalid files count as a failed pass, yet the last good state is still enforced:
        // drift is healed and expired overrides are undone while someone fixes the files.
        let invalid = invalid.map(|e| {
            self.metrics.failures.inc();
            format!("; {e}, so the last good state stays in force")
        });
        let request = Request {
            options: PlanOptions {
                prune: self.options.prune,
            },
            allow_mass_removal: self.options.allow_mass_removal,
            actor: self.options.actor.clone(),
            source: SOURCE.into(),
            ..Request::default()
        };
        match reconcile(&self.db, desired, &request, now).await {
            Ok(outcome) => {
                let summary = outcome.plan.summary();
                let changes = summary.changes() as u64;
                self.metrics.changes.inc_by(changes);
                let drifted = self.last_applied.as_deref() == Some(outcome.state_fingerprint.as_str());
                if drifted {
                    self.metrics.drift.inc_by(changes);
                }
                let run = outcome.run_id.unwrap_or_default();
                let what = match changes {
                    0 => "in sync".to_owned(),
                    n => format!(
                        "applied {n} change{} ({}){}",
                        if n == 1 { "" } else { "s" },
                        describe(&summary),
                        if drifted { ", drift corrected" } else { "" }
                    ),
                };
                let note = invalid.unwrap_or_default();
                let trigger = trigger.as_str();
                if note.is_empty() {
                    tracing::info!(trigger, run, ms = took(), "pass: {what}");
                } else {
                    tracing::warn!(trigger, run, ms = took(), "pass: {what}{note}");
                }
                self.last_applied = Some(outcome.state_fingerprint);
                let before = now - self.options.idle_run_retention;
                if let Err(e) = self.db.forget_idle_runs(SOURCE, before).await {
                    tracing::warn!(error = %e, "cannot forget old idle runs");
                }
                Passed::Applied {
                    next_expiry: self.next_expiry(now).await,
                }
            }
            Err(ReconcileError::Refused(refusal)) => {
                self.metrics.failures.inc();
                tracing::warn!(trigger = trigger.as_str(), ms = took(), "pass refused: {refusal}");
                Passed::Rejected
            }
            Err(ReconcileError::Store(StoreError::LockHeld(waited))) => {
                // Another replica is applying (a long apply); it will leave nothing to do.
                tracing::info!(
                    trigger = trigger.as_str(),
                    ms = took(),
                    "pass: another replica held the apply lock for {waited:?}; checking again shortly"
                );
                Passed::Failed
            }
            Err(ReconcileError::Store(e)) => {
                self.metrics.failures.inc();
                tracing::warn!(
                    trigger = trigger.as_str(),
                    ms = took(),
                    "pass failed: {e}; retrying"
                );
                Passed::Failed
            }
        }
    }

    /// When the next open override expires after `after` (an instant already in the past means
    /// at once): git's value must return then, not an interval later.
    async fn next_expiry(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.db.open_overrides().await {
            Ok(overrides) => overrides
                .iter()
                .filter_map(|o| o.expires_at)
                .filter(|at| *at > after)
                .min(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read overrides; their expiry waits for the interval");
                None
            }
        }
    }
}

/// `2 updated, 1 created`: the counts that are not zero.
fn describe(summary: &crate::plan::Summary) -> String {
    [
        (summary.create, "created"),
        (summary.update, "updated"),
        (summary.delete, "deleted"),
        (summary.deactivate, "deactivated"),
        (summary.held, "held by overrides"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_half_a_second_and_doubles_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| BACKOFF.after(n).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn only_git_internals_and_editor_scratch_files_are_noise() {
        let root = Path::new("/state");
        let noise = |p: &str| is_noise(root, Path::new(p));
        assert!(noise("/state/.git/index"));
        assert!(noise("/state/.rules.yaml.swp"));
        assert!(noise("/state/rules.yaml~"));
        assert!(noise("/state/.#rules.yaml"));
        assert!(!noise("/state/rules.yaml"));
        assert!(!noise("/state/..data"), "a ConfigMap swap is a change");
        assert!(!noise("/state/team/limits.yml"));
    }
}
