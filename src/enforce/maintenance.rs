//! The maintenance freeze as a layer: what the effective mode forbids gets 503, with
//! `Retry-After` when the end is known. The mode is computed from the cached inputs and the
//! clock, so a window opens and closes without any write.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use super::{BoxFuture, Enforcer, caller};
use crate::domain::{Mode, Role};
use crate::mode::{EffectiveMode, effective};
use crate::server::ApiError;

/// Mounts the freeze on a router.
#[derive(Clone)]
pub struct MaintenanceLayer {
    enforcer: Arc<Enforcer>,
}

impl MaintenanceLayer {
    pub fn new(enforcer: Arc<Enforcer>) -> MaintenanceLayer {
        MaintenanceLayer { enforcer }
    }
}

impl<S> Layer<S> for MaintenanceLayer {
    type Service = MaintenanceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MaintenanceService {
            inner,
            enforcer: Arc::clone(&self.enforcer),
        }
    }
}

/// The freeze around a service.
#[derive(Clone)]
pub struct MaintenanceService<S> {
    inner: S,
    enforcer: Arc<Enforcer>,
}

impl<S> Service<Request> for MaintenanceService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    /// In `read_only`, writes by non-admins get 503; in `maintenance`, everything but the
    /// always-served paths gets 503.
    fn call(&mut self, mut request: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let enforcer = Arc::clone(&self.enforcer);
        Box::pin(async move {
            if (enforcer.always_served)(request.uri().path()) {
                return inner.call(request).await;
            }
            let replica = &enforcer.replica;
            let view = match replica.view().await {
                Ok(view) => view,
                Err(e) => return Ok(ApiError::from(e).into_response()),
            };
            let now = (replica.clock)();
            let mode = effective(&view.maintenance, now);
            let is_write = !(enforcer.reads)(request.method(), request.uri().path());
            let refused = match mode.mode {
                Mode::Normal => false,
                Mode::ReadOnly if is_write => {
                    caller(&mut request, &view).is_none_or(|c| c.role != Role::Admin)
                }
                Mode::ReadOnly => false,
                Mode::Maintenance => true,
            };
            if refused {
                Ok(refusal(&mode, now))
            } else {
                inner.call(request).await
            }
        })
    }
}

fn refusal(mode: &EffectiveMode, now: chrono::DateTime<chrono::Utc>) -> Response {
    let why = if mode.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", mode.reason)
    };
    let what = match mode.mode {
        Mode::ReadOnly => "the platform is read-only",
        _ => "the platform is in maintenance",
    };
    let until = mode
        .until
        .map(|t| format!("; until {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    let mut response =
        ApiError::Maintenance(format!("{what}{why}{}", until.unwrap_or_default())).into_response();
    if let Some(until) = mode.until {
        let seconds = (until - now).num_seconds().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
