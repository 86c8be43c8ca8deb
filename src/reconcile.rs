//! Reconcile: plan the desired state against a store snapshot and apply it under the lock.

use chrono::{DateTime, Utc};

use crate::desired::DesiredState;
use crate::mode::ChangeFreeze;
use crate::model::{Actual, Window};
use crate::plan::render::PlanDocument;
use crate::plan::{MassRemoval, Plan, PlanOptions, Totals, plan, plan_part};
use crate::store::{Applied, ApplyError, Db, RunMeta, StoreError};

/// What a reconcile is asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Plan only; write nothing.
    pub dry_run: bool,
    pub options: PlanOptions,
    /// Let the plan remove more than half of a kind.
    pub allow_mass_removal: bool,
    /// Apply exactly this saved plan, or nothing.
    pub saved: Option<PlanDocument>,
    /// Recorded with the run: who asked.
    pub actor: String,
    /// Recorded with the run: `cli`, `watch`, `api`.
    pub source: String,
    /// Apply although a freeze of changes is open, for this reason (recorded in the run and
    /// the audit).
    pub during_freeze: Option<String>,
    /// A refusal already recorded (a watch loop's last): the same refusal again is returned
    /// but not recorded, nor told, a second time.
    pub recorded_refusal: Option<String>,
}

impl Request {
    /// The options the plan is made with: a saved plan's own, else the request's.
    fn plan_options(&self) -> PlanOptions {
        self.saved.as_ref().map_or(self.options, |saved| saved.options)
    }
}

/// Why a plan was not applied although the store works.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("refusing to remove {}; if this is intended, run again with --allow-mass-removal", describe(.0))]
    MassRemoval(Vec<MassRemoval>),
    #[error(
        "the saved plan is stale: the store has changed since it was computed; nothing was applied, make a new plan"
    )]
    StaleStore,
    #[error("the saved plan was computed from another desired state; nothing was applied, make a new plan")]
    StaleState,
    #[error("{}; nothing was applied", crate::plan::render::freeze_line(.0))]
    Frozen(ChangeFreeze),
}

fn describe(removals: &[MassRemoval]) -> String {
    removals
        .iter()
        .map(|m| format!("{} of {} {}", m.removing, m.total, m.kind.title().to_lowercase()))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ApplyError<Refusal>> for ReconcileError {
    fn from(e: ApplyError<Refusal>) -> Self {
        match e {
            ApplyError::Refused(r) => ReconcileError::Refused(r),
            ApplyError::Store(s) => ReconcileError::Store(s),
        }
    }
}

/// What a reconcile did.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    /// The fingerprint of the desired state the plan was computed from.
    pub state_fingerprint: String,
    /// The recorded run, when the plan was applied.
    pub run_id: Option<i64>,
    /// Where the whole plan applied stands in the change log (`None` for a dry run or a part).
    pub snapshot: Option<Snapshot>,
}

impl Outcome {
    /// A whole plan applied, from the desired state of `state_fingerprint`.
    fn applied(applied: Applied, state_fingerprint: String) -> Outcome {
        Outcome {
            plan: applied.plan,
            state_fingerprint,
            run_id: Some(applied.run_id),
            snapshot: Some(Snapshot {
                read_at: applied.revision,
                written_at: applied.written,
            }),
        }
    }
}

/// Where in the change log an applied plan stands, for a caller that follows the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's revision when it was read (it is at least that new).
    pub read_at: i64,
    /// The store's revision once the plan was written.
    pub written_at: i64,
}

/// A plan of part of the resources, from a desired state and a snapshot kept between passes:
/// `desired` and `actual` hold the entries of the same keys (see [`plan_part`]).
#[derive(Debug)]
pub struct Part {
    pub desired: DesiredState,
    pub actual: Actual,
    /// The whole store's.
    pub totals: Totals,
    /// The whole store's.
    pub store_fingerprint: String,
    /// The whole desired state's.
    pub state_fingerprint: String,
    /// The store revision the snapshot is exact at.
    pub revision: i64,
    /// Every stored window at that revision, for the freeze of changes.
    pub windows: Vec<Window>,
}

/// Records a refused plan as a run (the status page and the runs list show it), unless `request`
/// says it is recorded already, and returns the refusal as the reconcile's error. A failure to
/// record it is logged: the refusal still stands.
async fn refused(store: &Db, meta: &RunMeta, request: &Request, refusal: Refusal) -> ReconcileError {
    let said = refusal.to_string();
    if request.recorded_refusal.as_ref() != Some(&said)
        && let Err(e) = store.record_refusal(meta, &said).await
    {
        tracing::warn!(error = %e, "cannot record the refused run");
    }
    refusal.into()
}

/// Refuses a plan that removes too much unless allowed.
pub fn guard(plan: &Plan, allow_mass_removal: bool) -> Result<(), Refusal> {
    if plan.mass_removals.is_empty() || allow_mass_removal {
        Ok(())
    } else {
        Err(Refusal::MassRemoval(plan.mass_removals.clone()))
    }
}

/// [`guard`], then refuses a plan that an open freeze of changes holds back, unless the request
/// gives a reason to apply during it.
fn guard_all(plan: &Plan, request: &Request) -> Result<(), Refusal> {
    guard(plan, request.allow_mass_removal)?;
    match &plan.frozen_by {
        Some(freeze) if request.during_freeze.is_none() => Err(Refusal::Frozen(freeze.clone())),
        _ => Ok(()),
    }
}

/// The dry run of `request`: the plan of `desired` against `actual`, a snapshot already read.
pub fn planned(desired: &DesiredState, actual: &Actual, request: &Request, now: DateTime<Utc>) -> Outcome {
    planned_with(desired, actual, actual.fingerprint(), request, now)
}

/// [`planned`] with the store's fingerprint given (a digest of every item, which a caller can
/// compute beside other work). The state's is computed on a thread of its own beside the plan:
/// both only read the state, and on the dry run's path they would run one after the other.
pub fn planned_with(
    desired: &DesiredState,
    actual: &Actual,
    store_fingerprint: String,
    request: &Request,
    now: DateTime<Utc>,
) -> Outcome {
    let (plan, state_fingerprint) = plan_with(desired, actual, store_fingerprint, request.options, now);
    Outcome {
        plan,
        state_fingerprint,
        run_id: None,
        snapshot: None,
    }
}

/// The whole plan of `desired` against `actual`, whose fingerprint is given, and the desired
/// state's fingerprint, made on a thread of its own beside the plan.
fn plan_with(
    desired: &DesiredState,
    actual: &Actual,
    store_fingerprint: String,
    options: PlanOptions,
    now: DateTime<Utc>,
) -> (Plan, String) {
    std::thread::scope(|scope| {
        let state_fingerprint = scope.spawn(|| desired.fingerprint());
        let totals = crate::plan::Totals::of(actual);
        let plan = crate::plan::plan_part(desired, actual, totals, store_fingerprint, now, options);
        let state_fingerprint = state_fingerprint
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (plan, state_fingerprint)
    })
}

/// A snapshot read before the lock (while the files load): the store as a plan sees it, its
/// fingerprint, and the revision it is exact at.
#[derive(Debug)]
pub struct Read {
    pub actual: Actual,
    pub store_fingerprint: String,
    pub revision: i64,
}

/// [`reconcile`] on a snapshot read before the lock: the plan is made from `read` before the
/// lock is taken, and applied if the store is still at `read`'s revision once it is held (the
/// check the watch loop trusts). If anyone wrote in between, nothing of that plan is written:
/// the store is read again under the lock, as [`reconcile`] does.
pub async fn reconcile_read(
    store: &Db,
    desired: &DesiredState,
    read: Read,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Outcome, ReconcileError> {
    if request.dry_run {
        return Ok(planned_with(
            desired,
            &read.actual,
            read.store_fingerprint,
            request,
            now,
        ));
    }
    let (plan, state_fingerprint) = plan_with(
        desired,
        &read.actual,
        read.store_fingerprint,
        request.plan_options(),
        now,
    );
    drop(read.actual);
    let meta = run_meta(request, now, &state_fingerprint);
    if let Err(refusal) = check_saved_state(request, &state_fingerprint) {
        return Err(refused(store, &meta, request, refusal).await);
    }
    let applied = store
        .apply_at(meta.clone(), read.revision, || {
            decided(plan, request, &state_fingerprint)
        })
        .await;
    match applied {
        Ok(Some(applied)) => Ok(Outcome::applied(applied, state_fingerprint)),
        Ok(None) => {
            tracing::debug!("the store changed since it was read; planning again under the lock");
            reconcile(store, desired, request, now).await
        }
        Err(ApplyError::Refused(refusal)) => Err(refused(store, &meta, request, refusal).await),
        Err(e) => Err(e.into()),
    }
}

/// What a run of `request` records about itself.
fn run_meta(request: &Request, now: DateTime<Utc>, state_fingerprint: &str) -> RunMeta {
    RunMeta {
        actor: request.actor.clone(),
        source: request.source.clone(),
        started_at: now,
        state_fingerprint: state_fingerprint.to_owned(),
        during_freeze: request.during_freeze.clone(),
    }
}

/// Refuses a saved plan computed from another desired state.
fn check_saved_state(request: &Request, state_fingerprint: &str) -> Result<(), Refusal> {
    match &request.saved {
        Some(saved) if saved.state_fingerprint != state_fingerprint => Err(Refusal::StaleState),
        _ => Ok(()),
    }
}

/// `plan`, made under the lock or checked to be still the store's, if `request` may apply it:
/// a saved plan must be this plan, and the guards must pass.
fn decided(plan: Plan, request: &Request, state_fingerprint: &str) -> Result<Plan, Refusal> {
    if let Some(saved) = &request.saved {
        // The same store and the same state give the same plan, unless an override
        // expired in between: compare the changes too.
        let fresh = PlanDocument::new(&plan, state_fingerprint.to_owned());
        if fresh.store_fingerprint != saved.store_fingerprint || fresh.changes != saved.changes {
            return Err(Refusal::StaleStore);
        }
    }
    guard_all(&plan, request)?;
    Ok(plan)
}

/// Plans `desired` against the store and, unless a dry run, applies it in one transaction.
/// A dry run returns its plan even when [`guard`] would refuse to apply it, so that the caller
/// can show what would be removed before failing.
pub async fn reconcile(
    store: &Db,
    desired: &DesiredState,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Outcome, ReconcileError> {
    if request.dry_run {
        return Ok(planned(desired, &store.snapshot().await?, request, now));
    }
    let state_fingerprint = desired.fingerprint();
    let meta = run_meta(request, now, &state_fingerprint);
    if let Err(refusal) = check_saved_state(request, &state_fingerprint) {
        return Err(refused(store, &meta, request, refusal).await);
    }
    let options = request.plan_options();
    let applied = store
        .apply(meta.clone(), |actual| {
            decided(plan(desired, actual, now, options), request, &state_fingerprint)
        })
        .await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(ApplyError::Refused(refusal)) => return Err(refused(store, &meta, request, refusal).await),
        Err(e) => return Err(e.into()),
    };
    Ok(Outcome::applied(applied, state_fingerprint))
}

/// Plans `part` and applies it in one transaction, provided the store is still at the part's
/// revision once the lock is held: then every key outside the part is as the caller knows it,
/// and the plan is the whole plan. `Ok(None)` when the store moved: nothing was written.
pub async fn reconcile_part(
    store: &Db,
    part: &Part,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Option<Outcome>, ReconcileError> {
    let meta = run_meta(request, now, &part.state_fingerprint);
    let applied = store
        .apply_at(meta.clone(), part.revision, || {
            let mut plan = plan_part(
                &part.desired,
                &part.actual,
                part.totals,
                part.store_fingerprint.clone(),
                now,
                request.options,
            );
            // The part holds only the windows it touches: the freeze is the whole store's.
            plan.freeze_at(crate::mode::freeze_among(part.windows.iter(), now), now);
            guard_all(&plan, request)?;
            Ok(plan)
        })
        .await;
    match applied {
        Ok(Some(applied)) => Ok(Some(Outcome {
            plan: applied.plan,
            state_fingerprint: part.state_fingerprint.clone(),
            run_id: Some(applied.run_id),
            snapshot: None,
        })),
        Ok(None) => Ok(None),
        Err(ApplyError::Refused(refusal)) => Err(refused(store, &meta, request, refusal).await),
        Err(e) => Err(e.into()),
    }
}
