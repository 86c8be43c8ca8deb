//! Overrides over HTTP: listing and clearing them, the freeze and its expiry.

use chrono::{Duration, Utc};
use valhalla_ops::model::{Kind, NewOverride};

use super::{RULES, assert_error};
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, read, state_with};

#[test]
fn overrides_are_listed_and_cleared() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let freeze = NewOverride {
            kind: Kind::MaintenanceMode,
            key: "mode".into(),
            actor: "tyr".into(),
            reason: "incident 12".into(),
            expires_at: Some(Utc::now() + Duration::minutes(30)),
            group_id: None,
            git_value: None,
        };
        let id = app
            .runtime
            .block_on(app.state.db.add_override(freeze, Utc::now()))
            .unwrap()
            .id;
        let (status, list) = app.get("/system/overrides", Some(READER));
        assert_eq!(
            (status, &list[0]["reason"], &list[0]["active"]),
            (200, &"incident 12".into(), &true.into())
        );
        let (status, lifted) = app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR));
        assert_eq!(
            (status, &lifted["cleared"], &lifted["restored"]),
            (200, &1.into(), &true.into()),
            "{lifted}"
        );
        assert_error(
            &app,
            app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR)),
            404,
            "not_found",
        );
        assert_error(
            &app,
            app.call("DELETE", "/system/overrides/abc", Some(OPERATOR)),
            400,
            "bad_request",
        );
        assert_eq!(
            app.get("/system/overrides", Some(READER)),
            (200, serde_json::json!([]))
        );
    }
}

#[test]
fn tyr_freezes_the_platform_and_lifts_the_freeze() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        let b = app.backend;
        let freeze = r#"{"reason": "incident 42", "ttl_seconds": 600}"#;
        assert_error(
            &app,
            app.send_json(
                "POST",
                "/system/maintenance/state/read_only",
                Some(READER),
                freeze,
            ),
            403,
            "forbidden",
        );
        assert_error(
            &app,
            app.send_json("POST", "/system/maintenance/state/frozen", Some(ADMIN), freeze),
            422,
            "unprocessable",
        );
        assert_error(
            &app,
            app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), "{}"),
            422,
            "unprocessable",
        );

        let (status, state) =
            app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze);
        assert_eq!(status, 200, "{b}: {state}");
        assert_eq!(
            (&state["mode"], &state["source"], &state["reason"]),
            (&"read_only".into(), &"override".into(), &"incident 42".into())
        );
        assert!(state["until"].is_string(), "{state}");
        assert_eq!(app.get("/system/maintenance/state", None).1["mode"], "read_only");
        // The answer names the override that holds the mode: the one to clear to lift it.
        let (_, open) = app.get("/system/overrides", Some(READER));
        let hold = open
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "maintenance_mode");
        assert_eq!(state["override_id"], hold.unwrap()["id"], "{b}: {state} {open}");

        // Reads go on; writes by non-admins are refused with Retry-After; admins still write.
        assert_eq!(app.get("/system/ratelimits/rules", Some(READER)).0, 200, "{b}");
        let rule = r#"{"scope": "user", "key": "user-9", "max_requests": 1}"#;
        let request = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{}/system/ratelimits/rules", app.base))
            .header("Authorization", format!("Bearer {OPERATOR}"))
            .header("Content-Type", "application/json")
            .body(rule.to_owned())
            .unwrap();
        let response = app.agent.run(request).unwrap();
        let retry_after: i64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (590..=600).contains(&retry_after),
            "{b}: Retry-After {retry_after}"
        );
        let (status, refused) = read(response);
        assert_error(&app, (status, refused.clone()), 503, "unavailable");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("read-only: \"incident 42\""),
            "{refused}"
        );
        assert_eq!(
            app.send_json("POST", "/system/ratelimits/rules", Some(ADMIN), rule)
                .0,
            201,
            "{b}"
        );

        // The reconciler holds the mode instead of undoing the freeze.
        let plan = app.plan(&state_with(RULES).replace("clients:", "maintenance:\n  mode: normal\nclients:"));
        assert!(
            plan.contains(&("maintenance_mode".into(), "mode".into(), "held".into())),
            "{b}: {plan:?}"
        );

        // Full maintenance refuses even reads, but health and the state stay up.
        let down = r#"{"reason": "database failover"}"#;
        assert_eq!(
            app.send_json("POST", "/system/maintenance/state/maintenance", Some(ADMIN), down)
                .0,
            200
        );
        assert_error(
            &app,
            app.get("/system/ratelimits/rules", Some(READER)),
            503,
            "unavailable",
        );
        assert_eq!(app.get("/healthz", None).0, 200);
        assert_eq!(
            app.get("/system/maintenance/state", None).1["mode"],
            "maintenance"
        );

        // Each new mode replaced the previous override: one is open.
        let (_, open) = app.get("/system/overrides", Some(READER));
        assert_eq!(open.as_array().map(Vec::len), Some(1), "{b}: {open}");
        // Lifting the freeze is always possible through the state endpoint: asking for git's
        // own mode lifts the override and pins nothing (it once made a new override of
        // `normal` with no expiry, which outlasted every later window and git change).
        let lift = r#"{"reason": "resolved"}"#;
        let (status, state) = app.send_json("POST", "/system/maintenance/state/normal", Some(OPERATOR), lift);
        assert_eq!(status, 200, "{b}: {state}");
        assert_eq!(
            (
                &state["mode"],
                &state["source"],
                &state["restored"],
                &state["lifted"]
            ),
            (
                &"normal".into(),
                &"git".into(),
                &true.into(),
                &serde_json::json!([open[0]["id"]])
            ),
            "{b}: {state}"
        );
        assert!(state.get("override_id").is_none(), "{b}: {state}");
        assert_eq!(app.get("/system/ratelimits/rules", Some(READER)).0, 200, "{b}");
        let (_, open) = app.get("/system/overrides", Some(READER));
        assert_eq!(open, serde_json::json!([]), "{b}");
        // Asked again, with nothing to lift: nothing is made either.
        let (status, again) = app.send_json("POST", "/system/maintenance/state/normal", Some(OPERATOR), lift);
        assert_eq!(
            (status, &again["restored"], &again["lifted"]),
            (200, &true.into(), &serde_json::json!([])),
            "{b}"
        );
        assert_eq!(
            app.get("/system/overrides", Some(READER)).1,
            serde_json::json!([]),
            "{b}"
        );
        // Another mode is an override as before.
        let (status, frozen) = app.send_json(
            "POST",
            "/system/maintenance/state/read_only",
            Some(OPERATOR),
            lift,
        );
        assert_eq!(
            (status, &frozen["restored"]),
            (200, &false.into()),
            "{b}: {frozen}"
        );
        assert!(frozen["override_id"].is_i64(), "{b}: {frozen}");
    }
}

#[test]
fn an_expired_freeze_lifts_on_time_without_a_reconcile() {
    for db in all_backends() {
        let app = TestApp::spawn(
            db,
            &state_with("maintenance:\n  mode: normal\n  reason: steady\n"),
        );
        let b = app.backend;
        let freeze = r#"{"reason": "incident 77", "ttl_seconds": 60}"#;
        assert_eq!(
            app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze)
                .0,
            200
        );
        let rule = r#"{"scope": "user", "key": "user-1", "max_requests": 1}"#;
        assert_error(
            &app,
            app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), rule),
            503,
            "unavailable",
        );
        // A minute later by the server's clock, git's mode is in force again, with no write.
        app.clock_offset.store(61, std::sync::atomic::Ordering::Relaxed);
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"], &state["reason"]),
            (&"normal".into(), &"git".into(), &"steady".into()),
            "{b}: {state}"
        );
        assert_eq!(
            app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), rule)
                .0,
            201,
            "{b}"
        );
    }
}

#[test]
fn an_override_is_lifted_with_its_group_and_the_reason_is_audited() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let add = |key: &str, group: Option<&str>| {
            let hold = NewOverride {
                kind: Kind::FeatureFlag,
                key: key.into(),
                actor: "tyr".into(),
                reason: "lockdown".into(),
                expires_at: None,
                group_id: group.map(str::to_owned),
                git_value: None,
            };
            app.runtime
                .block_on(app.state.db.add_override(hold, Utc::now()))
                .unwrap()
                .id
        };
        let (first, _second, lone) = (add("a", Some("g-1")), add("b", Some("g-1")), add("c", None));
        let path = format!("/system/overrides/{first}?group=true&reason=all%20clear");
        let (status, lifted) = app.call("DELETE", &path, Some(OPERATOR));
        assert_eq!((status, &lifted["cleared"]), (200, &2.into()), "{b}: {lifted}");
        // Without a group, `group=true` lifts the one override.
        let (_, lone_lifted) = app.call(
            "DELETE",
            &format!("/system/overrides/{lone}?group=true"),
            Some(OPERATOR),
        );
        assert_eq!(lone_lifted["cleared"], 1, "{b}: {lone_lifted}");
        assert_eq!(
            app.get("/system/overrides", Some(READER)).1,
            serde_json::json!([]),
            "{b}"
        );
        let audit = app.runtime.block_on(app.state.db.audit(10)).unwrap();
        let reasons: Vec<Option<&str>> = audit
            .iter()
            .filter(|r| r.action == "clear_override")
            .map(|r| r.after.as_deref())
            .collect();
        assert_eq!(reasons.len(), 3, "{b}: {audit:?}");
        assert_eq!(
            reasons
                .iter()
                .filter(|a| a.is_some_and(|a| a.contains("all clear")))
                .count(),
            2,
            "{b}: {reasons:?}"
        );
    }
}
