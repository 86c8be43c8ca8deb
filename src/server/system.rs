//! Health, readiness, the effective maintenance state, overrides and reconcile runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::{ApiError, AppState, expiry};
use crate::domain::Mode;
use crate::mode::{EffectiveMode, effective};
use crate::model::Override;
use crate::store::{ApiChange, FlagRecord, RunRecord, Store as _};

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process answers", body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// `GET /readyz`: the database answers too.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "The database answers", body = Object), (status = 503, description = "The database does not answer", body = ErrorBody)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    // Within the second a readiness probe usually allows, whatever the database does.
    tokio::time::timeout(READY_TIMEOUT, state.db.ping())
        .await
        .map_err(|_| ApiError::Unavailable(crate::store::StoreError::Database(sqlx::Error::PoolTimedOut)))?
        .map_err(ApiError::Unavailable)?;
    Ok(Json(
        serde_json::json!({ "status": "ready", "backend": crate::store::Store::backend(&state.db) }),
    ))
}

/// `GET /system/maintenance/state` (public): the mode in force and where it comes from.
#[utoipa::path(get, path = "/system/maintenance/state", tag = "maintenance", responses((status = 200, description = "The effective mode", body = EffectiveMode)))]
pub async fn maintenance_state(State(state): State<Arc<AppState>>) -> Result<Json<EffectiveMode>, ApiError> {
    let view = state.replica.view().await?;
    Ok(Json(effective(&view.maintenance, state.now())))
}

/// An override as listed, with whether it still holds.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OverrideView {
    #[serde(flatten)]
    pub inner: Override,
    pub active: bool,
}

/// `GET /system/overrides` (reader): overrides not cleared, expired ones marked inactive.
#[utoipa::path(get, path = "/system/overrides", tag = "overrides", security(("api_key" = [])), responses((status = 200, description = "Overrides not cleared", body = [OverrideView])))]
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

/// `DELETE /system/overrides/{id}` (operator): lift an override; the next reconcile restores git.
#[utoipa::path(delete, path = "/system/overrides/{id}", tag = "overrides", security(("api_key" = [])), params(("id" = i64, Path, description = "Override id")), responses((status = 204, description = "Cleared"), (status = 404, description = "No open override", body = ErrorBody)))]
pub async fn clear_override(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    match state
        .db
        .clear_overrides(Some(id), caller.name.as_str(), "api", state.now())
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(crate::store::StoreError::NoSuchOverride(id)) => Err(ApiError::NotFound(format!(
            "override #{id} does not exist or is already cleared"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Query of `GET /system/reconcile/runs`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// How many runs, newest first (1..=1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /system/reconcile/runs` (reader): the most recent reconcile runs.
#[utoipa::path(get, path = "/system/reconcile/runs", tag = "reconcile", security(("api_key" = [])), params(RunsQuery), responses((status = 200, description = "Recent runs, newest first", body = [RunRecord])))]
pub async fn runs(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and 1000, not {limit}"
        )));
    }
    Ok(Json(state.db.runs(limit).await?))
}

/// Body of `POST /system/maintenance/state/{mode}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// Why; shown in the state and in every plan while the override holds.
    reason: Option<String>,
    /// How long the override lasts; without it, until cleared.
    #[schema(minimum = 1, maximum = 31536000)]
    ttl_seconds: Option<i64>,
}

/// `POST /system/maintenance/state/{mode}` (operator): set the mode now, as an override that
/// the reconciler holds until it expires or is cleared. Returns the effective state.
#[utoipa::path(post, path = "/system/maintenance/state/{mode}", tag = "maintenance", security(("api_key" = [])), params(("mode" = Mode, Path, description = "normal, maintenance or read_only")), request_body = ModeBody, responses((status = 200, description = "The effective mode after the change", body = EffectiveMode), (status = 422, description = "Unknown mode or no reason", body = ErrorBody)))]
pub async fn set_mode(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(mode): Path<String>,
    Json(body): Json<ModeBody>,
) -> Result<Json<EffectiveMode>, ApiError> {
    let mode: Mode = mode
        .parse()
        .map_err(|e: crate::domain::ParseError| ApiError::Unprocessable(e.0))?;
    let reason = body.reason.filter(|r| !r.trim().is_empty());
    if reason.is_none() {
        return Err(ApiError::Unprocessable(
            "a `reason` is required to set the maintenance mode".into(),
        ));
    }
    let now = state.now();
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason,
        expires_at: expiry(body.ttl_seconds, now)?,
        now,
        group_id: None,
    };
    state.db.set_mode(mode, &change).await?;
    Ok(Json(effective(&state.db.maintenance().await?, now)))
}

/// `GET /system/feature-flags` (reader): every flag by name.
#[utoipa::path(get, path = "/system/feature-flags", tag = "flags", security(("api_key" = [])), responses((status = 200, description = "Every flag", body = [FlagRecord])))]
pub async fn flags(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
) -> Result<Json<Vec<FlagRecord>>, ApiError> {
    Ok(Json(state.db.flags().await?))
}
