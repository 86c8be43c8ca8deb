//! Maintenance windows: scheduled over HTTP (owned by the API) and listed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::json::Object;
use super::params::page;
use super::{ApiError, AppState};
use crate::domain::{WindowMode, WindowName, parse_time};
use crate::model::Window;
use crate::store::WindowRecord;
use crate::store::{ApiChange, WindowFilter};

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(list, create))
}

/// Query of `GET /system/maintenance/windows`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowsQuery {
    active: Option<bool>,
    /// Only windows that have not started yet.
    upcoming: Option<bool>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /system/maintenance/windows` (reader): windows by start.
#[utoipa::path(get, path = "/system/maintenance/windows", operation_id = "list_windows", tag = "maintenance", security(("api_key" = [])), params(WindowsQuery), responses((status = 200, description = "Windows by start", body = [WindowRecord])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(q): Query<WindowsQuery>,
) -> Result<Json<Vec<WindowRecord>>, ApiError> {
    let starts_after = q.upcoming.filter(|u| *u).map(|_| state.now());
    let filter = WindowFilter {
        active: q.active,
        starts_after,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.windows(&filter).await?))
}

fn maintenance() -> WindowMode {
    WindowMode::Maintenance
}

/// Body of `POST /system/maintenance/windows`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// Generated when absent.
    name: Option<WindowName>,
    /// RFC 3339 with an offset.
    #[schema(format = DateTime)]
    starts_at: String,
    /// RFC 3339 with an offset; after `starts_at`.
    #[schema(format = DateTime)]
    ends_at: String,
    #[serde(default = "maintenance")]
    mode: WindowMode,
    #[serde(default)]
    description: String,
}

/// `POST /system/maintenance/windows` (operator): schedule a window; 422 unless ends_at > starts_at.
#[utoipa::path(post, path = "/system/maintenance/windows", operation_id = "create_window", tag = "maintenance", security(("api_key" = [])), request_body = WindowBody, responses((status = 201, description = "Scheduled", body = WindowRecord), (status = 409, description = "The name is taken", body = ErrorBody), (status = 422, description = "ends_at is not after starts_at, or a time has no offset", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Object(body): Object<WindowBody>,
) -> Result<(StatusCode, Json<WindowRecord>), ApiError> {
    let invalid = |e: crate::domain::ParseError| ApiError::Unprocessable(e.0);
    let starts_at = parse_time(&body.starts_at).map_err(invalid)?;
    let ends_at = parse_time(&body.ends_at).map_err(invalid)?;
    if ends_at <= starts_at {
        return Err(ApiError::Unprocessable("ends_at must be after starts_at".into()));
    }
    let name = match body.name {
        Some(name) => name,
        None => generated_name(starts_at).map_err(invalid)?,
    };
    let window = Window {
        name,
        starts_at,
        ends_at,
        mode: body.mode,
        active: true,
        description: body.description,
    };
    let now = state.now();
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason: None,
        expires_at: None,
        now,
        group_id: None,
    };
    Ok((
        StatusCode::CREATED,
        Json(state.db.create_window(&window, &change).await?),
    ))
}

/// `api-20261201-0200-3f9a`: when it starts, and a random suffix so names never collide.
fn generated_name(starts_at: chrono::DateTime<chrono::Utc>) -> Result<WindowName, crate::domain::ParseError> {
    let mut suffix = [0u8; 2];
    getrandom::fill(&mut suffix).map_err(|e| crate::domain::ParseError(e.to_string()))?;
    WindowName::parse(format!(
        "api-{}-{:02x}{:02x}",
        starts_at.format("%Y%m%d-%H%M"),
        suffix[0],
        suffix[1]
    ))
}
