//! Reconciling the server's state directory over HTTP: the admin `reconcile` action, and git's
//! values given back at once when overrides are lifted (or word that a reconcile is needed).

use serde::Serialize;

use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::plan::PlanOptions;
use crate::reconcile::{Outcome, ReconcileError, Request, reconcile};

/// Loads the server's `--state` directory and reconciles it as `caller`.
pub(super) async fn reconcile_state_dir(
    state: &AppState,
    caller: &Caller,
    dry_run: bool,
    prune: bool,
) -> Result<Outcome, ApiError> {
    let Some(dir) = state.state_dir.clone() else {
        return Err(ApiError::Unprocessable(
            "this server was started without a state directory (--state)".into(),
        ));
    };
    let now = state.now();
    // Loading a large state directory is CPU work: keep it off the request threads.
    let loaded = tokio::task::spawn_blocking(move || dir.load(now))
        .await
        .map_err(|e| ApiError::Unprocessable(format!("loading the state failed: {e}")))?;
    let loaded = loaded.map_err(|e| match e {
        crate::desired::LoadError::Invalid { errors, .. } => ApiError::Unprocessable(format!(
            "the desired state is invalid: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )),
        e => ApiError::Unprocessable(e.to_string()),
    })?;
    let request = Request {
        dry_run,
        options: PlanOptions { prune },
        actor: caller.name.to_string(),
        source: "api".into(),
        ..Request::default()
    };
    reconcile(&state.db, &loaded.state, &request, now)
        .await
        .map_err(|e| match e {
            ReconcileError::Refused(r) => ApiError::Unprocessable(r.to_string()),
            ReconcileError::Store(s) => s.into(),
        })
}

/// What lifting overrides did to the values they held.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Restored {
    /// How many overrides were lifted.
    pub cleared: u64,
    /// Whether git's values are back: this server reconciled its state directory.
    pub restored: bool,
    /// The run that gave them back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// What to do when they are not back yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// After `cleared` overrides were lifted: gives git's values back at once when this server knows
/// its state directory; otherwise says that a reconcile is needed. The mode needs nothing: the
/// effective mode follows git's as soon as its override is gone.
pub(super) async fn give_back(state: &AppState, caller: &Caller, cleared: u64) -> Restored {
    if cleared == 0 {
        return Restored {
            cleared,
            restored: true,
            run_id: None,
            next: None,
        };
    }
    let needed = |why: String| Restored {
        cleared,
        restored: false,
        run_id: None,
        next: Some(why),
    };
    if state.state_dir.is_none() {
        return needed(
            "git's values return at the next reconcile (`valhalla-ops reconcile`); this server has no --state to run one"
                .into(),
        );
    }
    match reconcile_state_dir(state, caller, false, false).await {
        Ok(outcome) => Restored {
            cleared,
            restored: true,
            run_id: outcome.run_id,
            next: None,
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot reconcile after lifting overrides");
            needed(format!(
                "git's values return at the next reconcile: this one failed: {e}"
            ))
        }
    }
}
