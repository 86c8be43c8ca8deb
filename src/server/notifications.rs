//! The notifications outbox, read back: the most recent events, newest first, each with its
//! deliveries.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Reader;
use super::{ApiError, AppState};
use crate::store::{DeliveryRecord, EventRecord};

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

/// An event and how it went to each sink that takes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Notification {
    #[serde(flatten)]
    pub record: EventRecord,
    /// One per sink that takes the event, by sink name; empty before the event is fanned out
    /// (within a second) or when no sink takes it.
    pub deliveries: Vec<DeliveryRecord>,
}

/// `GET /system/notifications` (reader): the most recent events and their delivery.
#[utoipa::path(get, path = "/system/notifications", operation_id = "list_notifications", tag = "notifications", security(("api_key" = [])), params(NotificationsQuery), responses((status = 200, description = "Recent events, newest first, each with its deliveries", body = [Notification])))]
pub async fn notifications(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(query): Query<NotificationsQuery>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    let limit = super::params::recent(query.limit, 100)?;
    let events = state.db.events(limit).await?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let mut by_event: std::collections::HashMap<i64, Vec<DeliveryRecord>> = std::collections::HashMap::new();
    for (seq, delivery) in state.db.deliveries_of(&seqs).await? {
        by_event.entry(seq).or_default().push(delivery);
    }
    Ok(Json(
        events
            .into_iter()
            .map(|record| Notification {
                deliveries: by_event.remove(&record.seq).unwrap_or_default(),
                record,
            })
            .collect(),
    ))
}
