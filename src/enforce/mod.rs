//! Enforcement as tower layers: the rate limiter and the maintenance freeze, over a
//! [`Replica`]'s in-memory view. Any axum service of the platform can mount them.
//!
//! ```no_run
//! # async fn demo(db: valhalla_ops::store::Db) {
//! use std::sync::Arc;
//! use valhalla_ops::enforce::{Enforcer, MaintenanceLayer, RateLimitLayer};
//! use valhalla_ops::replica::{Replica, ReplicaOptions};
//!
//! let clock = Arc::new(chrono::Utc::now);
//! let replica = Arc::new(Replica::new(db, clock, ReplicaOptions::default()));
//! // The replica stays fresh until `_tasks` is dropped.
//! let _tasks = replica.spawn();
//! let enforcer = Arc::new(Enforcer::new(Arc::clone(&replica)));
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders", axum::routing::get(|| async { "[]" }))
//!     .route_layer(RateLimitLayer::new(Arc::clone(&enforcer)))
//!     .route_layer(MaintenanceLayer::new(enforcer));
//! # }
//! ```

mod maintenance;
mod ratelimit;

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::header::HeaderName;
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use ipnet::IpNet;
use tower::{Layer, Service};

pub use maintenance::{Freeze, refuses, why_frozen};
pub use ratelimit::{POLICY, RATELIMIT, RateLimit, rate_limit_fields, rate_limit_headers, why_refused};

use crate::auth::{Caller, IdentityError, identify};
use crate::limit::{Decision, Subject};
use crate::replica::{Replica, View};

/// A hook called with every rate-limit decision and the subject it was about.
pub type Observer = Box<dyn Fn(&Decision, &Subject<'_>) + Send + Sync>;

/// The future every enforcement service returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

/// What a gate decides about a request before the service sees it.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and moved once; boxing the request would allocate on every request"
)]
pub enum Passage {
    /// Refused: this is the answer.
    Refused(Response),
    /// Let through; these headers are added to the service's answer.
    Admitted(Request, HeaderMap),
}

/// A gate's decision: made at once, or to be waited for.
#[expect(
    clippy::large_enum_variant,
    reason = "built once per request and moved once; boxing the passage would allocate on every request"
)]
pub enum Gating {
    /// Decided: the view was current and nothing shared had to be asked.
    Now(Passage),
    /// The view must be reloaded or the shared counters asked first.
    Later(Pin<Box<dyn Future<Output = Passage> + Send>>),
}

impl Gating {
    /// The passage, however it comes.
    pub async fn passage(self) -> Passage {
        match self {
            Gating::Now(passage) => passage,
            Gating::Later(future) => future.await,
        }
    }
}

/// One kind of enforcement: a decision about each request, made before the service runs. Most
/// requests are decided at once, so that they pass without a future of their own.
pub trait Gate: Send + Sync + 'static {
    fn pass(enforcer: &Arc<Enforcer>, request: Request) -> Gating;
}

/// Two gates in turn: the first refuses before the second is asked, and the first's headers go
/// on whatever the second answers, as when each is a layer of its own (one layer costs a
/// request less than two).
impl<A: Gate, B: Gate> Gate for (A, B) {
    fn pass(enforcer: &Arc<Enforcer>, request: Request) -> Gating {
        match A::pass(enforcer, request) {
            Gating::Now(Passage::Refused(response)) => Gating::Now(Passage::Refused(response)),
            Gating::Now(Passage::Admitted(request, first)) => match B::pass(enforcer, request) {
                Gating::Now(passage) => Gating::Now(with_headers(passage, first)),
                Gating::Later(second) => {
                    Gating::Later(Box::pin(async move { with_headers(second.await, first) }))
                }
            },
            Gating::Later(first) => {
                let enforcer = Arc::clone(enforcer);
                Gating::Later(Box::pin(async move {
                    match first.await {
                        Passage::Refused(response) => Passage::Refused(response),
                        Passage::Admitted(request, first) => {
                            with_headers(B::pass(&enforcer, request).passage().await, first)
                        }
                    }
                }))
            }
        }
    }
}

/// `passage` with an earlier gate's headers added.
fn with_headers(passage: Passage, earlier: HeaderMap) -> Passage {
    match passage {
        Passage::Refused(mut response) => {
            response.headers_mut().extend(earlier);
            Passage::Refused(response)
        }
        Passage::Admitted(request, mut headers) => {
            headers.extend(earlier);
            Passage::Admitted(request, headers)
        }
    }
}

/// Mounts the rate limiter on a router.
pub type RateLimitLayer = GateLayer<RateLimit>;
/// Mounts the maintenance freeze on a router.
pub type MaintenanceLayer = GateLayer<Freeze>;
/// Mounts both, the freeze outside the limiter (a frozen platform refuses before counting): the
/// same as a [`MaintenanceLayer`] over a [`RateLimitLayer`], for less per request.
pub type EnforcementLayer = GateLayer<(Freeze, RateLimit)>;

/// A [`Gate`] as a tower layer.
pub struct GateLayer<G> {
    enforcer: Arc<Enforcer>,
    gate: PhantomData<fn() -> G>,
}

impl<G> GateLayer<G> {
    pub fn new(enforcer: Arc<Enforcer>) -> GateLayer<G> {
        GateLayer {
            enforcer,
            gate: PhantomData,
        }
    }
}

impl<G> Clone for GateLayer<G> {
    fn clone(&self) -> Self {
        GateLayer::new(Arc::clone(&self.enforcer))
    }
}

impl<S, G> Layer<S> for GateLayer<G> {
    type Service = GateService<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            inner,
            enforcer: Arc::clone(&self.enforcer),
            gate: PhantomData,
        }
    }
}

/// A [`Gate`] around a service.
pub struct GateService<S, G> {
    inner: S,
    enforcer: Arc<Enforcer>,
    gate: PhantomData<fn() -> G>,
}

impl<S: Clone, G> Clone for GateService<S, G> {
    fn clone(&self) -> Self {
        GateService {
            inner: self.inner.clone(),
            enforcer: Arc::clone(&self.enforcer),
            gate: PhantomData,
        }
    }
}

impl<S, G> Service<Request> for GateService<S, G>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Gated<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match G::pass(&self.enforcer, request) {
            Gating::Now(Passage::Refused(response)) => Gated::Refused {
                answer: std::future::ready(Ok(response)),
            },
            Gating::Now(Passage::Admitted(request, headers)) => Gated::Admitted {
                answer: self.inner.call(request),
                headers,
            },
            Gating::Later(passage) => {
                // The clone that was polled ready serves this request.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Gated::Later {
                    answer: Box::pin(async move {
                        match passage.await {
                            Passage::Refused(response) => Ok(response),
                            Passage::Admitted(request, headers) => {
                                let mut response = inner.call(request).await?;
                                response.headers_mut().extend(headers);
                                Ok(response)
                            }
                        }
                    }),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to a gated request: a refusal, the service's answer with the gate's headers,
    /// or, when the gate had to wait, both in one boxed future.
    #[project = GatedProjection]
    pub enum Gated<F> {
        Refused { #[pin] answer: std::future::Ready<Result<Response, Infallible>> },
        Admitted { #[pin] answer: F, headers: HeaderMap },
        Later { answer: BoxFuture<Response> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Gated<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GatedProjection::Refused { answer } => answer.poll(cx),
            GatedProjection::Admitted { answer, headers } => {
                let mut response = std::task::ready!(answer.poll(cx))?;
                response.headers_mut().extend(std::mem::take(headers));
                Poll::Ready(Ok(response))
            }
            GatedProjection::Later { answer } => answer.as_mut().poll(cx),
        }
    }
}

/// What the enforcement layers share: the replica, and which paths each layer leaves alone.
pub struct Enforcer {
    pub replica: Arc<Replica>,
    /// Paths the rate limiter does not count (health checks, the way out of a freeze).
    pub unlimited: fn(&str) -> bool,
    /// Paths counted against the caller's own rules only (its `api_key` rule): the check
    /// endpoint, whose answers count the subject asked about, not the asker's network or the
    /// platform's global budget.
    pub own_rules_only: fn(&str) -> bool,
    /// Paths every mode serves (health, the state, the admin console).
    pub always_served: fn(&str) -> bool,
    /// Requests that change nothing: served in `read_only` whoever asks.
    pub reads: fn(&Method, &str) -> bool,
    /// Proxies (load balancers, the gateway) whose `X-Forwarded-For` names the client; without
    /// any, the peer address is the client's.
    pub trusted_proxies: Vec<IpNet>,
    /// Called with every rate-limit decision, for metrics.
    pub observe: Option<Observer>,
}

impl Enforcer {
    /// Enforcement of every path: none exempt, and the safe methods are the reads. The service
    /// mounting the layers declares its exemptions (valhalla-ops' own server: its routes do).
    pub fn new(replica: Arc<Replica>) -> Enforcer {
        Enforcer {
            replica,
            unlimited: no_path,
            own_rules_only: no_path,
            always_served: no_path,
            reads: safe_method,
            trusted_proxies: Vec::new(),
            observe: None,
        }
    }
}

/// Paths a service declares to the layers, as its routes name them (valhalla-ops' own server:
/// each route module declares those a freeze serves).
#[derive(Debug, Clone, Copy)]
pub enum Paths {
    /// This path only.
    Exactly(&'static str),
    /// This path and every path below it (`/status` and `/status/app.js`).
    AndBelow(&'static str),
    /// Every path below this one, not itself (`/admin/ops`, not `/admin`).
    Below(&'static str),
}

impl Paths {
    /// Whether `path` is among these.
    pub fn matches(self, path: &str) -> bool {
        let below = |base: &str| path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
        match self {
            Paths::Exactly(p) => path == p,
            Paths::AndBelow(p) => path == p || below(p),
            Paths::Below(p) => below(p),
        }
    }
}

/// GET, HEAD and OPTIONS: requests that change nothing, whatever the service.
pub fn safe_method(method: &Method, _path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// No path: the default of the exemptions, which the service mounting the layers declares.
fn no_path(_path: &str) -> bool {
    false
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address in `X-Forwarded-For` that is not a trusted proxy (read from the right, since a
/// client can put anything on the left).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // Garbage: believe no further than the last proxy that added a real address.
            Err(_) => break,
        }
    }
    client
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The caller of a request, from an earlier layer's extension or from its key.
fn caller(request: &mut Request, view: &View) -> Result<Option<Caller>, IdentityError> {
    if let Some(caller) = request.extensions().get::<Caller>() {
        return Ok(Some(caller.clone()));
    }
    let caller = identify(request.headers(), &view.clients)?;
    if let Some(caller) = &caller {
        request.extensions_mut().insert(caller.clone());
    }
    Ok(caller)
}

/// The answer to ambiguous identity headers.
fn bad_request(e: IdentityError) -> Response {
    use axum::response::IntoResponse as _;
    crate::api_error::ApiError::from(e).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        // From the balancer: the nearest untrusted hop, not what the client wrote on the left.
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("203.0.113.9"));
        // Straight from the internet, the header is the client's own claim: ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &[]), ip("10.0.0.1"));
        headers.insert("x-forwarded-for", "junk, 10.0.0.3".parse().unwrap());
        assert_eq!(client_ip(ip("10.0.0.1"), &headers, &trusted), ip("10.0.0.3"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }
}
