//! The admin console over HTTP: its actions, the lockdown, batches.

use chrono::Utc;
use serde_json::Value;

use super::{RULES, assert_error};
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};

#[test]
fn the_admin_console_runs_its_actions() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        let b = app.backend;
        let ops = |key: &str, body: &str| app.send_json("POST", "/admin/ops/", Some(key), body);
        assert_error(
            &app,
            app.send_json("POST", "/admin/ops", None, r#"{"action": "security_snapshot"}"#),
            401,
            "unauthorized",
        );
        assert_error(
            &app,
            ops(OPERATOR, r#"{"action": "security_snapshot"}"#),
            403,
            "forbidden",
        );
        let (status, unknown) = ops(ADMIN, r#"{"action": "reboot"}"#);
        assert_error(&app, (status, unknown.clone()), 422, "unprocessable");
        assert!(
            unknown["error"]["message"]
                .as_str()
                .unwrap()
                .contains("security_snapshot, set_maintenance_mode"),
            "{unknown}"
        );

        let (status, snapshot) = ops(ADMIN, r#"{"action": "security_snapshot"}"#);
        assert_eq!(status, 200, "{b}: {snapshot}");
        let result = &snapshot["result"];
        assert_eq!(
            (&result["rules"]["total"], &result["rules"]["disabled"]),
            (&3.into(), &1.into()),
            "{b}: {result}"
        );
        assert!(
            result["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["role"] == "admin" && c["active"] == false && c["count"] == 1)
        );
        assert_eq!(
            (&result["mode"]["mode"], &result["last_reconcile"]["actor"]),
            (&"normal".into(), &"test".into())
        );

        let freeze = r#"{"action": "set_maintenance_mode", "payload": {"mode": "read_only", "reason": "audit", "ttl_seconds": 60}}"#;
        let (status, frozen) = ops(ADMIN, freeze);
        assert_eq!(
            (status, &frozen["result"]["state"]["source"]),
            (200, &"override".into()),
            "{b}: {frozen}"
        );
        assert_error(
            &app,
            ops(
                ADMIN,
                r#"{"action": "set_maintenance_mode", "payload": {"mode": "off", "reason": "x"}}"#,
            ),
            422,
            "unprocessable",
        );
        let (_, audit) = ops(
            ADMIN,
            r#"{"action": "audit_log", "payload": {"actor": "admin", "kind": "maintenance_mode"}}"#,
        );
        assert_eq!(audit["result"].as_array().map(Vec::len), Some(1), "{b}: {audit}");
        assert_eq!(audit["result"][0]["action"], "update");
        let (_, cleared) = ops(ADMIN, r#"{"action": "clear_overrides"}"#);
        assert_eq!(cleared["result"]["cleared"], 1, "{b}");

        // Reconcile from the server's state directory: a dry run, then for real.
        app.state_dir.write(
            "state.yaml",
            &state_with(&RULES.replace("max_requests: 30", "max_requests: 40")),
        );
        let (status, dry) = ops(ADMIN, r#"{"action": "reconcile", "payload": {"dry_run": true}}"#);
        assert_eq!(
            (status, &dry["result"]["run_id"]),
            (200, &Value::Null),
            "{b}: {dry}"
        );
        let changes: Vec<&str> = dry["result"]["plan"]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert!(changes.contains(&"user:user-7"), "{b}: {changes:?}");
        let (_, applied) = ops(ADMIN, r#"{"action": "reconcile"}"#);
        assert!(applied["result"]["run_id"].is_i64(), "{b}: {applied}");
        let (_, rules) = app.get("/system/ratelimits/rules?key=user-7", Some(READER));
        assert_eq!(rules[0]["max_requests"], 40, "{b}");
        assert_error(
            &app,
            ops(ADMIN, r#"{"action": "reconcile", "payload": {"dry": true}}"#),
            422,
            "unprocessable",
        );
    }
}

#[test]
fn lockdown_and_its_reversal() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(&format!("{RULES}maintenance:\n  mode: normal\n")));
        let b = app.backend;
        let ops = |body: &str| app.send_json("POST", "/admin/ops", Some(ADMIN), body);
        assert_error(
            &app,
            ops(r#"{"action": "lockdown", "payload": {"reason": " "}}"#),
            422,
            "unprocessable",
        );
        let (status, done) =
            ops(r#"{"action": "lockdown", "payload": {"reason": "breach", "global_max_requests": 100}}"#);
        assert_eq!(status, 200, "{b}: {done}");
        let result = &done["result"];
        assert_eq!(
            result["deactivated"],
            serde_json::json!(["operator", "reader"]),
            "{b}"
        );
        let group = result["group_id"].as_str().unwrap().to_owned();
        assert!(group.starts_with("lockdown-"), "{group}");
        // The mode, two clients and the git-owned global rule: one group.
        assert_eq!(
            result["overrides"].as_array().map(Vec::len),
            Some(4),
            "{b}: {result}"
        );

        assert_error(
            &app,
            app.get("/system/overrides", Some(READER)),
            401,
            "unauthorized",
        );
        assert_error(
            &app,
            app.get("/system/overrides", Some(OPERATOR)),
            401,
            "unauthorized",
        );
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["reason"]),
            (&"read_only".into(), &"breach".into()),
            "{b}"
        );
        let (_, global) = app.get("/system/ratelimits/rules?scope=global", Some(ADMIN));
        assert_eq!(
            (&global[0]["max_requests"], &global[0]["enabled"]),
            (&100.into(), &true.into()),
            "{b}"
        );
        let (_, dry) = ops(r#"{"action": "reconcile", "payload": {"dry_run": true}}"#);
        assert_eq!(dry["result"]["plan"]["summary"]["held"], 4, "{b}: {dry}");

        // Lifting the group gives git's values back at once: this server knows its state
        // directory and reconciles it (the clients were left deactivated until a reconcile).
        let (_, cleared) = ops(&format!(
            r#"{{"action": "clear_overrides", "payload": {{"group_id": "{group}"}}}}"#
        ));
        assert_eq!(cleared["result"]["cleared"], 4, "{b}");
        let restore = &cleared["result"]["restore"];
        assert_eq!(restore["restored"], true, "{b}: {cleared}");
        assert!(restore["run_id"].is_i64(), "{b}: {cleared}");
        assert_eq!(app.get("/system/overrides", Some(READER)).0, 200, "{b}");
        let (_, applied) = ops(r#"{"action": "reconcile"}"#);
        assert_eq!(
            applied["result"]["plan"]["summary"]["update"], 0,
            "{b}: nothing left for a reconcile: {applied}"
        );
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"]),
            (&"normal".into(), &"git".into()),
            "{b}"
        );
        let (_, global) = app.get("/system/ratelimits/rules?scope=global", Some(READER));
        assert_eq!(
            (&global[0]["max_requests"], &global[0]["enabled"]),
            (&6000.into(), &false.into()),
            "{b}"
        );
    }
}

#[test]
fn batches_apply_all_or_nothing() {
    for db in all_backends() {
        let yaml = state_with("feature_flags:\n  - name: new-billing\n    enabled: true\n");
        let app = TestApp::spawn(db, &yaml);
        let b = app.backend;
        let ops = |body: &str| app.send_json("POST", "/admin/ops", Some(ADMIN), body);
        let batch = r#"{"action": "batch", "payload": {"actions": [
            {"action": "set_feature_flag", "payload": {"name": "new-billing", "enabled": false, "reason": "incident"}},
            {"action": "set_deployment_profile", "payload": {"profile": "degraded", "reason": "incident"}},
            {"action": "set_maintenance_mode", "payload": {"mode": "read_only", "reason": "incident"}}
        ]}}"#;
        let (status, done) = ops(batch);
        assert_eq!(
            (status, done["result"].as_array().map(Vec::len)),
            (200, Some(3)),
            "{b}: {done}"
        );
        assert_eq!(app.get("/system/maintenance/state", None).1["mode"], "read_only");
        assert_eq!(
            app.get("/system/feature-flags", Some(READER)).1[0]["enabled"],
            false
        );

        // A bad action refuses the whole batch before anything is written.
        let bad = r#"{"action": "batch", "payload": {"actions": [
            {"action": "set_feature_flag", "payload": {"name": "new-billing", "enabled": true, "reason": "recovered"}},
            {"action": "set_maintenance_mode", "payload": {"mode": "sideways", "reason": "x"}}
        ]}}"#;
        let (status, refused) = ops(bad);
        assert_error(&app, (status, refused.clone()), 422, "unprocessable");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("batch action 1:"),
            "{refused}"
        );
        assert_error(
            &app,
            ops(r#"{"action": "batch", "payload": {"actions": [{"action": "reconcile"}]}}"#),
            422,
            "unprocessable",
        );
        assert_eq!(
            app.get("/system/feature-flags", Some(READER)).1[0]["enabled"],
            false,
            "{b}: nothing was written"
        );

        // A write that fails inside the transaction rolls back the ones before it.
        use valhalla_ops::store::{ApiChange, WriteOp};
        let change = |reason: Option<&str>| ApiChange {
            actor: "admin".into(),
            reason: reason.map(Into::into),
            expires_at: None,
            now: Utc::now(),
            group_id: None,
        };
        let flag = valhalla_ops::domain::FlagName::parse("new-billing").unwrap();
        let writes = [
            WriteOp::SetFlag {
                name: flag,
                enabled: true,
                change: change(Some("recovered")),
            },
            WriteOp::SetMode {
                mode: valhalla_ops::domain::Mode::Normal,
                change: change(None),
            },
        ];
        let failed = app.runtime.block_on(app.state.db.batch(&writes)).unwrap_err();
        assert_eq!(failed.index, 1, "{b}: {failed}");
        assert_eq!(
            app.get("/system/feature-flags", Some(READER)).1[0]["enabled"],
            false,
            "{b}: rolled back"
        );
    }
}

#[test]
fn a_lifted_override_without_a_state_directory_says_a_reconcile_is_needed() {
    for db in all_backends() {
        let app = TestApp::spawn_with(db, &state_with(""), |state| state.state_dir = None);
        let b = app.backend;
        let off = format!("/system/clients/{}/deactivate", app.client_id("reader"));
        let (status, _) = app.send_json("POST", &off, Some(OPERATOR), r#"{"reason": "leak"}"#);
        assert_eq!(status, 200, "{b}");
        let (_, open) = app.get("/system/overrides", Some(OPERATOR));
        let id = open[0]["id"].as_i64().unwrap();
        let (status, lifted) = app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR));
        assert_eq!(
            (status, &lifted["restored"]),
            (200, &false.into()),
            "{b}: {lifted}"
        );
        assert!(
            lifted["next"].as_str().unwrap().contains("reconcile"),
            "{b}: {lifted}"
        );
        // Still deactivated: nothing gave git's value back.
        assert_eq!(app.get("/system/overrides", Some(READER)).0, 401, "{b}");
    }
}

/// The admin console's `set_maintenance_mode` to the mode git declares lifts the freeze, as the
/// state endpoint does, rather than pinning git's value in an override of its own.
#[test]
fn setting_gits_mode_from_the_console_lifts_the_freeze() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with("maintenance:\n  mode: normal\n"));
        let b = app.backend;
        let ops = |body: &str| app.send_json("POST", "/admin/ops", Some(ADMIN), body);
        let (status, frozen) =
            ops(r#"{"action": "set_maintenance_mode", "payload": {"mode": "read_only", "reason": "audit"}}"#);
        assert_eq!(status, 200, "{b}: {frozen}");
        let (status, lifted) = ops(
            r#"{"action": "set_maintenance_mode", "payload": {"mode": "normal", "reason": "audit over"}}"#,
        );
        assert_eq!(status, 200, "{b}: {lifted}");
        assert_eq!(
            (&lifted["result"]["restored"], &lifted["result"]["source"]),
            (&true.into(), &"git".into()),
            "{b}: {lifted}"
        );
        assert_eq!(
            app.get("/system/overrides", Some(ADMIN)).1,
            serde_json::json!([]),
            "{b}"
        );
    }
}
