//! Reconcile runs over HTTP.

use super::assert_error;
use crate::support::all_backends;
use crate::support::app::{READER, TestApp, state_with};

#[test]
fn runs_validate_their_query() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let (status, runs) = app.get("/system/reconcile/runs?limit=1", Some(READER));
        assert_eq!((status, runs.as_array().map(Vec::len)), (200, Some(1)));
        assert_error(
            &app,
            app.get("/system/reconcile/runs?limit=0", Some(READER)),
            422,
            "unprocessable",
        );
        assert_error(
            &app,
            app.get("/system/reconcile/runs?limit=lots", Some(READER)),
            400,
            "bad_request",
        );
        assert_error(
            &app,
            app.get("/system/reconcile/runs?limt=5", Some(READER)),
            400,
            "bad_request",
        );
    }
}
