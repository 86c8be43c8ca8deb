//! The maintenance state and windows over HTTP.

use chrono::{Duration, Utc};
use serde_json::Value;
use valhalla_ops::model::{Kind, NewOverride};

use super::assert_error;
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};

#[test]
fn maintenance_state_is_public_and_follows_override_then_window_then_git() {
    for db in all_backends() {
        let now = Utc::now();
        let window = format!(
            "maintenance:\n  mode: normal\n  windows:\n    - name: upgrade\n      starts_at: {}\n      ends_at: {}\n      mode: read_only\n      description: Postgres upgrade\n",
            (now - Duration::minutes(5)).to_rfc3339(),
            (now + Duration::minutes(55)).to_rfc3339()
        );
        let app = TestApp::spawn(db, &state_with(&window));
        let (status, state) = app.get("/system/maintenance/state", None);
        assert_eq!(status, 200, "{state}");
        assert_eq!(
            (&state["mode"], &state["source"], &state["reason"]),
            (&"read_only".into(), &"window".into(), &"Postgres upgrade".into())
        );
        assert!(state["until"].is_string());

        // Tyr freezes the platform: the override wins over the window. (By hand, the mode
        // first and the override last, as one transaction would make both visible at once.)
        app.runtime.block_on(async {
            let db = &app.state.db;
            crate::support::exec(db, "UPDATE maintenance_state SET mode = 'maintenance'").await;
            let freeze = NewOverride {
                kind: Kind::MaintenanceMode,
                key: "mode".into(),
                actor: "tyr".into(),
                reason: "incident 13".into(),
                expires_at: None,
                group_id: None,
                git_value: None,
            };
            db.add_override(freeze, Utc::now()).await.unwrap();
        });
        // Written behind the server's back: it learns of it from the store's change feed
        // (Postgres NOTIFY, SQLite's data version), within a second, not before the next request.
        let started = std::time::Instant::now();
        let mut state = app.get("/system/maintenance/state/", None).1;
        while state["source"] != "override" && started.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            state = app.get("/system/maintenance/state/", None).1;
        }
        assert_eq!(
            (&state["mode"], &state["source"], &state["until"]),
            (&"maintenance".into(), &"override".into(), &Value::Null),
            "{}",
            app.backend
        );
    }
}

#[test]
fn windows_are_scheduled_and_listed() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let now = Utc::now();
        let at = |minutes: i64| (now + Duration::minutes(minutes)).to_rfc3339();
        let body = |name: &str, from: i64, to: i64, mode: &str| {
            format!(
                r#"{{{name} "starts_at": "{}", "ends_at": "{}", "mode": "{mode}", "description": "Upgrade"}}"#,
                at(from),
                at(to)
            )
        };
        let upcoming = body(r#""name": "db-upgrade","#, 60, 120, "maintenance");
        assert_error(
            &app,
            app.send_json("POST", "/system/maintenance/windows", Some(READER), &upcoming),
            403,
            "forbidden",
        );
        let (status, created) =
            app.send_json("POST", "/system/maintenance/windows", Some(OPERATOR), &upcoming);
        assert_eq!(
            (status, &created["owner"], &created["active"]),
            (201, &"api".into(), &true.into()),
            "{b}: {created}"
        );
        assert_error(
            &app,
            app.send_json("POST", "/system/maintenance/windows/", Some(OPERATOR), &upcoming),
            409,
            "conflict",
        );
        assert_error(
            &app,
            app.send_json(
                "POST",
                "/system/maintenance/windows",
                Some(OPERATOR),
                &body("", 60, 30, "read_only"),
            ),
            422,
            "unprocessable",
        );
        let naive = r#"{"starts_at": "2026-12-01T02:00:00", "ends_at": "2026-12-01T04:00:00Z"}"#;
        assert_error(
            &app,
            app.send_json("POST", "/system/maintenance/windows", Some(OPERATOR), naive),
            422,
            "unprocessable",
        );

        // A window that is open now, created without a name: the state follows, with no other write.
        let (status, open) = app.send_json(
            "POST",
            "/system/maintenance/windows",
            Some(OPERATOR),
            &body("", -5, 30, "read_only"),
        );
        assert_eq!(status, 201, "{b}: {open}");
        assert!(open["name"].as_str().unwrap().starts_with("api-"), "{open}");
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"]),
            (&"read_only".into(), &"window".into()),
            "{b}: {state}"
        );

        let (_, all) = app.get("/system/maintenance/windows", Some(READER));
        assert_eq!(all.as_array().map(Vec::len), Some(2), "{b}");
        let (_, later) = app.get("/system/maintenance/windows?upcoming=true", Some(READER));
        let names: Vec<&str> = later
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["db-upgrade"], "{b}");
        let (_, inactive) = app.get("/system/maintenance/windows?active=false", Some(READER));
        assert_eq!(inactive, serde_json::json!([]));
    }
}

/// A reason is at most 500 characters: 65,000 of them once reached the status page whole.
#[test]
fn a_reason_longer_than_500_characters_is_a_422() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with("maintenance:\n  mode: normal\n"));
        let b = app.backend;
        let body = |reason: &str| format!(r#"{{"reason": "{reason}", "ttl_seconds": 60}}"#);
        let long = "x".repeat(65_000);
        let (status, refused) = app.send_json(
            "POST",
            "/system/maintenance/state/read_only",
            Some(OPERATOR),
            &body(&long),
        );
        assert_eq!(status, 422, "{b}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("at most 500 characters, not 65000"),
            "{b}: {message}"
        );
        assert!(message.len() < 1000, "{b}: the message does not echo the reason");
        let (status, admin) = app.send_json(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            &format!(
                r#"{{"action": "set_maintenance_mode", "payload": {{"mode": "read_only", "reason": "{}"}}}}"#,
                "x".repeat(501)
            ),
        );
        assert_eq!(status, 422, "{b}: {admin}");
        let (status, set) = app.send_json(
            "POST",
            "/system/maintenance/state/read_only",
            Some(OPERATOR),
            &body(&"é".repeat(500)),
        );
        assert_eq!(status, 200, "{b}: {set}");
    }
}
