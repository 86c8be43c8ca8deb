//! Rate-limit rules and usage snapshots over HTTP.

use serde_json::Value;

use super::{RULES, assert_error};
use crate::support::all_backends;
use crate::support::app::{OPERATOR, READER, TestApp, state_with};

#[test]
fn rules_are_listed_filtered_and_fetched() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        let b = app.backend;
        assert_error(
            &app,
            app.get("/system/ratelimits/rules", None),
            401,
            "unauthorized",
        );
        let (status, all) = app.get("/system/ratelimits/rules", Some(READER));
        assert_eq!(status, 200, "{b}: {all}");
        let keys: Vec<String> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}:{}", r["scope"], r["key"]))
            .collect();
        assert_eq!(
            keys,
            [
                "\"global\":\"*\"",
                "\"ip\":\"203.0.113.0/24\"",
                "\"user\":\"user-7\""
            ],
            "{b}"
        );
        let office = &all[1];
        assert_eq!(
            (&office["max_requests"], &office["owner"], &office["description"]),
            (&600.into(), &"git".into(), &"Office".into())
        );
        assert!(
            office["created_at"].is_string() && office["updated_at"].is_string(),
            "{office}"
        );

        let (_, ip) = app.get("/system/ratelimits/rules?scope=ip", Some(READER));
        assert_eq!(ip.as_array().map(Vec::len), Some(1), "{b}");
        let (_, disabled) = app.get("/system/ratelimits/rules/?enabled=false", Some(READER));
        assert_eq!(
            (disabled.as_array().map(Vec::len), &disabled[0]["scope"]),
            (Some(1), &"global".into()),
            "{b}"
        );
        let (_, by_key) = app.get("/system/ratelimits/rules?key=user-7", Some(READER));
        assert_eq!(by_key[0]["max_requests"], 30, "{b}");
        let (_, paged) = app.get("/system/ratelimits/rules?limit=1&offset=2", Some(READER));
        assert_eq!(paged[0]["key"], "user-7", "{b}");
        let (status, bad) = app.get("/system/ratelimits/rules?scope=ipp", Some(READER));
        assert_error(&app, (status, bad.clone()), 400, "bad_request");
        assert!(
            bad["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown scope `ipp`"),
            "{bad}"
        );
        assert_error(
            &app,
            app.get("/system/ratelimits/rules?limit=0", Some(READER)),
            422,
            "unprocessable",
        );

        let id = office["id"].as_i64().unwrap();
        assert_eq!(
            app.get(&format!("/system/ratelimits/rules/{id}"), Some(READER)),
            (200, office.clone())
        );
        assert_error(
            &app,
            app.get("/system/ratelimits/rules/999999", Some(READER)),
            404,
            "not_found",
        );
        assert_error(
            &app,
            app.get("/system/ratelimits/rules/x1", Some(READER)),
            400,
            "bad_request",
        );
    }
}

#[test]
fn usage_snapshots_are_listed() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        assert_eq!(
            app.get("/system/ratelimits/snapshots", Some(READER)),
            (200, serde_json::json!([]))
        );
        // A minute ago: a date written here would age past the replica's retention of snapshots.
        let started = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
        let insert = format!(
            "INSERT INTO rate_limit_snapshots (scope, key, window_seconds, max_requests, current_count, window_started_at) \
             VALUES ('ip', '10.0.0.1', 60, 100, 42, '{started}')"
        );
        app.runtime.block_on(crate::support::exec(&app.state.db, &insert));
        let (status, list) = app.get("/system/ratelimits/snapshots?scope=ip&key=10.0.0.1", Some(READER));
        assert_eq!(
            (status, &list[0]["current_count"]),
            (200, &42.into()),
            "{}: {list}",
            app.backend
        );
        let (_, none) = app.get("/system/ratelimits/snapshots?scope=user", Some(READER));
        assert_eq!(none, serde_json::json!([]));
    }
}

#[test]
fn operators_create_and_update_api_owned_rules() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        let b = app.backend;
        let body =
            r#"{"scope": "ip", "key": "198.51.100.0/24", "max_requests": 10, "description": "Scraper"}"#;
        assert_error(
            &app,
            app.send_json("POST", "/system/ratelimits/rules", None, body),
            401,
            "unauthorized",
        );
        assert_error(
            &app,
            app.send_json("POST", "/system/ratelimits/rules", Some(READER), body),
            403,
            "forbidden",
        );
        let (status, created) = app.send_json("POST", "/system/ratelimits/rules/", Some(OPERATOR), body);
        assert_eq!(status, 201, "{b}: {created}");
        assert_eq!(
            (
                &created["owner"],
                &created["max_requests"],
                &created["window_seconds"]
            ),
            (&"api".into(), &10.into(), &60.into())
        );
        assert!(created.get("override").is_none(), "{created}");
        let updated = body.replace("\"max_requests\": 10", "\"max_requests\": 20");
        let (status, again) = app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), &updated);
        assert_eq!(
            (status, &again["max_requests"], &again["id"]),
            (200, &20.into(), &created["id"]),
            "{b}"
        );
        // The reconciler reports it as unmanaged and leaves it alone.
        let plan = app.plan(&state_with(RULES));
        assert_eq!(
            plan,
            [(
                "rate_limit_rule".into(),
                "ip:198.51.100.0/24".into(),
                "unmanaged".into()
            )],
            "{b}"
        );
        // Deleting an api-owned rule needs no reason.
        let id = created["id"].as_i64().unwrap();
        assert_eq!(
            app.call(
                "DELETE",
                &format!("/system/ratelimits/rules/{id}"),
                Some(OPERATOR)
            ),
            (204, Value::Null)
        );
        assert_error(
            &app,
            app.get(&format!("/system/ratelimits/rules/{id}"), Some(READER)),
            404,
            "not_found",
        );
        assert_error(
            &app,
            app.call(
                "DELETE",
                &format!("/system/ratelimits/rules/{id}"),
                Some(OPERATOR),
            ),
            404,
            "not_found",
        );
        // Every write is audited with the caller.
        let audit = app.runtime.block_on(app.state.db.audit(10)).unwrap();
        let api: Vec<(&str, &str)> = audit
            .iter()
            .filter(|a| a.source == "api")
            .map(|a| (a.action.as_str(), a.actor.as_str()))
            .collect();
        assert_eq!(
            api,
            [
                ("delete", "operator"),
                ("update", "operator"),
                ("create", "operator")
            ],
            "{b}"
        );
    }
}

#[test]
fn writes_to_git_owned_rules_are_overrides_the_reconciler_holds() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        let b = app.backend;
        let raise =
            r#"{"scope": "ip", "key": "203.0.113.0/24", "max_requests": 5000, "description": "Office"}"#;
        let (status, refused) = app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), raise);
        assert_error(&app, (status, refused.clone()), 422, "unprocessable");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs a `reason`"),
            "{refused}"
        );
        let with_reason = raise.replace(
            "\"description\"",
            "\"reason\": \"launch traffic\", \"ttl_seconds\": 3600, \"description\"",
        );
        let (status, written) =
            app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), &with_reason);
        assert_eq!(
            (status, &written["owner"], &written["max_requests"]),
            (200, &"git".into(), &5000.into()),
            "{b}: {written}"
        );
        assert_eq!(
            (&written["override"]["actor"], &written["override"]["reason"]),
            (&"operator".into(), &"launch traffic".into())
        );
        assert!(written["override"]["expires_at"].is_string());
        // The reconciler shows it held instead of undoing it.
        assert_eq!(
            app.plan(&state_with(RULES)),
            [(
                "rate_limit_rule".into(),
                "ip:203.0.113.0/24".into(),
                "held".into()
            )],
            "{b}"
        );
        // Deleting another git-owned rule is held too, so it is not recreated.
        let (_, users) = app.get("/system/ratelimits/rules?scope=user", Some(READER));
        let user_id = users[0]["id"].as_i64().unwrap();
        assert_error(
            &app,
            app.call(
                "DELETE",
                &format!("/system/ratelimits/rules/{user_id}"),
                Some(OPERATOR),
            ),
            422,
            "unprocessable",
        );
        assert_eq!(
            app.call(
                "DELETE",
                &format!("/system/ratelimits/rules/{user_id}?reason=abuse"),
                Some(OPERATOR)
            )
            .0,
            204
        );
        let plan = app.plan(&state_with(RULES));
        assert!(
            plan.contains(&("rate_limit_rule".into(), "user:user-7".into(), "held".into())),
            "{b}: {plan:?}"
        );
        // Clearing the overrides gives git's values back at once (this server knows its state
        // directory): the office network's limit, and user-7's rule deleted over HTTP.
        let (_, overrides) = app.get("/system/overrides", Some(READER));
        for o in overrides.as_array().unwrap() {
            let (status, lifted) = app.call(
                "DELETE",
                &format!("/system/overrides/{}", o["id"]),
                Some(OPERATOR),
            );
            assert_eq!(
                (status, &lifted["restored"]),
                (200, &true.into()),
                "{b}: {lifted}"
            );
        }
        let plan = app.plan(&state_with(RULES));
        assert_eq!(
            plan,
            Vec::<(String, String, String)>::new(),
            "{b}: nothing left to restore"
        );
        let (_, office) = app.get(
            "/system/ratelimits/rules?scope=ip&key=203.0.113.0/24",
            Some(READER),
        );
        assert_eq!(
            (&office[0]["max_requests"], &office[0]["owner"]),
            (&600.into(), &"git".into()),
            "{b}: {office}"
        );
        let (_, user) = app.get("/system/ratelimits/rules?scope=user&key=user-7", Some(READER));
        assert_eq!(user.as_array().map(Vec::len), Some(1), "{b}: {user}");
    }
}

#[test]
fn bad_rule_bodies_are_4xx_with_a_reason() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let post = |body: &str| app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), body);
        let cases = [
            ("{not json", 400, "bad_request"),
            (
                r#"{"scope": "ip", "key": "10.0.0.1", "max_requests": "lots"}"#,
                422,
                "unprocessable",
            ),
            (
                r#"{"scope": "ip", "key": "10.0.0.1", "colour": "red"}"#,
                422,
                "unprocessable",
            ),
            (r#"{"scope": "ipp", "key": "10.0.0.1"}"#, 422, "unprocessable"),
            (r#"{"scope": "ip", "key": "10.0.0.1/8"}"#, 422, "unprocessable"),
            (r#"{"scope": "user"}"#, 422, "unprocessable"),
            (
                r#"{"scope": "global", "window_seconds": 0}"#,
                422,
                "unprocessable",
            ),
            (r#"{"scope": "global", "ttl_seconds": -5}"#, 422, "unprocessable"),
        ];
        for (body, status, code) in cases {
            let (got, error) = post(body);
            assert_eq!(
                (got, error["error"]["code"].as_str()),
                (status, Some(code)),
                "{}: {body} -> {error}",
                app.backend
            );
        }
        let (status, body) = app.send_json(
            "POST",
            "/system/ratelimits/rules",
            Some(OPERATOR),
            r#"{"scope":"global"}"#,
        );
        assert_eq!((status, &body["key"]), (201, &"*".into()));
    }
}

/// A budget is bounded by what the store holds: the largest is written and read back, one more
/// is a 422 (it was a 500), here and in a lockdown's global limit.
#[test]
fn a_budget_past_the_store_bound_is_a_422_and_the_largest_round_trips() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let post = |max: &str| {
            app.send_json(
                "POST",
                "/system/ratelimits/rules",
                Some(OPERATOR),
                &format!(r#"{{"scope": "user", "key": "big", "max_requests": {max}}}"#),
            )
        };
        for too_big in ["2147483648", "4294967295", "4294967296"] {
            assert_error(&app, post(too_big), 422, "unprocessable");
        }
        let (status, saved) = post("2147483647");
        assert_eq!(status, 201, "{b}: {saved}");
        let (status, all) = app.get("/system/ratelimits/rules?scope=user", Some(READER));
        assert_eq!(status, 200, "{b}: {all}");
        assert_eq!(all[0]["max_requests"], 2_147_483_647_i64, "{b}: {all}");
        let (status, refused) = app.send_json(
            "POST",
            "/admin/ops",
            Some(crate::support::app::ADMIN),
            r#"{"action": "lockdown", "payload": {"reason": "x", "global_max_requests": 4294967295}}"#,
        );
        assert_eq!(status, 422, "{b}: {refused}");
    }
}
