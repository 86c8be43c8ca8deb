//! The notifications outbox, read back: the most recent events, newest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Reader;
use super::{ApiError, AppState};
use crate::store::EventRecord;

/// What happened is readable in every mode: the people on call read it most during a freeze.
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] =
    &[crate::enforce::Paths::Exactly("/system/notifications")];

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(notifications))
}

/// Query of `GET /system/notifications`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationsQuery {
    /// How many events, newest first (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /system/notifications` (reader): the most recent events.
#[utoipa::path(get, path = "/system/notifications", operation_id = "list_notifications", tag = "notifications", security(("api_key" = [])), params(NotificationsQuery), responses((status = 200, description = "Recent events, newest first", body = [EventRecord])))]
pub async fn notifications(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(query): Query<NotificationsQuery>,
) -> Result<Json<Vec<EventRecord>>, ApiError> {
    let limit = super::params::recent(query.limit, 100)?;
    Ok(Json(state.db.events(limit).await?))
}
