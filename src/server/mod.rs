//! The HTTP server: the documented endpoints over the same store, with API keys, JSON errors and
//! request limits.

mod admin;
mod auth;
mod bodies;
mod check;
mod clients;
pub mod error;
mod flags;
mod health;
pub mod listen;
mod maintenance;
mod metrics;
mod overrides;
mod rules;
mod runs;
mod windows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use chrono::{DateTime, Duration as Span, Utc};
use tokio::net::TcpListener;
use tower::Layer as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use crate::clock::Clock;
pub use crate::replica::Caller;
use auth::Reader;
pub use error::ApiError;
pub use listen::ConnectionLimits;

use crate::enforce::{Enforcer, MaintenanceLayer, RateLimitLayer};
use crate::replica::{Replica, ReplicaOptions};
use crate::store::Db;

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;
/// How long a request may take, its body and its handler included, before it is answered 503.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What every handler shares.
pub struct AppState {
    pub db: Db,
    /// The cached view of clients, rules and the mode, and the rate-limit counters.
    pub replica: Arc<Replica>,
    /// Request counters and latency histograms.
    pub metrics: Arc<metrics::Metrics>,
    /// The state directory the admin `reconcile` action loads, when the server was given one.
    pub state_dir: Option<crate::desired::StateDir>,
    /// Proxies whose `X-Forwarded-For` names the client, for `ip` rules.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Deadlines for headers and bodies, and the bound on open connections.
    pub limits: ConnectionLimits,
}

impl AppState {
    /// State over `db` with the system clock and default replica options.
    pub fn new(db: Db) -> AppState {
        AppState::with(db, crate::clock::system(), ReplicaOptions::default())
    }

    /// State over `db` with `clock` (tests move it) and `options`.
    pub fn with(db: Db, clock: Clock, options: ReplicaOptions) -> AppState {
        AppState {
            replica: Arc::new(Replica::new(db.clone(), clock, options)),
            db,
            state_dir: None,
            trusted_proxies: Vec::new(),
            limits: ConnectionLimits::default(),
            metrics: Arc::new(metrics::Metrics::default()),
        }
    }

    /// The time as handlers see it.
    pub fn now(&self) -> DateTime<Utc> {
        (self.replica.clock)()
    }
}

/// The largest page a listing returns.
pub const MAX_PAGE: i64 = 10_000;

/// A listing's page from its `limit` (default 1000, at most [`MAX_PAGE`]) and `offset`.
fn page(limit: Option<i64>, offset: Option<i64>) -> Result<crate::store::Page, ApiError> {
    let limit = limit.unwrap_or(1000);
    let offset = offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE}, not {limit}"
        )));
    }
    if offset < 0 {
        return Err(ApiError::Unprocessable(format!(
            "offset must not be negative, not {offset}"
        )));
    }
    Ok(crate::store::Page { limit, offset })
}

/// Longest override an HTTP change may ask for: one year.
const MAX_TTL_SECONDS: i64 = 365 * 24 * 3600;

/// When an override of `ttl_seconds` made at `now` ends.
fn expiry(ttl_seconds: Option<i64>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match ttl_seconds {
        None => Ok(None),
        Some(ttl @ 1..=MAX_TTL_SECONDS) => Ok(Some(now + Span::seconds(ttl))),
        Some(ttl) => Err(ApiError::Unprocessable(format!(
            "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}, not {ttl}"
        ))),
    }
}

/// The OpenAPI document's frame; the paths come from the route registrations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "valhalla-ops",
        description = "The operations control plane of the Valhalla API platform: reads and emergency overrides."
    ),
    modifiers(&ApiKeyScheme)
)]
struct ApiDoc;

/// Declares the API-key scheme every protected operation refers to.
struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key (`vk_…`); `X-API-Key: <key>` is accepted too."))
            .build();
        components.add_security_scheme("api_key", SecurityScheme::Http(bearer));
    }
}

/// `GET /openapi.json` (reader): the OpenAPI 3 document of every route this server serves.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The OpenAPI document", body = Object)
    )
)]
async fn openapi_json(Reader(_): Reader) -> Result<axum::Json<&'static utoipa::openapi::OpenApi>, ApiError> {
    Ok(axum::Json(document()))
}

/// The document, built once from the same registrations as the router.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut document = routes().1;
        utoipa::Modify::modify(&EnforcementResponses, &mut document);
        document
    })
}

/// Adds the answers that come from layers and extractors rather than handlers: 400, 413, 415 and
/// 422 where there is input to refuse, 429 where the rate limiter counts, 503 where the
/// maintenance mode can refuse.
struct EnforcementResponses;

impl utoipa::Modify for EnforcementResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let response = |description: &str| {
            let body = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content("application/json", body)
                    .build(),
            )
        };
        let malformed =
            response("Malformed request: a body that is not JSON, or a parameter of the wrong type");
        let too_large = response("The body is over 64 KiB");
        let not_json = response("The body is not `application/json`");
        let invalid = response("Well-formed but invalid input");
        let limited = response("Over a rate limit (code `rate_limited`); `Retry-After` says when to retry");
        let unauthorized = response("No valid API key");
        let forbidden = response("Role too low");
        let frozen = response("Refused by the maintenance mode; `Retry-After` when its end is known");
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                // Every operation that needs a key says what happens without one, or with a role
                // too low; the role extractors answer these before the handler runs.
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    let responses = &mut operation.responses.responses;
                    responses
                        .entry("401".into())
                        .or_insert_with(|| unauthorized.clone());
                    responses.entry("403".into()).or_insert_with(|| forbidden.clone());
                }
                let has_parameters = operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut operation.responses.responses;
                // Axum's extractors refuse before the handler runs; the JSON error layer gives
                // each refusal the documented body.
                if has_body || has_parameters {
                    responses.entry("400".into()).or_insert_with(|| malformed.clone());
                    responses.entry("422".into()).or_insert_with(|| invalid.clone());
                }
                if has_body {
                    responses.entry("413".into()).or_insert_with(|| too_large.clone());
                    responses.entry("415".into()).or_insert_with(|| not_json.clone());
                }
                if !crate::enforce::default_unlimited(path) {
                    responses.entry("429".into()).or_insert_with(|| limited.clone());
                }
                if !crate::enforce::default_always_served(path) {
                    responses.entry("503".into()).or_insert_with(|| frozen.clone());
                }
            }
        }
    }
}

/// Every route with its documentation: one registration feeds both, so they cannot drift.
fn routes() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    // Each resource registers its own routes; this is the whole list.
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::routes())
        .routes(routes!(openapi_json))
        .merge(metrics::routes())
        .merge(maintenance::routes())
        .merge(windows::routes())
        .merge(rules::routes())
        .merge(check::routes())
        .merge(clients::routes())
        .merge(flags::routes())
        .merge(overrides::routes())
        .merge(runs::routes())
        .merge(admin::routes())
        .split_for_parts()
}

/// Every route, with the shared layers.
pub fn router(state: Arc<AppState>) -> Router {
    let mut enforcer = Enforcer::new(Arc::clone(&state.replica));
    enforcer.trusted_proxies = state.trusted_proxies.clone();
    let metrics = Arc::clone(&state.metrics);
    enforcer.observe = Some(Box::new(move |decision| metrics.rate_limited(decision)));
    let enforcer = Arc::new(enforcer);
    routes()
        .0
        // After routing, so an unknown path is still a 404 whatever the mode or the limits.
        .route_layer(RateLimitLayer::new(Arc::clone(&enforcer)))
        // Outside the limiter: a frozen platform refuses before counting.
        .route_layer(MaintenanceLayer::new(enforcer))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            read_your_writes,
        ))
        // Every request, matched or not, is counted with its route pattern.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::record,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            body_in_time,
        ))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        // Outside every layer that can refuse a request, so each refusal gets the JSON body.
        .layer(axum::middleware::map_response(error::json_errors))
        // A 5xx is not an error to log here: a maintenance window answers 503 by design, and
        // real failures (database, internal) are logged where they happen, with their cause.
        .layer(TraceLayer::new_for_http().on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)))
        .with_state(state)
}

/// After a request that may have written, waits until this replica's view includes the write
/// before answering: whoever changed something reads it back on the next request, however long
/// the reload of a large state takes (other requests are not held up by it).
async fn read_your_writes(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let reads = crate::enforce::default_reads(request.method(), request.uri().path());
    let response = next.run(request).await;
    if !reads && let Err(e) = state.replica.fresh_view().await {
        tracing::warn!(error = %e, "cannot refresh the cached state after a write");
    }
    response
}

/// Reads a request's body before the handler runs, within the body deadline: a client that
/// trickles its body is answered 408 instead of holding a handler until the request timeout
/// (and getting a 503, which says the server is at fault).
async fn body_in_time(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody as _;
    use axum::response::IntoResponse as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(state.limits.body_timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if over_the_limit(&e) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Ok(Err(_)) => ApiError::BadRequest("the request body could not be read".into()).into_response(),
        Err(_) => ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            state.limits.body_timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

/// Whether reading a body failed on the body size limit (somewhere in its cause chain).
fn over_the_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Serves on `listener` until `shutdown` completes; in-flight requests finish first. Every path
/// works with and without a trailing slash.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits;
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    listen::serve(listener, app, limits, shutdown).await
}
