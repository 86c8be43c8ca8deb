//! Enforcement through the real server: rate limits with their headers, the check endpoint,
//! usage snapshots, the maintenance freeze following the clock, and two replicas on one Postgres.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;

use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};
use crate::support::{Process, StateDir, all_backends, setups};

const USER_RULE: &str =
    "rate_limits:\n  - scope: user\n    key: user-7\n    window_seconds: 60\n    max_requests: 3\n";

#[test]
fn over_the_limit_is_a_429_with_retry_after_and_the_draft_headers() {
    for (db, counters) in setups() {
        let app = TestApp::spawn_counting(db, counters, &state_with(USER_RULE));
        let b = app.backend;
        let as_user = |user: &str| {
            app.exchange(
                "GET",
                "/system/feature-flags",
                Some(READER),
                &[("X-User-Id", user)],
                None,
            )
        };
        for left in [2, 1, 0] {
            let reply = as_user("user-7");
            assert_eq!(reply.status, 200, "{b}: {}", reply.body);
            assert_eq!(
                reply.header("ratelimit-policy"),
                r#""user:user-7";q=3;w=60"#,
                "{b}"
            );
            assert!(
                reply
                    .header("ratelimit")
                    .starts_with(&format!(r#""user:user-7";r={left};t="#)),
                "{b}: {}",
                reply.header("ratelimit")
            );
        }
        let refused = as_user("user-7");
        assert_eq!(refused.status, 429, "{b}: {}", refused.body);
        assert_eq!(refused.body["error"]["code"], "rate_limited", "{b}");
        let retry: i64 = refused
            .header("retry-after")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=120).contains(&retry), "{b}: Retry-After {retry}");
        assert!(refused.header("ratelimit").contains(";r=0;"), "{b}");
        // Another user is not affected; a request without the header matches no user rule.
        assert_eq!(as_user("user-8").status, 200, "{b}");
        assert_eq!(app.get("/system/feature-flags", Some(READER)).0, 200, "{b}");
        // Health checks are never limited.
        let health = app.exchange("GET", "/healthz", None, &[("X-User-Id", "user-7")], None);
        assert_eq!(health.status, 200, "{b}");
        // Once Retry-After has passed, the window has slid far enough for one more request.
        app.advance(retry);
        assert_eq!(as_user("user-7").status, 200, "{b}");
        assert_eq!(as_user("user-7").status, 429, "{b}");
        // Two windows on, the full quota is back.
        app.advance(120);
        for _ in 0..3 {
            assert_eq!(as_user("user-7").status, 200, "{b}");
        }
    }
}

/// A limit of 0 set over HTTP (the global rule, or the admin's own client) refuses the platform's
/// routes, never the way out of it: the overrides, the mode, the status page, the admin console.
#[test]
fn a_limit_of_zero_locks_no_one_out_of_the_way_out() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: global\n    max_requests: 6000\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let (status, zero) = app.send_json(
            "POST",
            "/system/ratelimits/rules",
            Some(OPERATOR),
            r#"{"scope": "global", "max_requests": 0, "reason": "stop everything"}"#,
        );
        assert_eq!(status, 200, "{b}: {zero}");
        let limited = |key: &str| app.get("/system/feature-flags", Some(key)).0;
        assert_eq!((limited(READER), limited(ADMIN)), (429, 429), "{b}");
        let way_out = |method: &str, path: &str, key: Option<&str>, body: &str| {
            let reply = app.exchange(method, path, key, &[], Some(body));
            assert!(
                reply.status < 300,
                "{b}: {method} {path} answered {}: {}",
                reply.status,
                reply.body
            );
            reply.body
        };
        way_out("GET", "/status", None, "");
        way_out("GET", "/status/snapshot", Some(READER), "");
        way_out("GET", "/system/maintenance/state", None, "");
        way_out(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            r#"{"action": "security_snapshot"}"#,
        );
        way_out(
            "POST",
            "/system/maintenance/state/normal",
            Some(OPERATOR),
            r#"{"reason": "while we look", "ttl_seconds": 600}"#,
        );
        let held = way_out("GET", "/system/overrides", Some(OPERATOR), "");
        let rule = held
            .as_array()
            .and_then(|all| all.iter().find(|o| o["kind"] == "rate_limit_rule"))
            .unwrap_or_else(|| panic!("{b}: {held}"));
        let id = rule["id"].as_i64().unwrap();
        way_out("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR), "");
        // Lifting the override gave git's limit back at once (the server reconciles its state).
        assert_eq!(limited(READER), 200, "{b}");

        // The admin's own client limited to 0: the admin console still answers.
        let (status, own) = app.send_json(
            "POST",
            "/system/ratelimits/rules",
            Some(OPERATOR),
            r#"{"scope": "api_key", "key": "admin", "max_requests": 0}"#,
        );
        assert_eq!(status, 201, "{b}: {own}");
        assert_eq!(limited(ADMIN), 429, "{b}");
        way_out(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            r#"{"action": "security_snapshot"}"#,
        );
        way_out("GET", "/system/overrides", Some(ADMIN), "");
    }
}

#[test]
fn the_most_specific_ip_rule_wins_and_zero_blocks() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: ip\n    key: 127.0.0.0/8\n    max_requests: 1000\n  - scope: ip\n    key: 127.0.0.1\n    max_requests: 0\n    description: blocked\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let blocked = app.exchange("GET", "/system/feature-flags", Some(READER), &[], None);
        assert_eq!(blocked.status, 429, "{b}: {}", blocked.body);
        assert!(
            blocked.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("blocked"),
            "{b}: {}",
            blocked.body
        );
        assert_eq!(
            blocked.header("ratelimit-policy"),
            r#""ip:127.0.0.1";q=0;w=60"#,
            "{b}"
        );
        // The check endpoint is not limited by the caller's own address, and answers per rule.
        let ask = |body: &str| {
            let (status, answer) = app.send_json("POST", "/system/ratelimits/check", Some(OPERATOR), body);
            assert_eq!(status, 200, "{b}: {answer}");
            answer
        };
        let neighbour = ask(r#"{"ip": "127.0.0.5"}"#);
        assert_eq!(
            (
                &neighbour["allowed"],
                &neighbour["rule"]["key"],
                &neighbour["limit"],
                &neighbour["remaining"]
            ),
            (
                &Value::Bool(true),
                &"127.0.0.0/8".into(),
                &1000.into(),
                &999.into()
            ),
            "{b}"
        );
        let itself = ask(r#"{"ip": "127.0.0.1"}"#);
        assert_eq!(
            (&itself["allowed"], &itself["rule"]["key"]),
            (&Value::Bool(false), &"127.0.0.1".into()),
            "{b}"
        );
        let elsewhere = ask(r#"{"ip": "10.0.0.1"}"#);
        assert_eq!(
            (&elsewhere["allowed"], &elsewhere["rule"], &elsewhere["limit"]),
            (&Value::Bool(true), &Value::Null, &Value::Null),
            "{b}"
        );
    }
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: ip\n    key: 203.0.113.9\n    max_requests: 0\n";
        let app = TestApp::spawn_counting_with(db, counters, &state_with(rules), |state| {
            state.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
        });
        let b = app.backend;
        let via = |chain: &str| {
            app.exchange(
                "GET",
                "/system/feature-flags",
                Some(READER),
                &[("X-Forwarded-For", chain)],
                None,
            )
            .status
        };
        assert_eq!(
            via("203.0.113.9"),
            429,
            "{b}: the client behind the proxy is blocked"
        );
        assert_eq!(
            via("203.0.113.9, 198.51.100.4"),
            200,
            "{b}: the nearest hop is another client"
        );
        assert_eq!(
            app.get("/system/feature-flags", Some(READER)).0,
            200,
            "{b}: the proxy itself"
        );
    }
}

#[test]
fn a_read_only_platform_still_answers_rate_limit_checks() {
    for (db, counters) in setups() {
        let app = TestApp::spawn_counting(db, counters, &state_with(USER_RULE));
        let b = app.backend;
        let freeze = r#"{"reason": "incident 5"}"#;
        let (status, _) = app.send_json(
            "POST",
            "/system/maintenance/state/read_only",
            Some(OPERATOR),
            freeze,
        );
        assert_eq!(status, 200, "{b}");
        let (status, answer) = app.send_json(
            "POST",
            "/system/ratelimits/check",
            Some(OPERATOR),
            r#"{"user": "user-7"}"#,
        );
        assert_eq!((status, &answer["remaining"]), (200, &2.into()), "{b}: {answer}");
        let window = r#"{"starts_at": "2099-01-01T00:00:00Z", "ends_at": "2099-01-01T01:00:00Z"}"#;
        let (status, frozen) = app.send_json("POST", "/system/maintenance/windows", Some(OPERATOR), window);
        assert_eq!(status, 503, "{b}: other writes are frozen");
        // The reason is quoted, as the freezer wrote it.
        assert_eq!(
            frozen["error"]["message"], "the platform is read-only: \"incident 5\"",
            "{b}: {frozen}"
        );
    }
}

#[test]
fn shadow_rules_count_and_report_but_never_refuse() {
    for (db, counters) in setups() {
        let rules =
            "rate_limits:\n  - scope: ip\n    key: 127.0.0.0/8\n    max_requests: 2\n    shadow: true\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let mut last = None;
        for _ in 0..6 {
            let reply = app.exchange("GET", "/system/feature-flags", Some(READER), &[], None);
            assert_eq!(reply.status, 200, "{b}: {}", reply.body);
            last = Some(reply);
        }
        let last = last.unwrap();
        assert_eq!(
            last.header("ratelimit-policy"),
            r#""shadow:ip:127.0.0.0/8";q=2;w=60"#,
            "{b}"
        );
        assert!(last.header("ratelimit").contains(";r=0;"), "{b}");
        let (_, metrics) = app.get("/metrics", Some(READER));
        let metrics = metrics.as_str().unwrap().to_owned();
        let refused = metrics
            .lines()
            .find(|l| l.contains(r#"scope="ip",shadow="true",outcome="refused""#))
            .unwrap_or_else(|| panic!("{b}: {metrics}"));
        // Requests 3 to 6 went over (the scrape is never limited).
        assert!(refused.ends_with(" 4"), "{b}: {refused}");
        // The check endpoint says so too, and still allows.
        let (_, answer) = app.send_json(
            "POST",
            "/system/ratelimits/check",
            Some(OPERATOR),
            r#"{"ip": "127.0.0.9"}"#,
        );
        assert_eq!(
            (&answer["allowed"], &answer["shadow"]),
            (&Value::Bool(true), &Value::Bool(true)),
            "{b}"
        );
    }
}

/// Checks that count are a privilege: a reader may ask about the global rule as often as it
/// likes without spending it (197,000 such checks once throttled every route, admins' included);
/// an operator's checks count, and a gateway client's, whatever its role, as over gRPC.
#[test]
fn a_readers_checks_count_nothing_an_operators_do() {
    const GATEWAY: &str = "vk_test_gateway_0000000000000000000000000000";
    for (db, counters) in setups() {
        let gateway = format!(
            "  - name: edge\n    type: gateway\n    role: reader\n    key_sha256: {}\n",
            valhalla_ops::domain::KeySha256::of_key(GATEWAY).as_str()
        );
        let rules = format!(
            "{gateway}rate_limits:\n  - scope: global\n    window_seconds: 60\n    max_requests: 5\n"
        );
        let rules = rules.as_str();
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let ask = |key: &str| {
            let (status, answer) = app.send_json(
                "POST",
                "/system/ratelimits/check",
                Some(key),
                r#"{"scope": "global"}"#,
            );
            assert_eq!(status, 200, "{b}: {answer}");
            answer
        };
        for _ in 0..20 {
            let answer = ask(READER);
            assert_eq!(
                (&answer["allowed"], &answer["counted"], &answer["remaining"]),
                (&Value::Bool(true), &Value::Bool(false), &5.into()),
                "{b}: {answer}"
            );
        }
        assert_eq!(app.get("/system/feature-flags", Some(ADMIN)).0, 200, "{b}");
        let counted = ask(OPERATOR);
        assert_eq!(
            (&counted["counted"], &counted["remaining"]),
            (&Value::Bool(true), &3.into()),
            "{b}: the admin's request and this check counted: {counted}"
        );
        // A reader still learns the truth about the budget, without changing it.
        assert_eq!(ask(READER)["remaining"], 3, "{b}");
        let gateway = ask(GATEWAY);
        assert_eq!(
            (&gateway["counted"], &gateway["remaining"]),
            (&Value::Bool(true), &2.into()),
            "{b}: a gateway client's check counts: {gateway}"
        );
    }
}

/// A service that asks is limited by its own rule, and only by it: not by the global budget or
/// its network's, which are the platform's own requests'.
#[test]
fn the_check_endpoint_is_limited_by_the_askers_own_rule() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: api_key\n    key: operator\n    max_requests: 3\n  - scope: global\n    max_requests: 1000\n  - scope: ip\n    key: 127.0.0.0/8\n    max_requests: 1\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let ask = || {
            app.exchange(
                "POST",
                "/system/ratelimits/check",
                Some(OPERATOR),
                &[],
                Some(r#"{"user": "someone"}"#),
            )
        };
        for _ in 0..3 {
            let reply = ask();
            assert_eq!(reply.status, 200, "{b}: {}", reply.body);
            assert_eq!(
                reply.header("ratelimit-policy"),
                r#""api_key:operator";q=3;w=60"#,
                "{b}"
            );
        }
        let refused = ask();
        assert_eq!(refused.status, 429, "{b}: {}", refused.body);
        assert!(
            refused.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("operator"),
            "{b}: {}",
            refused.body
        );
    }
}

#[test]
fn the_check_endpoint_counts_what_it_is_asked_about() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: api_key\n    key: reader\n    window_seconds: 10\n    max_requests: 2\n  - scope: global\n    max_requests: 1000\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        let check = |body: &str| app.send_json("POST", "/system/ratelimits/check", Some(OPERATOR), body);
        let one = r#"{"scope": "api_key", "key": "reader"}"#;
        let (_, first) = check(one);
        assert_eq!(
            (&first["allowed"], &first["remaining"], &first["limit"]),
            (&Value::Bool(true), &1.into(), &2.into()),
            "{b}: {first}"
        );
        assert_eq!(
            (&first["rule"]["scope"], &first["shadow"]),
            (&"api_key".into(), &Value::Bool(false)),
            "{b}"
        );
        check(one);
        let (_, refused) = check(one);
        assert_eq!(refused["allowed"], false, "{b}: {refused}");
        assert!(
            refused["reset_seconds"]
                .as_u64()
                .is_some_and(|s| (1..=20).contains(&s)),
            "{b}: {refused}"
        );
        // The request form applies every rule, the global one included; the tightest decides.
        let (_, whole) = check(r#"{"client": "reader", "ip": "192.0.2.1", "user": "u-1"}"#);
        assert_eq!(
            (&whole["allowed"], &whole["rule"]["key"]),
            (&Value::Bool(false), &"reader".into()),
            "{b}: {whole}"
        );
        let (_, global) = check(r#"{"scope": "global"}"#);
        assert_eq!(
            (&global["rule"]["key"], &global["remaining"]),
            (&"*".into(), &999.into()),
            "{b}: {global}"
        );
        for bad in [
            r#"{}"#,
            r#"{"scope": "user", "key": "u", "ip": "192.0.2.1"}"#,
            r#"{"ip": "not-an-ip"}"#,
            r#"{"scope": "ip", "key": "192.0.2.0/24"}"#,
            r#"{"scope": "api_key", "key": "Bad Name"}"#,
            r#"{"scope": "user"}"#,
            r#"{"user": "u", "key": "x"}"#,
        ] {
            let (status, body) = check(bad);
            assert_eq!(
                (status, &body["error"]["code"]),
                (422, &"unprocessable".into()),
                "{b}: {bad} → {body}"
            );
        }
        let (status, _) = app.send_json("POST", "/system/ratelimits/check", None, one);
        assert_eq!(status, 401, "{b}");
    }
}

#[test]
fn counters_are_snapshotted_in_bulk() {
    for (db, counters) in setups() {
        let rules = "rate_limits:\n  - scope: ip\n    key: 127.0.0.0/8\n    max_requests: 100\n  - scope: user\n    key: user-7\n    max_requests: 50\n";
        let app = TestApp::spawn_counting(db, counters, &state_with(rules));
        let b = app.backend;
        for _ in 0..3 {
            app.exchange(
                "GET",
                "/system/feature-flags",
                Some(READER),
                &[("X-User-Id", "user-7")],
                None,
            );
        }
        let written = app.runtime.block_on(app.state.replica.flush()).unwrap();
        assert_eq!(written, 2, "{b}: one row per counter");
        let (_, rows) = app.get("/system/ratelimits/snapshots?scope=ip", Some(READER));
        let row = &rows[0];
        assert_eq!(
            (
                &row["key"],
                &row["rule_key"],
                &row["current_count"],
                &row["max_requests"]
            ),
            (&"127.0.0.1".into(), &"127.0.0.0/8".into(), &3.into(), &100.into()),
            "{b}: {rows}"
        );
        // A replica's own count names the replica; a shared count is everyone's: one row.
        if b.ends_with("redis") {
            assert_eq!(
                (&row["counter"], &row["replica"]),
                (&"redis".into(), &"".into()),
                "{b}"
            );
        } else {
            assert_eq!(row["counter"], "memory", "{b}");
            assert!(row["replica"].as_str().is_some_and(|r| !r.is_empty()), "{b}");
        }
        // The same window's row is updated in place, not appended.
        app.exchange(
            "GET",
            "/system/feature-flags",
            Some(READER),
            &[("X-User-Id", "user-7")],
            None,
        );
        app.runtime.block_on(app.state.replica.flush()).unwrap();
        let (_, users) = app.get("/system/ratelimits/snapshots?scope=user&key=user-7", Some(READER));
        assert_eq!(users.as_array().map(Vec::len), Some(1), "{b}: {users}");
        assert_eq!(users[0]["current_count"], 4, "{b}: {users}");
        // The listing requests were counted too; once written, nothing is left to write.
        assert_eq!(app.runtime.block_on(app.state.replica.flush()).unwrap(), 1, "{b}");
        assert_eq!(app.runtime.block_on(app.state.replica.flush()).unwrap(), 0, "{b}");
    }
}

#[test]
fn a_window_opens_and_closes_with_the_clock_alone() {
    for db in all_backends() {
        let now = Utc::now();
        let window = format!(
            "maintenance:\n  mode: normal\n  windows:\n    - name: upgrade\n      starts_at: {}\n      ends_at: {}\n      mode: maintenance\n",
            (now + chrono::Duration::hours(1)).to_rfc3339(),
            (now + chrono::Duration::hours(2)).to_rfc3339()
        );
        let app = TestApp::spawn(db, &state_with(&window));
        let b = app.backend;
        let audit_before = app.runtime.block_on(app.state.db.audit(1000)).unwrap().len();
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"]),
            (&"normal".into(), &"git".into()),
            "{b}"
        );
        assert_eq!(app.get("/system/feature-flags", Some(READER)).0, 200, "{b}");

        app.advance(90 * 60);
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"]),
            (&"maintenance".into(), &"window".into()),
            "{b}: {state}"
        );
        let frozen = app.exchange("GET", "/system/maintenance/windows", Some(READER), &[], None);
        assert_eq!(frozen.status, 503, "{b}");
        let retry: i64 = frozen.header("retry-after").parse().unwrap();
        assert!((29 * 60..=31 * 60).contains(&retry), "{b}: Retry-After {retry}");
        // The admin console still answers in maintenance.
        let (status, _) = app.send_json(
            "POST",
            "/admin/ops",
            Some(ADMIN),
            r#"{"action": "security_snapshot"}"#,
        );
        assert_eq!(status, 200, "{b}");

        app.advance(60 * 60);
        let (_, state) = app.get("/system/maintenance/state", None);
        assert_eq!(
            (&state["mode"], &state["source"]),
            (&"normal".into(), &"git".into()),
            "{b}"
        );
        assert_eq!(app.get("/system/feature-flags", Some(READER)).0, 200, "{b}");
        let audit_after = app.runtime.block_on(app.state.db.audit(1000)).unwrap().len();
        assert_eq!(audit_before, audit_after, "{b}: no write was needed");
    }
}

/// The status of a request to a served process.
fn status(base: &str, method: &str, path: &str, key: &str, body: Option<&str>) -> u16 {
    let agent = crate::support::agent();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .body(body.unwrap_or_default().to_owned())
        .unwrap();
    agent.run(request).unwrap().status().as_u16()
}

/// How long until `path` answers `want` for `key`, polling every 5 ms for up to 5 s.
fn until(base: &str, path: &str, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if status(base, "GET", path, key, None) == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{path} never answered {want}");
}

#[test]
fn two_replicas_on_one_postgres_enforce_each_others_writes_within_a_second() {
    let Some(db) = crate::support::postgres() else {
        return;
    };
    let state = StateDir::new(&[("state.yaml", &state_with("maintenance:\n  mode: normal\n"))]);
    let applied = crate::support::run(&db, state.path(), &["reconcile"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let serve = |name| {
        Process::start(
            &db,
            &state,
            &["serve", "--bind", "127.0.0.1:0", "--replica", name],
        )
    };
    let (replica_a, replica_b) = (serve("a"), serve("b"));
    let (a, b) = (replica_a.base(), replica_b.base());
    assert_eq!(status(&b, "GET", "/system/feature-flags", READER, None), 200);

    // Tyr freezes the platform through A; B refuses within a second.
    let freeze = r#"{"reason": "incident 77", "ttl_seconds": 600}"#;
    assert_eq!(
        status(
            &a,
            "POST",
            "/system/maintenance/state/maintenance",
            OPERATOR,
            Some(freeze)
        ),
        200
    );
    let frozen = until(&b, "/system/maintenance/windows", READER, 503);
    assert!(frozen < Duration::from_secs(1), "B froze after {frozen:?}");
    let lift = r#"{"reason": "incident 77 resolved"}"#;
    assert_eq!(
        status(
            &a,
            "POST",
            "/system/maintenance/state/normal",
            OPERATOR,
            Some(lift)
        ),
        200
    );
    until(&b, "/system/feature-flags", READER, 200);

    // A client deactivated through A is refused by B within a second.
    let (_, clients) = {
        let agent = crate::support::agent();
        let mut response = agent
            .get(format!("{a}/system/clients?client_type=script"))
            .header("Authorization", format!("Bearer {ADMIN}"))
            .call()
            .unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        ((), serde_json::from_str::<Value>(&text).unwrap())
    };
    let reader_id = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reader")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let reason = r#"{"reason": "key leaked"}"#;
    let path = format!("/system/clients/{reader_id}/deactivate");
    assert_eq!(status(&a, "POST", &path, OPERATOR, Some(reason)), 200);
    let refused = until(&b, "/system/feature-flags", READER, 401);
    assert!(
        refused < Duration::from_secs(1),
        "B refused the key after {refused:?}"
    );

    // A rule written through A is enforced by B.
    let rule = r#"{"scope": "ip", "key": "127.0.0.1", "max_requests": 0, "reason": "abuse"}"#;
    assert_eq!(
        status(&a, "POST", "/system/ratelimits/rules", OPERATOR, Some(rule)),
        201
    );
    let limited = until(&b, "/system/feature-flags", OPERATOR, 429);
    assert!(
        limited < Duration::from_secs(1),
        "B enforced the rule after {limited:?}"
    );
}

#[test]
fn a_replica_whose_listener_is_killed_resyncs_and_keeps_following_changes() {
    let Some(db) = crate::support::postgres() else {
        return;
    };
    let app = TestApp::spawn(db, &state_with(""));
    assert_eq!(app.get("/system/feature-flags", Some(READER)).0, 200);
    let valhalla_ops::store::Backend::Postgres(pool) = app.state.db.pool().clone() else {
        unreachable!()
    };
    app.runtime.block_on(async {
        // The listener connects in the background: wait for it before killing it.
        let start = Instant::now();
        let killed: Vec<bool> = loop {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query LIKE 'LISTEN%'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            if !killed.is_empty() || start.elapsed() > Duration::from_secs(5) {
                break killed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(killed, [true], "one listener to kill");
        // A change made by hand, behind the server's back, while it reconnects.
        sqlx::query("UPDATE api_clients SET active = FALSE WHERE name = 'reader'")
            .execute(&pool)
            .await
            .unwrap();
    });
    // The hand edit is seen.
    app.wait_for_status("/system/feature-flags", Some(READER), 401, Duration::from_secs(5));
    // And the new listener delivers later changes as before.
    app.runtime.block_on(async {
        sqlx::query("UPDATE api_clients SET active = TRUE WHERE name = 'reader'")
            .execute(&pool)
            .await
            .unwrap();
    });
    // The listener is back.
    app.wait_for_status("/system/feature-flags", Some(READER), 200, Duration::from_secs(2));
}

#[test]
fn writing_snapshots_does_not_reload_the_cache() {
    for db in all_backends() {
        let rules = "rate_limits:\n  - scope: global\n    max_requests: 1000\n";
        let app = TestApp::spawn_with(db, &state_with(rules), |state| {
            let options = valhalla_ops::replica::ReplicaOptions {
                snapshot_interval: Duration::from_millis(100),
                ..Default::default()
            };
            let clock = std::sync::Arc::clone(&state.replica.clock);
            state.replica = std::sync::Arc::new(valhalla_ops::replica::Replica::new(
                state.db.clone(),
                clock,
                options,
            ));
        });
        let b = app.backend;
        let counted = |app: &TestApp| {
            app.runtime.block_on(async {
                let filter = valhalla_ops::store::SnapshotFilter {
                    scope: None,
                    key: None,
                    page: valhalla_ops::store::Page { limit: 10, offset: 0 },
                };
                let rows = app.state.db.snapshots(&filter).await.unwrap();
                // Summed over windows: a window edge between the phases starts a new row.
                rows.iter().map(|r| r.current_count).sum::<i64>()
            })
        };
        // The fresh replica loads its view first (a loaded machine may take a while).
        app.wait_for_status("/system/feature-flags", Some(READER), 200, Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(app.get("/system/feature-flags", Some(READER)).0, 200, "{b}");
        }
        std::thread::sleep(Duration::from_millis(700));
        let reloads = app.state.replica.reloads();
        let before = counted(&app);
        assert!(before >= 3, "{b}: snapshots are written ({before})");
        for _ in 0..3 {
            app.get("/system/feature-flags", Some(READER));
        }
        std::thread::sleep(Duration::from_millis(700));
        assert!(counted(&app) >= before + 3, "{b}: and updated");
        assert_eq!(
            app.state.replica.reloads(),
            reloads,
            "{b}: without reloading the cache"
        );
    }
}
