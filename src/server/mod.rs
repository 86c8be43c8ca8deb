//! The HTTP server: the documented endpoints over the same store, with API keys, JSON errors and
//! request limits.

mod admin;
mod auth;
mod check;
mod clients;
pub mod error;
mod exempt;
mod flags;
mod health;
mod json;
pub mod listen;
mod maintenance;
mod metrics;
mod middleware;
mod notifications;
mod openapi;
mod overrides;
mod params;
mod restore;
mod rules;
mod runs;
pub mod status;
mod windows;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tower::layer::layer_fn;
use tower::{Layer as _, ServiceBuilder};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::normalize_path::NormalizePathLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::clock::Clock;

pub use error::ApiError;
pub use listen::ConnectionLimits;
pub use openapi::document;
pub use params::MAX_PAGE;

use crate::enforce::{EnforcementLayer, Enforcer};
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
    /// What the status page's streams share.
    pub status: status::StatusHub,
}

impl AppState {
    /// State over `db` with the system clock and default replica options.
    pub fn new(db: Db) -> AppState {
        AppState::with(db, crate::clock::system(), ReplicaOptions::default())
    }

    /// State over `db` with `clock` (tests move it) and `options`.
    pub fn with(db: Db, clock: Clock, options: ReplicaOptions) -> AppState {
        AppState::over(Replica::new(db.clone(), clock, options), db)
    }

    /// The state of a server over `replica` (which reads `db`).
    pub fn over(replica: Replica, db: Db) -> AppState {
        let replica = Arc::new(replica);
        AppState {
            metrics: Arc::new(metrics::Metrics::new(&replica)),
            replica,
            db,
            state_dir: None,
            trusted_proxies: Vec::new(),
            limits: ConnectionLimits::default(),
            status: status::StatusHub::default(),
        }
    }

    /// Counts a rate-limit decision in the metrics and, when it refused, for the status page.
    pub fn rate_limited(&self, decision: &crate::limit::Decision, subject: &crate::limit::Subject<'_>) {
        self.metrics.rate_limited(decision);
        self.status
            .recent
            .record(decision, subject, self.replica.now_ms());
    }

    /// The time as handlers see it.
    pub fn now(&self) -> DateTime<Utc> {
        (self.replica.clock)()
    }
}

/// Every route with its documentation: one registration feeds both, so they cannot drift.
pub(super) fn routes() -> (Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use utoipa::OpenApi as _;
    use utoipa_axum::router::OpenApiRouter;
    // Each resource registers its own routes; this is the whole list.
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(metrics::routes())
        .merge(maintenance::routes())
        .merge(windows::routes())
        .merge(rules::routes())
        .merge(check::routes())
        .merge(clients::routes())
        .merge(flags::routes())
        .merge(overrides::routes())
        .merge(runs::routes())
        .merge(notifications::routes())
        .merge(admin::routes())
        .merge(status::routes())
        .split_for_parts()
}

/// Every route, with the shared layers.
pub fn router(state: Arc<AppState>) -> Router {
    let mut enforcer = Enforcer::new(Arc::clone(&state.replica));
    enforcer.unlimited = exempt::unlimited;
    enforcer.own_rules_only = exempt::own_rules_only;
    enforcer.always_served = exempt::always_served;
    enforcer.reads = exempt::reads;
    enforcer.trusted_proxies = state.trusted_proxies.clone();
    let observer = Arc::clone(&state);
    enforcer.observe = Some(Box::new(move |decision, subject| {
        observer.rate_limited(decision, subject)
    }));
    let enforcer = Arc::new(enforcer);
    // Each `layer` call wraps every route in a boxed service of its own, cloned for each request:
    // one stack per call keeps that to two, whatever the number of layers.
    let body_timeout = state.limits.body_timeout;
    let closing = state.status.closing();
    let observed = Arc::clone(&state);
    let shared = ServiceBuilder::new()
        // A 5xx is not an error to log here: a maintenance window answers 503 by design, and
        // real failures (database, internal) are logged where they happen, with their cause.
        // Mounted only when its debug lines can be shown: otherwise each request would pay for a
        // span and a wrapped body that log nothing.
        .option_layer(
            tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG).then(|| {
                ServiceBuilder::new()
                    .map_response(axum::response::IntoResponse::into_response)
                    .layer(
                        TraceLayer::new_for_http()
                            .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                    )
            }),
        )
        // Outside every layer that can refuse a request, so each refusal gets the JSON body.
        .layer(layer_fn(|inner| middleware::JsonErrors { inner }))
        .map_response(axum::response::IntoResponse::into_response)
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .map_request(|request: axum::http::Request<_>| request.map(axum::body::Body::new))
        .layer(layer_fn(move |inner| middleware::BodyInTime {
            inner,
            deadline: body_timeout,
            closing: closing.clone(),
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // Every request, matched or not, is counted with its route pattern.
        .layer(layer_fn(move |inner| middleware::Observed {
            inner,
            state: Arc::clone(&observed),
        }));
    routes()
        .0
        // After routing, so an unknown path is still a 404 whatever the mode or the limits.
        .route_layer(EnforcementLayer::new(enforcer))
        .fallback(error::not_found)
        .layer(shared)
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes; in-flight requests finish first. Every path
/// works with and without a trailing slash.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (limits, trusted_proxies) = (state.limits, state.trusted_proxies.clone());
    let hub = state.status.clone();
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    // Open status streams end as the server stops accepting, so they do not hold it up.
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    listen::serve(listener, app, limits, trusted_proxies, shutdown).await
}
