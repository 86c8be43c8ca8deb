//! The on-call status page: `GET /status`, its script and style (embedded), and its data, once
//! (`/status/snapshot`) or pushed on every change (`/status/events`, server-sent events).

mod recent;
mod snapshot;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use tokio::sync::{Semaphore, watch};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use recent::{RecentRefusals, Refused, RefusedCount};
pub use snapshot::StatusSnapshot;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::auth::{Caller, identify, presented_key};

/// The page, its script and its style, written for this server and embedded in the binary.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// Pages with a key following the status at once; more get 503 (each costs a few reads a
/// second).
const STREAMS: usize = 64;
/// Pages without a key following the status at once, in a pool of their own: anonymous pages
/// cannot crowd out on-call's.
const ANONYMOUS_STREAMS: usize = 32;
/// How long an anonymous page follows before its stream ends (the page then follows again, if
/// a slot is free): a stream left open by nobody frees its slot.
const ANONYMOUS_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// How often a stream looks again, besides every change: a window opens, an override expires,
/// a reconcile is recorded without changing anything a replica caches.
const TICK: Duration = Duration::from_secs(1);

/// What the status streams of a server share: their bound, the refusals they show, and the
/// signal that ends them when the server shuts down (an open stream would hold it up).
#[derive(Debug, Clone)]
pub struct StatusHub {
    /// Slots of the streams of pages given a key.
    streams: Arc<Semaphore>,
    /// Slots of the streams of pages without one.
    anonymous: Arc<Semaphore>,
    /// How long an anonymous stream lasts (`ANONYMOUS_LIFETIME`; tests shorten it).
    pub anonymous_lifetime: Duration,
    pub recent: Arc<RecentRefusals>,
    closing: watch::Sender<bool>,
}

impl Default for StatusHub {
    fn default() -> Self {
        StatusHub {
            streams: Arc::new(Semaphore::new(STREAMS)),
            anonymous: Arc::new(Semaphore::new(ANONYMOUS_STREAMS)),
            anonymous_lifetime: ANONYMOUS_LIFETIME,
            recent: Arc::default(),
            closing: watch::Sender::new(false),
        }
    }
}

impl StatusHub {
    /// Ends every open stream (the server is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Says `true` once the server is shutting down: what else waits on a client (a request
    /// body still arriving) stops waiting then too.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Served in every mode: the page shows the freeze (and a browser asks for the icon with it).
pub(in crate::server) const ALWAYS_SERVED: &[crate::enforce::Paths] = &[
    crate::enforce::Paths::AndBelow("/status"),
    crate::enforce::Paths::Exactly("/favicon.ico"),
];

/// This module's routes.
pub(super) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(favicon))
        .routes(routes!(script))
        .routes(routes!(style))
        .routes(routes!(status_snapshot))
        .routes(routes!(status_events))
}

/// The headers of a console: a content security policy that allows only this server's own
/// script, style and connections (no inline script, no framing), and nothing cached.
fn console(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// `GET /status` (public): the status page. Without a key it shows the mode; a key typed into
/// the page (kept in the tab's memory only) shows the rest for that key's role.
#[utoipa::path(get, path = "/status", operation_id = "get_status_page", tag = "status", responses((status = 200, description = "The status page", content_type = "text/html")))]
pub async fn page() -> Response {
    console("text/html; charset=utf-8", PAGE)
}

/// `GET /favicon.ico` (public): no icon, said plainly, so that a browser opening the page does
/// not leave a 404 in the log and the metrics each time (and does not ask again for a day).
#[utoipa::path(get, path = "/favicon.ico", operation_id = "get_favicon", tag = "status", responses((status = 204, description = "No icon")))]
pub async fn favicon() -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}

/// `GET /status/app.js` (public): the status page's script.
#[utoipa::path(get, path = "/status/app.js", operation_id = "get_status_script", tag = "status", responses((status = 200, description = "The page's script", content_type = "text/javascript")))]
pub async fn script() -> Response {
    console("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /status/app.css` (public): the status page's style.
#[utoipa::path(get, path = "/status/app.css", operation_id = "get_status_style", tag = "status", responses((status = 200, description = "The page's style", content_type = "text/css")))]
pub async fn style() -> Response {
    console("text/css; charset=utf-8", STYLE)
}

/// The caller, if the request presents a key: none without one, 401 with an unknown one (a
/// mistyped key is said, not silently shown the public page).
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<Arc<AppState>> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        if presented_key(&parts.headers)?.is_none() {
            return Ok(MaybeCaller(None));
        }
        Caller::from_request_parts(parts, state)
            .await
            .map(|c| MaybeCaller(Some(c)))
    }
}

/// `GET /status/snapshot` (public; more with a key): what the status page shows, once.
#[utoipa::path(get, path = "/status/snapshot", operation_id = "get_status_snapshot", tag = "status", security((), ("api_key" = [])), responses((status = 200, description = "The mode; with a key, the overrides, windows, recent reconciles and the limiter too", body = StatusSnapshot), (status = 401, description = "An unknown or inactive key", body = ErrorBody)))]
pub async fn status_snapshot(
    State(state): State<Arc<AppState>>,
    MaybeCaller(caller): MaybeCaller,
) -> Result<Json<StatusSnapshot>, ApiError> {
    Ok(Json(snapshot::snapshot(&state, caller.as_ref()).await?))
}

/// `GET /status/events` (public; more with a key): the same document as server-sent events
/// (`event: status`), sent at once and again within a second of any change, on this replica or
/// another. The stream follows its key (a key demoted sees what its new role sees) and ends when
/// the key stops being valid, after ten minutes without a key, or when the server shuts down.
#[utoipa::path(get, path = "/status/events", operation_id = "follow_status", tag = "status", security((), ("api_key" = [])), responses((status = 200, description = "A stream of `status` events, each a StatusSnapshot", content_type = "text/event-stream"), (status = 401, description = "An unknown or inactive key", body = ErrorBody), (status = 503, description = "Too many pages follow the status", body = ErrorBody)))]
pub async fn status_events(
    State(state): State<Arc<AppState>>,
    MaybeCaller(caller): MaybeCaller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (pool, size, ends) = match caller {
        Some(_) => (&state.status.streams, STREAMS, None),
        None => (
            &state.status.anonymous,
            ANONYMOUS_STREAMS,
            Some(tokio::time::Instant::now() + state.status.anonymous_lifetime),
        ),
    };
    let permit = Arc::clone(pool).try_acquire_owned().map_err(|_| {
        let whose = if caller.is_some() {
            "with a key"
        } else {
            "without a key"
        };
        ApiError::Busy(format!(
            "{size} pages {whose} already follow the status; retry later"
        ))
    })?;
    let follower = Follower {
        state,
        caller,
        headers,
        last: None,
        ends,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One page following the status.
struct Follower {
    state: Arc<AppState>,
    caller: Option<Caller>,
    /// The request's headers, to check on every event that its key is still valid.
    headers: HeaderMap,
    /// The last document sent, without its time, to send only what changed.
    last: Option<serde_json::Value>,
    /// When a stream without a key ends.
    ends: Option<tokio::time::Instant>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Follower {
    /// The next document that differs from the last one sent; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        let changes = Arc::clone(self.state.db.changes());
        let mut closing = self.state.status.closing.subscribe();
        loop {
            if *closing.borrow_and_update() || self.ends.is_some_and(|at| tokio::time::Instant::now() >= at) {
                return None;
            }
            let changed = changes.changed();
            tokio::pin!(changed);
            // Interest first, then the read: a change in between still wakes the next wait.
            changed.as_mut().enable();
            if self.caller.is_some() {
                let view = self.state.replica.view().await.ok()?;
                // A key deactivated meanwhile sees no more; one demoted sees what its role sees.
                self.caller = Some(identify(&self.headers, &view.clients).ok()??);
            }
            if let Ok(document) = snapshot::snapshot(&self.state, self.caller.as_ref()).await
                && let Ok(mut value) = serde_json::to_value(&document)
            {
                let now = value.as_object_mut().and_then(|o| o.remove("now"));
                if self.last.as_ref() != Some(&value) {
                    self.last = Some(value.clone());
                    if let (Some(object), Some(now)) = (value.as_object_mut(), now) {
                        object.insert("now".into(), now);
                    }
                    return Some(Event::default().event("status").data(value.to_string()));
                }
            }
            let tick = match self.ends {
                Some(at) => TICK.min(at.saturating_duration_since(tokio::time::Instant::now())),
                None => TICK,
            };
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep(tick) => {}
                _ = closing.changed() => return None,
            }
        }
    }
}
