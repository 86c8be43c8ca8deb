//! The admin console: `POST /admin/ops/` runs one named action with its payload.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::Admin;
use super::error::ErrorBody;
use super::json::Object;
use super::params::expiry;
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::{FlagName, Mode, ProfileName, Reason};
use crate::mode::effective;
use crate::plan::render::PlanDocument;
use crate::store::{ApiChange, AuditFilter, StoreError, WriteDone, WriteOp};

/// Served in every mode: the console is how an admin works through a freeze.
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] = &[crate::enforce::Paths::Below("/admin")];

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(ops))
}

/// Declares the admin actions once: their names, their payloads, and whether a `batch` may hold
/// them. The enum's matches are exhaustive, so the list, the parsing and the dispatch cannot
/// drift apart.
macro_rules! actions {
    ($($name:literal => $variant:ident($payload:ty), batchable: $batchable:literal;)+) => {
        /// An admin action with its parsed payload.
        enum Action {
            $($variant($payload),)+
        }

        /// Every action's name, and whether a `batch` may hold it (a write that applies
        /// all-or-nothing with the others).
        const ACTIONS: &[(&str, bool)] = &[$(($name, $batchable),)+];

        impl Action {
            /// The action named `name` with its payload (an absent payload is an empty object).
            fn parse(name: &str, payload: Value) -> Result<Action, ApiError> {
                match name {
                    $($name => Ok(Action::$variant(parse_payload(name, payload)?)),)+
                    other => Err(ApiError::Unprocessable(format!(
                        "unknown action `{}`; known actions: {}",
                        crate::text::shown(other),
                        names(|_| true)
                    ))),
                }
            }

            fn name(&self) -> &'static str {
                match self {
                    $(Action::$variant(_) => $name,)+
                }
            }
        }
    };
}

actions! {
    "security_snapshot" => SecuritySnapshot(NoPayload), batchable: false;
    "set_maintenance_mode" => SetMaintenanceMode(SetMode), batchable: true;
    "set_feature_flag" => SetFeatureFlag(SetFlag), batchable: true;
    "set_deployment_profile" => SetDeploymentProfile(SetProfile), batchable: true;
    "lockdown" => Lockdown(LockdownRequest), batchable: false;
    "clear_overrides" => ClearOverrides(ClearOverridesRequest), batchable: true;
    "reconcile" => Reconcile(RunReconcile), batchable: false;
    "audit_log" => AuditLog(AuditQuery), batchable: false;
    "batch" => Batch(BatchRequest), batchable: false;
}

/// The names of the actions `which` selects, comma-separated.
fn names(which: impl Fn(bool) -> bool) -> String {
    let names: Vec<&str> = ACTIONS
        .iter()
        .filter(|(_, b)| which(*b))
        .map(|(n, _)| *n)
        .collect();
    names.join(", ")
}

/// The payload of an action that takes none.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoPayload {}

/// Body of `POST /admin/ops/`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsRequest {
    /// The action's name.
    #[schema(schema_with = action_names)]
    action: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    payload: Value,
}

/// The actions' names, as the schema of `action`.
fn action_names() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ACTIONS.iter().map(|(name, _)| *name)))
        .description(Some("The action's name."))
        .build()
}

/// Reads an action's payload; an absent payload is an empty object.
fn parse_payload<T: DeserializeOwned>(action: &str, value: Value) -> Result<T, ApiError> {
    let value = if value.is_null() { json!({}) } else { value };
    serde_json::from_value(value)
        .map_err(|e| ApiError::Unprocessable(format!("{action}: invalid payload: {e}")))
}

/// `POST /admin/ops/` (admin).
#[utoipa::path(post, path = "/admin/ops", operation_id = "run_admin_action", tag = "admin", security(("api_key" = [])), request_body = OpsRequest, responses((status = 200, description = "`{action, result}`", body = Object), (status = 422, description = "Unknown action or invalid payload", body = ErrorBody)))]
pub async fn ops(
    State(state): State<Arc<AppState>>,
    Admin(caller): Admin,
    Object(request): Object<OpsRequest>,
) -> Result<Json<Value>, ApiError> {
    let action = Action::parse(&request.action, request.payload)?;
    let name = action.name();
    // Git's own mode lifts the overrides that hold another, as over the state endpoint.
    if let Action::SetMaintenanceMode(p) = &action
        && !p.reason.as_str().trim().is_empty()
        && let Some(restored) =
            super::maintenance::restore_git_mode(&state, &caller, p.mode, Some(p.reason.as_str())).await?
    {
        return Ok(Json(json!({ "action": name, "result": restored })));
    }
    let result = match action {
        Action::SecuritySnapshot(NoPayload {}) => security_snapshot(&state).await?,
        Action::Lockdown(p) => lockdown(&state, &caller, p).await?,
        Action::Reconcile(p) => run_reconcile(&state, &caller, p).await?,
        Action::AuditLog(p) => audit_log(&state, p).await?,
        Action::Batch(p) => batch(&state, &caller, p).await?,
        // A single write is a batch of one: one path for validation, the transaction and errors.
        write @ (Action::SetMaintenanceMode(_)
        | Action::SetFeatureFlag(_)
        | Action::SetDeploymentProfile(_)
        | Action::ClearOverrides(_)) => {
            let sets_mode = matches!(write, Action::SetMaintenanceMode(_));
            let op = write_op(&state, &caller, write)?;
            let done = write_ops(&state, &[op], |_| name.to_owned()).await?;
            let mut result = json!(done[0]);
            if sets_mode {
                result["state"] = json!(effective(&state.db.maintenance().await?, state.now()));
            }
            if let [WriteDone::Cleared(n)] = done[..] {
                result["restore"] = json!(super::restore::give_back(&state, &caller, n).await);
            }
            result
        }
    };
    Ok(Json(json!({ "action": name, "result": result })))
}

async fn security_snapshot(state: &AppState) -> Result<Value, ApiError> {
    let now = state.now();
    let counts = state.db.security_counts().await?;
    let mode = effective(&state.db.maintenance().await?, now);
    let overrides: Vec<_> = state
        .db
        .open_overrides()
        .await?
        .into_iter()
        .filter(|o| o.is_active(now))
        .collect();
    let last_run = state.db.runs(1).await?.into_iter().next();
    let clients: Vec<Value> = counts
        .clients
        .iter()
        .map(|(role, active, n)| json!({ "role": role, "active": active, "count": n }))
        .collect();
    let keys: Vec<Value> = counts
        .oldest_keys
        .iter()
        .map(|(name, role, at)| json!({ "client": name, "role": role, "unchanged_days": (now - *at).num_days() }))
        .collect();
    Ok(json!({
        "clients": clients,
        "oldest_keys": keys,
        "rules": { "total": counts.rules, "disabled": counts.disabled_rules, "shadow": counts.shadow_rules },
        "mode": mode,
        "active_overrides": overrides,
        "last_reconcile": last_run,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMode {
    mode: Mode,
    reason: Reason,
    ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearOverridesRequest {
    /// Only the overrides of this group (a lockdown); all when absent.
    group_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunReconcile {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
}

async fn run_reconcile(state: &AppState, caller: &Caller, p: RunReconcile) -> Result<Value, ApiError> {
    // The read-your-writes layer makes the replica follow before the answer goes out.
    let outcome = super::restore::reconcile_state_dir(state, caller, p.dry_run, p.prune).await?;
    let document = PlanDocument::new(&outcome.plan, outcome.state_fingerprint.clone());
    Ok(json!({ "run_id": outcome.run_id, "plan": document }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// A resource kind (`rate_limit_rule`, `client`, …).
    kind: Option<String>,
    /// A resource key (`ip:10.0.0.1`, a client name, …).
    key: Option<String>,
    actor: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    limit: Option<i64>,
}

async fn audit_log(state: &AppState, p: AuditQuery) -> Result<Value, ApiError> {
    let since = p
        .since
        .as_deref()
        .map(crate::domain::parse_time)
        .transpose()
        .map_err(|e| ApiError::Unprocessable(format!("audit_log: {}", e.0)))?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=super::MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "audit_log: limit must be between 1 and {}",
            super::MAX_PAGE
        )));
    }
    let filter = AuditFilter {
        kind: p.kind,
        key: p.key,
        actor: p.actor,
        since,
        limit,
    };
    Ok(json!(state.db.audit_filtered(&filter).await?))
}

/// The change an admin action makes, with its reason and optional TTL.
fn change(
    state: &AppState,
    caller: &Caller,
    reason: Reason,
    ttl_seconds: Option<i64>,
) -> Result<ApiChange, ApiError> {
    let reason = reason.into_string();
    if reason.trim().is_empty() {
        return Err(ApiError::Unprocessable("a non-empty `reason` is required".into()));
    }
    let now = state.now();
    Ok(ApiChange {
        actor: caller.name.to_string(),
        reason: Some(reason),
        expires_at: expiry(ttl_seconds, now)?,
        now,
        group_id: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFlag {
    name: FlagName,
    enabled: bool,
    reason: Reason,
    ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetProfile {
    profile: ProfileName,
    reason: Reason,
    ttl_seconds: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockdownRequest {
    reason: Reason,
    ttl_seconds: Option<i64>,
    /// A global rate limit (requests per minute) to enforce during the lockdown.
    #[serde(default, deserialize_with = "super::json::whole::optional")]
    global_max_requests: Option<i64>,
}

async fn lockdown(state: &AppState, caller: &Caller, p: LockdownRequest) -> Result<Value, ApiError> {
    let mut change = change(state, caller, p.reason, p.ttl_seconds)?;
    let mut suffix = [0u8; 2];
    getrandom::fill(&mut suffix).map_err(ApiError::NoRandomness)?;
    change.group_id = Some(format!(
        "lockdown-{}-{:02x}{:02x}",
        change.now.format("%Y%m%dT%H%M%S"),
        suffix[0],
        suffix[1]
    ));
    let global = p
        .global_max_requests
        .map(crate::domain::MaxRequests::new)
        .transpose()
        .map_err(|e| ApiError::Unprocessable(format!("lockdown: global_{}", e.0)))?;
    let done = state.db.lockdown(global, &change).await?;
    // The deactivated keys must stop working now.
    Ok(json!(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    actions: Vec<OpsRequest>,
}

/// One batched action as a store write, checked before anything is written; actions that are
/// not writes are refused.
fn write_op(state: &AppState, caller: &Caller, action: Action) -> Result<WriteOp, ApiError> {
    Ok(match action {
        Action::SetMaintenanceMode(p) => WriteOp::SetMode {
            mode: p.mode,
            change: change(state, caller, p.reason, p.ttl_seconds)?,
        },
        Action::SetFeatureFlag(p) => WriteOp::SetFlag {
            name: p.name,
            enabled: p.enabled,
            change: change(state, caller, p.reason, p.ttl_seconds)?,
        },
        Action::SetDeploymentProfile(p) => WriteOp::SetProfile {
            name: p.profile,
            change: change(state, caller, p.reason, p.ttl_seconds)?,
        },
        Action::ClearOverrides(p) => WriteOp::ClearOverrides {
            group_id: p.group_id,
            actor: caller.name.to_string(),
            now: state.now(),
        },
        other @ (Action::SecuritySnapshot(_)
        | Action::Lockdown(_)
        | Action::Reconcile(_)
        | Action::AuditLog(_)
        | Action::Batch(_)) => {
            return Err(ApiError::Unprocessable(format!(
                "`{}` cannot be batched; batchable actions: {}",
                other.name(),
                names(|batchable| batchable)
            )));
        }
    })
}

async fn batch(state: &AppState, caller: &Caller, p: BatchRequest) -> Result<Value, ApiError> {
    let ops = p
        .actions
        .into_iter()
        .enumerate()
        .map(|(i, request)| {
            Action::parse(&request.action, request.payload)
                .and_then(|action| write_op(state, caller, action))
                .map_err(|e| match e {
                    ApiError::Unprocessable(m) => ApiError::Unprocessable(format!("batch action {i}: {m}")),
                    e => e,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let done = write_ops(state, &ops, |i| format!("batch action {i}")).await?;
    // Lifted overrides give git's values back, as a single clear_overrides does; the answer
    // stays the list of what each write did.
    let cleared = done
        .iter()
        .map(|d| if let WriteDone::Cleared(n) = d { *n } else { 0 })
        .sum();
    let restored = super::restore::give_back(state, caller, cleared).await;
    if let Some(next) = restored.next {
        tracing::warn!("a batch lifted {cleared} overrides: {next}");
    }
    Ok(json!(done))
}

/// Applies writes all-or-nothing; a refused write is a 422 naming it with `label`.
async fn write_ops(
    state: &AppState,
    ops: &[WriteOp],
    label: impl Fn(usize) -> String,
) -> Result<Vec<WriteDone>, ApiError> {
    state.db.batch(ops).await.map_err(|e| match e.source {
        StoreError::OverrideNeedsReason(_) | StoreError::NotFound(_) | StoreError::Conflict(_) => {
            ApiError::Unprocessable(format!("{}: {}; nothing was written", label(e.index), e.source))
        }
        source => source.into(),
    })
}
