//! API clients: registration (the key is shown once), listing, activation.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::auth::{Operator, Reader};
use super::error::ErrorBody;
use super::json::Object;
use super::params::{expiry, page};
use super::{ApiError, AppState};
use crate::auth::Caller;
use crate::domain::{ClientName, ClientType, KeySha256, NewKey, Reason, Role};
use crate::model::Client;
use crate::store::{ApiChange, ClientFilter, ClientRecord};

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list, register))
        .routes(utoipa_axum::routes!(activate))
        .routes(utoipa_axum::routes!(deactivate))
}

/// Query of `GET /system/clients/`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClientsQuery {
    active: Option<bool>,
    client_type: Option<ClientType>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    #[param(minimum = 0)]
    offset: Option<i64>,
}

/// `GET /system/clients/` (reader): clients by name, with no key material but a display prefix.
#[utoipa::path(get, path = "/system/clients", operation_id = "list_clients", tag = "clients", security(("api_key" = [])), params(ClientsQuery), responses((status = 200, description = "Clients by name; never a key or hash", body = [ClientRecord])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Reader(_caller): Reader,
    Query(q): Query<ClientsQuery>,
) -> Result<Json<Vec<ClientRecord>>, ApiError> {
    let filter = ClientFilter {
        active: q.active,
        client_type: q.client_type,
        page: page(q.limit, q.offset)?,
    };
    Ok(Json(state.db.clients(&filter).await?))
}

fn reader() -> Role {
    Role::Reader
}

/// Body of `POST /system/clients/`; `type` is accepted for `client_type`, as in YAML.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    name: ClientName,
    #[serde(alias = "type")]
    client_type: ClientType,
    #[serde(default = "reader")]
    role: Role,
    #[serde(default)]
    description: String,
}

/// A registered client and its key, which is shown this once and never stored.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Registered {
    #[serde(flatten)]
    client: ClientRecord,
    key: String,
}

/// Refuses to let a caller hand out or restore more power than it has.
fn within_reach(caller: &Caller, role: Role) -> Result<(), ApiError> {
    if role > caller.role {
        return Err(ApiError::Forbidden(format!(
            "client {} has role {}: it cannot manage a client with role {role}",
            caller.name, caller.role
        )));
    }
    Ok(())
}

/// `POST /system/clients/` (operator): register a client owned by the API; 201 with its key.
#[utoipa::path(post, path = "/system/clients", operation_id = "register_client", tag = "clients", security(("api_key" = [])), request_body = RegisterBody, responses((status = 201, description = "Registered; the key is shown this once", body = Registered), (status = 409, description = "The name is taken", body = ErrorBody)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Object(body): Object<RegisterBody>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    within_reach(&caller, body.role)?;
    let key = NewKey::generate().map_err(ApiError::NoRandomness)?;
    let client = Client {
        name: body.name,
        client_type: body.client_type,
        role: body.role,
        key_sha256: KeySha256::of_key(&key.key),
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
    let record = state.db.register_client(&client, key.prefix(), &change).await?;
    // The new key must work at once.
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            client: record,
            key: key.key,
        }),
    ))
}

/// Optional body of activate and deactivate: needed for git-owned clients (an override).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    /// Why; required for a git-owned client (the change becomes an override).
    reason: Option<Reason>,
    /// How long such an override lasts; without it, until cleared.
    #[schema(minimum = 1, maximum = 31536000)]
    #[serde(default, deserialize_with = "super::json::whole::optional")]
    ttl_seconds: Option<i64>,
    /// Deactivate even the caller's own client, which locks the caller out.
    #[serde(default)]
    force: bool,
}

async fn set_active(
    state: &AppState,
    caller: &Caller,
    id: i64,
    active: bool,
    body: Option<Object<Option<ReasonBody>>>,
) -> Result<Json<ClientRecord>, ApiError> {
    // No body, or `null`, is no reason.
    let body = body.and_then(|Object(b)| b).unwrap_or_default();
    let now = state.now();
    // Look the client up first, to refuse managing a more powerful one.
    let current = state.db.client(id).await?;
    let current = current.ok_or_else(|| ApiError::NotFound(format!("client {id} does not exist")))?;
    within_reach(caller, current.role)?;
    if !active && current.active && !body.force {
        not_a_lockout(state, caller, &current).await?;
    }
    let change = ApiChange {
        actor: caller.name.to_string(),
        reason: body.reason.map(Reason::into_string),
        expires_at: expiry(body.ttl_seconds, now)?,
        now,
        group_id: None,
    };
    let record = state.db.set_client_active(id, active, &change).await?;
    // A deactivated key must stop working now, not when the cache would have expired.
    Ok(Json(record))
}

/// Refuses a deactivation that would lock the caller out (the README's own example once did,
/// followed literally). Only an admin can manage an admin, so the last active admin can only be
/// deactivated by itself: the message says so. `"force": true` says it is meant.
async fn not_a_lockout(state: &AppState, caller: &Caller, client: &ClientRecord) -> Result<(), ApiError> {
    if client.id != caller.id {
        return Ok(());
    }
    let view = state.replica.fresh_view().await?;
    let admins = view.clients.values().filter(|c| c.role == Role::Admin).count();
    let last = if client.role == Role::Admin && admins <= 1 {
        ", and it is the last active admin: nobody could reach /admin/ after it"
    } else {
        ""
    };
    Err(ApiError::Conflict(format!(
        "client {} cannot deactivate itself without \"force\": true: its key would stop working at once{last}",
        client.name
    )))
}

/// `POST /system/clients/{id}/activate` (operator).
#[utoipa::path(post, path = "/system/clients/{id}/activate", operation_id = "activate_client", tag = "clients", security(("api_key" = [])), params(("id" = i64, Path, description = "Client id")), request_body(content = Option<ReasonBody>, description = "Needed for git-owned clients"), responses((status = 200, description = "Activated", body = ClientRecord), (status = 404, description = "No such client", body = ErrorBody)))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
    body: Option<Object<Option<ReasonBody>>>,
) -> Result<Json<ClientRecord>, ApiError> {
    set_active(&state, &caller, id, true, body).await
}

/// `POST /system/clients/{id}/deactivate` (operator).
#[utoipa::path(post, path = "/system/clients/{id}/deactivate", operation_id = "deactivate_client", tag = "clients", security(("api_key" = [])), params(("id" = i64, Path, description = "Client id")), request_body(content = Option<ReasonBody>, description = "Needed for git-owned clients"), responses((status = 200, description = "Deactivated; its key stops working at once", body = ClientRecord), (status = 404, description = "No such client", body = ErrorBody), (status = 409, description = "The caller's own client, without `force`", body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<Arc<AppState>>,
    Operator(caller): Operator,
    Path(id): Path<i64>,
    body: Option<Object<Option<ReasonBody>>>,
) -> Result<Json<ClientRecord>, ApiError> {
    set_active(&state, &caller, id, false, body).await
}
