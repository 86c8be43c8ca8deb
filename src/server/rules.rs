//! Rate-limit rules and their usage snapshots.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::json::Object;
use super::params::{expiry, page};
use super::{ApiError, AppState};
use crate::domain::{MaxRequests, OnOutage, Reason, RuleKey, Scope, WindowSeconds};
use crate::model::RateLimitRule;
use crate::store::{ApiChange, RuleFilter, SnapshotFilter};
use crate::store::{RuleRecord, RuleWritten, SnapshotRecord};

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list, put))
        .routes(utoipa_axum::routes!(get, delete))
        .routes(utoipa_axum::routes!(snapshots))
}

/// Query of `GET /system/ratelimits/rules`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    scope: Option<Scope>,
    key: Option<String>,
    enabled: Option<bool>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /system/ratelimits/rules` (reader): rules ordered by scope and key, paged.
#[utoipa::path(get, path = "/system/ratelimits/rules", operation_id = "list_rules", tag = "rules", security(("api_key" = [])), params(RulesQuery), responses((status = 200, description = "Rules by scope and key", body = [RuleRecord])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(q): Query<RulesQuery>,
) -> Result<Json<Vec<RuleRecord>>, ApiError> {
    let filter = RuleFilter {
        scope: q.scope,
        key: q.key,
        enabled: q.enabled,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.rules(&filter).await?))
}

/// `GET /system/ratelimits/rules/{id}` (reader).
#[utoipa::path(get, path = "/system/ratelimits/rules/{id}", operation_id = "get_rule", tag = "rules", security(("api_key" = [])), params(("id" = i64, Path, description = "Rule id")), responses((status = 200, description = "The rule", body = RuleRecord), (status = 404, description = "No such rule", body = ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Path(id): Path<i64>,
) -> Result<Json<RuleRecord>, ApiError> {
    // From the replica's view: every write reaches it before its response is sent.
    match state.replica.view().await?.mirror.rule(id) {
        Some(rule) => Ok(Json(rule.clone())),
        None => Err(ApiError::NotFound(format!("rate-limit rule {id} does not exist"))),
    }
}

/// Query of `GET /system/ratelimits/snapshots`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsQuery {
    scope: Option<Scope>,
    key: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /system/ratelimits/snapshots` (reader): usage counters written by enforcement.
#[utoipa::path(get, path = "/system/ratelimits/snapshots", operation_id = "list_usage_snapshots", tag = "rules", security(("api_key" = [])), params(SnapshotsQuery), responses((status = 200, description = "Usage snapshots, newest first", body = [SnapshotRecord])))]
pub async fn snapshots(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(q): Query<SnapshotsQuery>,
) -> Result<Json<Vec<SnapshotRecord>>, ApiError> {
    let filter = SnapshotFilter {
        scope: q.scope,
        key: q.key,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.snapshots(&filter).await?))
}

fn sixty() -> i64 {
    60
}
fn sixty_requests() -> i64 {
    60
}
fn local() -> OnOutage {
    OnOutage::DEFAULT
}

fn yes() -> bool {
    true
}

/// Body of `POST /system/ratelimits/rules`: the rule as in YAML, with the same defaults, and
/// why it changes.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    scope: Scope,
    /// Optional only for the global scope.
    key: Option<String>,
    #[serde(default = "sixty")]
    #[schema(minimum = 1, maximum = 86400)]
    #[serde(deserialize_with = "super::json::whole::number")]
    window_seconds: i64,
    #[serde(default = "sixty_requests")]
    #[schema(minimum = 0, maximum = 2147483647)]
    #[serde(deserialize_with = "super::json::whole::number")]
    max_requests: i64,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    shadow: bool,
    /// While shared counters are unreachable: `open` admits, `closed` refuses with 503,
    /// `local` (the default) counts in each replica's memory.
    #[serde(default = "local")]
    on_outage: OnOutage,
    #[serde(default)]
    description: String,
    /// Why; required when the rule is declared in git (the change becomes an override).
    reason: Option<Reason>,
    /// How long such an override lasts; without it, until cleared.
    #[schema(minimum = 1, maximum = 31536000)]
    #[serde(default, deserialize_with = "super::json::whole::optional")]
    ttl_seconds: Option<i64>,
}

/// `POST /system/ratelimits/rules` (operator): create (201) or update (200) the rule of a
/// (scope, key). A git-owned rule is overridden: the reconciler holds it until the override ends.
#[utoipa::path(post, path = "/system/ratelimits/rules", operation_id = "upsert_rule", tag = "rules", security(("api_key" = [])), request_body = RuleBody, responses((status = 201, description = "Created", body = RuleWritten), (status = 200, description = "Updated", body = RuleWritten), (status = 422, description = "Invalid rule, or a git-owned rule without a reason", body = ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Object(body): Object<RuleBody>,
) -> Result<(StatusCode, Json<RuleWritten>), ApiError> {
    let invalid = |e: crate::domain::ParseError| ApiError::Unprocessable(e.0);
    let rule = RateLimitRule {
        scope: body.scope,
        key: RuleKey::parse_for(body.scope, body.key.as_deref()).map_err(invalid)?,
        window_seconds: WindowSeconds::new(body.window_seconds).map_err(invalid)?,
        max_requests: MaxRequests::new(body.max_requests).map_err(invalid)?,
        enabled: body.enabled,
        shadow: body.shadow,
        on_outage: body.on_outage,
        description: body.description,
    };
    let now = state.now();
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason: body.reason.map(Reason::into_string),
        expires_at: expiry(body.ttl_seconds, now)?,
        now,
        group_id: None,
    };
    let written = state.db.put_rule(&rule, &change).await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(written)))
}

/// Query of `DELETE /system/ratelimits/rules/{id}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    reason: Option<Reason>,
    #[param(minimum = 1, maximum = 31536000)]
    ttl_seconds: Option<i64>,
}

/// `DELETE /system/ratelimits/rules/{id}` (operator): 204. A git-owned rule is held deleted by an
/// override (which needs a `reason`) until it ends; then the reconciler restores it.
#[utoipa::path(delete, path = "/system/ratelimits/rules/{id}", operation_id = "delete_rule", tag = "rules", security(("api_key" = [])), params(("id" = i64, Path, description = "Rule id"), DeleteQuery), responses((status = 204, description = "Deleted"), (status = 404, description = "No such rule", body = ErrorBody), (status = 422, description = "A git-owned rule without a reason", body = ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
    Query(q): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let now = state.now();
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason: q.reason.map(Reason::into_string),
        expires_at: expiry(q.ttl_seconds, now)?,
        now,
        group_id: None,
    };
    state.db.delete_rule(id, &change).await?;
    Ok(StatusCode::NO_CONTENT)
}
