//! Prometheus metrics: requests by route and status, latency, reconcile runs, active overrides.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::auth::Reader;
use super::{ApiError, AppState};
use crate::domain::Scope;
use crate::limit::Decision;

/// Served in every mode: a freeze is when the graphs matter most.
pub(super) const ALWAYS_SERVED: &[crate::enforce::Paths] = &[crate::enforce::Paths::Exactly("/metrics")];

/// This module's routes.
pub(super) fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(scrape))
}

/// The labels of a request: the route pattern (not the raw path, so ids do not explode the
/// series), the method and the status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

/// The documented route patterns, each leaked once.
static DOCUMENTED: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    let paths = super::routes().1.paths.paths;
    paths
        .into_keys()
        .map(|p| &*Box::leak(p.into_boxed_str()))
        .collect()
});

/// The route pattern as a `&'static str`, so that counting a request allocates nothing. The
/// patterns are the router's own, a fixed set; each is leaked once. The documented ones are
/// found without a lock: every request asks, from every thread, and a shared lock's counter
/// bouncing between cores cost more than the rest of the counting.
fn intern(route: &str) -> &'static str {
    if let Some(documented) = DOCUMENTED.get(route) {
        return documented;
    }
    static ROUTES: std::sync::RwLock<Vec<&'static str>> = std::sync::RwLock::new(Vec::new());
    let known = |routes: &[&'static str]| routes.iter().copied().find(|r| *r == route);
    if let Some(r) = ROUTES.read().ok().and_then(|routes| known(&routes)) {
        return r;
    }
    let mut routes = ROUTES.write().unwrap_or_else(|e| e.into_inner());
    known(&routes).unwrap_or_else(|| {
        let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
        routes.push(leaked);
        leaked
    })
}

/// The method as a label: the standard ones by name, anything else as `other` (a client can
/// send any token; the series stay bounded).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    scope: String,
    shadow: bool,
    outcome: String,
}

const SCOPES: [Scope; 4] = [Scope::Global, Scope::Ip, Scope::ApiKey, Scope::User];

/// The server's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    /// By scope, shadow, refused: made up front so counting takes no lookup.
    decisions: [[[Counter; 2]; 2]; 4],
    /// Set at scrape time from the store and the replica; the store's two keep their last
    /// values while it does not answer.
    active_overrides: Gauge,
    reconcile_runs: Gauge,
    /// 1 when the store answered the scrape's reads, 0 when it did not.
    store_up: Gauge,
    counters: Gauge,
    /// The reconcile loop of `serve --watch` (zero without it).
    pub watch: crate::watch::WatchMetrics,
    /// The gateways' rate limit service of `serve --grpc` (zero without it).
    pub grpc: crate::grpc::GrpcMetrics,
    /// Notifications delivered, failed and given up by this replica; the backlog of all.
    pub notify: crate::outbox::NotifyMetrics,
}

impl Metrics {
    /// The server's metrics, with the replica's own (reloads, the counter store) among them.
    pub fn new(replica: &crate::replica::Replica) -> Self {
        let mut registry = Registry::with_prefix("valhalla_ops");
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms to about 16 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let active_overrides = Gauge::default();
        let reconcile_runs = Gauge::default();
        let store_up = Gauge::default();
        registry.register(
            "store_up",
            "Whether the store answered the last scrape's reads (1) or not (0)",
            store_up.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "active_overrides",
            "Overrides in force now",
            active_overrides.clone(),
        );
        registry.register(
            "reconcile_runs",
            "Reconcile runs recorded in the store",
            reconcile_runs.clone(),
        );
        let family = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "ratelimit_decisions",
            "Rate-limit verdicts by rule scope, shadow and outcome (a shadow refusal is only reported)",
            family.clone(),
        );
        let decisions = SCOPES.map(|scope| {
            [false, true].map(|shadow| {
                ["allowed", "refused"].map(|outcome| {
                    family
                        .get_or_create(&DecisionLabels {
                            scope: scope.as_str().to_owned(),
                            shadow,
                            outcome: outcome.to_owned(),
                        })
                        .clone()
                })
            })
        });
        let counters = Gauge::default();
        registry.register(
            "ratelimit_counters",
            "Rate-limit counters held in memory by this replica",
            counters.clone(),
        );
        let (whole, rows) = replica.reload_counters();
        registry.register(
            "cache_reloads",
            "Times this replica read its cached clients, rules and mode whole",
            whole,
        );
        registry.register(
            "cache_row_reloads",
            "Times this replica read again only the rows the store's change log named",
            rows,
        );
        replica.counting.metrics.register(&mut registry);
        let watch = crate::watch::WatchMetrics::default();
        watch.register(&mut registry);
        let grpc = crate::grpc::GrpcMetrics::default();
        grpc.register(&mut registry);
        let notify = crate::outbox::NotifyMetrics::default();
        notify.register(&mut registry);
        Metrics {
            watch,
            grpc,
            notify,
            registry,
            requests,
            latency,
            decisions,
            active_overrides,
            reconcile_runs,
            store_up,
            counters,
        }
    }

    /// Counts each verdict of a rate-limit decision.
    pub fn rate_limited(&self, decision: &Decision) {
        for verdict in &decision.verdicts {
            let scope = SCOPES.iter().position(|s| *s == verdict.rule.scope).unwrap_or(0);
            self.decisions[scope][usize::from(verdict.rule.shadow)][usize::from(!verdict.allowed)].inc();
        }
    }
}

/// What a request is counted by: its route pattern (`unmatched` when no route matched) and its
/// method. Taken before the request is served.
#[derive(Clone, Copy)]
pub(super) struct RequestKind {
    route: &'static str,
    method: &'static str,
}

impl RequestKind {
    pub(super) fn of(request: &Request) -> RequestKind {
        RequestKind {
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", |m| intern(m.as_str())),
            method: method_label(request.method()),
        }
    }
}

impl Metrics {
    /// Counts and times one request, answered `status` after `elapsed`.
    pub(super) fn record(
        &self,
        kind: RequestKind,
        status: axum::http::StatusCode,
        elapsed: std::time::Duration,
    ) {
        let RequestKind { route, method } = kind;
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
    }
}

/// How long a scrape waits for the store's figures before answering without them.
const STORE_READS: std::time::Duration = std::time::Duration::from_millis(300);

/// `GET /metrics` (reader): the OpenMetrics text exposition to scrapers that ask for it, the
/// classic Prometheus text format to others.
#[utoipa::path(get, path = "/metrics", operation_id = "get_metrics", tag = "metrics", security(("api_key" = [])), responses((status = 200, description = "OpenMetrics text when `Accept` asks for `application/openmetrics-text`, else the Prometheus text format 0.0.4", content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn scrape(
    State(state): State<Arc<AppState>>,
    Reader(_): Reader,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = state.now();
    // Monitoring must see an outage, not be blinded by it: the store's figures are read within
    // a bound, and a store that does not answer is a figure too.
    let reads = async {
        tokio::try_join!(
            state.db.open_overrides(),
            state.db.run_count(),
            state.db.delivery_backlog()
        )
    };
    match tokio::time::timeout(STORE_READS, reads).await {
        Ok(Ok((overrides, runs, backlog))) => {
            let active = overrides.iter().filter(|o| o.is_active(now)).count();
            let metrics = &state.metrics;
            metrics.notify.backlog(backlog, now);
            metrics
                .active_overrides
                .set(i64::try_from(active).unwrap_or(i64::MAX));
            metrics.reconcile_runs.set(runs);
            metrics.store_up.set(1);
        }
        Ok(Err(_)) | Err(_) => {
            state.metrics.store_up.set(0);
        }
    }
    let replica = &state.replica;
    let held = i64::try_from(replica.counting.memory.counters()).unwrap_or(i64::MAX);
    state.metrics.counters.set(held);
    let mut body = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut body, &state.metrics.registry)
        .expect("metrics encode into a String");
    let (body, content_type) = if wants_openmetrics(&headers) {
        (body, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        (classic_text(&body), "text/plain; version=0.0.4; charset=utf-8")
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// Whether the scraper asks for OpenMetrics (Prometheus does); other clients (curl, promtool,
/// older scrapers) get the classic text format.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// The OpenMetrics exposition as the classic Prometheus text format (0.0.4), which
/// prometheus_client does not write (prometheus/client_rust#51): a counter's `HELP` and `TYPE`
/// name its samples (`x_total`), and there are no `UNIT` lines and no `# EOF`.
fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(&name) { "_total" } else { "" };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_pattern_is_interned_once_documented_or_not() {
        let rule = "/system/ratelimits/rules/{id}";
        assert!(DOCUMENTED.contains(rule), "{:?}", *DOCUMENTED);
        // Another string with the same text: the same interned one.
        let copy = rule.to_owned();
        assert!(std::ptr::eq(intern(rule), intern(&copy)));
        let other = "/not/documented/{x}";
        assert_eq!(intern(other), other);
        let copy = other.to_owned();
        assert!(std::ptr::eq(intern(other), intern(&copy)));
    }
}
