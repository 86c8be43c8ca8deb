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
        let emptied = crate::support::StateDir::new(&[("state.yaml", &state_with(""))]);
        let now = Utc::now();
        let desired = valhalla_ops::desired::load_dir(emptied.path(), now)
            .unwrap()
            .state;
        let request = Request {
            actor: "ci".into(),
            source: "cli".into(),
            ..Request::default()
        };
        let refused = app
            .runtime
            .block_on(reconcile(&app.state.db, &desired, &request, now));
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
