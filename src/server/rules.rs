//! Rate-limit rules and their usage snapshots.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{ApiError, AppState, Caller, page};
use crate::domain::{Role, Scope};
use crate::store::{RuleFilter, RuleRecord, SnapshotFilter, SnapshotRecord, Store as _};

/// Query of `GET /system/ratelimits/rules`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    scope: Option<Scope>,
    key: Option<String>,
    enabled: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /system/ratelimits/rules` (reader): rules ordered by scope and key, paged.
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<RulesQuery>,
) -> Result<Json<Vec<RuleRecord>>, ApiError> {
    caller.require(Role::Reader)?;
    let filter = RuleFilter {
        scope: q.scope,
        key: q.key,
        enabled: q.enabled,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.rules(&filter).await?))
}

/// `GET /system/ratelimits/rules/{id}` (reader).
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<RuleRecord>, ApiError> {
    caller.require(Role::Reader)?;
    match state.db.rule(id).await? {
        Some(rule) => Ok(Json(rule)),
        None => Err(ApiError::NotFound(format!("rate-limit rule {id} does not exist"))),
    }
}

/// Query of `GET /system/ratelimits/snapshots`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsQuery {
    scope: Option<Scope>,
    key: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /system/ratelimits/snapshots` (reader): usage counters written by enforcement.
pub async fn snapshots(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<SnapshotsQuery>,
) -> Result<Json<Vec<SnapshotRecord>>, ApiError> {
    caller.require(Role::Reader)?;
    let filter = SnapshotFilter {
        scope: q.scope,
        key: q.key,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.snapshots(&filter).await?))
}
