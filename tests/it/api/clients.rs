//! API clients over HTTP: keys and roles, registration, (de)activation, rotation through git.

use serde_json::Value;
use valhalla_ops::domain::KeySha256;

use super::assert_error;
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, RETIRED, TestApp, apply, read, state_with};

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
        // Applied beside the server, as a CLI reconcile is: the server hears of it from the
        // store (Postgres NOTIFY, SQLite's data version), then refuses the key on every request.
        app.wait_for_status(
            "/system/overrides",
            Some(READER),
            401,
            std::time::Duration::from_secs(2),
        );
        assert_error(
            &app,
            app.get("/system/overrides", Some(READER)),
            401,
            "unauthorized",
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
        let reader_id = app.client_id("reader");
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
        let admin_id = app.client_id("admin");
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
        // The new key works once the server hears of the reconcile run beside it.
        app.wait_for_status(
            "/system/overrides",
            Some("vk_rotated_through_git_000000000"),
            200,
            std::time::Duration::from_secs(2),
        );
    }
}

#[test]
fn a_caller_cannot_lock_itself_out_by_accident() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let admin = app.client_id("admin");
        let deactivate = |who: i64, key: &str, body: &str| {
            app.send_json(
                "POST",
                &format!("/system/clients/{who}/deactivate"),
                Some(key),
                body,
            )
        };
        let reason = r#"{"reason": "rotating"}"#;
        // A second admin exists: deactivating itself is refused, and the key keeps working.
        let (_, second) = app.send_json(
            "POST",
            "/system/clients",
            Some(ADMIN),
            r#"{"name": "second-admin", "type": "script", "role": "admin"}"#,
        );
        let (status, body) = deactivate(admin, ADMIN, reason);
        assert_eq!(
            (status, &body["error"]["code"]),
            (409, &"conflict".into()),
            "{b}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("itself") && !message.contains("last"),
            "{b}: {message}"
        );
        assert_eq!(app.get("/system/overrides", Some(ADMIN)).0, 200, "{b}");
        // Another admin, or another client, is deactivated as before.
        let (status, off) = deactivate(second["id"].as_i64().unwrap(), ADMIN, "{}");
        assert_eq!((status, &off["active"]), (200, &false.into()), "{b}: {off}");
        // Now the last active admin: the refusal says so.
        let (status, body) = deactivate(admin, ADMIN, reason);
        assert_eq!(status, 409, "{b}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("last active admin"), "{b}: {message}");
        // Said explicitly, it is done.
        let (status, off) = deactivate(admin, ADMIN, r#"{"reason": "rotating", "force": true}"#);
        assert_eq!((status, &off["active"]), (200, &false.into()), "{b}: {off}");
        assert_eq!(app.get("/system/overrides", Some(ADMIN)).0, 401, "{b}");
    }
}

#[test]
fn a_client_made_and_deactivated_over_http_stays_in_plans_until_pruned() {
    use valhalla_ops::plan::PlanOptions;
    use valhalla_ops::reconcile::{Request, reconcile};
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let (_, temp) = app.send_json(
            "POST",
            "/system/clients",
            Some(OPERATOR),
            r#"{"name": "temp", "type": "script"}"#,
        );
        let id = temp["id"].as_i64().unwrap();
        assert_eq!(
            app.call(
                "POST",
                &format!("/system/clients/{id}/deactivate"),
                Some(OPERATOR)
            )
            .0,
            200
        );
        let unmanaged = ("client".to_owned(), "temp".to_owned(), "unmanaged".to_owned());
        assert!(
            app.plan(&state_with("")).contains(&unmanaged),
            "{b}: {:?}",
            app.plan(&state_with(""))
        );
        // --prune retires it: a write, after which it is history.
        let desired = {
            let mut loader = valhalla_ops::desired::Loader::new(chrono::Utc::now());
            loader.add_file(std::path::Path::new("s.yaml"), &state_with(""));
            loader.finish().unwrap().state
        };
        let prune = Request {
            options: PlanOptions { prune: true },
            actor: "test".into(),
            source: "test".into(),
            ..Request::default()
        };
        let outcome = app
            .runtime
            .block_on(reconcile(&app.state.db, &desired, &prune, chrono::Utc::now()))
            .unwrap();
        let summary = outcome.plan.summary();
        assert_eq!(
            (summary.deactivate, summary.changes()),
            (1, 1),
            "{b}: {summary:?}"
        );
        assert!(
            app.plan(&state_with("")).is_empty(),
            "{b}: {:?}",
            app.plan(&state_with(""))
        );
        let (_, clients) = app.get("/system/clients?limit=100", Some(READER));
        let after = clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap();
        assert_eq!(
            (&after["active"], &after["owner"]),
            (&false.into(), &"git".into()),
            "{b}: {after}"
        );
    }
}
