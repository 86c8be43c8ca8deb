//! The maintenance guard: what the effective mode forbids gets 503, with Retry-After when the
//! end is known.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, auth};
use crate::domain::{Mode, Role};
use crate::mode::effective;
use crate::store::Store as _;

/// Paths every mode serves: health, metrics, the state (to read it and to lift a freeze), the
/// admin console.
fn always_served(path: &str) -> bool {
    path == "/healthz"
        || path == "/readyz"
        || path == "/metrics"
        || path == "/system/maintenance/state"
        || path.starts_with("/system/maintenance/state/")
        || path.starts_with("/admin/")
}

/// In `read_only`, writes by non-admins get 503; in `maintenance`, everything but
/// [`always_served`] paths gets 503.
pub async fn maintenance_guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if always_served(request.uri().path()) {
        return next.run(request).await;
    }
    let now = (state.clock)();
    let mode = match state.db.maintenance().await {
        Ok(inputs) => effective(&inputs, now),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let is_write = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let refused = match mode.mode {
        Mode::Normal => false,
        Mode::ReadOnly if is_write => {
            let caller = auth::caller_of(request.headers(), &state).await;
            caller.is_none_or(|c| c.role != Role::Admin)
        }
        Mode::ReadOnly => false,
        Mode::Maintenance => true,
    };
    if !refused {
        return next.run(request).await;
    }
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
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}
