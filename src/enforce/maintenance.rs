//! The maintenance freeze as a layer: what the effective mode forbids gets 503, with
//! `Retry-After` when the end is known. The mode is computed from the cached inputs and the
//! clock, so a window opens and closes without any write.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{Enforcer, Gate, Gating, Passage, caller};
use crate::api_error::ApiError;
use crate::domain::{Mode, Role};
use crate::mode::{EffectiveMode, effective};
use crate::replica::View;

/// The freeze: in `read_only`, writes by non-admins get 503; in `maintenance`, everything but
/// the always-served paths gets 503.
pub struct Freeze;

impl Gate for Freeze {
    fn pass(enforcer: &Arc<Enforcer>, request: Request) -> Gating {
        if (enforcer.always_served)(request.uri().path()) {
            return Gating::Now(Passage::Admitted(request, HeaderMap::new()));
        }
        if let Some(view) = enforcer.replica.view_now() {
            return Gating::Now(freeze(enforcer, &view, request));
        }
        let enforcer = Arc::clone(enforcer);
        Gating::Later(Box::pin(async move {
            match enforcer.replica.view().await {
                Ok(view) => freeze(&enforcer, &view, request),
                Err(e) => Passage::Refused(ApiError::from(e).into_response()),
            }
        }))
    }
}

/// The freeze's decision about a request that is not always served, in `view`'s mode now.
fn freeze(enforcer: &Enforcer, view: &View, mut request: Request) -> Passage {
    let now = (enforcer.replica.clock)();
    let mode = effective(&view.maintenance, now);
    let is_write = !(enforcer.reads)(request.method(), request.uri().path());
    let admin = || caller(&mut request, view).map(|c| c.is_some_and(|c| c.role == Role::Admin));
    match refuses(mode.mode, is_write, admin) {
        Ok(false) => Passage::Admitted(request, HeaderMap::new()),
        Ok(true) => Passage::Refused(refusal(&mode, now)),
        Err(e) => Passage::Refused(super::bad_request(e)),
    }
}

/// Whether the platform in `mode` refuses a request (a write when `is_write`), for HTTP and the
/// gateways alike: `maintenance` refuses everything, `read_only` writes unless `admin` says the
/// caller is an admin (asked only then).
pub fn refuses<E>(mode: Mode, is_write: bool, admin: impl FnOnce() -> Result<bool, E>) -> Result<bool, E> {
    Ok(match mode {
        Mode::Normal => false,
        Mode::ReadOnly => is_write && !admin()?,
        Mode::Maintenance => true,
    })
}

/// Why the platform refuses, in one line (`the platform is read-only: "reason"; until …`),
/// and the seconds until the mode's known end, for `Retry-After`.
pub fn why_frozen(mode: &EffectiveMode, now: chrono::DateTime<chrono::Utc>) -> (String, Option<i64>) {
    // Quoted, so that a reason reads as one (`"0"`, not `(0)`), escaped as JSON escapes it.
    let why = if mode.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", serde_json::Value::String(mode.reason.clone()))
    };
    let what = match mode.mode {
        Mode::ReadOnly => "the platform is read-only",
        _ => "the platform is in maintenance",
    };
    let until = mode
        .until
        .map(|t| format!("; until {}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    let retry = mode.until.map(|until| (until - now).num_seconds().max(1));
    (format!("{what}{why}{}", until.unwrap_or_default()), retry)
}

fn refusal(mode: &EffectiveMode, now: chrono::DateTime<chrono::Utc>) -> Response {
    let (message, retry) = why_frozen(mode, now);
    let mut response = ApiError::Maintenance(message).into_response();
    if let Some(seconds) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
