//! Feature flags, as the store holds them.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Reader;
use super::{ApiError, AppState};
use crate::store::FlagRecord;

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(flags))
}

/// `GET /system/feature-flags` (reader): every flag by name.
#[utoipa::path(get, path = "/system/feature-flags", operation_id = "list_feature_flags", tag = "flags", security(("api_key" = [])), responses((status = 200, description = "Every flag", body = [FlagRecord])))]
pub async fn flags(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
) -> Result<Json<Vec<FlagRecord>>, ApiError> {
    Ok(Json(state.db.flags().await?))
}
