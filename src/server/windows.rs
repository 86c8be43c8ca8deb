//! Maintenance windows: scheduled over HTTP (owned by the API) and listed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::json::Object;
use super::params::page;
use super::{ApiError, AppState};

use crate::calendar::{Form, FormError, Interval, Length, Schedule, When, Zone};
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

/// A window as the API shows it: the stored record and its next occurrences.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WindowListed {
    #[serde(flatten)]
    record: WindowRecord,
    /// The next three intervals it holds (the one open now first), merged where occurrences
    /// overlap; none for an inactive window or one that is over.
    next: Vec<Interval>,
}

/// How many occurrences a listed window shows.
const NEXT: usize = 3;

fn listed(record: WindowRecord, now: DateTime<Utc>) -> WindowListed {
    let next = match record.window.active {
        true => record.window.when.next(now, NEXT),
        false => Vec::new(),
    };
    WindowListed { record, next }
}

/// `GET /system/maintenance/windows` (reader): one-off windows by start, then recurring ones by
/// name, each with its next occurrences.
#[utoipa::path(get, path = "/system/maintenance/windows", operation_id = "list_windows", tag = "maintenance", security(("api_key" = [])), params(WindowsQuery), responses((status = 200, description = "Windows: one-off ones by start, then recurring ones", body = [WindowListed])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(q): Query<WindowsQuery>,
) -> Result<Json<Vec<WindowListed>>, ApiError> {
    let now = state.now();
    let starts_after = q.upcoming.filter(|u| *u).map(|_| now);
    let filter = WindowFilter {
        active: q.active,
        starts_after,
        page: page(q.limit, q.offset)?,
    };
    let records = state.db.windows(&filter).await?;
    Ok(Json(records.into_iter().map(|r| listed(r, now)).collect()))
}

fn maintenance() -> WindowMode {
    WindowMode::Maintenance
}

/// Body of `POST /system/maintenance/windows`: `starts_at` and `ends_at`, or `schedule` and
/// `duration` (and `timezone`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// Generated when absent.
    name: Option<WindowName>,
    /// RFC 3339 with an offset.
    #[schema(format = DateTime)]
    starts_at: Option<String>,
    /// RFC 3339 with an offset; after `starts_at`.
    #[schema(format = DateTime)]
    ends_at: Option<String>,
    schedule: Option<Schedule>,
    duration: Option<Length>,
    /// UTC when absent.
    timezone: Option<Zone>,
    #[serde(default = "maintenance")]
    mode: WindowMode,
    #[serde(default)]
    description: String,
}

/// `POST /system/maintenance/windows` (operator): schedule a window, once or recurring; 422
/// unless exactly one form is given, ends_at > starts_at, and a schedule fires.
#[utoipa::path(post, path = "/system/maintenance/windows", operation_id = "create_window", tag = "maintenance", security(("api_key" = [])), request_body = WindowBody, responses((status = 201, description = "Scheduled", body = WindowListed), (status = 409, description = "The name is taken", body = ErrorBody), (status = 422, description = "Not exactly one form, ends_at not after starts_at, a time without an offset, or a schedule that never fires", body = ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Object(body): Object<WindowBody>,
) -> Result<(StatusCode, Json<WindowListed>), ApiError> {
    let invalid = |e: crate::domain::ParseError| ApiError::Unprocessable(e.0);
    let now = state.now();
    let unfit = |e: FormError| ApiError::Unprocessable(e.to_string());
    let form = Form::of(
        (body.starts_at, body.ends_at),
        (body.schedule, body.duration, body.timezone),
    );
    let when = match form.map_err(unfit)? {
        Form::Once(starts_at, ends_at) => {
            let starts_at = parse_time(&starts_at).map_err(invalid)?;
            When::once(starts_at, parse_time(&ends_at).map_err(invalid)?)
        }
        Form::Every(rule) => When::every(rule, now),
    }
    .map_err(unfit)?;
    let name = match body.name {
        Some(name) => name,
        None => generated_name(when.interval().map_or(now, |i| i.starts_at)).map_err(invalid)?,
    };
    let window = Window {
        name,
        when,
        mode: body.mode,
        active: true,
        description: body.description,
    };
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason: None,
        expires_at: None,
        now,
        group_id: None,
    };
    let record = state.db.create_window(&window, &change).await?;
    Ok((StatusCode::CREATED, Json(listed(record, now))))
}

/// `api-20261201-0200-3f9a`: when it starts (or, for a recurring window, when it was made), and
/// a random suffix so names never collide.
fn generated_name(at: DateTime<Utc>) -> Result<WindowName, crate::domain::ParseError> {
    let mut suffix = [0u8; 2];
    getrandom::fill(&mut suffix).map_err(|e| crate::domain::ParseError(e.to_string()))?;
    WindowName::parse(format!(
        "api-{}-{:02x}{:02x}",
        at.format("%Y%m%d-%H%M"),
        suffix[0],
        suffix[1]
    ))
}
