//! Health and readiness: is the process up, and does its database answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Served in every mode (a probe must see a frozen replica as alive and ready).
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] = &[
    crate::enforce::Paths::Exactly("/healthz"),
    crate::enforce::Paths::Exactly("/readyz"),
];

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", operation_id = "check_liveness", tag = "health", responses((status = 200, description = "The process answers", body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(900);

/// `GET /readyz`: the database answers too. While the shared rate-limit counters are
/// unreachable the replica still serves (each rule follows its `on_outage` policy): the answer
/// is 200 with `"status": "degraded"`, so a load balancer keeps it and a person sees why.
#[utoipa::path(get, path = "/readyz", operation_id = "check_readiness", tag = "health", responses((status = 200, description = "The database answers: `ready`, or `degraded` while the shared counters are unreachable", body = Object), (status = 503, description = "The database does not answer", body = ErrorBody)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    // Within the second a readiness probe usually allows, whatever the database does.
    tokio::time::timeout(READY_TIMEOUT, state.db.ping())
        .await
        .map_err(|_| ApiError::Unavailable(crate::store::StoreError::Database(sqlx::Error::PoolTimedOut)))?
        .map_err(ApiError::Unavailable)?;
    crate::outage::store_answered();
    let counters = state.replica.counting.health();
    let status = if counters.reachable { "ready" } else { "degraded" };
    Ok(Json(serde_json::json!({
        "status": status,
        "backend": state.db.backend(),
        "counters": counters,
    })))
}
