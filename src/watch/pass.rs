//! One watch pass (load the directory, reconcile it, report in one log line) and the error
//! policy that decides how the loop goes on after a pass that failed.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::tracked::{Followed, Tracked};
use super::{SOURCE, WatchMetrics, WatchOptions};
use crate::backoff::Backoff;
use crate::desired::kept::KeptDir;
use crate::desired::{LoadError, StateDir};
use crate::event::Event;
use crate::plan::{PlanOptions, Summary};
use crate::reconcile::{
    Outcome, Part, ReconcileError, Refusal, Request, Snapshot, reconcile, reconcile_part,
};
use crate::store::{Db, StoreError};

/// 0.5 s after the first failure, doubling up to 30 s.
const BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(500),
    max: Duration::from_secs(30),
};

/// What woke a pass; only logged, never used to decide what the pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
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

/// What a pass that reached the store did.
#[derive(Debug)]
pub(super) struct Passed {
    /// The plan applied.
    pub(super) plan: crate::plan::Plan,
    /// Whether the pass followed the changes (or reconciled everything).
    pub(super) followed: bool,
    run_id: i64,
    /// The files had not changed since the last apply, yet there were changes to make.
    drifted: bool,
    /// Why the files did not load, when the last good state was applied instead.
    invalid: Option<LoadError>,
    /// When the next open override expires: git's value must return then.
    pub(super) next_expiry: Option<DateTime<Utc>>,
}

/// Why a pass applied nothing.
#[derive(Debug, thiserror::Error)]
pub(super) enum PassError {
    /// The files are invalid and no earlier state loaded.
    #[error("{0}; nothing applied")]
    Invalid(LoadError),
    #[error(transparent)]
    Refused(Refusal),
    /// Another replica was applying; it leaves nothing to do.
    #[error("another replica held the apply lock for {0:?}")]
    LockHeld(Duration),
    #[error(transparent)]
    Store(StoreError),
}

/// How the loop goes on after a pass, unless a file event or an override's expiry comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Pass again after the interval.
    AwaitInterval,
    /// Pass again after this backoff.
    Retry(Duration),
}

/// The error policy. Invalid files and a refused plan wait for an edit (or the interval):
/// passing sooner would fail the same way. A busy lock or a failing database is outside the
/// files, so the pass is retried after `failures` (consecutive, this one included) backoffs,
/// never later than the interval.
pub(super) fn error_policy(error: &PassError, failures: u32, interval: Duration) -> Action {
    match error {
        PassError::Invalid(_) | PassError::Refused(_) => Action::AwaitInterval,
        PassError::LockHeld(_) | PassError::Store(_) => Action::Retry(BACKOFF.after(failures).min(interval)),
    }
}

/// The loop's memory between passes.
pub(super) struct Passes {
    pub(super) db: Db,
    pub(super) dir: StateDir,
    pub(super) options: WatchOptions,
    pub(super) metrics: WatchMetrics,
    pub(super) clock: crate::clock::Clock,
    /// The last state that loaded, kept by file: while the files are invalid it stays in
    /// force, and a pass after an edit parses only the files that changed.
    kept: Option<KeptDir>,
    /// The store as the last pass left it, followed through the change log: a pass after an
    /// edit plans only the keys that changed (in the files or in the store) and those that
    /// overrides or the API hold.
    store: Option<Tracked>,
    /// The fingerprint of the last state applied, to tell drift from edits.
    last_applied: Option<String>,
    /// When the last pass started: overrides that expired before it were acted on by it.
    pub(super) last_pass: DateTime<Utc>,
    /// Why the last pass was refused, if it was: the same refusal on the next passes (a freeze
    /// of changes lasts days, a pass comes every minute) is not recorded and told again.
    last_refusal: Option<String>,
}

impl Passes {
    pub(super) fn new(
        db: Db,
        dir: StateDir,
        options: WatchOptions,
        metrics: WatchMetrics,
        clock: crate::clock::Clock,
    ) -> Passes {
        Passes {
            db,
            dir,
            options,
            metrics,
            clock,
            kept: None,
            store: None,
            last_applied: None,
            last_pass: DateTime::<Utc>::MIN_UTC,
            last_refusal: None,
        }
    }

    /// One pass, reported in one log line and in the metrics. A pass woken by an edit or an
    /// expiry follows the changes when it can (the files changed since the last pass, the rows
    /// the change log names); the first pass, the interval's and a retry reconcile everything.
    /// Both plan the whole difference between the files and the store as they are (the watch
    /// tests hold them equal), so the trigger chooses the cost, not the outcome: the interval's
    /// whole pass stays as the check that needs neither a file event nor the log to be right.
    pub(super) async fn pass(&mut self, trigger: Trigger) -> Result<Passed, PassError> {
        let started = Instant::now();
        let followed = match trigger {
            Trigger::Files | Trigger::Expiry => self.follow().await,
            Trigger::Start | Trigger::Interval | Trigger::Retry => None,
        };
        let result = match followed {
            Some(result) => result,
            None => self.reconcile().await,
        };
        self.report(trigger, &result, started.elapsed().as_millis());
        self.last_refusal = match &result {
            Err(PassError::Refused(refusal)) => Some(refusal.to_string()),
            _ => None,
        };
        result
    }

    /// The request every pass makes.
    fn request(&self) -> Request {
        Request {
            options: PlanOptions {
                prune: self.options.prune,
            },
            allow_mass_removal: self.options.allow_mass_removal,
            actor: self.options.actor.clone(),
            source: SOURCE.into(),
            during_freeze: self.options.during_freeze.clone(),
            recorded_refusal: self.last_refusal.clone(),
            ..Request::default()
        }
    }

    /// A pass at the cost of the change: parses the files that changed, reads the rows the
    /// store's change log names, plans the keys either touched (with those overrides and the
    /// API hold), and applies that plan if the store has not moved meanwhile. `None` when it
    /// cannot (nothing kept yet, invalid files, the store moved): the caller passes whole.
    pub(super) async fn follow(&mut self) -> Option<Result<Passed, PassError>> {
        let now = (self.clock)();
        self.store.as_ref()?;
        let started = Instant::now();
        let mut kept = self.kept.take()?;
        let followed = tokio::task::spawn_blocking(move || {
            let followed = kept.follow(now);
            (kept, followed)
        })
        .await;
        let followed = match followed {
            Ok((kept, followed)) => {
                self.kept = Some(kept);
                followed?
            }
            Err(_) => return None,
        };
        let files_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Err(e) = self.follow_store().await {
            return Some(Err(PassError::Store(e)));
        }
        let store_ms = started.elapsed().as_secs_f64() * 1e3 - files_ms;
        // A row left out of the copy (it does not decode) could be planned around, and written
        // twice: pass whole, which refuses it by name.
        let store = self.store.as_mut().filter(|s| s.complete())?;
        let kept = self.kept.as_ref()?;
        let mut keys = followed.touched;
        keys.extend(store.take_unsettled());
        let part = Part {
            desired: kept.part(&keys),
            actual: store.part(&keys),
            totals: store.totals(),
            store_fingerprint: store.fingerprint(),
            state_fingerprint: kept.fingerprint(),
            revision: store.revision(),
            windows: store.windows(),
        };
        self.last_pass = now;
        let outcome = match reconcile_part(&self.db, &part, &self.request(), now).await {
            Ok(Some(outcome)) => outcome,
            // Someone wrote between the change log's reading and the lock: pass whole.
            Ok(None) => return None,
            Err(e) => {
                self.store = None;
                return Some(Err(pass_error(e)));
            }
        };
        self.metrics.followed.inc();
        let apply_ms = started.elapsed().as_secs_f64() * 1e3 - files_ms - store_ms;
        // Where a followed pass spends its time, for whoever tunes it.
        tracing::debug!(
            files_ms,
            store_ms,
            apply_ms,
            parsed = followed.parsed,
            keys = part.desired.rules.len() + part.actual.rules.len(),
            "followed pass"
        );
        Some(self.finish(outcome, None, now).await.map(|passed| Passed {
            followed: true,
            ..passed
        }))
    }

    /// Reads the rows changed since the copy's revision. A change the log cannot name drops the
    /// copy: which keys changed is unknown, and the next pass is whole.
    async fn follow_store(&mut self) -> Result<(), StoreError> {
        if let Some(store) = self.store.as_mut()
            && store.follow(&self.db).await? == Followed::Unknown
        {
            self.store = None;
        }
        Ok(())
    }

    /// Keeps the copy of the store after a whole pass that applied a plan made from the store
    /// at `snapshot.read_at`, whose fingerprint was `planned_from`: the copy kept from earlier
    /// passes (checked against that fingerprint when it stands at that revision: the whole pass
    /// is also the check of the copy), or the store read whole. The whole plan covered every
    /// key as of its snapshot, so only what changed after it stays to be planned; when that
    /// cannot be known, the copy is dropped and the next pass is whole.
    async fn track(
        &self,
        kept: Option<Tracked>,
        snapshot: Snapshot,
        planned_from: &str,
    ) -> Result<Option<Tracked>, StoreError> {
        let kept = kept.filter(|t| {
            let differs = t.complete() && t.revision() == snapshot.read_at && t.fingerprint() != planned_from;
            if differs {
                tracing::warn!(
                    revision = snapshot.read_at,
                    "the watch loop's copy of the store differed from the store; reading it whole"
                );
            }
            !differs
        });
        match kept {
            Some(mut t) => {
                t.settle();
                let followed = t.follow(&self.db).await?;
                Ok((followed == Followed::Known || t.revision() == snapshot.written_at).then_some(t))
            }
            None => {
                let t = Tracked::load(&self.db).await?;
                Ok((t.revision() == snapshot.written_at).then_some(t))
            }
        }
    }

    /// Loads the directory whole (the last good state when it is invalid) and reconciles it.
    async fn reconcile(&mut self) -> Result<Passed, PassError> {
        let now = (self.clock)();
        self.last_pass = now;
        // Kept only through a pass that applies: after a failed or refused one, the next pass
        // is whole again (a refused removal must be refused again, not passed over).
        let kept = self.store.take();
        // Reading and parsing a large directory is blocking work: off the async threads, so a
        // server beside the loop keeps answering during a pass.
        let dir = self.dir.clone();
        let loaded = tokio::task::spawn_blocking(move || dir.load_to_follow(now))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Io {
                    path: self.dir.path.clone(),
                    source: std::io::Error::other(format!("the loading task failed: {e}")),
                })
            });
        // Invalid files fail the pass, yet the last good state is still enforced: drift is
        // healed and expired overrides are undone while someone fixes the files.
        let request = self.request();
        if let Err(e) = &loaded {
            // Told once per distinct error (its id is the error's digest), not every pass: the
            // summary line with every error kept, one a line, as the log says them.
            let mut said = e.to_string();
            if let LoadError::Invalid { errors, .. } = e {
                for error in errors {
                    said.push_str(&format!("\n{error}"));
                }
            }
            let told = Event::state_invalid(&said, &self.options.actor, now);
            if let Err(e) = self.db.tell(&[told]).await {
                tracing::warn!(error = %e, "cannot tell that the state is invalid");
            }
        }
        let (outcome, invalid) = match loaded {
            Ok(loaded) => {
                let outcome = reconcile(&self.db, &loaded.state, &request, now).await;
                let dir = self.dir.clone();
                self.kept = match loaded.origin {
                    Some(origin) => {
                        tokio::task::spawn_blocking(move || KeptDir::new(dir, loaded.state, origin))
                            .await
                            .ok()
                    }
                    None => None,
                };
                (outcome, None)
            }
            Err(e) => match &self.kept {
                Some(kept) => {
                    let state = kept.state();
                    (reconcile(&self.db, &state, &request, now).await, Some(e))
                }
                None => return Err(PassError::Invalid(e)),
            },
        };
        let outcome = outcome.map_err(pass_error)?;
        if let Some(snapshot) = outcome.snapshot {
            match self.track(kept, snapshot, &outcome.plan.store_fingerprint).await {
                Ok(tracked) => self.store = tracked,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the store's changes; the next pass reads it whole");
                }
            }
        }
        self.finish(outcome, invalid, now).await
    }

    /// What every pass does after applying: tells drift from edits, and forgets old idle runs.
    async fn finish(
        &mut self,
        outcome: Outcome,
        invalid: Option<LoadError>,
        now: DateTime<Utc>,
    ) -> Result<Passed, PassError> {
        let drifted = self.last_applied.as_deref() == Some(outcome.state_fingerprint.as_str())
            && outcome.plan.has_changes();
        self.last_applied = Some(outcome.state_fingerprint);
        if let (true, Some(run_id)) = (drifted, outcome.run_id)
            && let Err(e) = self.db.mark_drift(run_id).await
        {
            tracing::warn!(error = %e, "cannot mark run #{run_id} as correcting drift");
        }
        let before = now - self.options.idle_run_retention;
        if let Err(e) = self.db.forget_idle_runs(SOURCE, before).await {
            tracing::warn!(error = %e, "cannot forget old idle runs");
        }
        Ok(Passed {
            followed: false,
            plan: outcome.plan,
            run_id: outcome.run_id.unwrap_or_default(),
            drifted,
            invalid,
            next_expiry: self.next_expiry(now).await,
        })
    }

    /// Counts the pass and logs it in one line (invalid files' errors first, one a line).
    fn report(&self, trigger: Trigger, result: &Result<Passed, PassError>, ms: u128) {
        let m = &self.metrics;
        m.passes.inc();
        let invalid = match result {
            Ok(passed) => passed.invalid.as_ref(),
            Err(PassError::Invalid(e)) => Some(e),
            Err(_) => None,
        };
        if let Some(LoadError::Invalid { errors, .. }) = invalid {
            for error in errors {
                tracing::warn!("{error}");
            }
        }
        let trigger = trigger.as_str();
        match result {
            Ok(passed) => {
                let summary = passed.plan.summary();
                let changes = summary.changes() as u64;
                m.changes.inc_by(changes);
                if passed.drifted {
                    m.drift.inc_by(changes);
                }
                let what = match changes {
                    0 => "in sync".to_owned(),
                    n => format!(
                        "applied {n} change{} ({}){}",
                        if n == 1 { "" } else { "s" },
                        describe(&summary),
                        if passed.drifted { ", drift corrected" } else { "" }
                    ),
                };
                let run = passed.run_id;
                let followed = passed.followed;
                match &passed.invalid {
                    None => tracing::info!(trigger, run, ms, followed, "pass: {what}"),
                    Some(e) => {
                        m.failures.inc();
                        tracing::warn!(
                            trigger,
                            run,
                            ms,
                            "pass: {what}; {e}, so the last good state stays in force"
                        );
                    }
                }
            }
            Err(e @ PassError::LockHeld(_)) => {
                tracing::info!(trigger, ms, "pass: {e}; checking again shortly");
            }
            Err(e @ PassError::Invalid(_)) => {
                m.failures.inc();
                tracing::warn!(trigger, "pass rejected: {e}");
            }
            Err(e @ PassError::Refused(_)) => {
                m.failures.inc();
                tracing::warn!(trigger, ms, "pass refused: {e}");
            }
            Err(e @ PassError::Store(_)) => {
                m.failures.inc();
                tracing::warn!(trigger, ms, "pass failed: {e}; retrying");
            }
        }
    }

    /// When the next open override expires after `after` (an instant already in the past means
    /// at once): git's value must return then, not an interval later.
    pub(super) async fn next_expiry(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
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

fn pass_error(e: ReconcileError) -> PassError {
    match e {
        ReconcileError::Refused(refusal) => PassError::Refused(refusal),
        ReconcileError::Store(StoreError::LockHeld(waited)) => PassError::LockHeld(waited),
        ReconcileError::Store(e) => PassError::Store(e),
    }
}

/// `2 updated, 1 created`: the counts that are not zero.
fn describe(summary: &Summary) -> String {
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
    fn the_error_policy_retries_what_the_files_cannot_fix_and_waits_for_an_edit_otherwise() {
        let interval = Duration::from_secs(10);
        let store = || PassError::Store(StoreError::NotFound("x".into()));
        assert_eq!(
            error_policy(&store(), 1, interval),
            Action::Retry(Duration::from_millis(500))
        );
        assert_eq!(
            error_policy(&store(), 3, interval),
            Action::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            error_policy(&store(), 9, interval),
            Action::Retry(interval),
            "never later than the interval"
        );
        let busy = PassError::LockHeld(Duration::from_secs(15));
        assert_eq!(
            error_policy(&busy, 1, interval),
            Action::Retry(Duration::from_millis(500))
        );
        let refused = PassError::Refused(Refusal::StaleStore);
        assert_eq!(error_policy(&refused, 1, interval), Action::AwaitInterval);
        let invalid = PassError::Invalid(LoadError::Io {
            path: "state".into(),
            source: std::io::Error::other("gone"),
        });
        assert_eq!(error_policy(&invalid, 1, interval), Action::AwaitInterval);
    }
}
