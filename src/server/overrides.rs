//! Emergency overrides: listing them, and lifting one so that git's value returns.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::restore::Restored;
use super::{ApiError, AppState};
use crate::domain::Reason;
use crate::model::Override;
use crate::store::Lifting;

/// Served in every mode: listing and lifting overrides is the way out of a freeze.
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] =
    &[crate::enforce::Paths::AndBelow("/system/overrides")];

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_overrides))
        .routes(routes!(clear_override))
}

/// An override as listed, with whether it still holds.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OverrideView {
    #[serde(flatten)]
    pub inner: Override,
    pub active: bool,
}

/// `GET /system/overrides` (reader): overrides not cleared, expired ones marked inactive.
#[utoipa::path(get, path = "/system/overrides", operation_id = "list_overrides", tag = "overrides", security(("api_key" = [])), responses((status = 200, description = "Overrides not cleared", body = [OverrideView])))]
pub async fn list_overrides(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
) -> Result<Json<Vec<OverrideView>>, ApiError> {
    let now = state.now();
    let overrides = state.db.open_overrides().await?;
    Ok(Json(
        overrides
            .into_iter()
            .map(|o| OverrideView {
                active: o.is_active(now),
                inner: o,
            })
            .collect(),
    ))
}

/// Why an override is lifted.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiftQuery {
    /// Recorded in the audit log with the lift.
    reason: Option<Reason>,
    /// Lift every override of this one's group (a lockdown) with it.
    #[serde(default)]
    group: bool,
}

/// `DELETE /system/overrides/{id}` (operator): lift an override (with the others of its group,
/// for a lockdown's). On a server with `--state`, git's value comes back at once (a reconcile of
/// the state directory); otherwise the answer says that a reconcile is needed.
#[utoipa::path(delete, path = "/system/overrides/{id}", operation_id = "clear_override", tag = "overrides", security(("api_key" = [])), params(("id" = i64, Path, description = "Override id"), LiftQuery), responses((status = 200, description = "Cleared, and whether git's value is back", body = Restored), (status = 404, description = "No open override", body = ErrorBody)))]
pub async fn clear_override(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
    Query(query): Query<LiftQuery>,
) -> Result<Json<Restored>, ApiError> {
    let lift = crate::store::Lift {
        actor: caller.name.as_str(),
        source: "api",
        reason: query
            .reason
            .as_ref()
            .map(Reason::as_str)
            .filter(|r| !r.trim().is_empty()),
        now: state.now(),
    };
    let which = if query.group {
        Lifting::WithItsGroup(id)
    } else {
        Lifting::One(id)
    };
    let cleared = match state.db.clear_overrides(which, &lift).await {
        Ok(n) => n,
        Err(crate::store::StoreError::NoSuchOverride(id)) => {
            return Err(ApiError::NotFound(format!(
                "override #{id} does not exist or is already cleared"
            )));
        }
        Err(e) => return Err(e.into()),
    };
    Ok(Json(super::restore::give_back(&state, &caller, cleared).await))
}
