//! `POST /system/ratelimits/check`: other Valhalla services ask whether a request may pass.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::Reader;
use super::error::ErrorBody;
use super::json::Object;
use super::{ApiError, AppState};
use crate::domain::{ClientName, RuleKey, Scope};
use crate::limit::Subject;

/// The check endpoint's path: counted against the asker's own rule only, and a read.
pub(super) const PATH: &str = "/system/ratelimits/check";

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(check))
}

/// Either `{scope, key}` (one rule's question) or any of `{ip, user, client}` (every rule that
/// applies to such a request, the global one included).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub scope: Option<Scope>,
    /// With `scope`: an address (for `ip`), a client name, a user id, or `*` (may be omitted for
    /// `global`).
    pub key: Option<String>,
    /// The client's address; the most specific `ip` rule applies.
    #[schema(schema_with = ip_address)]
    pub ip: Option<String>,
    /// The end user (`user` rules).
    pub user: Option<String>,
    /// The calling client's name (`api_key` rules).
    #[schema(value_type = Option<ClientName>)]
    pub client: Option<String>,
}

/// An IPv4 or IPv6 address.
fn ip_address() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    let address = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    OneOfBuilder::new()
        .item(address(KnownFormat::Ipv4))
        .item(address(KnownFormat::Ipv6))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("The client's address; the most specific `ip` rule applies."))
        .build()
        .into()
}

/// The rule that decided.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckedRule {
    pub id: i64,
    pub scope: Scope,
    pub key: String,
}

/// The answer: for a caller who may count (a gateway client, an operator or an admin), the
/// request is counted if allowed; any other reader's question counts nothing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    /// Whether this question was counted against the subject's budget: only a gateway
    /// client's, an operator's or an admin's are; a reader may ask without spending anyone's
    /// budget.
    pub counted: bool,
    /// The deciding rule's `max_requests`; null when no rule applies.
    pub limit: Option<u32>,
    pub remaining: Option<u32>,
    /// Seconds until the quota comes back: when refused, when to retry.
    pub reset_seconds: Option<u64>,
    /// The deciding rule: a refusing one, else the one with the least left.
    pub rule: Option<CheckedRule>,
    /// Whether the deciding rule is a shadow rule (reported, never refusing).
    pub shadow: bool,
    /// Whether the deciding rule's `on_outage` policy decided, because the shared counters
    /// are unreachable (a `closed` rule refuses; a `local` one counted in this replica only).
    pub outage: bool,
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(message.into())
}

fn parse_ip(raw: &str) -> Result<IpAddr, ApiError> {
    raw.parse()
        .map_err(|_| unprocessable(format!("`{raw}` is not an IP address")))
}

/// `POST /system/ratelimits/check` (reader): decides about one request; counts it when the caller
/// is a gateway client, an operator or an admin (a service that enforces), as the gateways' gRPC
/// service does, so that a reader key cannot spend the
/// platform's budgets (checks of the global rule once throttled every route, admins' included).
#[utoipa::path(post, path = "/system/ratelimits/check", operation_id = "check_rate_limit", tag = "rules", security(("api_key" = [])), request_body = CheckRequest, responses((status = 200, description = "The decision", body = CheckResponse), (status = 422, description = "Neither or both forms, or a bad key", body = ErrorBody)))]
pub async fn check(
    State(state): State<Arc<AppState>>,
    Reader(caller): Reader,
    Object(request): Object<CheckRequest>,
) -> Result<Json<CheckResponse>, ApiError> {
    let by_request = request.ip.is_some() || request.user.is_some() || request.client.is_some();
    let mut subject = Subject::default();
    let (key, client);
    match (request.scope, by_request) {
        (Some(_), true) => {
            return Err(unprocessable(
                "ask either {scope, key} or {ip, user, client}, not both",
            ));
        }
        (None, false) => {
            return Err(unprocessable("ask {scope, key} or any of {ip, user, client}"));
        }
        (Some(scope), false) => {
            key = RuleKey::parse_for(scope, request.key.as_deref())
                .map_err(|e| unprocessable(e.to_string()))?;
            match scope {
                Scope::Global => subject.global = true,
                Scope::Ip => {
                    subject.ip = Some(key.as_str().parse().map_err(|_| {
                        unprocessable(
                            "for scope ip, ask about an address: a network rule counts each address in it",
                        )
                    })?);
                }
                Scope::ApiKey => subject.client = Some(key.as_str()),
                Scope::User => subject.user = Some(key.as_str()),
            }
        }
        (None, true) => {
            if request.key.is_some() {
                return Err(unprocessable("`key` goes with `scope`"));
            }
            client = request
                .client
                .as_deref()
                .map(ClientName::parse)
                .transpose()
                .map_err(|e| unprocessable(e.to_string()))?;
            subject = Subject {
                global: true,
                ip: request.ip.as_deref().map(parse_ip).transpose()?,
                client: client.as_ref().map(ClientName::as_str),
                user: request.user.as_deref(),
            };
        }
    }
    let view = state.replica.view().await?;
    let counted = caller.may_count();
    let decision = if counted {
        let decision = state.replica.check(&view.table, &subject).await;
        state.rate_limited(&decision, &subject);
        decision
    } else {
        state.replica.peek(&view.table, &subject).await
    };
    let binding = decision.binding();
    Ok(Json(CheckResponse {
        allowed: decision.allowed,
        counted,
        limit: binding.map(|v| v.rule.quota.max),
        remaining: binding.map(|v| v.remaining),
        reset_seconds: binding.map(|v| v.reset_seconds()),
        rule: binding.map(|v| CheckedRule {
            id: v.rule.id,
            scope: v.rule.scope,
            key: v.rule.key.clone(),
        }),
        shadow: binding.is_some_and(|v| v.rule.shadow),
        outage: binding.is_some_and(|v| v.outage),
    }))
}
