//! Change freezes end to end, on every backend: `reconcile`, saved plans and watch passes refuse
//! git while a `freeze_changes` window is open, `--during-freeze` lets a reason through, and
//! HTTP overrides never wait.

use std::time::Duration as StdDuration;

use chrono::{Duration, SecondsFormat, Utc};

use crate::support::app::{OPERATOR, READER, TestApp, state_with};
use crate::support::{Process, StateDir, all_backends, audit, run, runs};

/// A one-off freeze open from an hour ago for `hours` more hours: times relative to the clock,
/// never a date written down.
fn freeze_file(hours: i64) -> String {
    let now = Utc::now();
    let time = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    format!(
        "version: 1\nmaintenance:\n  windows:\n    - name: change-freeze\n      starts_at: \"{}\"\n      ends_at: \"{}\"\n      mode: freeze_changes\n      description: Black Friday\n",
        time(now - Duration::hours(1)),
        time(now + Duration::hours(hours))
    )
}

const EXTRA_RULE: &str =
    "version: 1\nrate_limits:\n  - scope: ip\n    key: 198.51.100.7\n    max_requests: 5\n";

#[test]
fn a_freeze_refuses_reconcile_and_saved_plans_until_a_reason_is_given() {
    for db in all_backends() {
        let b = db.backend;
        let state = StateDir::sample();
        state.write("freeze.yaml", &freeze_file(2));
        // The apply that first stores the freeze is not refused by it.
        let first = run(&db, state.path(), &["reconcile"]);
        assert_eq!(first.code, 0, "{b}: {first:?}");

        // A change while it is open: planned and shown, refused at apply.
        state.write("extra.yaml", EXTRA_RULE);
        let dry = run(
            &db,
            state.path(),
            &["reconcile", "--dry-run", "--detailed-exitcode"],
        );
        assert_eq!(dry.code, 2, "{b}: {dry:?}");
        assert!(
            dry.stdout.contains("+ create     ip:198.51.100.7"),
            "{b}: {dry:?}"
        );
        assert!(
            dry.stdout
                .contains("refused now: changes are frozen by window change-freeze until"),
            "{b}: {dry:?}"
        );
        assert!(
            dry.stderr.contains("the apply would be refused now"),
            "{b}: {dry:?}"
        );
        let refused = run(&db, state.path(), &["reconcile"]);
        assert_ne!(refused.code, 0, "{b}: {refused:?}");
        assert!(
            refused
                .stderr
                .contains("changes are frozen by window change-freeze until")
                && refused.stderr.contains("--during-freeze"),
            "{b}: {refused:?}"
        );
        assert_eq!(
            refused.stderr.trim().lines().count(),
            1,
            "{b}: one line: {refused:?}"
        );
        assert!(
            runs(&db)[0]
                .refusal
                .as_deref()
                .unwrap_or("")
                .contains("change-freeze"),
            "{b}"
        );

        // A saved plan is refused the same way.
        let (_dir, plan) = crate::support::scratch("plan.json");
        let plan = plan.to_str().unwrap();
        let saved = run(&db, state.path(), &["reconcile", "--dry-run", "--out", plan]);
        assert_eq!(saved.code, 0, "{b}: {saved:?}");
        let applied = run(&db, state.path(), &["reconcile", "--plan", plan]);
        assert_ne!(applied.code, 0, "{b}: {applied:?}");
        assert!(applied.stderr.contains("changes are frozen"), "{b}: {applied:?}");

        // With a reason it applies, and the run and the audit keep the reason.
        let why = run(
            &db,
            state.path(),
            &["reconcile", "--during-freeze", "hotfix for INC-7"],
        );
        assert_eq!(why.code, 0, "{b}: {why:?}");
        assert_eq!(
            runs(&db)[0].during_freeze.as_deref(),
            Some("hotfix for INC-7"),
            "{b}"
        );
        let row = audit(&db)
            .into_iter()
            .find(|a| a.key == "ip:198.51.100.7")
            .unwrap();
        assert_eq!(row.reason.as_deref(), Some("hotfix for INC-7"), "{b}");
        let blank = run(&db, state.path(), &["reconcile", "--during-freeze", " "]);
        assert_eq!(blank.code, 2, "{b}: a blank reason is a usage error: {blank:?}");

        // Shortening the open freeze is its only change: not refused by itself.
        state.write("freeze.yaml", &freeze_file(1));
        let shorter = run(&db, state.path(), &["reconcile"]);
        assert_eq!(shorter.code, 0, "{b}: {shorter:?}");
        // Ending it (removing it from git) too; after that, changes apply again.
        state.remove("freeze.yaml");
        let ended = run(&db, state.path(), &["reconcile"]);
        assert_eq!(ended.code, 0, "{b}: {ended:?}");
        state.remove("extra.yaml");
        let after = run(&db, state.path(), &["reconcile"]);
        assert_eq!(after.code, 0, "{b}: {after:?}");
    }
}

#[test]
fn a_watch_pass_is_refused_during_a_freeze_and_applies_with_a_reason() {
    for db in all_backends() {
        let b = db.backend;
        let state = StateDir::sample();
        state.write("freeze.yaml", &freeze_file(2));
        assert_eq!(run(&db, state.path(), &["reconcile"]).code, 0, "{b}");
        let first = runs(&db)[0].id;
        state.write("extra.yaml", EXTRA_RULE);
        let mut watch = Process::start(&db, &state, &["reconcile", "--watch", "--interval", "1s"]);
        watch.wait_log(
            "changes are frozen by window change-freeze",
            StdDuration::from_secs(20),
        );
        watch.stop(StdDuration::from_secs(10));
        let later: Vec<_> = runs(&db).into_iter().filter(|r| r.id > first).collect();
        assert!(
            !later.is_empty() && later.iter().all(|r| r.created == 0),
            "{b}: {later:?}"
        );
        let mut watch = Process::start(
            &db,
            &state,
            &["reconcile", "--watch", "--during-freeze", "INC-9 rollback"],
        );
        let start = std::time::Instant::now();
        while !runs(&db).iter().any(|r| r.id > first && r.created == 1) {
            assert!(
                start.elapsed() < StdDuration::from_secs(20),
                "{b}: {}",
                watch.log()
            );
            std::thread::sleep(StdDuration::from_millis(50));
        }
        watch.stop(StdDuration::from_secs(10));
        let applied = runs(&db)
            .into_iter()
            .find(|r| r.id > first && r.created == 1)
            .unwrap();
        assert_eq!(applied.during_freeze.as_deref(), Some("INC-9 rollback"), "{b}");
    }
}

#[test]
fn overrides_go_through_a_freeze_and_the_state_and_windows_show_it() {
    for db in all_backends() {
        let extra = freeze_file(2).replace("version: 1\n", "");
        let app = TestApp::spawn(db, &state_with(&extra));
        let b = app.backend;
        let (status, state) = app.get("/system/maintenance/state", None);
        assert_eq!(status, 200, "{b}: {state}");
        assert_eq!(
            state["mode"], "normal",
            "{b}: a freeze leaves the mode alone: {state}"
        );
        assert_eq!(state["freeze"]["window"], "change-freeze", "{b}: {state}");
        // A recurring window made over HTTP lists its rule and next occurrences.
        let (status, made) = app.send_json(
            "POST",
            "/system/maintenance/windows",
            Some(OPERATOR),
            r#"{"name": "nightly", "schedule": "30 2 * * *", "duration": "90m", "timezone": "Europe/Berlin", "mode": "read_only"}"#,
        );
        assert_eq!(status, 201, "{b}: {made}");
        assert_eq!(
            (&made["schedule"], &made["duration"], &made["timezone"]),
            (&"30 2 * * *".into(), &"1h30m".into(), &"Europe/Berlin".into()),
            "{b}: {made}"
        );
        let next = made["next"].as_array().unwrap();
        assert_eq!(next.len(), 3, "{b}: {made}");
        for pair in next.windows(2) {
            let at =
                |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
            let gap = at(&pair[1]["starts_at"]) - at(&pair[0]["starts_at"]);
            assert!((23..=25).contains(&gap.num_hours()), "{b}: daily: {made}");
            assert_eq!(
                at(&pair[0]["ends_at"]) - at(&pair[0]["starts_at"]),
                Duration::minutes(90)
            );
        }
        for (body, why) in [
            (r#"{"schedule": "0 0 30 2 *", "duration": "1h"}"#, "never fires"),
            (
                r#"{"schedule": "0 2 * * *", "duration": "1h", "starts_at": "2031-01-01T00:00:00Z"}"#,
                "either",
            ),
            (r#"{"schedule": "0 2 * * *"}"#, "either"),
            (
                r#"{"schedule": "0 2 * * *", "duration": "1h", "timezone": "Mars/Base"}"#,
                "time zone",
            ),
        ] {
            let (status, error) = app.send_json("POST", "/system/maintenance/windows", Some(OPERATOR), body);
            assert_eq!(status, 422, "{b}: {body}: {error}");
            assert!(error.to_string().contains(why), "{b}: {body}: {error}");
        }
        // Tyr freezes the platform: an emergency does not wait for the freeze to end.
        let (status, set) = app.send_json(
            "POST",
            "/system/maintenance/state/maintenance",
            Some(OPERATOR),
            r#"{"reason": "incident 21", "ttl_seconds": 600}"#,
        );
        assert_eq!(status, 200, "{b}: {set}");
        app.wait_for_status(
            "/system/ratelimits/rules",
            Some(READER),
            503,
            StdDuration::from_secs(2),
        );
    }
}
