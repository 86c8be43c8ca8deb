//! What the routes declare to the enforcement layers about themselves: the paths every mode
//! serves (which no limit refuses either), the path counted against the asker's own rules only,
//! and the one write that changes nothing.

use axum::http::Method;

use super::{admin, check, health, maintenance, metrics, notifications, overrides, status};
use crate::enforce::Paths;

/// Every module's paths that a freeze serves: health, metrics, the status page, the events
/// (what happened), the way out of a freeze (reading and setting the mode, listing and lifting
/// overrides) and the admin console. A freeze that refused those would hold until it expired; the handlers still check
/// roles.
const ALWAYS_SERVED: [&[Paths]; 7] = [
    health::ALWAYS_SERVED,
    metrics::ALWAYS_SERVED,
    status::ALWAYS_SERVED,
    notifications::ALWAYS_SERVED,
    maintenance::ALWAYS_SERVED,
    overrides::ALWAYS_SERVED,
    admin::ALWAYS_SERVED,
];

/// Whether every mode serves `path`.
pub fn always_served(path: &str) -> bool {
    ALWAYS_SERVED
        .iter()
        .flat_map(|paths| paths.iter())
        .any(|p| p.matches(path))
}

/// Whether no rate limit refuses `path`: whatever a freeze serves, since a limit of 0 set over
/// HTTP (globally, or on the admin's own client) would otherwise lock everyone out of the way
/// to lift it.
pub fn unlimited(path: &str) -> bool {
    always_served(path)
}

/// Whether `path` is counted against the asker's own `api_key` rule only: the check endpoint,
/// whose questions count the subject asked about, not the platform's global budget.
pub fn own_rules_only(path: &str) -> bool {
    path == check::PATH
}

/// Whether a request changes no stored state: GET, HEAD and OPTIONS, and the check endpoint (a
/// gateway asking about a request), so a read-only platform still answers it.
pub fn reads(method: &Method, path: &str) -> bool {
    crate::enforce::safe_method(method, path) || (method == Method::POST && path == check::PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_path_is_a_documented_route() {
        let (_, document) = super::super::routes();
        let routes: Vec<&String> = document.paths.paths.keys().collect();
        for declared in ALWAYS_SERVED.iter().flat_map(|paths| paths.iter()) {
            let found = match *declared {
                Paths::Exactly(path) | Paths::AndBelow(path) => routes.iter().any(|r| *r == path),
                Paths::Below(_) => routes.iter().any(|r| declared.matches(r)),
            };
            assert!(found, "{declared:?} names no route: {routes:?}");
        }
        assert!(routes.iter().any(|r| *r == check::PATH));
    }

    #[test]
    fn the_declared_paths_are_served_in_every_mode_and_their_neighbours_are_not() {
        for served in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/status",
            "/status/app.js",
            "/favicon.ico",
            "/system/maintenance/state",
            "/system/maintenance/state/history",
            "/system/overrides",
            "/system/overrides/7",
            "/admin/ops",
        ] {
            assert!(always_served(served) && unlimited(served), "{served}");
        }
        for frozen in [
            "/admin",
            "/healthzz",
            "/statuses",
            "/system/maintenance/windows",
            "/system/maintenance/stateful",
            "/system/overridesx",
            "/system/ratelimits/rules",
            "/system/ratelimits/check",
        ] {
            assert!(!always_served(frozen) && !unlimited(frozen), "{frozen}");
        }
        assert!(own_rules_only("/system/ratelimits/check"));
        assert!(!own_rules_only("/system/ratelimits/rules"));
        assert!(reads(&Method::POST, "/system/ratelimits/check"));
        assert!(reads(&Method::HEAD, "/system/ratelimits/rules"));
        assert!(!reads(&Method::POST, "/system/ratelimits/rules"));
        assert!(!reads(&Method::DELETE, "/system/ratelimits/check"));
    }
}
