//! Health, readiness, limits on requests, metrics and the OpenAPI document over HTTP.

use valhalla_ops::server::{self};

use super::{RULES, assert_error};
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, read, state_with};

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
        ("get", "/system/notifications"),
        ("get", "/system/feature-flags"),
        ("get", "/status"),
        ("get", "/status/app.js"),
        ("get", "/status/app.css"),
        ("get", "/status/snapshot"),
        ("get", "/status/events"),
        ("get", "/favicon.ico"),
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
    // The check endpoint is limited by the asker's own rule.
    let check = codes("post", "/system/ratelimits/check");
    assert!(
        check.contains(&"429".into()) && check.contains(&"503".into()),
        "{check:?}"
    );

    // Every documented operation is served: never the router's own 404 or a 405.
    for (method, path) in &documented {
        let concrete = path.replace("{id}", "1").replace("{mode}", "normal");
        if path == "/status/events" {
            // An endless stream: its headers say it is served.
            let response = app
                .agent
                .get(format!("{}{path}", app.base))
                .header("Authorization", format!("Bearer {ADMIN}"))
                .call()
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], "text/event-stream");
            continue;
        }
        let (status, body) = app.send_json(&method.to_uppercase(), &concrete, Some(ADMIN), "{}");
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !(status == 404 && body["error"]["message"] == "no such endpoint"),
            "{method} {path} is not served"
        );
        // Protected operations declare the API-key scheme.
        let operation = &doc["paths"][path.as_str()][method.as_str()];
        let public = [
            "/healthz",
            "/readyz",
            "/system/maintenance/state",
            "/status",
            "/status/app.js",
            "/status/app.css",
            "/favicon.ico",
        ]
        .contains(&path.as_str());
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
