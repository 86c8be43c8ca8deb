//! Feature flags and the deployment profile over HTTP.

use super::assert_error;
use crate::support::all_backends;
use crate::support::app::{ADMIN, READER, TestApp, state_with};

#[test]
fn feature_flags_are_listed() {
    for db in all_backends() {
        let flags = "feature_flags:\n  - name: new-billing\n    enabled: true\n    description: Dark launch\n  - name: beta\n";
        let app = TestApp::spawn(db, &state_with(flags));
        assert_error(&app, app.get("/system/feature-flags", None), 401, "unauthorized");
        let (status, list) = app.get("/system/feature-flags/", Some(READER));
        assert_eq!(status, 200, "{list}");
        let got: Vec<(&str, bool)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["name"].as_str().unwrap(), f["enabled"].as_bool().unwrap()))
            .collect();
        assert_eq!(got, [("beta", false), ("new-billing", true)], "{}", app.backend);
        assert_eq!(list[1]["owner"], "git");
    }
}

#[test]
fn flags_and_the_profile_are_set_as_overrides() {
    for db in all_backends() {
        let yaml = state_with(
            "feature_flags:\n  - name: new-billing\n    enabled: true\ndeployment_profile: production\n",
        );
        let app = TestApp::spawn(db, &yaml);
        let b = app.backend;
        let ops = |body: &str| app.send_json("POST", "/admin/ops", Some(ADMIN), body);
        assert_error(
            &app,
            ops(r#"{"action": "set_feature_flag", "payload": {"name": "new-billing", "enabled": false}}"#),
            422,
            "unprocessable",
        );
        let (status, flag) = ops(
            r#"{"action": "set_feature_flag", "payload": {"name": "new-billing", "enabled": false, "reason": "billing incident"}}"#,
        );
        assert_eq!(
            (status, &flag["result"]["override"]["key"]),
            (200, &"new-billing".into()),
            "{b}: {flag}"
        );
        assert_eq!(
            app.get("/system/feature-flags", Some(READER)).1[0]["enabled"],
            false,
            "{b}"
        );
        let (status, profile) = ops(
            r#"{"action": "set_deployment_profile", "payload": {"profile": "degraded", "reason": "failover", "ttl_seconds": 600}}"#,
        );
        assert_eq!(status, 200, "{b}: {profile}");
        let mut plan = app.plan(&yaml);
        plan.sort();
        assert_eq!(
            plan,
            [
                ("deployment_profile".into(), "profile".into(), "held".into()),
                ("feature_flag".into(), "new-billing".into(), "held".into())
            ],
            "{b}"
        );
        // A flag git does not declare is created, owned by the API.
        let (status, _) = ops(
            r#"{"action": "set_feature_flag", "payload": {"name": "kill-switch", "enabled": true, "reason": "drill"}}"#,
        );
        assert_eq!(status, 200);
        let (_, flags) = app.get("/system/feature-flags", Some(READER));
        assert_eq!(
            (&flags[0]["name"], &flags[0]["owner"]),
            (&"kill-switch".into(), &"api".into()),
            "{b}"
        );
    }
}
