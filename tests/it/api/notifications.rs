//! The notifications outbox over HTTP: each change tells one event, written in the change's own
//! transaction (a change rolled back tells nothing), with who, why and what, never a key.

use chrono::Utc;
use serde_json::Value;
use valhalla_ops::reconcile::{ReconcileError, Request, reconcile};

use super::assert_error;
use crate::support::all_backends;
use crate::support::app::{ADMIN, OPERATOR, READER, TestApp, state_with};

/// Six rules, so that taking them all out of git is a mass removal.
fn rules() -> String {
    let rule = |n: u32| format!("  - scope: user\n    key: user-{n}\n    max_requests: 30\n");
    format!("rate_limits:\n{}", (1..=6).map(rule).collect::<String>())
}

/// The events, oldest first.
fn events(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/system/notifications?limit=1000", Some(READER));
    assert_eq!(status, 200, "{}: {body}", app.backend);
    let mut events = body.as_array().cloned().unwrap_or_default();
    events.reverse();
    events
}

/// A reconcile of `yaml` by `ci` from the command line, as the server's store sees it.
fn reconcile_as_ci(app: &TestApp, yaml: &str) -> Result<valhalla_ops::reconcile::Outcome, ReconcileError> {
    let dir = crate::support::StateDir::new(&[("state.yaml", yaml)]);
    let now = Utc::now();
    let desired = valhalla_ops::desired::load_dir(dir.path(), now).unwrap().state;
    let request = Request {
        actor: "ci".into(),
        source: "cli".into(),
        ..Request::default()
    };
    app.runtime
        .block_on(reconcile(&app.state.db, &desired, &request, now))
}

/// The types of the events after the first `skip`.
fn types_after(app: &TestApp, skip: usize) -> Vec<String> {
    events(app)
        .iter()
        .skip(skip)
        .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn each_change_tells_one_event_with_who_why_and_what() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(&rules()));
        let b = app.backend;
        // Seeding the store was a reconcile that wrote something.
        let seeded = events(&app);
        assert_eq!(seeded.len(), 1, "{b}: {seeded:?}");
        assert_eq!(
            (&seeded[0]["type"], &seeded[0]["data"]["created"]),
            (&"reconcile.applied".into(), &10.into()),
            "{b}: {seeded:?}"
        );

        // An override over HTTP, and its lifting.
        let rule = r#"{"scope": "user", "key": "user-1", "max_requests": 1, "reason": "abuse from user-1"}"#;
        let (status, written) = app.send_json("POST", "/system/ratelimits/rules", Some(OPERATOR), rule);
        assert_eq!(status, 200, "{b}: {written}");
        let id = written["override"]["id"].as_i64().unwrap();
        let told = events(&app);
        let set = &told[1];
        assert_eq!(
            (&set["type"], &set["severity"], &set["actor"], &set["reason"]),
            (
                &"override.set".into(),
                &"warning".into(),
                &"operator".into(),
                &"abuse from user-1".into()
            ),
            "{b}: {set}"
        );
        assert_eq!(
            (&set["resource"]["kind"], &set["resource"]["key"], &set["id"]),
            (
                &"rate_limit_rule".into(),
                &"user:user-1".into(),
                &format!("override-set:{id}").into()
            ),
            "{b}: {set}"
        );
        let (status, _) = app.call("DELETE", &format!("/system/overrides/{id}"), Some(OPERATOR));
        assert_eq!(status, 200, "{b}");
        // Lifting it gave git's value back at once, by a reconcile: that run is told too.
        assert_eq!(
            types_after(&app, 2),
            ["override.lifted", "reconcile.applied"],
            "{b}"
        );
        let lifted = &events(&app)[2];
        assert_eq!(
            (&lifted["type"], &lifted["actor"], &lifted["id"]),
            (
                &"override.lifted".into(),
                &"operator".into(),
                &format!("override-lifted:{id}").into()
            ),
            "{b}: {lifted}"
        );
        // What git restores: the rule as git declares it.
        assert_eq!(
            (
                &lifted["data"]["restores"]["key"],
                &lifted["data"]["restores"]["max_requests"]
            ),
            (&"user-1".into(), &30.into()),
            "{b}: {lifted}"
        );

        // A lockdown is one event, not one per client it holds; so is its end.
        let ops = |body: &str| app.send_json("POST", "/admin/ops", Some(ADMIN), body);
        let (status, done) = ops(r#"{"action": "lockdown", "payload": {"reason": "breach"}}"#);
        assert_eq!(status, 200, "{b}: {done}");
        let group = done["result"]["group_id"].as_str().unwrap().to_owned();
        let (status, _) = ops(&format!(
            r#"{{"action": "clear_overrides", "payload": {{"group_id": "{group}"}}}}"#
        ));
        assert_eq!(status, 200, "{b}");
        // Lifting the lockdown gave git's values back by reconciling, as above.
        assert_eq!(
            types_after(&app, 4),
            ["lockdown.started", "lockdown.ended", "reconcile.applied"],
            "{b}"
        );
        let all = events(&app);
        let started = &all[4];
        assert_eq!(
            (
                &started["severity"],
                &started["reason"],
                &started["data"]["group"]
            ),
            (&"critical".into(), &"breach".into(), &group.clone().into()),
            "{b}: {started}"
        );
        assert_eq!(all[5]["data"]["overrides"], 3, "{b}: {}", all[5]);

        // A refused reconcile is told; it wrote nothing, so nothing is applied.
        let before = events(&app).len();
        let refused = reconcile_as_ci(&app, &state_with(""));
        assert!(
            matches!(refused, Err(ReconcileError::Refused(_))),
            "{b}: {refused:?}"
        );
        let told = events(&app);
        assert_eq!(told.len(), before + 1, "{b}: {told:?}");
        let refusal = &told[before];
        assert_eq!(
            (&refusal["type"], &refusal["actor"], &refusal["data"]["source"]),
            (&"reconcile.refused".into(), &"ci".into(), &"cli".into()),
            "{b}: {refusal}"
        );
        assert!(
            refusal["reason"]
                .as_str()
                .unwrap()
                .contains("--allow-mass-removal"),
            "{b}: {refusal}"
        );

        // No event carries a key or a key hash.
        let text = serde_json::to_string(&events(&app)).unwrap();
        for key in [READER, OPERATOR, ADMIN] {
            let hash = valhalla_ops::domain::KeySha256::of_key(key);
            assert!(
                !text.contains(key) && !text.contains(hash.as_str()),
                "{b}: {text}"
            );
        }
        assert_error(
            &app,
            app.get("/system/notifications?limit=0", Some(READER)),
            422,
            "unprocessable",
        );
        assert_error(&app, app.get("/system/notifications", None), 401, "unauthorized");
    }
}

/// A change that rolls back tells nothing: the event is a row of the change's own transaction.
#[test]
fn a_change_rolled_back_tells_nothing() {
    for db in all_backends() {
        let yaml = state_with("feature_flags:\n  - name: new-billing\n    enabled: true\n");
        let app = TestApp::spawn(db, &yaml);
        let b = app.backend;
        let before = events(&app).len();
        use valhalla_ops::store::{ApiChange, WriteOp};
        let change = ApiChange {
            actor: "admin".into(),
            reason: Some("incident".into()),
            expires_at: None,
            now: Utc::now(),
            group_id: None,
        };
        let flag = valhalla_ops::domain::FlagName::parse("new-billing").unwrap();
        // The first write (an override of a git-owned flag) succeeds inside the transaction;
        // the second (the mode set without a reason) fails, and the whole batch rolls back
        // with the first's event.
        let ops = [
            WriteOp::SetFlag {
                name: flag,
                enabled: false,
                change: change.clone(),
            },
            WriteOp::SetMode {
                mode: valhalla_ops::domain::Mode::ReadOnly,
                change: ApiChange {
                    reason: None,
                    ..change
                },
            },
        ];
        let failed = app.runtime.block_on(app.state.db.batch(&ops));
        assert!(failed.is_err(), "{b}: {failed:?}");
        assert_eq!(events(&app).len(), before, "{b}: {:?}", events(&app));
    }
}

/// What time tells is written once, whichever replica notices first: an override that expired
/// (not one lifted before), and a reminder for one about to expire.
#[test]
fn expiries_are_told_once_by_whoever_notices_first() {
    use chrono::Duration;
    use valhalla_ops::model::{Kind, NewOverride};
    use valhalla_ops::store::{Db, Lift, Lifting};
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let store = &app.state.db;
        let now = Utc::now();
        // What git restores: a client's entry, whose key hash is never told, and a flag's.
        let hash = valhalla_ops::domain::KeySha256::of_key("vk_secret_key_of_bot");
        let git_values: [Option<String>; 4] = [
            Some(format!(
                r#"{{"name":"bot","type":"script","key_sha256":"{}"}}"#,
                hash.as_str()
            )),
            None,
            Some(r#"{"name":"soon","enabled":false}"#.into()),
            None,
        ];
        let hold = |key: &str, expires_in: Duration, git_value: Option<String>| NewOverride {
            kind: Kind::FeatureFlag,
            key: key.into(),
            actor: "tyr".into(),
            reason: format!("hold {key}"),
            expires_at: Some(now + expires_in),
            group_id: None,
            git_value,
        };
        let started = now - Duration::minutes(30);
        let ids: Vec<i64> = app.runtime.block_on(async {
            let mut ids = Vec::new();
            for ((key, expires_in), git_value) in [
                ("expired", Duration::minutes(-1)),
                ("lifted", Duration::minutes(-2)),
                ("soon", Duration::minutes(5)),
                ("later", Duration::minutes(30)),
            ]
            .into_iter()
            .zip(git_values.clone())
            {
                ids.push(
                    store
                        .add_override(hold(key, expires_in, git_value), started)
                        .await
                        .unwrap()
                        .id,
                );
            }
            let lift = Lift {
                actor: "tyr",
                source: "api",
                reason: None,
                now: now - Duration::minutes(10),
            };
            store.clear_overrides(Lifting::One(ids[1]), &lift).await.unwrap();
            ids
        });
        let before = events(&app).len();
        // Two replicas notice at once, and again a second later.
        let other = app.runtime.block_on(Db::open(app.db_url())).unwrap();
        let lead = Duration::minutes(10);
        let (a, b2) = app.runtime.block_on(async {
            tokio::join!(store.notice_expiries(now, lead), other.notice_expiries(now, lead))
        });
        assert_eq!(a.unwrap() + b2.unwrap(), 2, "{b}");
        assert_eq!(
            app.runtime.block_on(store.notice_expiries(now, lead)).unwrap(),
            0,
            "{b}"
        );
        let told: Vec<Value> = events(&app).into_iter().skip(before).collect();
        let ids_told: Vec<&str> = told.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids_told,
            [
                format!("override-expired:{}", ids[0]),
                format!("override-expiring:{}", ids[2])
            ],
            "{b}: {told:?}"
        );
        assert_eq!(
            (
                &told[0]["type"],
                &told[0]["actor"],
                &told[0]["reason"],
                &told[0]["data"]["set_by"]
            ),
            (
                &"override.expired".into(),
                &"valhalla-ops".into(),
                &"hold expired".into(),
                &"tyr".into()
            ),
            "{b}: {told:?}"
        );
        assert_eq!(
            (
                &told[1]["type"],
                &told[1]["severity"],
                &told[1]["resource"]["key"]
            ),
            (&"override.expiring".into(), &"warning".into(), &"soon".into()),
            "{b}: {told:?}"
        );
        assert_eq!(
            told[0]["data"]["restores"],
            serde_json::json!({"name": "bot", "type": "script", "key_sha256": "(hidden)"}),
            "{b}: {told:?}"
        );
        assert_eq!(
            told[1]["data"]["restores"],
            serde_json::json!({"name": "soon", "enabled": false}),
            "{b}: {told:?}"
        );
        let all = serde_json::to_string(&events(&app)).unwrap();
        assert!(!all.contains(hash.as_str()), "{b}: a key hash was told: {all}");
    }
}

/// `serve` tells what time does on its own: a reminder before an override expires, then its
/// expiry, each within about a second.
#[test]
fn a_server_reminds_before_an_override_expires_and_tells_the_expiry() {
    use std::time::{Duration, Instant};
    for db in all_backends() {
        let state = crate::support::StateDir::new(&[(
            "state.yaml",
            &state_with("rate_limits:\n  - scope: user\n    key: user-7\n    max_requests: 30\n"),
        )]);
        let applied = crate::support::run(&db, state.path(), &["reconcile"]);
        assert_eq!(applied.code, 0, "{}: {applied:?}", db.backend);
        let serving = crate::support::Process::start(
            &db,
            &state,
            &["serve", "--bind", "127.0.0.1:0", "--expiry-reminder", "3s"],
        );
        let base = serving.base();
        let agent = crate::support::agent();
        let notifications = || -> Vec<Value> {
            let mut response = agent
                .get(format!("{base}/system/notifications"))
                .header("Authorization", format!("Bearer {READER}"))
                .call()
                .unwrap();
            let body: Value = response.body_mut().read_json().unwrap();
            body.as_array().cloned().unwrap_or_default()
        };
        let set_at = Instant::now();
        let mut response = agent
            .post(format!("{base}/system/ratelimits/rules"))
            .header("Authorization", format!("Bearer {OPERATOR}"))
            .send_json(serde_json::json!({
                "scope": "user", "key": "user-7", "max_requests": 1, "reason": "incident", "ttl_seconds": 5
            }))
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "{}: {:?}",
            db.backend,
            response.body_mut().read_to_string()
        );
        let mut reminded = None;
        let mut expired = None;
        while expired.is_none() && set_at.elapsed() < Duration::from_secs(15) {
            let types: Vec<String> = notifications()
                .iter()
                .map(|e| e["type"].as_str().unwrap_or_default().to_owned())
                .collect();
            if reminded.is_none() && types.iter().any(|t| t == "override.expiring") {
                reminded = Some(set_at.elapsed());
            }
            if types.iter().any(|t| t == "override.expired") {
                expired = Some(set_at.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (Some(reminded), Some(expired)) = (reminded, expired) else {
            panic!("{}: {:?}\n{}", db.backend, notifications(), serving.log());
        };
        // The reminder is due 3 s before the expiry at 5 s; the expiry is told within a second
        // or so of it.
        assert!(
            reminded < Duration::from_secs(5),
            "{}: reminded after {reminded:?}",
            db.backend
        );
        assert!(
            expired >= Duration::from_secs(5) && expired < Duration::from_millis(7_500),
            "{}: expiry told after {expired:?}",
            db.backend
        );
    }
}

/// The effective mode changing is told, by whatever changed it: an override set over HTTP, its
/// lifting, and git.
#[test]
fn a_change_of_the_effective_mode_is_told_with_its_cause() {
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with("maintenance:\n  mode: normal\n"));
        let b = app.backend;
        let mode_events = |app: &TestApp| -> Vec<Value> {
            events(app)
                .into_iter()
                .filter(|e| e["type"] == "mode.changed")
                .collect()
        };
        let freeze = r#"{"reason": "incident 42", "ttl_seconds": 600}"#;
        let (status, state) =
            app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze);
        assert_eq!(status, 200, "{b}: {state}");
        let told = mode_events(&app);
        assert_eq!(told.len(), 1, "{b}: {told:?}");
        assert_eq!(
            (
                &told[0]["severity"],
                &told[0]["data"]["from"],
                &told[0]["data"]["to"],
                &told[0]["data"]["cause"]
            ),
            (
                &"critical".into(),
                &"normal".into(),
                &"read_only".into(),
                &"override".into()
            ),
            "{b}: {told:?}"
        );
        assert_eq!(
            (&told[0]["actor"], &told[0]["reason"]),
            (&"admin".into(), &"incident 42".into()),
            "{b}"
        );
        // Setting the mode it already has changes nothing, and tells nothing.
        let (status, _) = app.send_json("POST", "/system/maintenance/state/read_only", Some(ADMIN), freeze);
        assert_eq!(status, 200, "{b}");
        assert_eq!(mode_events(&app).len(), 1, "{b}");
        // The second freeze replaced the first's override: lift the one open now.
        let (_, open) = app.get("/system/overrides", Some(READER));
        let id = open[0]["id"].as_i64().unwrap();
        let (status, _) = app.call("DELETE", &format!("/system/overrides/{id}"), Some(ADMIN));
        assert_eq!(status, 200, "{b}");
        let told = mode_events(&app);
        assert_eq!(told.len(), 2, "{b}: {told:?}");
        assert_eq!(
            (
                &told[1]["severity"],
                &told[1]["data"]["to"],
                &told[1]["data"]["cause"]
            ),
            (&"info".into(), &"normal".into(), &"lift".into()),
            "{b}: {told:?}"
        );

        // Git declares maintenance: the reconcile that writes it tells it.
        reconcile_as_ci(
            &app,
            &state_with("maintenance:\n  mode: maintenance\n  reason: planned upgrade\n"),
        )
        .unwrap();
        let told = mode_events(&app);
        assert_eq!(told.len(), 3, "{b}: {told:?}");
        assert_eq!(
            (
                &told[2]["data"]["to"],
                &told[2]["data"]["cause"],
                &told[2]["actor"]
            ),
            (&"maintenance".into(), &"git".into(), &"ci".into()),
            "{b}: {told:?}"
        );
    }
}

/// `serve` tells a window's opening and closing on its own, each within about a second.
#[test]
fn a_server_tells_a_window_opening_within_two_seconds_of_its_start() {
    use std::time::{Duration, Instant};
    for db in all_backends() {
        let state = crate::support::StateDir::new(&[("state.yaml", &state_with(""))]);
        let applied = crate::support::run(&db, state.path(), &["reconcile"]);
        assert_eq!(applied.code, 0, "{}: {applied:?}", db.backend);
        let serving = crate::support::Process::start(&db, &state, &["serve", "--bind", "127.0.0.1:0"]);
        let base = serving.base();
        let agent = crate::support::agent();
        let starts = Utc::now() + chrono::Duration::seconds(3);
        let ends = starts + chrono::Duration::seconds(2);
        let window = serde_json::json!({
            "name": "short",
            "starts_at": starts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "ends_at": ends.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "mode": "read_only",
        });
        let mut response = agent
            .post(format!("{base}/system/maintenance/windows"))
            .header("Authorization", format!("Bearer {OPERATOR}"))
            .send_json(window)
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "{}: {:?}",
            db.backend,
            response.body_mut().read_to_string()
        );
        let told = |to: &str| -> bool {
            let mut response = agent
                .get(format!("{base}/system/notifications"))
                .header("Authorization", format!("Bearer {READER}"))
                .call()
                .unwrap();
            let body: Value = response.body_mut().read_json().unwrap();
            body.as_array().is_some_and(|all| {
                all.iter()
                    .any(|e| e["type"] == "mode.changed" && e["data"]["to"] == to)
            })
        };
        let began = Instant::now();
        let until = |when: chrono::DateTime<Utc>| (when - Utc::now()).to_std().unwrap_or_default();
        let (mut opened, mut closed) = (None, None);
        while closed.is_none() && began.elapsed() < Duration::from_secs(20) {
            if opened.is_none() && told("read_only") {
                opened = Some(Utc::now());
            }
            if told("normal") {
                closed = Some(Utc::now());
            }
            std::thread::sleep(Duration::from_millis(100).min(until(ends).max(Duration::from_millis(20))));
        }
        let (Some(opened), Some(closed)) = (opened, closed) else {
            panic!(
                "{}: opened {opened:?}, closed {closed:?}\n{}",
                db.backend,
                serving.log()
            );
        };
        let late = |told: chrono::DateTime<Utc>, at: chrono::DateTime<Utc>| told - at;
        assert!(
            late(opened, starts) >= chrono::Duration::zero()
                && late(opened, starts) < chrono::Duration::seconds(2),
            "{}: the opening was told {:?} after it",
            db.backend,
            late(opened, starts)
        );
        assert!(
            late(closed, ends) < chrono::Duration::seconds(2),
            "{}: the closing was told {:?} after it",
            db.backend,
            late(closed, ends)
        );
    }
}

/// A reconcile tells what it does to clients: a key replaced, a client deactivated because git
/// no longer declares it; who, never the key or its hash.
#[test]
fn a_reconcile_tells_a_key_replaced_and_a_client_retired() {
    let bot = |key: &str| {
        format!(
            "  - name: bot\n    type: script\n    role: reader\n    key_sha256: {}\n",
            valhalla_ops::domain::KeySha256::of_key(key).as_str()
        )
    };
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(&bot("vk_first_key")));
        let b = app.backend;
        let apply = |yaml: &str| reconcile_as_ci(&app, yaml).unwrap();
        let before = events(&app).len();
        apply(&state_with(&bot("vk_second_key")));
        apply(&state_with(""));
        let told: Vec<Value> = events(&app).into_iter().skip(before).collect();
        let kinds: Vec<&str> = told.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "reconcile.applied",
                "client.key_changed",
                "reconcile.applied",
                "client.deactivated"
            ],
            "{b}: {told:?}"
        );
        for event in [&told[1], &told[3]] {
            assert_eq!(
                (&event["resource"]["key"], &event["actor"]),
                (&"bot".into(), &"ci".into()),
                "{b}: {event}"
            );
        }
        let text = serde_json::to_string(&told).unwrap();
        for key in ["vk_first_key", "vk_second_key"] {
            let hash = valhalla_ops::domain::KeySha256::of_key(key);
            assert!(
                !text.contains(key) && !text.contains(hash.as_str()),
                "{b}: {text}"
            );
        }
    }
}

/// The outbox keeps the last weeks: events older than the retention are forgotten, the rest
/// kept.
#[test]
fn old_events_are_forgotten() {
    use valhalla_ops::event::Event;
    use valhalla_ops::outbox::EVENT_RETENTION;
    for db in all_backends() {
        let app = TestApp::spawn(db, &state_with(""));
        let b = app.backend;
        let now = Utc::now();
        let old = Event::drift_corrected(-1, "watch", now - EVENT_RETENTION - chrono::Duration::minutes(1));
        let recent =
            Event::drift_corrected(-2, "watch", now - EVENT_RETENTION + chrono::Duration::minutes(1));
        let before = events(&app).len();
        app.runtime.block_on(app.state.db.tell(&[old, recent])).unwrap();
        assert_eq!(events(&app).len(), before + 2, "{b}");
        let forgotten = app
            .runtime
            .block_on(app.state.db.forget_events(now - EVENT_RETENTION))
            .unwrap();
        assert_eq!(forgotten, 1, "{b}");
        let ids: Vec<Value> = events(&app).iter().map(|e| e["id"].clone()).collect();
        assert!(
            ids.contains(&"reconcile-drift-corrected:-2".into()),
            "{b}: {ids:?}"
        );
        assert!(
            !ids.contains(&"reconcile-drift-corrected:-1".into()),
            "{b}: {ids:?}"
        );
    }
}
