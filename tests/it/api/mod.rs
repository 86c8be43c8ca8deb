//! The HTTP server on every backend: a real server on a random port, real keys, real requests.

mod admin;
mod clients;
mod flags;
mod health;
mod maintenance;
mod notifications;
mod overrides;
mod rules;
mod runs;

use serde_json::Value;

use crate::support::app::TestApp;

/// Three rules: an office network, one user, and a disabled global limit.
const RULES: &str = "rate_limits:\n  - scope: ip\n    key: 203.0.113.0/24\n    max_requests: 600\n    description: Office\n  - scope: user\n    key: user-7\n    max_requests: 30\n  - scope: global\n    max_requests: 6000\n    enabled: false\n";

/// Asserts the documented error body.
fn assert_error(app: &TestApp, (status, body): (u16, Value), want: u16, code: &str) {
    assert_eq!(status, want, "{}: {body}", app.backend);
    assert_eq!(body["error"]["code"], code, "{}: {body}", app.backend);
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}: {body}",
        app.backend
    );
}
