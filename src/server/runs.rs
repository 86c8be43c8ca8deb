//! Reconcile runs: the most recent ones, with who ran them and what changed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Reader;
use super::{ApiError, AppState};
use crate::store::RunRecord;

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(runs))
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
#[utoipa::path(get, path = "/system/reconcile/runs", operation_id = "list_reconcile_runs", tag = "reconcile", security(("api_key" = [])), params(RunsQuery), responses((status = 200, description = "Recent runs, newest first", body = [RunRecord])))]
pub async fn runs(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Vec<RunRecord>>, ApiError> {
    let limit = super::params::recent(query.limit, 50)?;
    Ok(Json(state.db.runs(limit).await?))
}
