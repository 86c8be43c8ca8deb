//! The maintenance mode: the effective state (public) and setting it (an override).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Operator;
use super::error::ErrorBody;
use super::json::Object;
use super::params::expiry;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::{Mode, Reason};
use crate::mode::{EffectiveMode, Source, effective};
use crate::store::{ApiChange, Lift, Lifting, StoreError};

/// Served in every mode: reading the mode and setting it is the way out of a freeze.
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] =
    &[crate::enforce::Paths::AndBelow("/system/maintenance/state")];

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(maintenance_state))
        .routes(routes!(set_mode))
}

/// `GET /system/maintenance/state` (public): the mode in force and where it comes from.
#[utoipa::path(get, path = "/system/maintenance/state", operation_id = "get_maintenance_state", tag = "maintenance", responses((status = 200, description = "The effective mode", body = EffectiveMode)))]
pub async fn maintenance_state(State(state): State<Arc<AppState>>) -> Result<Json<EffectiveMode>, ApiError> {
    let view = state.replica.view().await?;
    Ok(Json(effective(&view.maintenance, state.now())))
}

/// Body of `POST /system/maintenance/state/{mode}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// Why; shown in the state and in every plan while the override holds.
    #[schema(value_type = String, required = true, min_length = 1, pattern = "\\S")]
    reason: Option<Reason>,
    /// How long the override lasts; without it, until cleared.
    #[schema(minimum = 1, maximum = 31536000)]
    #[serde(default, deserialize_with = "super::json::whole::optional")]
    ttl_seconds: Option<i64>,
}

/// What setting the mode did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ModeSet {
    #[serde(flatten)]
    state: EffectiveMode,
    /// The override that holds the mode now: `DELETE /system/overrides/{id}` lifts it. Absent
    /// when git's own mode is in force (nothing holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    override_id: Option<i64>,
    /// Whether git's mode is in force again: asking for the mode git declares lifts the
    /// overrides that held another one, rather than pinning git's value in an override of its
    /// own (which would outlast git's next change and every window).
    restored: bool,
    /// The overrides this call lifted.
    lifted: Vec<i64>,
}

/// When `mode` is the one git declares and no window decides the mode now: lifts the overrides
/// that hold another (audited with `reason`) and pins nothing, so git's mode is in force again;
/// `None` otherwise (setting the mode is then an override).
pub(super) async fn restore_git_mode(
    state: &AppState,
    caller: &Caller,
    mode: Mode,
    reason: Option<&str>,
) -> Result<Option<ModeSet>, ApiError> {
    let now = state.now();
    let inputs = state.db.maintenance().await?;
    if mode != inputs.git.mode || effective(&inputs, now).source == Source::Window {
        return Ok(None);
    }
    let lift = Lift {
        actor: caller.name.as_str(),
        source: "api",
        reason,
        now,
    };
    let mut lifted = Vec::new();
    for hold in inputs.overrides.iter().filter(|o| o.is_active(now)) {
        match state.db.clear_overrides(Lifting::One(hold.id), &lift).await {
            // Lifted meanwhile by someone else: git's mode is back all the same.
            Ok(_) | Err(StoreError::NoSuchOverride(_)) => lifted.push(hold.id),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(ModeSet {
        state: effective(&state.db.maintenance().await?, now),
        override_id: None,
        restored: true,
        lifted,
    }))
}

/// `POST /system/maintenance/state/{mode}` (operator): set the mode now, as an override that
/// the reconciler holds until it expires or is cleared. Asking for the mode git declares while
/// no window is open lifts the mode's overrides instead (`restored: true`): git's mode comes
/// back and nothing pins it. Returns the effective state.
#[utoipa::path(post, path = "/system/maintenance/state/{mode}", operation_id = "set_maintenance_mode", tag = "maintenance", security(("api_key" = [])), params(("mode" = Mode, Path, description = "normal, maintenance or read_only")), request_body = ModeBody, responses((status = 200, description = "The effective mode after the change, and the override that holds it, or the overrides lifted to give git's mode back", body = ModeSet), (status = 422, description = "Unknown mode or no reason", body = ErrorBody)))]
pub async fn set_mode(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(mode): Path<String>,
    Object(body): Object<ModeBody>,
) -> Result<Json<ModeSet>, ApiError> {
    let mode: Mode = mode
        .parse()
        .map_err(|e: crate::domain::ParseError| ApiError::Unprocessable(e.0))?;
    let reason = body
        .reason
        .map(Reason::into_string)
        .filter(|r| !r.trim().is_empty());
    if reason.is_none() {
        return Err(ApiError::Unprocessable(
            "a `reason` is required to set the maintenance mode".into(),
        ));
    }
    let now = state.now();
    let expires_at = expiry(body.ttl_seconds, now)?;
    if let Some(restored) = restore_git_mode(&state, &caller, mode, reason.as_deref()).await? {
        return Ok(Json(restored));
    }
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason,
        expires_at,
        now,
        group_id: None,
    };
    let hold = state.db.set_mode(mode, &change).await?;
    Ok(Json(ModeSet {
        state: effective(&state.db.maintenance().await?, now),
        override_id: Some(hold.id),
        restored: false,
        lifted: Vec::new(),
    }))
}
