//! The HTTP server on every backend: a real server on a random port, real keys, real requests.

use chrono::{Duration, Utc};
use serde_json::Value;
use valhalla_ops::domain::KeySha256;
use valhalla_ops::model::{Kind, NewOverride};
use valhalla_ops::server::{self};

use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, RETIRED, TestApp, apply, read, state_with};

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

#[test]
fn health_readiness_and_trailing_slashes() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        assert_eq!(
            app.get("/healthz", None),
            (200, serde_json::json!({ "status": "ok" }))
        );
        assert_eq!(app.get("/healthz/", None).0, 200);
        let (status, body) = app.get("/readyz", None);
        assert_eq!((status, body["backend"].as_str()), (200, Some(app.backend)));
        assert_error(&app, app.get("/nope", None), 404, "not_found");
        assert_error(
            &app,
            app.call("POST", "/healthz", None),
            405,
            "method_not_allowed",
        );
    }
}

#[test]
fn api_keys_and_roles() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        assert_error(&app, app.get("/system/overrides", None), 401, "unauthorized");
        assert_error(
            &app,
            app.get("/system/overrides", Some("vk_nobody")),
            401,
            "unauthorized",
        );
        // A deactivated client's key is refused.
        assert_error(
            &app,
            app.get("/system/overrides", Some(RETIRED)),
            401,
            "unauthorized",
        );
        assert_eq!(
            app.get("/system/overrides", Some(READER)),
            (200, serde_json::json!([]))
        );
        // X-API-Key works as well as Bearer.
        let response = app
            .agent
            .get(format!("{}/system/reconcile/runs/", app.base))
            .header("X-API-Key", OPERATOR)
            .call()
            .unwrap();
        let (status, body) = read(response);
        assert_eq!(status, 200, "{body}");
        assert_eq!(body[0]["actor"], "test");
        // A reader may not clear overrides.
        assert_error(
            &app,
            app.call("DELETE", "/system/overrides/1", Some(READER)),
            403,
            "forbidden",
        );
    }
}

#[test]
fn a_client_deactivated_by_a_reconcile_is_refused_at_once() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        assert_eq!(app.get("/system/overrides", Some(READER)).0, 200);
        let without_reader = state_with("").replacen("    active: true\n", "    active: false\n", 1);
        app.runtime.block_on(apply(&app.state.db, &without_reader));
        assert_error(
            &app,
            app.get("/system/overrides", Some(READER)),
            401,
            "unauthorized",
        );
    }
}

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
        assert_eq!(
            app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR)),
            (204, Value::Null)
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
            };
            db.add_override(freeze, Utc::now()).await.unwrap();
        });
        let (_, state) = app.get("/system/maintenance/state/", None);
        assert_eq!(
            (&state["mode"], &state["source"], &state["until"]),
            (&"maintenance".into(), &"override".into(), &Value::Null),
            "{}",
            app.backend
        );
    }
}

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

#[test]
fn oversized_bodies_are_refused_with_json() {
    let app = TestApp::spawn(crate::support::sqlite(), &state_with(""));
    let big = vec![b'x'; server::BODY_LIMIT + 1];
    let request = ureq::http::Request::builder()
        .method("DELETE")
        .uri(format!("{}/system/overrides/1", app.base))
        .header("Authorization", format!("Bearer {OPERATOR}"))
        .body(big)
        .unwrap();
    let response = app.agent.run(request).unwrap();
    assert_error(&app, read(response), 413, "payload_too_large");
}

const RULES: &str = "rate_limits:\n  - scope: ip\n    key: 203.0.113.0/24\n    max_requests: 600\n    description: Office\n  - scope: user\n    key: user-7\n    max_requests: 30\n  - scope: global\n    max_requests: 6000\n    enabled: false\n";

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
        let insert = "INSERT INTO rate_limit_snapshots (scope, key, window_seconds, max_requests, current_count, window_started_at) \
                      VALUES ('ip', '10.0.0.1', 60, 100, 42, '2026-11-25T10:00:00Z')";
        app.runtime.block_on(crate::support::exec(&app.state.db, insert));
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
        // Clearing the overrides lets git's values return on the next reconcile.
        let (_, overrides) = app.get("/system/overrides", Some(READER));
        for o in overrides.as_array().unwrap() {
            assert_eq!(
                app.call(
                    "DELETE",
                    &format!("/system/overrides/{}", o["id"]),
                    Some(OPERATOR)
                )
                .0,
                204
            );
        }
        let mut plan = app.plan(&state_with(RULES));
        plan.sort();
        assert_eq!(
            plan,
            [
                (
                    "rate_limit_rule".into(),
                    "ip:203.0.113.0/24".into(),
                    "update".into()
                ),
                ("rate_limit_rule".into(), "user:user-7".into(), "create".into())
            ],
            "{b}"
        );
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
                .contains("read-only (incident 42)"),
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

        // Lifting the freeze is always possible through the state endpoint.
        let lift = r#"{"reason": "resolved"}"#;
        let (status, state) = app.send_json("POST", "/system/maintenance/state/normal", Some(OPERATOR), lift);
        assert_eq!((status, &state["mode"]), (200, &"normal".into()), "{b}: {state}");
        assert_eq!(app.get("/system/ratelimits/rules", Some(READER)).0, 200, "{b}");
        // Each new mode replaced the previous override: one is open, and clearing it hands the
        // mode back to git.
        let (_, open) = app.get("/system/overrides", Some(READER));
        assert_eq!(open.as_array().map(Vec::len), Some(1), "{b}: {open}");
        assert_eq!(
            app.call(
                "DELETE",
                &format!("/system/overrides/{}", open[0]["id"]),
                Some(OPERATOR)
            )
            .0,
            204
        );
        assert_eq!(
            app.get("/system/maintenance/state", None).1["source"],
            "git",
            "{b}"
        );
    }
}

#[test]
fn clients_are_registered_with_a_key_shown_once() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let body = r#"{"name": "backup-job", "type": "script", "description": "Nightly backups"}"#;
        assert_error(
            &app,
            app.send_json("POST", "/system/clients/", Some(READER), body),
            403,
            "forbidden",
        );
        let (status, created) = app.send_json("POST", "/system/clients/", Some(OPERATOR), body);
        assert_eq!(status, 201, "{b}: {created}");
        let key = created["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("vk_") && key.len() >= 35, "{key}");
        assert_eq!(created["key_prefix"].as_str(), Some(&key[..10]));
        assert_eq!(
            (&created["role"], &created["owner"], &created["client_type"]),
            (&"reader".into(), &"api".into(), &"script".into())
        );
        assert!(created.get("key_sha256").is_none(), "{created}");
        // The key works at once.
        assert_eq!(app.get("/system/overrides", Some(&key)).0, 200, "{b}");

        assert_error(
            &app,
            app.send_json("POST", "/system/clients", Some(OPERATOR), body),
            409,
            "conflict",
        );
        let admin = r#"{"name": "root-bot", "client_type": "script", "role": "admin"}"#;
        assert_error(
            &app,
            app.send_json("POST", "/system/clients", Some(OPERATOR), admin),
            403,
            "forbidden",
        );
        assert_eq!(
            app.send_json("POST", "/system/clients", Some(ADMIN), admin).0,
            201
        );
        assert_error(
            &app,
            app.send_json(
                "POST",
                "/system/clients",
                Some(OPERATOR),
                r#"{"name": "Bad Name", "type": "script"}"#,
            ),
            422,
            "unprocessable",
        );

        // Listings never carry a key or a hash.
        let response = app
            .agent
            .get(format!("{}/system/clients", app.base))
            .header("X-API-Key", READER)
            .call()
            .unwrap();
        let text = response.into_body().read_to_string().unwrap();
        assert!(
            !text.contains("key_sha256")
                && !text.contains(&key)
                && !text.contains(KeySha256::of_key(&key).as_str()),
            "{text}"
        );
        let all: Value = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["admin", "backup-job", "operator", "reader", "retired", "root-bot"],
            "{b}"
        );
        let (_, inactive) = app.get("/system/clients?active=false", Some(READER));
        assert_eq!(inactive[0]["name"], "retired");
        let (_, scripts) = app.get("/system/clients?client_type=weweb", Some(READER));
        assert_eq!(scripts, serde_json::json!([]));
    }
}

#[test]
fn deactivation_takes_effect_at_once_and_git_clients_need_a_reason() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let (_, created) = app.send_json(
            "POST",
            "/system/clients",
            Some(OPERATOR),
            r#"{"name": "temp", "type": "script"}"#,
        );
        let (id, key) = (
            created["id"].as_i64().unwrap(),
            created["key"].as_str().unwrap().to_owned(),
        );
        assert_eq!(app.get("/system/overrides", Some(&key)).0, 200);
        let (status, off) = app.call(
            "POST",
            &format!("/system/clients/{id}/deactivate"),
            Some(OPERATOR),
        );
        assert_eq!((status, &off["active"]), (200, &false.into()), "{b}: {off}");
        assert_error(
            &app,
            app.get("/system/overrides", Some(&key)),
            401,
            "unauthorized",
        );
        assert_eq!(
            app.call("POST", &format!("/system/clients/{id}/activate"), Some(OPERATOR))
                .0,
            200
        );
        assert_eq!(app.get("/system/overrides", Some(&key)).0, 200, "{b}");

        // A git-owned client: deactivating it is an override, with a reason.
        let (_, readers) = app.get("/system/clients?client_type=script&limit=10", Some(READER));
        let reader_id = readers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "reader")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        let path = format!("/system/clients/{reader_id}/deactivate");
        assert_error(
            &app,
            app.call("POST", &path, Some(OPERATOR)),
            422,
            "unprocessable",
        );
        let (status, off) = app.send_json(
            "POST",
            &path,
            Some(OPERATOR),
            r#"{"reason": "leaked key", "ttl_seconds": 3600}"#,
        );
        assert_eq!((status, &off["owner"]), (200, &"git".into()), "{b}: {off}");
        assert_error(
            &app,
            app.get("/system/overrides", Some(READER)),
            401,
            "unauthorized",
        );
        let plan = app.plan(&state_with(""));
        assert!(
            plan.contains(&("client".into(), "reader".into(), "held".into())),
            "{b}: {plan:?}"
        );
        // An operator cannot touch an admin client.
        let (_, admins) = app.get("/system/clients?limit=10", Some(ADMIN));
        let admin_id = admins
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "admin")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        assert_error(
            &app,
            app.call(
                "POST",
                &format!("/system/clients/{admin_id}/deactivate"),
                Some(OPERATOR),
            ),
            403,
            "forbidden",
        );
        assert_error(
            &app,
            app.call("POST", "/system/clients/999999/deactivate", Some(OPERATOR)),
            404,
            "not_found",
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

        // Lifting the group and reconciling restores git's values.
        let (_, cleared) = ops(&format!(
            r#"{{"action": "clear_overrides", "payload": {{"group_id": "{group}"}}}}"#
        ));
        assert_eq!(cleared["result"]["cleared"], 4, "{b}");
        let (_, applied) = ops(r#"{"action": "reconcile"}"#);
        assert_eq!(
            applied["result"]["plan"]["summary"]["update"], 4,
            "{b}: {applied}"
        );
        assert_eq!(app.get("/system/overrides", Some(READER)).0, 200, "{b}");
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
fn metrics_count_requests_by_route_and_report_gauges() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(RULES));
        assert_error(&app, app.get("/metrics", None), 401, "unauthorized");
        assert_eq!(app.get("/healthz", None).0, 200);
        assert_eq!(app.get("/system/ratelimits/rules/1", Some(READER)).0, 200);
        assert_eq!(app.get("/system/ratelimits/rules/999", Some(READER)).0, 404);
        let freeze = r#"{"reason": "drill", "ttl_seconds": 60}"#;
        assert_eq!(
            app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze)
                .0,
            200
        );
        let (status, text) = app.get("/metrics", Some(READER));
        assert_eq!(status, 200, "{text}");
        let text = text.as_str().unwrap().to_owned();
        for line in [
            r#"valhalla_ops_http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
            // The route pattern, not the raw path: ids do not create new series.
            r#"valhalla_ops_http_requests_total{route="/system/ratelimits/rules/{id}",method="GET",status="200"} 1"#,
            r#"valhalla_ops_http_requests_total{route="/system/ratelimits/rules/{id}",method="GET",status="404"} 1"#,
            "valhalla_ops_active_overrides 1",
            "valhalla_ops_reconcile_runs 1",
        ] {
            assert!(text.contains(line), "{}: missing {line} in\n{text}", app.backend);
        }
        assert!(
            text.contains("valhalla_ops_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}

#[test]
fn a_key_rotated_through_git_forgets_the_old_prefix() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let (_, created) = app.send_json(
            "POST",
            "/system/clients",
            Some(OPERATOR),
            r#"{"name": "etl", "type": "integration"}"#,
        );
        assert!(created["key_prefix"].is_string(), "{created}");
        // The client is adopted into git with a new key.
        let rotated = format!(
            "  - name: etl\n    type: integration\n    role: reader\n    key_sha256: {}\n",
            KeySha256::of_key("vk_rotated_through_git_000000000").as_str()
        );
        app.runtime.block_on(apply(&app.state.db, &state_with(&rotated)));
        let (_, clients) = app.get("/system/clients?client_type=integration", Some(READER));
        assert_eq!(
            (&clients[0]["owner"], &clients[0]["key_prefix"]),
            (&"git".into(), &Value::Null),
            "{}: {clients}",
            app.backend
        );
        assert_eq!(
            app.get("/system/overrides", Some("vk_rotated_through_git_000000000"))
                .0,
            200
        );
    }
}

#[test]
fn the_openapi_document_lists_every_route_the_server_serves() {
    let app = TestApp::spawn(crate::support::sqlite(), &state_with(RULES));
    assert_error(&app, app.get("/openapi.json", None), 401, "unauthorized");
    let (status, doc) = app.get("/openapi.json", Some(READER));
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let methods = ["get", "post", "put", "delete", "patch"];
    let documented: std::collections::BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| methods.contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    // SPEC §6's endpoints and the extras, exactly: a route added or dropped on either side fails here.
    let expected: std::collections::BTreeSet<(String, String)> = [
        ("post", "/system/ratelimits/rules"),
        ("get", "/system/ratelimits/rules"),
        ("get", "/system/ratelimits/rules/{id}"),
        ("delete", "/system/ratelimits/rules/{id}"),
        ("get", "/system/ratelimits/snapshots"),
        ("post", "/system/ratelimits/check"),
        ("post", "/system/clients"),
        ("get", "/system/clients"),
        ("post", "/system/clients/{id}/activate"),
        ("post", "/system/clients/{id}/deactivate"),
        ("post", "/system/maintenance/windows"),
        ("get", "/system/maintenance/windows"),
        ("get", "/system/maintenance/state"),
        ("post", "/system/maintenance/state/{mode}"),
        ("post", "/admin/ops"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/system/overrides"),
        ("delete", "/system/overrides/{id}"),
        ("get", "/system/reconcile/runs"),
        ("get", "/system/feature-flags"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(documented, expected);
    // The enforcement layers' answers are documented where they can happen.
    let codes = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let windows = codes("get", "/system/maintenance/windows");
    assert!(
        windows.contains(&"429".into()) && windows.contains(&"503".into()),
        "{windows:?}"
    );
    // The way out of a freeze is never refused by it.
    let overrides = codes("delete", "/system/overrides/{id}");
    assert!(!overrides.contains(&"503".into()), "{overrides:?}");
    let health = codes("get", "/healthz");
    assert!(
        !health.contains(&"429".into()) && !health.contains(&"503".into()),
        "{health:?}"
    );
    let check = codes("post", "/system/ratelimits/check");
    assert!(
        !check.contains(&"429".into()) && check.contains(&"503".into()),
        "{check:?}"
    );

    // Every documented operation is served: never the router's own 404 or a 405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "1").replace("{mode}", "normal");
        let (status, body) = app.send_json(&method.to_uppercase(), &concrete, Some(ADMIN), "{}");
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && body["error"]["message"] == "no such endpoint"),
            "{method} {path} is not served"
        );
        // Protected operations declare the API-key scheme.
        let operation = &doc["paths"][path.as_str()][method.as_str()];
        let public = ["/healthz", "/readyz", "/system/maintenance/state"].contains(&path.as_str());
        assert_eq!(
            operation["security"].is_array(),
            !public,
            "{method} {path}: {operation}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    for schema in [
        "RuleRecord",
        "ClientRecord",
        "EffectiveMode",
        "ErrorBody",
        "Scope",
        "Override",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
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
